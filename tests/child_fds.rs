//! Owned fds and shared fds (`2>&1`), observed from inside the child.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event, ProcessTransport, SpawnError, SpawnStep};
use tokio::sync::Mutex;

/// The tests compare this process's fd table before and after, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Data per fd, the order of the fds that sent data, and the exit code.
async fn run(mut child: ProcessTransport) -> (BTreeMap<i32, String>, Option<i32>) {
    let mut data: BTreeMap<i32, String> = BTreeMap::new();
    let mut code = None;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = child.next().await {
            match event {
                Event::Data { fd, data: bytes } => data
                    .entry(fd)
                    .or_default()
                    .push_str(&String::from_utf8_lossy(&bytes)),
                Event::Ended(status) => code = status.unwrap().code(),
                _ => {}
            }
        }
    })
    .await
    .expect("the child ends");
    (data, code)
}

fn open_fds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.retain(|&fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
    fds.sort();
    fds
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

#[tokio::test]
async fn an_owned_fd_reaches_the_child_and_closes_with_the_command() {
    let _serial = SERIAL.lock().await;
    let (read, write) = pipe();
    let write_number = write.as_raw_fd();
    let mut command = sh("echo through-owned >&5");
    command.fd(5, ChildFd::owned(write));
    let (_, code) = run(command.spawn().unwrap()).await;
    assert_eq!(code, Some(0));
    // A clone of the command shares the fd; a second spawn still has it.
    let again = command.clone();
    drop(command);
    let (_, code) = run(again.spawn().unwrap()).await;
    assert_eq!(code, Some(0));
    assert!(
        open_fds().contains(&write_number),
        "the clone still holds the fd"
    );
    drop(again);
    // The last command is gone, and so is the parent's copy: the reader sees both lines, then
    // end of file (a leaked write end would block this read forever).
    let mut text = String::new();
    let reader = std::thread::spawn(move || {
        std::fs::File::from(read).read_to_string(&mut text).unwrap();
        text
    });
    let text = tokio::task::spawn_blocking(move || reader.join().unwrap());
    let text = tokio::time::timeout(Duration::from_secs(10), text)
        .await
        .expect("EOF once the last Command is dropped")
        .unwrap();
    assert_eq!(text, "through-owned\nthrough-owned\n");
}

#[tokio::test]
async fn same_as_interleaves_stderr_into_stdout_in_write_order() {
    let _serial = SERIAL.lock().await;
    let mut command = sh("echo one; echo two >&2; echo three; echo four >&2");
    command.stderr(ChildFd::SameAs(1));
    let child = command.spawn().unwrap();
    assert_eq!(
        child.open_fds().collect::<Vec<_>>(),
        [0, 1],
        "one pipe for both fds"
    );
    let (data, code) = run(child).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        data.get(&1).map(String::as_str),
        Some("one\ntwo\nthree\nfour\n")
    );
    assert!(!data.contains_key(&2), "no events of their own for fd 2");
}

#[tokio::test]
async fn same_as_shares_the_file_itself_not_a_copy() {
    let _serial = SERIAL.lock().await;
    // Both fds refer to one open file description: same pipe inode, and a shared offset for
    // a file (so `2>&1` into a file does not overwrite).
    let mut command = sh(
        "[ \"$(readlink /proc/$$/fd/1)\" = \"$(readlink /proc/$$/fd/3)\" ] && \
         [ \"$(readlink /proc/$$/fd/7)\" = /dev/null ] && [ \"$(readlink /proc/$$/fd/8)\" = /dev/null ]",
    );
    command
        .fd(3, ChildFd::SameAs(1))
        .fd(7, ChildFd::Null)
        // A chain: 8 -> 9 -> 7.
        .fd(8, ChildFd::SameAs(9))
        .fd(9, ChildFd::SameAs(7));
    let (_, code) = run(command.spawn().unwrap()).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn same_as_an_unmapped_fd_or_a_loop_is_a_typed_error_that_leaves_nothing() {
    let _serial = SERIAL.lock().await;
    let before = open_fds();
    for (fds, failed_fd) in [
        (vec![(1, ChildFd::ParentReads), (2, ChildFd::SameAs(5))], 2),
        (
            vec![
                (1, ChildFd::ParentReads),
                (3, ChildFd::SameAs(4)),
                (4, ChildFd::SameAs(3)),
            ],
            3,
        ),
        (vec![(6, ChildFd::SameAs(6))], 6),
    ] {
        let mut command = Command::new("true");
        command.fds(fds);
        match command.spawn() {
            Err(SpawnError::Spawn { step, source, .. }) => {
                assert_eq!(step, SpawnStep::PlaceFd(failed_fd));
                assert_eq!(source.raw_os_error(), Some(libc::EBADF));
            }
            other => panic!("expected a PlaceFd error, got {other:?}"),
        }
    }
    // Other tests' runtimes come and go meanwhile, with their epoll and event fds: what must
    // not appear is a pipe or /dev/null, the fds a failed spawn would leak.
    let leaked: Vec<String> = open_fds()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("pipe:") || target == "/dev/null")
        .collect();
    assert_eq!(leaked, Vec::<String>::new(), "no fd left behind");
}
