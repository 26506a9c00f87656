//! `Signal`: what the signalling methods accept.

/// A signal to send: a plain number (`libc::SIGTERM`, `15`, or a real-time signal such as
/// `libc::SIGRTMIN() + 1`), or a `nix::sys::signal::Signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl From<i32> for Signal {
    fn from(number: i32) -> Self {
        Signal(number)
    }
}

impl From<nix::sys::signal::Signal> for Signal {
    fn from(signal: nix::sys::signal::Signal) -> Self {
        Signal(signal as i32)
    }
}
