//! Helpers for servers the rig starts itself (OpenID providers): waiting for readiness in their log.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits until `log` contains `needle` (true) or the process exits first (false: typically its port was
/// taken between our probe and its bind, and the caller tries another). Panics with the log after 30 s.
pub fn wait_for_log_line(child: &mut Child, log: &Path, needle: &str, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(Instant::now() < deadline, "{what} did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
