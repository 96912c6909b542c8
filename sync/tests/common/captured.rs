//! Log lines captured for a test (shared by the transport's unit tests and
//! the integration tests).

use std::io;
use std::sync::{Arc, Mutex};

/// Log lines written while the guard lives (current-thread runtime only:
/// tasks spawned there run on the test's thread).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn start(&self) -> tracing::subscriber::DefaultGuard {
        // tracing caches each callsite's interest for the whole process,
        // decided by the first thread to reach it: a test thread without a
        // subscriber would fix it at "never", and another test's captured
        // subscriber would then never see that event (a line missing from
        // `soon` under load). A global subscriber that keeps nothing makes
        // every thread's answer "interested"; this thread's own still gets
        // the events.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        });
        let w = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(sub)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// The lines so far, once all of `needles` are in them or after 10 s:
    /// a task may log after the reply the test already read, and it only
    /// runs when the test yields.
    #[allow(dead_code)]
    pub async fn soon(&self, needles: &[&str]) -> String {
        for _ in 0..200 {
            let text = self.text();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.text()
    }
}
