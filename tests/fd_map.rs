//! The child-fd map. Every map works (Twisted's fd shape, swaps, cycles, fan-out, collisions with
//! the parent's own fds, high numbers), and only mapped fds exist in the child, checked from inside
//! the child through `/proc/self/fd`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use futures::StreamExt;
use process_transport::{ChildFd, Event};

use common::{Outcome, cloexec_pipe, py, py_list_fds, read_to_end, record, run_to_end, sh, within};

fn parse_fds(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Twisted's `process_fds.py`, in Python: read, write and close each fd in turn.
const TWISTED_FDS_CHILD: &str = r#"
import os, sys
if os.read(0, 4) != b"abcd":
    sys.exit(1)
os.write(1, b"righto")
if os.read(3, 4) != b"efgh":
    sys.exit(2)
os.close(4)
if os.read(5, 4) != b"":
    sys.exit(3)
os.write(1, b"closed")
os.write(2, b"inherited fd 2")
sys.exit(0)
"#;

#[tokio::test]
async fn twisted_fd_shape_reads_writes_and_closes_each_fd_in_turn() {
    // fd 2 is inherited: a file of the test's own, which the test keeps owning.
    let path = std::env::temp_dir().join(format!("pt-core-fd2-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();

    let mut child = py(TWISTED_FDS_CHILD)
        .fds([
            (0, ChildFd::ParentWrites),
            (1, ChildFd::ParentReads),
            (2, ChildFd::Inherit(file.as_raw_fd())),
            (3, ChildFd::ParentWrites),
            (4, ChildFd::ParentReads),
            (5, ChildFd::ParentWrites),
        ])
        .spawn()
        .unwrap();
    assert_eq!(child.open_fds().collect::<Vec<_>>(), [0, 1, 3, 4, 5]);

    child.write(0, &b"abcd"[..]).unwrap();
    let out = within("twisted fd shape", async {
        let mut out = Outcome::default();
        let mut wrote_efgh = false;
        while let Some(event) = child.next().await {
            let closed_4 = matches!(event, Event::Closed { fd: 4, .. });
            if record(&mut out, event) {
                break;
            }
            if !wrote_efgh && out.text(1).contains("righto") {
                child.write(3, &b"efgh"[..]).unwrap();
                wrote_efgh = true;
            }
            if closed_4 {
                // The child closed fd 4 and now waits for EOF on fd 5.
                child.close_child_fd(5).unwrap();
            }
        }
        out
    })
    .await;

    out.assert_well_ordered(&[0, 1, 3, 4, 5]);
    assert_eq!(
        out.status().code(),
        Some(0),
        "child failed a step: {:?}",
        out.log
    );
    assert_eq!(out.text(1), "rightoclosed");
    assert!(!out.data.contains_key(&4), "fd 4 carried no data");
    assert_eq!(out.close_reason(4), "Eof", "the child closed fd 4");
    assert_eq!(out.close_reason(5), "Closed", "the parent closed fd 5");
    let closed4 = out
        .log
        .iter()
        .position(|r| *r == common::Rec::Closed(4, "Eof".into()));
    let exited = out
        .log
        .iter()
        .position(|r| matches!(r, common::Rec::Exited(_)));
    assert!(
        closed4 < exited,
        "fd 4 closes while the child runs: {:?}",
        out.log
    );

    // The inherited fd stays the test's, and the child's writes landed in it.
    let mut written = String::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut written).unwrap();
    assert_eq!(written, "inherited fd 2");
}

/// Maps each child fd to the write end of one of `pipes` test pipes (`Inherit`), lets a
/// Python child write `"<its fd>;"` to every mapped fd, and returns what each pipe received.
async fn write_through_inherited(
    map: &[(i32, usize)],
    pipes: Vec<(OwnedFd, OwnedFd)>,
) -> Vec<String> {
    let fds: Vec<i32> = map.iter().map(|&(child_fd, _)| child_fd).collect();
    let script = format!(
        "import os\nfor fd in {fds:?}:\n    os.write(fd, b'%d;' % fd)\n{}",
        py_list_fds(2)
    );
    let mut command = py(&script);
    command.fds([(2, ChildFd::ParentReads)]);
    for &(child_fd, pipe) in map {
        command.fd(child_fd, ChildFd::Inherit(pipes[pipe].1.as_raw_fd()));
    }
    let mut child = command.spawn().unwrap();
    // Only the child may hold the write ends now, so the readers see EOF when it exits.
    let readers: Vec<OwnedFd> = pipes.into_iter().map(|(r, _w)| r).collect();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[2]);
    assert!(
        out.status().success(),
        "child failed: {:?} {}",
        out.log,
        out.text(2)
    );
    let mut expected_fds = fds.clone();
    expected_fds.push(2);
    expected_fds.sort();
    assert_eq!(
        parse_fds(&out.text(2)),
        expected_fds,
        "the child has exactly the mapped fds"
    );
    let mut received = Vec::new();
    for reader in readers {
        received.push(String::from_utf8(read_to_end(reader).await).unwrap());
    }
    received
}

#[tokio::test]
async fn swap_map_exchanges_two_fds() {
    // {a: b, b: a} with a and b the very numbers of the parent's fds: each source is also a
    // target, so a naive dup2 sequence would clobber one before reading it.
    let pipes = vec![cloexec_pipe(), cloexec_pipe()];
    let (a, b) = (pipes[0].1.as_raw_fd(), pipes[1].1.as_raw_fd());
    let received = write_through_inherited(&[(a, 1), (b, 0)], pipes).await;
    assert_eq!(received, [format!("{b};"), format!("{a};")]);
}

#[tokio::test]
async fn swap_of_child_fds_0_and_1() {
    // The {0: 1, 1: 0} shape: child 0 gets what the parent has at the number it puts at 1,
    // and the other way round, while both numbers are targets.
    let pipes = vec![cloexec_pipe(), cloexec_pipe()];
    let received = write_through_inherited(&[(0, 1), (1, 0)], pipes).await;
    assert_eq!(received, ["1;", "0;"]);
}

#[tokio::test]
async fn three_cycle_of_parent_fd_numbers() {
    let pipes = vec![cloexec_pipe(), cloexec_pipe(), cloexec_pipe()];
    let w: Vec<i32> = pipes.iter().map(|p| p.1.as_raw_fd()).collect();
    // child w0 <- pipe 1, w1 <- pipe 2, w2 <- pipe 0.
    let received = write_through_inherited(&[(w[0], 1), (w[1], 2), (w[2], 0)], pipes).await;
    assert_eq!(
        received,
        [
            format!("{};", w[2]),
            format!("{};", w[0]),
            format!("{};", w[1])
        ]
    );
}

#[tokio::test]
async fn fd_kept_at_its_own_number_survives_exec_although_close_on_exec() {
    // dup2(fd, fd) would keep FD_CLOEXEC and the fd would vanish at exec.
    let pipes = vec![cloexec_pipe()];
    let w = pipes[0].1.as_raw_fd();
    let received = write_through_inherited(&[(w, 0)], pipes).await;
    assert_eq!(received, [format!("{w};")]);
}

#[tokio::test]
async fn fan_out_2_to_1_sends_both_streams_into_one_pipe() {
    let (read, write) = cloexec_pipe();
    let mut child = sh("echo out; echo err >&2; echo out-again")
        .fds([
            (0, ChildFd::Null),
            (1, ChildFd::Inherit(write.as_raw_fd())),
            (2, ChildFd::Inherit(write.as_raw_fd())),
        ])
        .spawn()
        .unwrap();
    drop(write);
    assert_eq!(child.open_fds().count(), 0, "no pipes of the transport");
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[]);
    assert!(out.status().success());
    assert_eq!(read_to_end(read).await, b"out\nerr\nout-again\n");
}

#[tokio::test]
async fn fan_out_of_one_inherited_fd_to_three_child_fds_including_a_high_one() {
    let (read, write) = cloexec_pipe();
    let w = write.as_raw_fd();
    let mut child = py("import os\nfor fd in (1, 2, 77):\n    os.write(fd, b'%d;' % fd)\n")
        .fds([
            (1, ChildFd::Inherit(w)),
            (2, ChildFd::Inherit(w)),
            (77, ChildFd::Inherit(w)),
        ])
        .spawn()
        .unwrap();
    drop(write);
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    assert_eq!(read_to_end(read).await, b"1;2;77;");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_colliding_with_the_parents_own_fds_each_get_their_own_pipe() {
    // 38 pipes: their child ends land on parent fd numbers inside 3..=40, which are also
    // targets, so sources and targets collide all over the place.
    let targets: Vec<i32> = (3..=40).collect();
    let parent_fds = common::open_fds();
    assert!(
        parent_fds.iter().any(|fd| targets.contains(fd)),
        "the parent uses some target numbers itself: {parent_fds:?}"
    );
    let script = format!(
        "import os\nfor fd in range(3, 41):\n    os.write(fd, b'fd%d' % fd)\n{}",
        py_list_fds(1)
    );
    let mut command = py(&script);
    for &fd in &targets {
        command.fd(fd, ChildFd::ParentReads);
    }
    let mut child = command.spawn().unwrap();
    let out = run_to_end(&mut child).await;
    let mut pipes = vec![0, 1, 2];
    pipes.extend(&targets);
    out.assert_well_ordered(&pipes);
    assert!(out.status().success(), "{}", out.text(2));
    for fd in targets {
        assert_eq!(
            out.text(fd),
            format!("fd{fd}"),
            "child fd {fd} reached its own pipe"
        );
    }
    assert_eq!(parse_fds(&out.text(1)), pipes);
}

#[tokio::test]
async fn high_targets_100_and_1000_work_both_ways() {
    let script = format!(
        "import os\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = os.read(1000, 4096)\n\
         \x20   if not chunk:\n\
         \x20       break\n\
         \x20   data += chunk\n\
         {}\
         os.write(100, b'|' + data)\n",
        py_list_fds(100)
    );
    let mut child = py(&script)
        .fds([(100, ChildFd::ParentReads), (1000, ChildFd::ParentWrites)])
        .spawn()
        .unwrap();
    child.write(1000, &b"ping to fd 1000"[..]).unwrap();
    child.close_child_fd(1000).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[100, 1000]);
    assert!(out.status().success());
    assert_eq!(out.text(100), "100 1000|ping to fd 1000");
}

/// Opens `/dev/null` the way C code that ignores `O_CLOEXEC` does, and also duplicates it
/// to a high number; both stay open while the returned guard lives.
struct LeakyFds(#[allow(dead_code)] Vec<OwnedFd>);

fn open_without_cloexec() -> LeakyFds {
    // SAFETY: plain open/fcntl calls; the results are checked and owned below.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        let high = libc::fcntl(fd, libc::F_DUPFD, 700);
        assert!(high >= 700);
        for f in [fd, high] {
            assert_eq!(
                libc::fcntl(f, libc::F_GETFD) & libc::FD_CLOEXEC,
                0,
                "not close-on-exec"
            );
        }
        LeakyFds(vec![OwnedFd::from_raw_fd(fd), OwnedFd::from_raw_fd(high)])
    }
}

#[tokio::test]
async fn unmapped_fds_are_closed_in_the_child_even_without_cloexec() {
    let leaky = open_without_cloexec();
    let mut child = py(&py_list_fds(1)).spawn().unwrap();
    let out = run_to_end(&mut child).await;
    drop(leaky);
    out.assert_well_ordered(&[0, 1, 2]);
    assert!(out.status().success(), "{}", out.text(2));
    assert_eq!(
        out.text(1),
        "0 1 2",
        "only the default map's fds exist in the child"
    );
}

#[tokio::test]
async fn unmapped_0_1_and_2_are_closed_in_the_child() {
    let leaky = open_without_cloexec();
    let mut child = py(&py_list_fds(3))
        .fds([(3, ChildFd::ParentReads)])
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    drop(leaky);
    out.assert_well_ordered(&[3]);
    assert!(out.status().success());
    assert_eq!(out.text(3), "3");
}

#[tokio::test]
async fn empty_map_gives_a_child_with_no_fds_at_all() {
    let leaky = open_without_cloexec();
    // No fd to report through, so the exit code says how many fds the child has (+ 10).
    let script = format!(
        "import sys\n{}",
        py_list_fds(-1).replace(
            "os.write(-1, ' '.join(map(str, fds)).encode())",
            "sys.exit(10 + len(fds) if fds else 0)"
        )
    );
    let mut child = py(&script).fds([]).spawn().unwrap();
    assert_eq!(child.open_fds().count(), 0);
    let out = run_to_end(&mut child).await;
    drop(leaky);
    out.assert_well_ordered(&[]);
    assert_eq!(
        out.status().code(),
        Some(0),
        "the child saw fds: {:?}",
        out.log
    );
}

#[tokio::test]
async fn default_map_is_stdin_written_and_stdout_stderr_read() {
    let mut child = sh("read line; echo \"out:$line\"; echo \"err:$line\" >&2")
        .spawn()
        .unwrap();
    assert_eq!(child.open_fds().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(matches!(
        child.write(1, &b"x"[..]),
        Err(process_transport::Error::NotWritable(1))
    ));
    child.write_stdin(&b"hello\n"[..]).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert!(out.status().success());
    assert_eq!(out.text(1), "out:hello\n");
    assert_eq!(out.text(2), "err:hello\n");
}

#[tokio::test]
async fn child_ends_of_pipes_are_blocking() {
    // O_NONBLOCK is 04000 in the octal `flags` of /proc/<pid>/fdinfo/<fd>.
    let mut child = sh("for fd in 0 1 2 3; do grep ^flags: /proc/self/fdinfo/$fd; done")
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success(), "{}", out.text(2));
    let flags: Vec<u32> = out
        .text(1)
        .lines()
        .map(|l| u32::from_str_radix(l.trim_start_matches("flags:").trim(), 8).unwrap())
        .collect();
    assert_eq!(flags.len(), 4, "{}", out.text(1));
    for (fd, f) in flags.iter().enumerate() {
        assert_eq!(
            f & libc::O_NONBLOCK as u32,
            0,
            "child fd {fd} is non-blocking: {f:o}"
        );
    }
}

#[tokio::test]
async fn null_fds_read_eof_and_swallow_writes() {
    let script = "import os\n\
                  for fd in (0, 1):\n\
                  \x20   os.write(3, os.readlink('/proc/self/fd/%d' % fd).encode() + b'\\n')\n\
                  os.write(1, b'lost')\n\
                  os.write(3, b'read %d bytes' % len(os.read(0, 100)))\n";
    let mut child = common::py(script)
        .fds([
            (0, ChildFd::Null),
            (1, ChildFd::Null),
            (3, ChildFd::ParentReads),
        ])
        .spawn()
        .unwrap();
    assert_eq!(child.open_fds().collect::<Vec<_>>(), [3]);
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[3]);
    assert!(out.status().success());
    assert_eq!(out.text(3), "/dev/null\n/dev/null\nread 0 bytes");
}

#[tokio::test]
async fn inherited_fd_stays_open_and_owned_by_the_caller() {
    let (read, write) = cloexec_pipe();
    let raw = write.as_raw_fd();
    let mut child = sh("echo via-inherited >&5")
        .fds([(5, ChildFd::Inherit(raw))])
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    drop(child);
    // SAFETY: F_GETFD only reads flags.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
    assert!(flags >= 0, "the caller's fd is still open");
    assert_eq!(
        flags & libc::FD_CLOEXEC,
        libc::FD_CLOEXEC,
        "and still close-on-exec"
    );
    drop(write);
    assert_eq!(read_to_end(read).await, b"via-inherited\n");
}

#[tokio::test]
async fn one_map_mixing_every_kind_of_child_fd() {
    let (read, write) = cloexec_pipe();
    let script = format!(
        "import os\n\
         os.write(1, os.read(0, 100))\n\
         os.write(4, b'to-inherited')\n\
         os.write(6, b'to-null')\n\
         {}",
        py_list_fds(9)
    );
    let mut child = py(&script)
        .fds([
            (0, ChildFd::ParentWrites),
            (1, ChildFd::ParentReads),
            (4, ChildFd::Inherit(write.as_raw_fd())),
            (6, ChildFd::Null),
            (9, ChildFd::ParentReads),
        ])
        .spawn()
        .unwrap();
    drop(write);
    child.write_stdin(&b"echo me"[..]).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 9]);
    assert!(out.status().success());
    let by_fd: BTreeMap<i32, String> = [1, 9].into_iter().map(|fd| (fd, out.text(fd))).collect();
    assert_eq!(by_fd[&1], "echo me");
    assert_eq!(by_fd[&9], "0 1 4 6 9");
    assert_eq!(read_to_end(read).await, b"to-inherited");
}
