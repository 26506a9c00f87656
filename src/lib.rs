//! A Tokio-native subprocess transport for **Linux**: spawn a child with **any** file
//! descriptors wired to pipes, and consume its output as a stream of events, through
//! Twisted-style callbacks, or by awaiting its exit status.
//!
//! **Linux only.** Spawning relies on `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, pidfds,
//! `prctl` and `/proc`; building for any other target stops with a single compile error.
//!
//! ```
//! use futures::StreamExt;
//! use process_transport::{ChildFd, Command, Event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A child that writes output on fd 1 and a status line on fd 3.
//! let mut child = Command::new("sh")
//!     .args(["-c", "echo hello; echo 'status: ok' >&3"])
//!     .fd(3, ChildFd::ParentReads)
//!     .spawn()?;
//!
//! let (mut out, mut status) = (Vec::new(), Vec::new());
//! while let Some(event) = child.next().await {
//!     match event {
//!         Event::Data { fd: 1, data } => out.extend_from_slice(&data),
//!         Event::Data { fd: 3, data } => status.extend_from_slice(&data),
//!         Event::Ended(exit) => assert!(exit.unwrap().success()),
//!         _ => {}
//!     }
//! }
//! assert_eq!(out, b"hello\n");
//! assert_eq!(status, b"status: ok\n");
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//!
//! - [`Command`] describes the child: program, arguments, environment, working directory,
//!   credentials, and the fd map from child fd numbers to [`ChildFd`]s. Only mapped fds
//!   exist in the child.
//! - [`spawn_process`] (or [`Command::spawn`]) starts it and returns a [`ProcessTransport`]
//!   once the child has exec'd. Failures come back as a [`SpawnError`]: bad input, or
//!   [`SpawnError::Spawn`] naming the failed step. The parent never `fork`s: the child is a
//!   `clone(CLONE_VM | CLONE_VFORK)` that runs only async-signal-safe steps, so spawning
//!   costs the same from a 4 GiB parent. The call blocks the calling thread only until the
//!   child has exec'd (well under a millisecond).
//! - The transport is a [`Stream`](futures_core::Stream) of [`Event`]s; or
//!   [`ProcessTransport::run`] drives a [`ProcessProtocol`]; or `.await` gives the
//!   [`ExitStatus`]. Single pipes can be taken out as [`PipeReader`] / [`PipeWriter`]
//!   (`AsyncRead`/`Stream`, `AsyncWrite`/`Sink`).
//! - [`ProcessTransport::handle`] gives a [`ProcessHandle`] to signal, stop or await the child
//!   from other tasks while one reads the events. [`Command::output`] (or
//!   [`ProcessTransport::output`]) collects every fd the parent reads into an [`Output`], with
//!   a per-fd cap and a deadline that keeps what was read; [`KillTarget`] says what
//!   `kill_on_drop`, `terminate` and that deadline reach.
//! - A single background reaper thread collects exit statuses of this crate's children only
//!   (never `waitpid(-1)`), so it coexists with `tokio::process` and `std::process`, and it
//!   outlives any one runtime. A transport awaited in a task, or on a current-thread
//!   runtime, has its child's status collected in its runtime's reactor, one wake-up sooner.
//!
//! Operations on a running transport fail with [`Error`]. The two errors do not convert into
//! each other, but both convert into `std::io::Error` and box as `dyn std::error::Error`, so
//! one function can `?` both.
//!
//! Spawn inside a Tokio runtime with I/O enabled; [`Command::wait_delay`],
//! [`ProcessTransport::terminate`] and [`Command::timeout`] also need its timer. Signals are plain numbers
//! (`libc::SIGTERM`) or `nix::sys::signal::Signal`s (see [`Signal`]).
//!
//! # Callbacks
//!
//! ```
//! use bytes::Bytes;
//! use process_transport::{Command, ProcessProtocol, ProcessTransport};
//!
//! /// Feeds the child a line, then counts the bytes it writes to stdout.
//! #[derive(Default)]
//! struct Counter {
//!     bytes: usize,
//! }
//!
//! impl ProcessProtocol for Counter {
//!     fn connection_made(&mut self, transport: &mut ProcessTransport) {
//!         transport.write_stdin("hello\n").unwrap();
//!         transport.close_stdin().unwrap();
//!     }
//!
//!     fn out_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
//!         self.bytes += data.len();
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let child = Command::new("cat").spawn()?;
//! let (counter, status) = child.run(Counter::default()).await;
//! assert_eq!(counter.bytes, 6);
//! assert!(status?.success());
//! # Ok(())
//! # }
//! ```
//!
//! # Awaiting the exit status
//!
//! ```
//! use std::time::Duration;
//! use process_transport::Command;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Output is drained and discarded, so even a chatty child cannot block.
//! let status = Command::new("sh").args(["-c", "seq 100000; exit 3"]).spawn()?.await?;
//! assert_eq!(status.code(), Some(3));
//!
//! // A timeout, then a graceful stop: SIGTERM, and SIGKILL after a grace period.
//! let mut slow = Command::new("sleep").arg("30").spawn()?;
//! if tokio::time::timeout(Duration::from_millis(50), slow.wait()).await.is_err() {
//!     let status = slow.terminate(Duration::from_secs(1)).await?;
//!     assert_eq!(status.signal(), Some(libc::SIGTERM));
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// The project's conventions, checked by the compiler: unsafe code only under `sys` (where it
// is allowed again), each block with its SAFETY comment, Debug on every public type, and
// `pub` only for what the crate exports.
#![deny(unsafe_code)]
#![deny(missing_debug_implementations, unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Everything below is gated on Linux, so another target gets this one error and nothing else.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "process-transport supports Linux only: it spawns children with clone(CLONE_PIDFD), \
     signals them through pidfds and inspects them through /proc, which this target lacks"
);

#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod command;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod event;
#[cfg(target_os = "linux")]
mod exit_status;
#[cfg(target_os = "linux")]
mod exit_watch;
// Its items are `pub` only for the fuzz module, which exists only when fuzzing.
#[cfg(target_os = "linux")]
#[cfg_attr(not(fuzzing), allow(unreachable_pub))]
mod fd_plan;
#[cfg(target_os = "linux")]
mod fd_slots;
#[cfg(all(target_os = "linux", fuzzing))]
pub mod fuzz;
#[cfg(target_os = "linux")]
mod handle;
#[cfg(target_os = "linux")]
mod kill_target;
#[cfg(target_os = "linux")]
mod output;
#[cfg(target_os = "linux")]
mod pipe;
#[cfg(target_os = "linux")]
mod protocol;
#[cfg(target_os = "linux")]
mod reaper;
#[cfg(target_os = "linux")]
mod signal;
#[cfg(target_os = "linux")]
mod spawn;
// The one module where unsafe code is allowed.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys;
#[cfg(target_os = "linux")]
mod transport;
#[cfg(target_os = "linux")]
mod tree;

#[cfg(target_os = "linux")]
pub use self::{
    cgroup::{CgroupUsage, cgroup2_mount},
    command::{ChildFd, Command, PtySize},
    error::{Error, Field, InvalidInput, RunError, SpawnError, SpawnStep, WaitError},
    event::{CloseReason, Event},
    exit_status::{ExitStatus, ResourceUsage},
    handle::ProcessHandle,
    kill_target::KillTarget,
    output::{Collect, Output},
    pipe::{PipeReader, PipeWriter, WriteFlow},
    protocol::{ProcessProtocol, route_child_connection_lost, route_child_data},
    signal::Signal,
    spawn::spawn_process,
    transport::ProcessTransport,
};
