//! The callback style: Twisted's `ProcessProtocol`, driven by `ProcessTransport::run`.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::WaitError;
use crate::event::{CloseReason, Event};
use crate::exit_status::ExitStatus;
use crate::transport::ProcessTransport;

/// Callbacks for one child, as in Twisted's `IProcessProtocol`. Every method has a default,
/// so implement only what you need. Callbacks get the transport to write, close, pause or
/// signal from inside them.
///
/// The default [`child_data_received`](ProcessProtocol::child_data_received) routes fd 1 to
/// [`out_received`](ProcessProtocol::out_received) and fd 2 to
/// [`err_received`](ProcessProtocol::err_received) and drops other fds; the default
/// [`child_connection_lost`](ProcessProtocol::child_connection_lost) routes fds 0, 1 and 2 to
/// the `in_`/`out_`/`err_connection_lost` methods. An implementation that overrides either
/// to handle other fds keeps that routing by passing the fds it does not handle to
/// [`route_child_data`] or [`route_child_connection_lost`]:
///
/// ```
/// use bytes::Bytes;
/// use process_transport::{route_child_data, ProcessProtocol, ProcessTransport};
///
/// #[derive(Default)]
/// struct WithStatus {
///     output: Vec<u8>,
///     status: Vec<u8>,
/// }
///
/// impl ProcessProtocol for WithStatus {
///     fn child_data_received(&mut self, transport: &mut ProcessTransport, fd: i32, data: Bytes) {
///         match fd {
///             3 => self.status.extend_from_slice(&data),
///             // Still reaches `out_received` and `err_received`.
///             _ => route_child_data(self, transport, fd, data),
///         }
///     }
///
///     fn out_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
///         self.output.extend_from_slice(&data);
///     }
/// }
/// ```
///
/// Order: `connection_made` first; per fd, data before its connection-lost;
/// `process_exited` once, when the child is reaped; `process_ended` once and last.
pub trait ProcessProtocol {
    /// The transport is ready; called first, before any other callback.
    fn connection_made(&mut self, transport: &mut ProcessTransport) {
        let _ = transport;
    }

    /// The child wrote `data` to child fd `fd`. By default: [`route_child_data`].
    fn child_data_received(&mut self, transport: &mut ProcessTransport, fd: i32, data: Bytes) {
        route_child_data(self, transport, fd, data);
    }

    /// The child wrote `data` to its stdout (fd 1).
    fn out_received(&mut self, transport: &mut ProcessTransport, data: Bytes) {
        let _ = (transport, data);
    }

    /// The child wrote `data` to its stderr (fd 2).
    fn err_received(&mut self, transport: &mut ProcessTransport, data: Bytes) {
        let _ = (transport, data);
    }

    /// The pipe at child fd `fd` closed. By default: [`route_child_connection_lost`].
    fn child_connection_lost(
        &mut self,
        transport: &mut ProcessTransport,
        fd: i32,
        reason: CloseReason,
    ) {
        route_child_connection_lost(self, transport, fd, reason);
    }

    /// The child's stdin pipe closed.
    fn in_connection_lost(&mut self, transport: &mut ProcessTransport) {
        let _ = transport;
    }

    /// The child's stdout pipe closed.
    fn out_connection_lost(&mut self, transport: &mut ProcessTransport) {
        let _ = transport;
    }

    /// The child's stderr pipe closed.
    fn err_connection_lost(&mut self, transport: &mut ProcessTransport) {
        let _ = transport;
    }

    /// The writer at child fd `fd` is above its high-water mark: stop producing for it.
    fn pause_writing(&mut self, transport: &mut ProcessTransport, fd: i32) {
        let _ = (transport, fd);
    }

    /// The writer at child fd `fd` has drained: produce again.
    fn resume_writing(&mut self, transport: &mut ProcessTransport, fd: i32) {
        let _ = (transport, fd);
    }

    /// The child has been reaped; pipes may still be open.
    fn process_exited(
        &mut self,
        transport: &mut ProcessTransport,
        status: Result<ExitStatus, WaitError>,
    ) {
        let _ = (transport, status);
    }

    /// The child has been reaped and every pipe is closed. The last callback.
    fn process_ended(&mut self, status: Result<ExitStatus, WaitError>) {
        let _ = status;
    }
}

/// What the default [`child_data_received`](ProcessProtocol::child_data_received) does: data
/// on fd 1 goes to [`out_received`](ProcessProtocol::out_received), on fd 2 to
/// [`err_received`](ProcessProtocol::err_received), and on any other fd is dropped.
///
/// Call it from an overriding `child_data_received` for the fds it leaves to the defaults.
pub fn route_child_data<P: ProcessProtocol + ?Sized>(
    protocol: &mut P,
    transport: &mut ProcessTransport,
    fd: i32,
    data: Bytes,
) {
    match fd {
        1 => protocol.out_received(transport, data),
        2 => protocol.err_received(transport, data),
        _ => {}
    }
}

/// What the default [`child_connection_lost`](ProcessProtocol::child_connection_lost) does:
/// a close of fd 0, 1 or 2 goes to [`in_connection_lost`](ProcessProtocol::in_connection_lost),
/// [`out_connection_lost`](ProcessProtocol::out_connection_lost) or
/// [`err_connection_lost`](ProcessProtocol::err_connection_lost) (which do not get the
/// reason); a close of any other fd is dropped.
///
/// Call it from an overriding `child_connection_lost` for the fds it leaves to the defaults.
pub fn route_child_connection_lost<P: ProcessProtocol + ?Sized>(
    protocol: &mut P,
    transport: &mut ProcessTransport,
    fd: i32,
    reason: CloseReason,
) {
    let _ = reason;
    match fd {
        0 => protocol.in_connection_lost(transport),
        1 => protocol.out_connection_lost(transport),
        2 => protocol.err_connection_lost(transport),
        _ => {}
    }
}

impl ProcessTransport {
    /// Drives `protocol` until the child has ended and returns it with the final status.
    ///
    /// Spawn it as a task (`tokio::spawn(transport.run(protocol))`) to run it in the
    /// background, as Twisted's reactor does.
    pub async fn run<P: ProcessProtocol>(
        mut self,
        mut protocol: P,
    ) -> (P, Result<ExitStatus, WaitError>) {
        protocol.connection_made(&mut self);
        while let Some(event) = self.next().await {
            match event {
                Event::Data { fd, data } => protocol.child_data_received(&mut self, fd, data),
                Event::Closed { fd, reason } => {
                    protocol.child_connection_lost(&mut self, fd, reason)
                }
                Event::WritePaused { fd } => protocol.pause_writing(&mut self, fd),
                Event::WriteResumed { fd } => protocol.resume_writing(&mut self, fd),
                Event::Exited(status) => protocol.process_exited(&mut self, status),
                Event::Ended(status) => {
                    protocol.process_ended(status);
                    return (protocol, status);
                }
            }
        }
        // The stream yields `Ended` before it finishes, so this is not reached.
        let status = self.final_status();
        (protocol, status)
    }
}
