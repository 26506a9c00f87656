//! How a child ended: its wait status and the resources it used.

use std::fmt;
use std::time::Duration;

/// The status of a reaped child, with the resource usage `wait4` reported for it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    raw: i32,
    usage: ResourceUsage,
}

impl ExitStatus {
    pub(crate) fn new(raw: i32, usage: ResourceUsage) -> Self {
        ExitStatus { raw, usage }
    }

    /// The exit code, if the child exited normally (not by a signal).
    pub fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.raw).then(|| libc::WEXITSTATUS(self.raw))
    }

    /// The signal that killed the child, if it died by one.
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.raw).then(|| libc::WTERMSIG(self.raw))
    }

    /// Whether the child dumped core when it died by a signal.
    pub fn core_dumped(&self) -> bool {
        libc::WIFSIGNALED(self.raw) && libc::WCOREDUMP(self.raw)
    }

    /// `true` if the child exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// The raw wait status, as `waitpid` reports it.
    pub fn raw(&self) -> i32 {
        self.raw
    }

    /// CPU time and peak memory of the child, from `wait4`.
    ///
    /// Counts the child itself and those of its descendants it waited for.
    pub fn resource_usage(&self) -> &ResourceUsage {
        &self.usage
    }
}

impl fmt::Debug for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitStatus")
            .field("code", &self.code())
            .field("signal", &self.signal())
            .field("core_dumped", &self.core_dumped())
            .field("raw", &self.raw)
            .finish()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.signal()) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => {
                write!(f, "killed by signal {sig}")?;
                if self.core_dumped() {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            (None, None) => write!(f, "wait status {:#x}", self.raw),
        }
    }
}

impl From<ExitStatus> for std::process::ExitStatus {
    /// The same raw status as a `std::process::ExitStatus` (the resource usage is dropped).
    fn from(status: ExitStatus) -> Self {
        std::os::unix::process::ExitStatusExt::from_raw(status.raw)
    }
}

/// Resources a child used, as reported by `wait4` when it was reaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// CPU time spent in user mode.
    pub user_time: Duration,
    /// CPU time spent in the kernel.
    pub system_time: Duration,
    /// Peak resident set size, in bytes.
    pub max_rss_bytes: u64,
    /// Page faults served without I/O.
    pub minor_faults: u64,
    /// Page faults that needed I/O.
    pub major_faults: u64,
    /// Voluntary context switches.
    pub voluntary_context_switches: u64,
    /// Involuntary context switches.
    pub involuntary_context_switches: u64,
}

impl ResourceUsage {
    pub(crate) fn from_rusage(ru: &libc::rusage) -> Self {
        let time = |tv: libc::timeval| {
            Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000)
        };
        let count = |n: libc::c_long| n.max(0) as u64;
        ResourceUsage {
            user_time: time(ru.ru_utime),
            system_time: time(ru.ru_stime),
            // Linux reports ru_maxrss in KiB.
            max_rss_bytes: count(ru.ru_maxrss) * 1024,
            minor_faults: count(ru.ru_minflt),
            major_faults: count(ru.ru_majflt),
            voluntary_context_switches: count(ru.ru_nvcsw),
            involuntary_context_switches: count(ru.ru_nivcsw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_codes_and_signals() {
        let exited = ExitStatus::new(3 << 8, ResourceUsage::default());
        assert_eq!(exited.code(), Some(3));
        assert_eq!(exited.signal(), None);
        assert!(!exited.success());
        assert_eq!(exited.to_string(), "exit code 3");

        let killed = ExitStatus::new(libc::SIGKILL, ResourceUsage::default());
        assert_eq!(killed.code(), None);
        assert_eq!(killed.signal(), Some(libc::SIGKILL));
        assert!(!killed.core_dumped());

        let cored = ExitStatus::new(libc::SIGSEGV | 0x80, ResourceUsage::default());
        assert!(cored.core_dumped());
        assert_eq!(cored.to_string(), "killed by signal 11 (core dumped)");

        assert!(ExitStatus::new(0, ResourceUsage::default()).success());
        let std_status: std::process::ExitStatus = exited.into();
        assert_eq!(std_status.code(), Some(3));
    }
}
