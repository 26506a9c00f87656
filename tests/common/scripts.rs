//! The children the tests run: shell and Python commands, and executable files written by a
//! test (with the retry that exec'ing a freshly written file needs).

use std::time::Duration;

use process_transport::ProcessTransport;

/// A Python interpreter for children that `sh` cannot express. Prefers the system one (the
/// pyenv shim is a bash script that is slower to start).
pub fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A command running `script` with Python in isolated mode (`-I -S`: no site, no user env).
pub fn py(script: &str) -> process_transport::Command {
    let mut command = process_transport::Command::new(python());
    command.args(["-I", "-S", "-c", script]);
    command
}

/// A command running `script` with `sh -c`.
pub fn sh(script: &str) -> process_transport::Command {
    let mut command = process_transport::Command::new("sh");
    command.args(["-c", script]);
    command
}

/// A fresh directory for one test's files, removed and recreated.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pt-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `content` to `path` with permission bits `mode`.
pub fn write_file(path: &std::path::Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Spawns `command`, retrying while exec says `ETXTBSY`: a file this test just wrote can be
/// held open for writing for a moment by a child that another test thread is forking.
pub fn spawn_fresh_file(
    command: &process_transport::Command,
) -> Result<ProcessTransport, process_transport::SpawnError> {
    for _ in 0..100 {
        match command.spawn() {
            Err(process_transport::SpawnError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
    panic!("exec kept failing with ETXTBSY");
}
