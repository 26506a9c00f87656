//! Section 4: write throughput, 1 MiB writes to `cat` (stdout on /dev/null), on a default pipe
//! and on a 1 MiB one.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::Stdio;

use process_transport::ChildFd;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

use crate::Config;
use crate::common::{GIB_PER_S, MIB, gib_per_s, set_pipe_size, size};
use crate::harness::{Role, contender};
use crate::report::Report;

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== 4. write throughput");
    let (mib, b) = (cfg.transfer_mib, cfg.bulk);
    let bytes = mib * MIB;
    for pipe in [None, Some(MIB)] {
        let label = if pipe.is_some() {
            "1 MiB pipe"
        } else {
            "default 64 KiB pipe"
        };
        let name = format!(
            "write {} to cat >/dev/null, 1 MiB writes, {label}",
            size(mib)
        );
        let contenders = vec![
            contender(Role::Ours, "process-transport write_all", move || {
                gib_per_s(bytes, || rt.block_on(ours_write(mib, pipe)))
            }),
            contender(Role::Tokio, "tokio ChildStdin write_all", move || {
                gib_per_s(bytes, || rt.block_on(tokio_write(mib, pipe)))
            }),
            contender(Role::Std, "std, blocking write_all", move || {
                gib_per_s(bytes, || blocking_write(mib, pipe))
            }),
        ];
        report.race(&name, GIB_PER_S, true, b, contenders);
    }
}

async fn ours_write(mib: usize, pipe: Option<usize>) {
    let chunk = bytes::Bytes::from(vec![0u8; MIB]);
    let mut cmd = process_transport::Command::new("cat");
    cmd.fds([
        (0, ChildFd::ParentWrites),
        (1, ChildFd::Null),
        (2, ChildFd::Null),
    ]);
    if let Some(p) = pipe {
        cmd.pipe_capacity(0, p);
    }
    let mut child = cmd.spawn().expect("spawn cat");
    for _ in 0..mib {
        child.write_all(0, chunk.clone()).await.expect("write");
    }
    assert!(child.wait().await.expect("wait").success());
}

fn cat_std() -> std::process::Command {
    let mut cmd = std::process::Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn tokio_write(mib: usize, pipe: Option<usize>) {
    let chunk = vec![0u8; MIB];
    let mut child = tokio::process::Command::from(cat_std())
        .spawn()
        .expect("spawn cat");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = pipe {
        set_pipe_size(stdin.as_raw_fd(), p);
    }
    for _ in 0..mib {
        stdin.write_all(&chunk).await.expect("write");
    }
    drop(stdin);
    assert!(child.wait().await.expect("wait").success());
}

fn blocking_write(mib: usize, pipe: Option<usize>) {
    let chunk = vec![0u8; MIB];
    let mut child = cat_std().spawn().expect("spawn cat");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = pipe {
        set_pipe_size(stdin.as_raw_fd(), p);
    }
    for _ in 0..mib {
        stdin.write_all(&chunk).expect("write");
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}
