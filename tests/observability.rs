//! Tracing spans and events for spawn (pid, program), exit and errors, at debug/trace level. A
//! minimal subscriber records them as text lines.

mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use process_transport::Command;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use common::run_to_end;

#[derive(Default)]
struct Capture {
    next_id: AtomicU64,
    lines: Mutex<Vec<String>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("process_transport")
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(format!(
            "span {} {}",
            span.metadata().level(),
            span.metadata().name()
        ));
        span.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(format!("event {}", event.metadata().level()));
        event.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        struct Forward(&'static Capture);
        impl Subscriber for Forward {
            fn enabled(&self, m: &Metadata<'_>) -> bool {
                self.0.enabled(m)
            }
            fn new_span(&self, s: &Attributes<'_>) -> Id {
                self.0.new_span(s)
            }
            fn record(&self, i: &Id, r: &Record<'_>) {
                self.0.record(i, r)
            }
            fn record_follows_from(&self, a: &Id, b: &Id) {
                self.0.record_follows_from(a, b)
            }
            fn event(&self, e: &Event<'_>) {
                self.0.event(e)
            }
            fn enter(&self, i: &Id) {
                self.0.enter(i)
            }
            fn exit(&self, i: &Id) {
                self.0.exit(i)
            }
        }
        tracing::subscriber::set_global_default(Forward(capture)).unwrap();
        capture
    })
}

fn lines_matching(all: &[String], parts: &[&str]) -> Vec<String> {
    all.iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn spawn_exit_and_errors_are_traced_at_debug_level() {
    let capture = capture();
    let mut child = common::sh("sleep 0.2; exit 3")
        .arg0("traced-sh")
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.status().code(), Some(3));
    let err = Command::new("/nonexistent-dir/traced-program").spawn();
    assert!(err.is_err());

    let lines = capture.lines.lock().unwrap().clone();
    let text = lines.join("\n");
    assert!(
        !lines_matching(&lines, &["span DEBUG spawn", "program=\"sh\""]).is_empty(),
        "a spawn span naming the program:\n{text}"
    );
    assert!(
        !lines_matching(&lines, &["event DEBUG", &format!("pid={pid}")]).is_empty(),
        "an event with the pid:\n{text}"
    );
    assert!(
        !lines_matching(&lines, &["event DEBUG", "exited", "3"]).is_empty(),
        "an exit event:\n{text}"
    );
    assert!(
        !lines_matching(&lines, &["span DEBUG spawn", "traced-program"]).is_empty(),
        "the failed spawn's span:\n{text}"
    );
    assert!(
        !lines_matching(&lines, &["event DEBUG", "spawn failed", "exec"]).is_empty(),
        "an error event naming the step:\n{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(&format!("event {}", Level::INFO)) && !l.contains("event WARN")),
        "nothing above debug for normal operation:\n{text}"
    );
}
