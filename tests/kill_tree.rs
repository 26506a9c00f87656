//! `kill_tree` reaches every descendant, including ones that left the child's process group
//! and ones whose parent already exited.

mod common;

use std::time::Duration;

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event};

use common::is_alive;

#[tokio::test]
async fn kill_tree_leaves_no_descendant_alive() {
    // The child starts a sleeper, a sleeper in its own session (outside the group), and a
    // sub-shell that starts a sleeper and exits (orphaning it); it prints all their pids.
    let script = r#"
        sleep 100 & a=$!
        setsid sleep 100 & b=$!
        sh -c 'sleep 100 & echo $!' > /tmp/pt-orphan-$$
        c=$(cat /tmp/pt-orphan-$$); rm -f /tmp/pt-orphan-$$
        echo "$a $b $c"
        exec sleep 100
    "#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        match tokio::time::timeout(Duration::from_secs(10), child.next()).await {
            Ok(Some(Event::Data { fd: 1, data })) => line.extend_from_slice(&data),
            Ok(Some(_)) => {}
            other => panic!("no pids from the child: {other:?}"),
        }
    }
    let pids: Vec<i32> = String::from_utf8(line)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| is_alive(p)));

    let signalled = child.kill_tree(libc::SIGKILL);
    assert!(signalled >= 2, "signalled {signalled}");
    let status = tokio::time::timeout(Duration::from_secs(10), child)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // The setsid'd sleeper is a direct child of the shell, so it is found by parentage; the
    // orphan stayed in the group.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for pid in pids {
        assert!(!is_alive(pid), "descendant {pid} survived");
    }
}
