//! What more than one section uses: fd and pipe plumbing, the process's RSS, a parent of a
//! given size, and the units of the throughput sections.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::harness::micros;

pub const MIB: usize = 1 << 20;

/// The unit of the throughput sections.
pub const GIB_PER_S: &str = "GiB/s";

/// Raises the soft fd limit to the hard one (3000 children hold thousands of fds).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit on a valid local struct.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `fd` moved to a number ≥ 100, close-on-exec, so that dup2 onto 0..=7 never clobbers it.
pub fn high(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd; the new fd is ours alone.
    unsafe {
        let new = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100);
        assert!(new >= 0, "F_DUPFD_CLOEXEC");
        OwnedFd::from_raw_fd(new)
    }
}

/// A close-on-exec pipe with both ends at high fd numbers: (read, write).
pub fn pipe_high() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (high(r.into()), high(w.into()))
}

pub fn set_pipe_size(fd: RawFd, bytes: usize) {
    // SAFETY: fcntl with an integer argument on an fd the caller keeps open.
    let got = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    assert!(got >= bytes as i32, "F_SETPIPE_SZ");
}

pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// GiB per second moving `bytes` in the time `f` takes.
pub fn gib_per_s(bytes: usize, f: impl FnOnce()) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / (micros(f) / 1e6)
}

/// A transfer size for scenario names.
pub fn size(mib: usize) -> String {
    if mib >= 1024 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// Anonymous memory with every 4 KiB page touched (huge pages off: fork's worst case).
pub struct BigParent {
    base: *mut libc::c_void,
    len: usize,
}

impl BigParent {
    pub fn touch(len: usize) -> Self {
        let t = Instant::now();
        // SAFETY: a fresh private anonymous mapping, checked; then only our own pages written.
        let base = unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED, "mmap 4 GiB");
            libc::madvise(base, len, libc::MADV_NOHUGEPAGE);
            // MADV_POPULATE_WRITE faults every page in one call: far faster than touching.
            if libc::madvise(base, len, libc::MADV_POPULATE_WRITE) != 0 {
                for off in (0..len).step_by(4096) {
                    base.cast::<u8>().add(off).write_volatile(1);
                }
            }
            base
        };
        eprintln!(
            "  touched {} MiB in {:.1} s, RSS now {} MiB",
            len / MIB,
            t.elapsed().as_secs_f64(),
            rss_bytes() / MIB as u64
        );
        BigParent { base, len }
    }
}

impl Drop for BigParent {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `cat` with stdin and stdout piped and stderr as given, for std; Tokio's contenders wrap
/// the same command (`tokio::process::Command::from`).
pub fn piped_cat(stderr: std::process::Stdio) -> std::process::Command {
    let mut cmd = std::process::Command::new("/bin/cat");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    cmd
}
