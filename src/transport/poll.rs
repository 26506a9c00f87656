//! The event machine: one poll flushes writers, notices the exit, reads one chunk, applies
//! the wait delay, and hands out the first queued event that a pause does not hold back.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::ProcessTransport;
use crate::event::{CloseReason, Event};
use crate::pipe::{FlowChange, Half, PipeState, ReadOutcome, Reads};

impl ProcessTransport {
    /// Polls for the next event: flushes writers, notices closes and the exit, reads one
    /// chunk from the next ready reader (round robin), and yields `Ended` last, then `None`.
    /// Events a `wait` came across come first.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.passed_over > 0 {
            self.passed_over -= 1;
            return Poll::Ready(self.pending.pop_front());
        }
        self.poll_event_reading(cx, Reads::All)
    }

    /// [`poll_event`](Self::poll_event), reading only the readers `reads` says.
    pub(super) fn poll_event_reading(
        &mut self,
        cx: &mut Context<'_>,
        reads: Reads,
    ) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.next_pending() {
                return Poll::Ready(Some(event));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            // Whatever is queued now is held back by a pause, or was passed over by a wait.
            let held = self.pending.len();
            self.poll_writers(cx);
            self.poll_reaped(cx);
            self.poll_readers(cx, reads);
            self.poll_wait_delay(cx);
            if self.pending.len() == held {
                // Held events keep `Ended` back: it comes last.
                if held == self.passed_over as usize
                    && self.exit_seen.is_some()
                    && !self.pipes.any_open()
                {
                    self.ended = true;
                    let result = self.final_status();
                    tracing::debug!(?result, "process ended");
                    return Poll::Ready(Some(Event::Ended(result)));
                }
                return Poll::Pending;
            }
        }
    }

    /// Closes the pipe at `fd` for `reason`, with its `Closed` event, unless it is already
    /// closed or taken out.
    pub(super) fn close_pipe(&mut self, fd: i32, reason: CloseReason) {
        if self.pipes.close(fd) {
            tracing::trace!(fd, ?reason, "pipe closed");
            self.pending.push_back(Event::Closed { fd, reason });
        }
    }

    /// Ends one half of the pipe at `fd` for `reason`: the whole pipe, with its `Closed`
    /// event, unless it is a socket whose other half is still open.
    pub(super) fn end_half(&mut self, fd: i32, half: Half, reason: CloseReason) {
        if let Some(reason) = self.pipes.end_half(fd, half, reason) {
            tracing::trace!(fd, ?reason, "pipe closed");
            self.pending.push_back(Event::Closed { fd, reason });
        }
    }

    /// Flushes every writer, noticing resumes and closes, and has the taken pipes wake this
    /// task when their handles close them.
    fn poll_writers(&mut self, cx: &mut Context<'_>) {
        let mut ended = Vec::new();
        for pipe in self.pipes.iter_mut() {
            let fd = pipe.child_fd();
            let writer = match &mut pipe.state {
                PipeState::Writer(w) => w,
                PipeState::Duplex(d) => match &mut d.writer {
                    Some(w) => w,
                    None => continue,
                },
                PipeState::Taken(taken) => {
                    taken.register(cx);
                    continue;
                }
                PipeState::Reader(_) | PipeState::Closed => continue,
            };
            let (done, change) = (writer.poll_done(cx), writer.check_resumed());
            if change == FlowChange::Resumed {
                self.pending.push_back(Event::WriteResumed { fd });
            }
            if let Poll::Ready(reason) = done {
                ended.push((fd, reason));
            }
        }
        for (fd, reason) in ended {
            self.end_half(fd, Half::Write, reason);
        }
    }

    pub(super) fn poll_reaped(&mut self, cx: &mut Context<'_>) {
        if self.exit_seen.is_some() {
            return;
        }
        if let Poll::Ready(result) = self.exit_watch.poll_exit(&self.exit, cx) {
            self.exit_seen = Some(result);
            self.pty_master = None;
            self.pipes.child_reaped();
            tracing::debug!(?result, "process exited");
            self.pending.push_back(Event::Exited(result));
        }
    }

    /// Reads one chunk from the next ready reader, or closes the reader that ended.
    fn poll_readers(&mut self, cx: &mut Context<'_>, reads: Reads) {
        let Poll::Ready((fd, outcome)) = self.pipes.poll_read_next(cx, reads) else {
            return;
        };
        // A close is queued behind what this poll queued before it, keeping the order.
        match outcome {
            ReadOutcome::Data(data) => self.pending.push_back(Event::Data { fd, data }),
            ReadOutcome::Eof => self.end_half(fd, Half::Read, CloseReason::Eof),
            ReadOutcome::Failed(e) => {
                self.end_half(fd, Half::Read, CloseReason::Error(Arc::new(e)));
            }
        }
    }

    fn poll_wait_delay(&mut self, cx: &mut Context<'_>) {
        let Some(delay) = self.wait_delay else { return };
        if self.exit_seen.is_none() || !self.pipes.any_open() {
            return;
        }
        let timer = self
            .wait_delay_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if timer.as_mut().poll(cx).is_ready() {
            for fd in self.pipes.live_fds() {
                self.close_pipe(fd, CloseReason::WaitDelay);
            }
            self.wait_delay = None;
        }
    }

    /// Whether the queued event at `i` is held back: data of a paused pipe, and that pipe's
    /// `Closed` when such data is queued ahead of it (it must stay behind its data).
    fn is_held(&self, i: usize) -> bool {
        let paused = |fd: i32| self.pipes.is_paused(fd);
        match self.pending.get(i) {
            Some(Event::Data { fd, .. }) => paused(*fd),
            Some(Event::Closed { fd, .. }) => {
                paused(*fd)
                    && self
                        .pending
                        .range(..i)
                        .any(|e| matches!(e, Event::Data { fd: data_fd, .. } if data_fd == fd))
            }
            _ => false,
        }
    }

    /// The first queued event that is neither passed over by a wait nor held back. What is
    /// held of a pipe is its first events, so each pipe's events keep their order.
    fn next_pending(&mut self) -> Option<Event> {
        let first = self.passed_over as usize;
        let i = (first..self.pending.len()).find(|&i| !self.is_held(i))?;
        self.pending.remove(i)
    }
}
