//! Behaviours Twisted's process tests pin down, checked against this crate in our own terms:
//! the staged stdin/stdout/stderr protocol, verbatim arguments, environments, deaths by
//! signal, signal dispositions, fd hygiene, EPIPE after an early close, and a child that
//! closes its output long before it exits.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

use common::{
    LIMIT, Outcome, Rec, collect, fd_report_script, parse_fd_report, parse_status, python,
    record_until, set_nofile_soft, signal_bit, signal_mask,
};
use process_transport::{ChildFd, Command, Error, ProcessTransport};

/// The child reads 4 bytes, echoes them on stdout and closes fd 1; reads 4 more, echoes them
/// on stderr and closes fd 2; reads 4 more and exits 23.
const STAGED: &str = "\
import os, sys
def read(n):
    got = b''
    while len(got) < n:
        chunk = os.read(0, n - len(got))
        if not chunk:
            sys.exit(9)
        got += chunk
    return got
os.write(1, read(4)); os.close(1)
os.write(2, read(4)); os.close(2)
read(4)
sys.exit(23)
";

async fn staged_protocol() {
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", STAGED])
        .spawn()
        .unwrap();
    assert!(child.pid().is_some());
    let mut seen = Outcome::default();

    child.write_stdin(&b"abcd"[..]).unwrap();
    record_until(&mut child, &mut seen, "fd 1 to close", |o| o.is_closed(1)).await;
    assert_eq!(seen.out(1), b"abcd");
    assert_eq!(seen.closes(), [(1, "Eof")]);
    assert!(seen.out(2).is_empty() && !seen.has_exited(), "{seen:?}");

    child.write_stdin(&b"1234"[..]).unwrap();
    record_until(&mut child, &mut seen, "fd 2 to close", |o| o.is_closed(2)).await;
    assert_eq!(seen.out(2), b"1234");
    assert!(!seen.has_exited(), "exited too early: {seen:?}");

    child.write_stdin(&b"wxyz"[..]).unwrap();
    child.close_stdin().unwrap();
    let rest = collect(&mut child, LIMIT).await;
    seen.extend(rest);
    let status = seen.status();
    assert_eq!(status.code(), Some(23));
    assert_eq!(status.signal(), None);
    assert!(seen.is_closed(0), "stdin never reported closed: {seen:?}");
    // Data only on the fds and in the amounts of each stage.
    assert_eq!(seen.data.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(child.pid(), None);
    assert!(matches!(
        child.signal(libc::SIGINT),
        Err(Error::AlreadyExited)
    ));
    assert!(matches!(
        child.signal(libc::SIGKILL),
        Err(Error::AlreadyExited)
    ));
}

#[tokio::test]
async fn staged_protocol_then_already_exited() {
    staged_protocol().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_staged_children_at_once() {
    let tasks: Vec<_> = (0..25).map(|_| tokio::spawn(staged_protocol())).collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn arguments_arrive_verbatim() {
    let args: Vec<OsString> = [
        &b"hello"[..],
        b"\"",
        b" \t|<>^&",
        b"\"\\\"hello\\\"",
        b"\"foo\\ bar baz\\\"\"",
        b"it's",
        b"$HOME `id` $(id) ; rm -rf / && echo *",
        b"",
        b"  leading and trailing  ",
        b"tab\there\nnewline",
        b"back\\slash\\\\",
        b"\xff\xfe not utf-8",
    ]
    .iter()
    .map(|a| OsString::from_vec(a.to_vec()))
    .collect();
    let script = "import os, sys\nos.write(1, b'\\0'.join(os.fsencode(a) for a in sys.argv[1:]))";
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", script])
        .args(&args)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    assert!(
        outcome.out(2).is_empty(),
        "{:?}",
        String::from_utf8_lossy(outcome.out(2))
    );
    let got: Vec<&[u8]> = outcome.out(1).split(|&b| b == 0).collect();
    let want: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn argv0_is_what_was_asked() {
    let mut child = Command::new("/bin/sh")
        .arg0("not-a-shell \"really\"")
        .args(["-c", "printf '%s' \"$0\""])
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success());
    assert_eq!(outcome.out(1), b"not-a-shell \"really\"");
}

/// The environment the child was exec'd with, from /proc/self/environ (not from a program
/// that might add variables of its own, as Python does with LC_CTYPE).
async fn child_environ(cmd: &mut Command) -> BTreeSet<Vec<u8>> {
    let mut child = cmd
        .args(["/proc/self/environ"])
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    outcome
        .out(1)
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn pair(k: &[u8], v: &[u8]) -> Vec<u8> {
    [k, b"=", v].concat()
}

#[tokio::test]
async fn environment_inherited() {
    let got = child_environ(&mut Command::new("/bin/cat")).await;
    let want: BTreeSet<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| pair(k.as_bytes(), v.as_bytes()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test]
async fn environment_inherited_with_changes() {
    let (removed, _) = std::env::vars_os().next().expect("some variable");
    let got = child_environ(
        Command::new("/bin/cat")
            .env("PT_ADDED", "with spaces = and equals")
            .env_remove(&removed),
    )
    .await;
    let mut want: BTreeSet<Vec<u8>> = std::env::vars_os()
        .filter(|(k, _)| *k != removed)
        .map(|(k, v)| pair(k.as_bytes(), v.as_bytes()))
        .collect();
    want.insert(b"PT_ADDED=with spaces = and equals".to_vec());
    assert_eq!(got, want);
}

#[tokio::test]
async fn environment_cleared_is_empty() {
    let mut child = Command::new("/bin/cat")
        .arg("/proc/self/environ")
        .env_clear()
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    assert_eq!(outcome.out(1), b"", "a cleared environment is not empty");
}

#[tokio::test]
async fn environment_custom_is_exactly_that() {
    let got = child_environ(
        Command::new("/bin/cat")
            .env_clear()
            .env("MYENV1", "myvalue1")
            .env("EMPTY", "")
            .env("BYTES", OsString::from_vec(b"\xff\x01".to_vec())),
    )
    .await;
    let want: BTreeSet<Vec<u8>> = [
        b"MYENV1=myvalue1".to_vec(),
        b"EMPTY=".to_vec(),
        b"BYTES=\xff\x01".to_vec(),
    ]
    .into();
    assert_eq!(got, want);
}

/// A child that says it is ready and then blocks reading its stdin.
fn signal_target() -> ProcessTransport {
    Command::new("/bin/sh")
        .args(["-c", "echo 'ok, signal us'; exec cat"])
        .spawn()
        .unwrap()
}

async fn dies_by(sig: i32) {
    let mut child = signal_target();
    let mut seen = Outcome::default();
    record_until(&mut child, &mut seen, "the ready line", |o| {
        o.out(1).ends_with(b"\n")
    })
    .await;
    child.signal(sig).unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    let status = outcome.status();
    assert_eq!(status.signal(), Some(sig), "{status:?}");
    assert_eq!(status.code(), None);
    assert!(libc::WIFSIGNALED(status.raw()));
    assert_eq!(libc::WTERMSIG(status.raw()), sig);
    assert!(matches!(child.signal(sig), Err(Error::AlreadyExited)));
}

#[tokio::test]
async fn death_by_sighup() {
    dies_by(libc::SIGHUP).await;
}

#[tokio::test]
async fn death_by_sigint() {
    dies_by(libc::SIGINT).await;
}

#[tokio::test]
async fn death_by_sigkill() {
    dies_by(libc::SIGKILL).await;
}

#[tokio::test]
async fn death_by_sigterm() {
    dies_by(libc::SIGTERM).await;
}

/// Whether signal `sig` is in the `field` mask (`SigIgn`, `SigBlk`) of a /proc status text.
fn mask_has(status: &str, field: &str, sig: i32) -> bool {
    signal_mask(&parse_status(status), field) & signal_bit(sig) != 0
}

#[tokio::test]
async fn signal_ignored_in_the_parent_is_not_ignored_in_the_child() {
    // This whole test process ignores SIGUSR1 from here on (harmless to the other tests).
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    let mut child = signal_target();
    let mut seen = Outcome::default();
    record_until(&mut child, &mut seen, "the ready line", |o| {
        o.out(1).ends_with(b"\n")
    })
    .await;
    let pid = child.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(mask_has(&mine, "SigIgn", libc::SIGUSR1));
    assert!(!mask_has(&status, "SigIgn", libc::SIGUSR1), "{status}");
    // Rust ignores SIGPIPE in the parent; the child must get the default back.
    assert!(mask_has(&mine, "SigIgn", libc::SIGPIPE));
    assert!(!mask_has(&status, "SigIgn", libc::SIGPIPE), "{status}");
    assert!(!mask_has(&status, "SigBlk", libc::SIGUSR1), "{status}");

    child.signal(libc::SIGUSR1).unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert_eq!(outcome.status().signal(), Some(libc::SIGUSR1));
}

#[tokio::test]
async fn high_unmapped_inheritable_fd_is_absent_in_the_child() {
    let soft = set_nofile_soft(u64::MAX).min(1 << 20);
    let high = i32::try_from(soft).unwrap() - 17;
    let mut fds = [0; 2];
    // SAFETY: valid array; dup2 onto a number far above what the harness uses, without
    // O_CLOEXEC so that only the crate's closing keeps it from the child.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        assert_eq!(libc::dup2(fds[1], high), high);
        assert_eq!(libc::fcntl(high, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
    }
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", &fd_report_script(1)])
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(high);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert!(outcome.status().success(), "{outcome:?}");
    let fds: Vec<i32> = parse_fd_report(outcome.out(1)).into_keys().collect();
    assert_eq!(fds, [0, 1, 2], "fd {high} leaked into the child?");
}

#[tokio::test]
async fn closing_stdout_early_gives_the_child_epipe() {
    // The child waits for a line, then writes to fd 1 until that fails; Python ignores
    // SIGPIPE itself, so the write fails with EPIPE, which it reports with exit code 3.
    let script = "\
import os, sys
sys.stdin.readline()
try:
    for _ in range(100000):
        os.write(1, b'x' * 1000)
except BrokenPipeError as e:
    os.write(2, b'EPIPE %d' % e.errno)
    sys.exit(3)
sys.exit(42)
";
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", script])
        .spawn()
        .unwrap();
    child.close_stdout().unwrap();
    child.write_stdin(&b"go\n"[..]).unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    let status = outcome.status();
    assert_eq!(
        outcome.out(2),
        format!("EPIPE {}", libc::EPIPE).as_bytes(),
        "{outcome:?}"
    );
    assert_eq!(status.code(), Some(3));
    assert!(outcome.out(1).is_empty());
    assert!(outcome.closes().contains(&(1, "Closed")));
}

#[tokio::test]
async fn closing_stdout_early_kills_a_child_that_keeps_sigpipe_default() {
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            "read line; echo never seen; echo still alive >&2; exit 42",
        ])
        .spawn()
        .unwrap();
    child.close_stdout().unwrap();
    child.write_stdin(&b"go\n"[..]).unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert_eq!(
        outcome.status().signal(),
        Some(libc::SIGPIPE),
        "{outcome:?}"
    );
    assert!(outcome.out(1).is_empty() && outcome.out(2).is_empty());
}

#[tokio::test]
async fn child_closing_its_output_then_lingering_still_exits_and_ends() {
    let script = "\
import os, sys, time
sys.stdout.write('here is some text\\n')
sys.stdout.write('goodbye\\n')
sys.stdout.flush()
os.close(1)
os.close(2)
time.sleep(1)
";
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", script])
        .fds([
            (0, ChildFd::ParentWrites),
            (1, ChildFd::ParentReads),
            (2, ChildFd::Inherit(2)),
        ])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    assert_eq!(outcome.out(1), b"here is some text\ngoodbye\n");
    let pos = |what: fn(&Rec) -> bool| outcome.log.iter().position(what).unwrap();
    assert!(
        pos(|r| matches!(r, Rec::Closed(1, _))) < pos(|r| matches!(r, Rec::Exited(_))),
        "{:?}",
        outcome.log
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}
