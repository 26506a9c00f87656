//! A Tokio-native subprocess transport: spawn a child with **any** file descriptors wired to
//! pipes, and consume its output as a stream of events, through Twisted-style callbacks, or by
//! awaiting its exit status.
//!
//! ```
//! use futures::StreamExt;
//! use process_transport::{ChildFd, Command, Event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), process_transport::Error> {
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
//!   once the child has exec'd. Failures come back as [`Error::Spawn`] naming the failed
//!   step. The parent never `fork`s: the child is a `clone(CLONE_VM | CLONE_VFORK)` that runs
//!   only async-signal-safe steps, so spawning costs the same from a 4 GiB parent.
//! - The transport is a [`Stream`](futures_core::Stream) of [`Event`]s; or
//!   [`ProcessTransport::run`] drives a [`ProcessProtocol`]; or `.await` gives the
//!   [`ExitStatus`].
//! - A single background reaper thread collects exit statuses of this crate's children only
//!   (never `waitpid(-1)`), so it coexists with `tokio::process` and `std::process`, and it
//!   outlives any one runtime.

#![warn(missing_docs)]

mod command;
mod error;
mod event;
mod exit_status;
pub mod fd_plan;
mod io;
mod pipe;
mod protocol;
mod reaper;
mod spawn;
mod sys;
mod transport;
mod tree;

pub use command::{ChildFd, Command, PtySize};
pub use error::{Error, Field, InvalidInput, SpawnStep, WaitError};
pub use event::{CloseReason, Event};
pub use exit_status::{ExitStatus, ResourceUsage};
pub use io::{PipeReader, PipeWriter};
pub use pipe::WriteFlow;
pub use protocol::ProcessProtocol;
pub use spawn::spawn_process;
pub use transport::ProcessTransport;
