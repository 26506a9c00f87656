//! `ProcessHandle`: signalling, stopping and awaiting a child from other tasks while one task
//! consumes the event stream; `try_status` on the handle and the transport.

use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{Command, Error, Event, ProcessHandle, ProcessTransport};
use tokio::time::timeout;

/// Far above what any step here takes, even on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Reads the stream to its end, returning the bytes of fd 1 and the `Ended` result; tells
/// `ready` once fd 1 has produced something.
async fn consume(
    mut child: ProcessTransport,
    ready: tokio::sync::oneshot::Sender<()>,
) -> (Vec<u8>, Option<Event>) {
    let mut ready = Some(ready);
    let mut out = Vec::new();
    let mut ended = None;
    while let Some(event) = child.next().await {
        match event {
            Event::Data { fd: 1, data } => {
                out.extend_from_slice(&data);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            e @ Event::Ended(_) => ended = Some(e),
            _ => {}
        }
    }
    (out, ended)
}

#[test]
fn handle_is_clone_send_sync_and_static() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<ProcessHandle>();
}

/// Spawns `command` and hands its stream to a task of its own ([`consume`]) once fd 1 has
/// produced something; returns a handle on the child and that task.
async fn consumed_elsewhere(
    command: Command,
) -> (
    ProcessHandle,
    tokio::task::JoinHandle<(Vec<u8>, Option<Event>)>,
) {
    let child = command.spawn().unwrap();
    let handle = child.handle();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(consume(child, ready_tx));
    timeout(LIMIT, ready_rx).await.unwrap().unwrap();
    (handle, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_stops_the_child_from_another_task_while_the_stream_is_consumed() {
    let (handle, reader) = consumed_elsewhere(sh(
        "trap 'echo bye; exit 3' TERM; echo up; while :; do sleep 0.05; done",
    ))
    .await;

    // Stopped from a task that has no access to the transport.
    let stopper = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.terminate(LIMIT).await })
    };
    let status = timeout(LIMIT, stopper).await.unwrap().unwrap().unwrap();
    assert_eq!(status.code(), Some(3), "{status}");

    let (out, ended) = timeout(LIMIT, reader).await.unwrap().unwrap();
    assert_eq!(out, b"up\nbye\n");
    assert_eq!(ended, Some(Event::Ended(Ok(status))));
    assert_eq!(handle.try_status().unwrap(), Some(status));
    assert_eq!(handle.pid(), None);
    assert!(matches!(
        handle.signal(libc::SIGTERM),
        Err(Error::AlreadyExited)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_await_the_exit_alongside_the_stream() {
    let (handle, reader) = consumed_elsewhere(sh("echo up; exec sleep 30")).await;

    // Each waiter registers in turn; none may take the others' wake-up.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.exited().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.try_status().unwrap(), None);
    handle.signal(libc::SIGKILL).unwrap();

    for waiter in waiters {
        let status = timeout(LIMIT, waiter)
            .await
            .expect("a waiter was never woken")
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    let (_, ended) = timeout(LIMIT, reader)
        .await
        .expect("the stream was never woken")
        .unwrap();
    assert!(matches!(ended, Some(Event::Ended(Ok(s))) if s.signal() == Some(libc::SIGKILL)));
}

#[tokio::test]
async fn terminate_on_the_handle_escalates_to_sigkill_after_the_grace() {
    let (handle, reader) =
        consumed_elsewhere(sh("trap '' TERM; echo up; while :; do sleep 0.05; done")).await;

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let status = timeout(LIMIT, handle.terminate(grace))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(started.elapsed() >= grace);
    timeout(LIMIT, reader).await.unwrap().unwrap();
}

#[tokio::test]
async fn handle_outlives_the_transport() {
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let handle = child.handle();
    let pid = child.spawned_pid();
    drop(child);

    assert_eq!(handle.pid(), Some(pid));
    assert_eq!(handle.try_status().unwrap(), None);
    let status = timeout(LIMIT, handle.terminate(LIMIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Its status stays, and a stopped child is never signalled again.
    assert_eq!(
        timeout(LIMIT, handle.exited()).await.unwrap().unwrap(),
        status
    );
    assert!(matches!(
        handle.signal(libc::SIGKILL),
        Err(Error::AlreadyExited)
    ));
}

#[tokio::test]
async fn try_status_never_waits() {
    let mut child = sh("read line; exit 4").spawn().unwrap();
    assert_eq!(child.try_status().unwrap(), None);
    assert_eq!(child.handle().try_status().unwrap(), None);
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(child.try_status().unwrap(), Some(status));
    assert_eq!(child.handle().try_status().unwrap(), Some(status));
}

#[tokio::test]
async fn handle_signals_the_group_and_the_tree() {
    // Without a group of its own, the child has no group the handle may signal.
    let mut plain = Command::new("sleep").arg("30").spawn().unwrap();
    assert!(matches!(
        plain.handle().signal_group(libc::SIGKILL),
        Err(Error::NoProcessGroup)
    ));
    assert_eq!(plain.handle().kill_tree(libc::SIGKILL), 0);
    let status = timeout(LIMIT, plain.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let mut grouped = sh("sleep 30 & sleep 30 & echo up; wait")
        .process_group(0)
        .spawn()
        .unwrap();
    let handle = grouped.handle();
    assert_eq!(handle.process_group(), Some(grouped.spawned_pid() as i32));
    loop {
        match timeout(LIMIT, grouped.next()).await.unwrap() {
            Some(Event::Data { fd: 1, .. }) => break,
            Some(_) => {}
            None => panic!("no output"),
        }
    }
    // The two sleeps and nothing else besides the child.
    assert_eq!(handle.kill_tree(libc::SIGSTOP), 2);
    handle.signal_group(libc::SIGKILL).unwrap();
    let status = timeout(LIMIT, grouped.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// A task's waker, counting how many of these wakers anything still holds.
struct CountedWaker(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl std::task::Wake for CountedWaker {
    fn wake(self: std::sync::Arc<Self>) {}
}

impl Drop for CountedWaker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_wait_on_a_handle_given_up_keeps_nothing_alive() {
    use std::future::Future as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A service that asks a long-lived child's handle "exited yet?" under a timeout, from a
    // fresh task each time: each gives up, and none may be kept (with its task) until the
    // exit. Found by a review: each distinct waiter's waker stayed until the child exited.
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let handle = child.handle();
    let held = std::sync::Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        held.fetch_add(1, Ordering::SeqCst);
        let waker = std::task::Waker::from(std::sync::Arc::new(CountedWaker(held.clone())));
        let mut exited = Box::pin(handle.exited());
        let polled = exited
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());
    }
    assert_eq!(
        held.load(Ordering::SeqCst),
        0,
        "wakers of waits given up are kept"
    );
    // The handle still hears the exit.
    handle.signal(libc::SIGKILL).unwrap();
    let status = timeout(LIMIT, handle.exited()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(child.wait().await.is_ok());
}
