//! Recording what a transport reports: one recorder, [`Outcome`], filled event by event with
//! [`record`] or by draining a transport to its end with [`run_to_end`] / [`collect`], which
//! check the ordering guarantees the stream itself promises on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use process_transport::{CloseReason, Command, Event, ExitStatus, ProcessTransport, WaitError};

use super::LIMIT;

/// One event, in order, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// `Data`: the fd and how many bytes came.
    Data(i32, usize),
    /// `Closed`: the fd and the reason, as [`describe_close`] puts it.
    Closed(i32, String),
    /// `Exited`.
    Exited(Result<ExitStatus, WaitError>),
    /// `Ended`.
    Ended(Result<ExitStatus, WaitError>),
    /// Flow-control events and later additions, as `Debug` text: not part of the ordering
    /// guarantees checked here.
    Other(String),
}

/// Everything a transport reported, in order: the events themselves, a payload-free log of
/// them, and the bytes of each fd.
#[derive(Clone, Default)]
pub struct Outcome {
    /// Every event, payloads left out, in order.
    pub log: Vec<Rec>,
    /// The bytes the child wrote, per fd.
    pub data: BTreeMap<i32, Vec<u8>>,
    /// Every event as it came, for tests that look at the events themselves.
    pub events: Vec<Event>,
}

/// The recorder under its older name, for code written against it.
pub type Collected = Outcome;

impl Outcome {
    /// Records one event; returns `true` for `Ended`.
    pub fn record(&mut self, event: Event) -> bool {
        self.events.push(event.clone());
        match event {
            Event::Data { fd, data } => {
                self.log.push(Rec::Data(fd, data.len()));
                self.data.entry(fd).or_default().extend_from_slice(&data);
            }
            Event::Closed { fd, reason } => self.log.push(Rec::Closed(fd, describe_close(&reason))),
            Event::Exited(status) => self.log.push(Rec::Exited(status)),
            Event::Ended(status) => {
                self.log.push(Rec::Ended(status));
                return true;
            }
            other => self.log.push(Rec::Other(format!("{other:?}"))),
        }
        false
    }

    /// Appends what `later` recorded after this one stopped, as if one recorder saw both.
    pub fn extend(&mut self, later: Outcome) {
        self.log.extend(later.log);
        self.events.extend(later.events);
        for (fd, bytes) in later.data {
            self.data.entry(fd).or_default().extend_from_slice(&bytes);
        }
    }

    /// The bytes the child wrote on `fd` (none if it wrote nothing).
    pub fn out(&self, fd: i32) -> &[u8] {
        self.data.get(&fd).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The bytes the child wrote on `fd`, as text.
    pub fn text(&self, fd: i32) -> String {
        String::from_utf8_lossy(self.out(fd)).into_owned()
    }

    /// The final status, asserting that `Exited` and `Ended` came exactly once each, agree,
    /// `Ended` was last, and the child was waited for without error.
    pub fn status(&self) -> ExitStatus {
        let exited: Vec<_> = self.exits().collect();
        let ended: Vec<_> = self
            .log
            .iter()
            .filter_map(|rec| match rec {
                Rec::Ended(status) => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(
            exited.len(),
            1,
            "Exited must come exactly once: {:?}",
            self.log
        );
        assert_eq!(
            ended.len(),
            1,
            "Ended must come exactly once: {:?}",
            self.log
        );
        let Some(Rec::Ended(Ok(status))) = self.log.last() else {
            panic!("last event is not a successful Ended: {:?}", self.log);
        };
        assert_eq!(exited[0], &Ok(*status), "Ended and Exited disagree");
        *status
    }

    /// The statuses of the `Exited` events so far.
    pub fn exits(&self) -> impl Iterator<Item = &Result<ExitStatus, WaitError>> {
        self.log.iter().filter_map(|rec| match rec {
            Rec::Exited(status) => Some(status),
            _ => None,
        })
    }

    /// Whether `Exited` came.
    pub fn has_exited(&self) -> bool {
        self.exits().next().is_some()
    }

    /// Every close so far, in order: the fd and the reason as [`describe_close`] puts it.
    pub fn closes(&self) -> Vec<(i32, &str)> {
        self.log
            .iter()
            .filter_map(|rec| match rec {
                Rec::Closed(fd, reason) => Some((*fd, reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Whether `fd` was reported closed.
    pub fn is_closed(&self, fd: i32) -> bool {
        self.closes().iter().any(|&(closed, _)| closed == fd)
    }

    /// The close reason of `fd`, as [`describe_close`] puts it; panics if `fd` never closed.
    pub fn close_reason(&self, fd: i32) -> &str {
        self.closes()
            .into_iter()
            .find_map(|(closed, reason)| (closed == fd).then_some(reason))
            .unwrap_or_else(|| panic!("fd {fd} never closed: {:?}", self.log))
    }

    /// Asserts the documented ordering guarantees: per fd, data before its single close;
    /// `Exited` exactly once; `Ended` exactly once, last, after `Exited` and after the close of
    /// every pipe in `pipes`.
    pub fn assert_well_ordered(&self, pipes: &[i32]) {
        let mut closed = BTreeSet::new();
        let mut exited = 0;
        for (i, rec) in self.log.iter().enumerate() {
            match rec {
                Rec::Data(fd, n) => {
                    assert!(*n > 0, "empty Data event on fd {fd}");
                    assert!(
                        !closed.contains(fd),
                        "data on fd {fd} after its close: {:?}",
                        self.log
                    );
                    assert!(pipes.contains(fd), "data on fd {fd}, which is not a pipe");
                }
                Rec::Closed(fd, _) => {
                    assert!(closed.insert(*fd), "fd {fd} closed twice: {:?}", self.log);
                    assert!(pipes.contains(fd), "close of fd {fd}, which is not a pipe");
                }
                Rec::Exited(_) => exited += 1,
                Rec::Other(_) => {}
                Rec::Ended(status) => {
                    assert_eq!(i, self.log.len() - 1, "Ended is not last: {:?}", self.log);
                    assert_eq!(exited, 1, "Ended before Exited: {:?}", self.log);
                    assert_eq!(
                        self.exits().next(),
                        Some(status),
                        "Ended and Exited disagree"
                    );
                }
            }
        }
        assert_eq!(exited, 1, "Exited must come exactly once: {:?}", self.log);
        let expected: BTreeSet<i32> = pipes.iter().copied().collect();
        assert_eq!(
            closed, expected,
            "every pipe closes exactly once: {:?}",
            self.log
        );
        assert!(
            matches!(self.log.last(), Some(Rec::Ended(_))),
            "no Ended: {:?}",
            self.log
        );
    }
}

/// The log and the data as text (cut short), not the payloads of every event.
impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 512;
        let data: BTreeMap<i32, String> = self
            .data
            .iter()
            .map(|(fd, bytes)| {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
                let more = bytes.len().saturating_sub(SHOWN);
                let text = if more > 0 {
                    format!("{text}... ({more} more bytes)")
                } else {
                    text.into_owned()
                };
                (*fd, text)
            })
            .collect();
        f.debug_struct("Outcome")
            .field("log", &self.log)
            .field("data", &data)
            .finish_non_exhaustive()
    }
}

/// Records one event into `out`; returns `true` for `Ended`.
pub fn record(out: &mut Outcome, event: Event) -> bool {
    out.record(event)
}

/// Records one event into `out`, whatever it is.
pub fn collect_event(out: &mut Outcome, event: Event) {
    out.record(event);
}

/// A short, stable description of a close reason: the variant's name, with the errno for
/// an error (`"Eof"`, `"Closed"`, `"WaitDelay"`, `"Error(Some(32))"`).
pub fn describe_close(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Eof => "Eof".into(),
        CloseReason::Closed => "Closed".into(),
        CloseReason::WaitDelay => "WaitDelay".into(),
        CloseReason::Error(e) => format!("Error({:?})", e.raw_os_error()),
        other => format!("{other:?}"),
    }
}

/// `true` for a close reason that is `CloseReason::Eof`.
pub fn is_eof(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Eof)
}

/// Consumes the transport's event stream to its end, failing the test after `limit`, and
/// checks on the way that `pid()` is `None` once `Exited` was seen, that `Ended` comes, and
/// that the stream finishes right after it.
pub async fn collect(transport: &mut ProcessTransport, limit: Duration) -> Outcome {
    let mut out = Outcome::default();
    let drained = tokio::time::timeout(limit, async {
        while let Some(event) = transport.next().await {
            let exited = matches!(event, Event::Exited(_));
            let ended = out.record(event);
            if exited {
                assert_eq!(transport.pid(), None, "pid() must be None once reaped");
            }
            if ended {
                assert!(
                    transport.next().await.is_none(),
                    "the stream goes on after Ended"
                );
                return true;
            }
        }
        false
    })
    .await;
    match drained {
        Ok(true) => out,
        Ok(false) => panic!("stream finished without Ended: {:?}", out.log),
        Err(_) => panic!("the transport did not end within {limit:?}: {out:?}"),
    }
}

/// [`collect`] with the usual [`LIMIT`].
pub async fn run_to_end(transport: &mut ProcessTransport) -> Outcome {
    collect(transport, LIMIT).await
}

/// Every event of the transport until its stream ends, as [`collect`] records them.
pub async fn all_events(transport: &mut ProcessTransport, limit: Duration) -> Vec<Event> {
    collect(transport, limit).await.events
}

/// Records events into `out` until `done` holds; panics if the stream ends first or after
/// [`LIMIT`].
pub async fn record_until(
    transport: &mut ProcessTransport,
    out: &mut Outcome,
    what: &str,
    done: impl Fn(&Outcome) -> bool,
) {
    let step = async {
        while !done(out) {
            match transport.next().await {
                Some(event) => {
                    out.record(event);
                }
                None => panic!("stream ended while waiting for {what}: {out:?}"),
            }
        }
    };
    if tokio::time::timeout(LIMIT, step).await.is_err() {
        panic!("timed out waiting for {what}: {out:?}");
    }
}

/// Reads fd 1 until it holds `needle` (up to [`LIMIT`]), returning everything read so far.
pub async fn read_until(t: &mut ProcessTransport, needle: &str) -> String {
    let mut out = Vec::new();
    let found = tokio::time::timeout(LIMIT, async {
        while let Some(event) = t.next().await {
            if let Event::Data { fd: 1, data } = event {
                out.extend_from_slice(&data);
                if String::from_utf8_lossy(&out).contains(needle) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(found, Ok(true), "never saw {needle:?} on fd 1; got {out:?}");
    out
}

/// Spawns a child that reads one line, closes its stdin and lingers, writes it
/// `first_line` followed by 1 MiB, and returns the child with the reason stdin closed
/// (expected: EPIPE), waited for up to `limit`.
pub async fn write_past_a_closed_stdin(
    first_line: &[u8],
    limit: Duration,
) -> (ProcessTransport, CloseReason) {
    let mut child = Command::new("sh")
        .args(["-c", "read line; exec 0<&-; sleep 2"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut data = first_line.to_vec();
    data.extend(std::iter::repeat_n(b'x', 1 << 20));
    child.write(0, data).unwrap();
    let reason = tokio::time::timeout(limit, async {
        loop {
            if let Event::Closed { fd: 0, reason } = child.next().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    (child, reason)
}
