//! The message log: every status message and result dialog of the session, in full, for the
//! messages key to open when the status line had to cut one or it gave way to the next.

use std::collections::VecDeque;
use std::time::Instant;

/// How many messages the log keeps.
const KEEP: usize = 200;

/// One message, and when it was said.
#[derive(Clone, Debug)]
pub struct Entry {
    pub at: Instant,
    pub text: String,
}

/// The last [`KEEP`] messages, newest last.
#[derive(Debug, Default)]
pub struct Log {
    entries: VecDeque<Entry>,
}

impl Log {
    /// Keeps `text`, unless it is the message kept last.
    pub fn note(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() || self.entries.back().is_some_and(|e| e.text == text) {
            return;
        }
        if self.entries.len() == KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            at: Instant::now(),
            text: text.to_string(),
        });
    }

    /// The messages, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How long ago `at` was, in a few characters: `now`, `3 min`, `2 h`.
pub fn age(at: Instant, now: Instant) -> String {
    let s = now.saturating_duration_since(at).as_secs();
    match s {
        0..60 => "now".into(),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_messages_once_each() {
        let mut log = Log::default();
        log.note("a");
        log.note("a");
        log.note("  ");
        log.note("b");
        let texts: Vec<&str> = log.newest_first().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["b", "a"]);
        for i in 0..KEEP + 5 {
            log.note(&i.to_string());
        }
        assert_eq!(log.len(), KEEP);
        assert_eq!(
            log.newest_first().next().map(|e| e.text.as_str()),
            Some("204")
        );
    }
}
