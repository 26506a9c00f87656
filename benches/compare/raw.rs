//! The floor: glibc `posix_spawn` (a CLONE_VM|CLONE_VFORK child) and plain fds.

use std::ffi::{CStr, c_char};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::common::{high, pipe_high};

unsafe extern "C" {
    static environ: *const *const c_char;
}

pub struct RawChild {
    pub pid: libc::pid_t,
    /// Parent ends of pipes, closed on drop.
    pub _parent_ends: Vec<OwnedFd>,
}

/// Spawns `argv` with stdio `/dev/null` or three pipes, plus pipes at fds 3 and 7.
pub fn spawn(argv: &[&CStr], piped: bool, extra_fds: bool) -> RawChild {
    let mut child_ends = Vec::new();
    let mut parent_ends = Vec::new();
    // SAFETY: file actions initialised, used and destroyed here; every fd passed is open
    // until posix_spawn returns; argv/envp are NULL-terminated.
    unsafe {
        let mut fa = std::mem::zeroed::<libc::posix_spawn_file_actions_t>();
        libc::posix_spawn_file_actions_init(&mut fa);
        let mut dup = |fd: OwnedFd, target: i32, child_ends: &mut Vec<OwnedFd>| {
            libc::posix_spawn_file_actions_adddup2(&mut fa, fd.as_raw_fd(), target);
            child_ends.push(fd);
        };
        if piped {
            for target in 0..3 {
                let (r, w) = pipe_high();
                let (child, parent) = if target == 0 { (r, w) } else { (w, r) };
                dup(child, target, &mut child_ends);
                parent_ends.push(parent);
            }
        } else {
            let null = high(
                std::fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .expect("/dev/null")
                    .into(),
            );
            for target in 0..3 {
                dup(null.try_clone().unwrap(), target, &mut child_ends);
            }
        }
        if extra_fds {
            let (r3, w3) = pipe_high();
            dup(w3, 3, &mut child_ends);
            parent_ends.push(r3);
            let (r7, w7) = pipe_high();
            dup(r7, 7, &mut child_ends);
            parent_ends.push(w7);
        }
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        let mut pid = 0;
        let rc = libc::posix_spawn(
            &mut pid,
            argv[0].as_ptr(),
            &fa,
            std::ptr::null(),
            ptrs.as_ptr(),
            environ as *const *mut c_char,
        );
        libc::posix_spawn_file_actions_destroy(&mut fa);
        assert_eq!(rc, 0, "posix_spawn");
        RawChild {
            pid,
            _parent_ends: parent_ends,
        }
    }
}

pub fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: blocking waitpid on our own child.
    let got = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(got, pid, "waitpid");
    status
}

pub fn kill(pid: libc::pid_t) {
    // SAFETY: the child is not reaped yet, so the pid is still ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
