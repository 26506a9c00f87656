//! Concurrency: 100 children at once on a multi-thread runtime, with every byte accounted
//! for in both directions and every exit code reported.

mod common;

use futures::StreamExt;
use process_transport::{Command, Event};

use common::{Outcome, record, within};

/// A payload unique to child `i`: 64 KiB plus `i` bytes of a pattern seeded by `i`.
fn payload(i: usize) -> Vec<u8> {
    let mut state = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..64 * 1024 + i)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_children_every_byte_accounted_for() {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let mut child = Command::new("sh")
                    .args([
                        "-c",
                        "cat; printf 'done-%s' \"$1\" >&2; exit $(($1 % 7))",
                        "sh",
                    ])
                    .arg(i.to_string())
                    .spawn()
                    .unwrap();
                let input = payload(i);
                child.write_stdin(input.clone()).unwrap();
                child.close_stdin().unwrap();
                let mut out = Outcome::default();
                within("one of 100 children", async {
                    while let Some(event) = child.next().await {
                        if let Event::Exited(_) = event {
                            assert_eq!(child.pid(), None);
                        }
                        if record(&mut out, event) {
                            break;
                        }
                    }
                })
                .await;
                (i, input, out)
            })
        })
        .collect();

    let mut total = 0;
    for task in tasks {
        let (i, input, out) = task.await.unwrap();
        out.assert_well_ordered(&[0, 1, 2]);
        assert_eq!(out.status().code(), Some((i % 7) as i32), "child {i}");
        assert!(
            out.data[&1] == input,
            "child {i}: stdout differs from its input"
        );
        assert_eq!(out.text(2), format!("done-{i}"), "child {i}");
        total += out.data[&1].len();
    }
    assert_eq!(total, (0..100).map(|i| 64 * 1024 + i).sum::<usize>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_short_lived_children_all_reaped_with_their_codes() {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let child = Command::new("sh")
                    .args(["-c", "exit $1", "sh"])
                    .arg((i % 256).to_string())
                    .fds([])
                    .spawn()
                    .unwrap();
                (i, within("short child", child).await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        assert_eq!(status.code(), Some(i % 256));
    }
}
