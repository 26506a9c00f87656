//! Section 3: read throughput from `dd bs=1M` writing to fd 1 or fd 3, on a default pipe and
//! on a 1 MiB one; the ceiling is blocking 1 MiB reads.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;

use futures::StreamExt;
use process_transport::{ChildFd, Event};
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

use crate::Config;
use crate::common::{GIB_PER_S, MIB, gib_per_s, set_pipe_size, size};
use crate::harness::{Role, contender};
use crate::report::Report;

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== 3. read throughput");
    let (mib, b) = (cfg.transfer_mib, cfg.bulk);
    let bytes = mib * MIB;
    let ours = |fd3, pipe| move || gib_per_s(bytes, || rt.block_on(ours_read(mib, fd3, pipe)));
    let tokio = |pipe| move || gib_per_s(bytes, || rt.block_on(tokio_read(mib, pipe)));
    let blocking = |read, pipe| move || gib_per_s(bytes, || blocking_read(mib, read, pipe));

    let name = format!("read {} from dd, fd 1, default 64 KiB pipe", size(mib));
    let contenders = vec![
        contender(Role::Ours, "process-transport", ours(false, None)),
        contender(Role::Tokio, "tokio ChildStdout, 64 KiB reads", tokio(None)),
        contender(
            Role::Std,
            "std, blocking 64 KiB reads",
            blocking(64 * 1024, None),
        ),
    ];
    report.race(&name, GIB_PER_S, true, b, contenders);

    let name = format!("read {} from dd, fd 1, 1 MiB pipe", size(mib));
    let contenders = vec![
        contender(
            Role::Ours,
            "process-transport, pipe_capacity 1 MiB",
            ours(false, Some(MIB)),
        ),
        contender(
            Role::Tokio,
            "tokio ChildStdout, 64 KiB reads",
            tokio(Some(MIB)),
        ),
        contender(
            Role::Floor,
            "blocking 1 MiB reads",
            blocking(MIB, Some(MIB)),
        ),
    ];
    report.race(&name, GIB_PER_S, true, b, contenders);

    for pipe in [None, Some(MIB)] {
        let label = if pipe.is_some() {
            "1 MiB pipe"
        } else {
            "default 64 KiB pipe"
        };
        let name = format!("read {} from dd, fd 3, {label}", size(mib));
        report.race(
            &name,
            GIB_PER_S,
            true,
            b,
            vec![contender(Role::Ours, "process-transport", ours(true, pipe))],
        );
        report.note(&name, "std/tokio: no fd 3 without pre_exec".into());
    }
}

fn dd_args(mib: usize, to_fd3: bool) -> Vec<String> {
    let mut args: Vec<String> = ["if=/dev/zero", "bs=1M", "status=none"]
        .map(String::from)
        .into();
    args.push(format!("count={mib}"));
    if to_fd3 {
        args.push("of=/dev/fd/3".into());
    }
    args
}

/// Reads every `Data` event of `dd` writing to fd 1 or fd 3.
async fn ours_read(mib: usize, to_fd3: bool, pipe: Option<usize>) {
    let fd = if to_fd3 { 3 } else { 1 };
    let mut cmd = process_transport::Command::new("dd");
    cmd.args(dd_args(mib, to_fd3))
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .fd(fd, ChildFd::ParentReads);
    if let Some(p) = pipe {
        cmd.pipe_capacity(fd, p);
    }
    let mut child = cmd.spawn().expect("spawn dd");
    let mut total = 0;
    while let Some(event) = child.next().await {
        match event {
            Event::Data { data, .. } => total += data.len(),
            Event::Ended(status) => assert!(status.expect("status").success()),
            _ => {}
        }
    }
    assert_eq!(total, mib * MIB);
}

fn dd_std(mib: usize) -> std::process::Command {
    let mut cmd = std::process::Command::new("dd");
    cmd.args(dd_args(mib, false))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

async fn tokio_read(mib: usize, pipe: Option<usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut child = tokio::process::Command::from(dd_std(mib))
        .spawn()
        .expect("spawn dd");
    let mut out = child.stdout.take().unwrap();
    if let Some(p) = pipe {
        set_pipe_size(out.as_raw_fd(), p);
    }
    let mut total = 0;
    loop {
        match out.read(&mut buf).await.expect("read") {
            0 => break,
            n => total += n,
        }
    }
    assert!(child.wait().await.expect("wait").success());
    assert_eq!(total, mib * MIB);
}

fn blocking_read(mib: usize, read_size: usize, pipe: Option<usize>) {
    let mut buf = vec![0u8; read_size];
    let mut child = dd_std(mib).spawn().expect("spawn dd");
    let mut out = child.stdout.take().unwrap();
    if let Some(p) = pipe {
        set_pipe_size(out.as_raw_fd(), p);
    }
    let mut total = 0;
    loop {
        match out.read(&mut buf).expect("read") {
            0 => break,
            n => total += n,
        }
    }
    assert!(child.wait().expect("wait").success());
    assert_eq!(total, mib * MIB);
}
