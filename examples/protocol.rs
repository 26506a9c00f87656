//! The callback style: a `ProcessProtocol`, as in Twisted, talking to a gpg-like child.
//!
//! Like `gpg --status-fd 3 --passphrase-fd 4`, the child reads a passphrase on fd 4 and the
//! message on stdin, writes the signed message on stdout, machine-readable status lines
//! (`[GNUPG:] KEYWORD args...`) on fd 3 and human messages on stderr. The protocol feeds the
//! inputs from `connection_made`, parses status lines as they arrive (they may come in any
//! chunking), and collects the rest. Run with `cargo run --example protocol`.

use bytes::Bytes;
use process_transport::{
    ChildFd, CloseReason, Command, ExitStatus, ProcessProtocol, ProcessTransport, WaitError,
};

/// Stands in for gpg; a real program would be spawned the same way.
const FAKE_GPG: &str = r#"
IFS= read -r pass <&4
if [ "$pass" != "hunter2" ]; then
    echo "[GNUPG:] BAD_PASSPHRASE" >&3
    echo "gpg: bad passphrase" >&2
    exit 2
fi
echo "[GNUPG:] GOOD_PASSPHRASE" >&3
echo "[GNUPG:] BEGIN_SIGNING H8" >&3
echo "-----BEGIN FAKE SIGNED MESSAGE-----"
n=0
while IFS= read -r line; do echo "$line"; n=$((n+1)); done
echo "-----END FAKE SIGNED MESSAGE-----"
echo "[GNUPG:] SIG_CREATED S 1 8 00 1700000000 0123456789ABCDEF" >&3
echo "gpg: signed $n lines" >&2
"#;

const STATUS_FD: i32 = 3;
const PASSPHRASE_FD: i32 = 4;

#[derive(Default)]
struct Signer {
    message: &'static str,
    passphrase: &'static str,
    /// Status bytes not yet ending in a newline.
    partial_status: Vec<u8>,
    /// Parsed status lines: keyword and arguments.
    status: Vec<(String, Vec<String>)>,
    signed: Vec<u8>,
    diagnostics: Vec<u8>,
    closed: Vec<(i32, String)>,
    exited: Option<Result<ExitStatus, WaitError>>,
}

impl Signer {
    fn status_line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            eprintln!("ignoring a stray status line: {line:?}");
            return;
        };
        let mut words = rest.split_whitespace().map(str::to_owned);
        if let Some(keyword) = words.next() {
            println!("status: {keyword}");
            self.status.push((keyword, words.collect()));
        }
    }

    fn has(&self, keyword: &str) -> bool {
        self.status.iter().any(|(k, _)| k == keyword)
    }
}

impl ProcessProtocol for Signer {
    fn connection_made(&mut self, transport: &mut ProcessTransport) {
        println!("child started, pid {}", transport.spawned_pid());
        // Everything is queued now and written as the child reads; closing after the write
        // gives the child its end of file once the data is through.
        let fed = transport
            .write(PASSPHRASE_FD, format!("{}\n", self.passphrase))
            .and_then(|_| transport.close_child_fd(PASSPHRASE_FD))
            .and_then(|_| transport.write_stdin(self.message))
            .and_then(|_| transport.close_stdin());
        if let Err(e) = fed {
            eprintln!("could not feed the child: {e}");
            let _ = transport.signal(libc::SIGTERM);
        }
    }

    fn child_data_received(&mut self, transport: &mut ProcessTransport, fd: i32, data: Bytes) {
        match fd {
            STATUS_FD => {
                self.partial_status.extend_from_slice(&data);
                while let Some(end) = self.partial_status.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.partial_status.drain(..=end).collect();
                    self.status_line(&line[..line.len() - 1]);
                }
                if self.has("BAD_PASSPHRASE") {
                    // No point in going on.
                    let _ = transport.signal(libc::SIGTERM);
                }
            }
            1 => self.signed.extend_from_slice(&data),
            2 => self.diagnostics.extend_from_slice(&data),
            _ => {}
        }
    }

    fn child_connection_lost(&mut self, _: &mut ProcessTransport, fd: i32, reason: CloseReason) {
        self.closed.push((fd, format!("{reason:?}")));
    }

    fn process_exited(&mut self, _: &mut ProcessTransport, status: Result<ExitStatus, WaitError>) {
        println!("child exited: {status:?}");
        self.exited = Some(status);
    }

    fn process_ended(&mut self, status: Result<ExitStatus, WaitError>) {
        match status {
            Ok(s) => println!("child ended: {s}"),
            Err(e) => println!("child lost: {e}"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = Command::new("sh")
        .args(["-c", FAKE_GPG])
        .fd(STATUS_FD, ChildFd::ParentReads)
        .fd(PASSPHRASE_FD, ChildFd::ParentWrites)
        .spawn()?;
    let protocol = Signer {
        message: "attack at dawn\nbring snacks\n",
        passphrase: "hunter2",
        ..Signer::default()
    };
    let (signer, status) = transport.run(protocol).await;
    let status = status?;

    println!("--- signed output ---");
    print!("{}", String::from_utf8_lossy(&signer.signed));
    println!("--- diagnostics ---");
    print!("{}", String::from_utf8_lossy(&signer.diagnostics));
    println!("--- pipes ---");
    for (fd, reason) in &signer.closed {
        println!("fd {fd} closed: {reason}");
    }

    if !status.success() || !signer.has("SIG_CREATED") || signer.exited.is_none() {
        return Err(format!("signing failed: {status}, status lines {:?}", signer.status).into());
    }
    let (_, args) = signer
        .status
        .iter()
        .find(|(k, _)| k == "SIG_CREATED")
        .unwrap();
    println!("signature created, fingerprint {}", args.last().unwrap());
    Ok(())
}
