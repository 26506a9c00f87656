//! Fd accounting: the fds open in this process (and proof that a test left none behind),
//! the fds a child really has, RLIMIT_NOFILE, and pipes made by the tests themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{within, zombie_children};

/// The fds open in this process right now (not counting the one used to list them).
pub fn open_fds() -> BTreeSet<RawFd> {
    let mut fds: BTreeSet<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // SAFETY: F_GETFD only reads flags; the listing's own fd is closed by now (EBADF).
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
    fds
}

/// Asserts that this process holds exactly the fds of `fds_before` again and has no zombie
/// child.
pub fn assert_nothing_leaked(fds_before: &BTreeSet<RawFd>) {
    assert_eq!(&open_fds(), fds_before, "fds leaked");
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies left");
}

/// A close-on-exec pipe made by the test itself: `(read end, write end)`.
pub fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two ints.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads `fd` to EOF with blocking reads (on a blocking thread).
pub async fn read_to_end(fd: OwnedFd) -> Vec<u8> {
    within(
        "reading a test pipe to EOF",
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::from(fd);
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).expect("read test pipe");
            buf
        }),
    )
    .await
    .expect("reader thread")
}

/// RLIMIT_NOFILE as (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

/// Sets the soft RLIMIT_NOFILE (capped at the hard limit); returns the soft limit in force.
pub fn set_nofile_soft(soft: u64) -> u64 {
    let (_, hard) = nofile_limit();
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit with a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    nofile_limit().0
}

/// (device, inode) of a parent fd.
pub fn identity(fd: i32) -> (u64, u64) {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat into a valid out-pointer.
    assert_eq!(unsafe { libc::fstat(fd, st.as_mut_ptr()) }, 0, "fstat {fd}");
    // SAFETY: filled by fstat.
    let st = unsafe { st.assume_init() };
    (st.st_dev, st.st_ino)
}

/// A Python snippet that writes the fds open in the (Python) child, space separated, to
/// `out_fd`. `listdir` opens (and closes) an fd of its own, so only fds still open after the
/// listing are kept.
pub fn py_list_fds(out_fd: i32) -> String {
    let script = r#"
import os
def is_open(f):
    try:
        os.fstat(f)
        return True
    except OSError:
        return False
fds = sorted(f for f in map(int, os.listdir('/proc/self/fd')) if is_open(f))
os.write(OUT_FD, ' '.join(map(str, fds)).encode())
"#;
    script.replace("OUT_FD", &out_fd.to_string())
}

/// A python program that writes "fd dev ino" for each of its open fds to fd `report`.
pub fn fd_report_script(report: i32) -> String {
    format!(
        "import os\n\
         lines = []\n\
         for name in sorted(os.listdir('/proc/self/fd'), key=int):\n\
         \x20   try:\n\
         \x20       st = os.fstat(int(name))\n\
         \x20   except OSError:\n\
         \x20       continue\n\
         \x20   lines.append('%s %d %d' % (name, st.st_dev, st.st_ino))\n\
         os.write({report}, ('\\n'.join(lines) + '\\n').encode())\n"
    )
}

/// Parses the report of [`fd_report_script`], leaving out the fd python used to list the
/// directory (already closed, so fstat failed and it is absent).
pub fn parse_fd_report(report: &[u8]) -> BTreeMap<i32, (u64, u64)> {
    String::from_utf8_lossy(report)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            let fd = it.next().unwrap() as i32;
            (fd, (it.next().unwrap(), it.next().unwrap()))
        })
        .collect()
}
