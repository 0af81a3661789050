//! Stop strings over streamed text: decides how much of the decoded text is safe to show.
//!
//! Text arrives as deltas ([`StopMatcher::push`]). Text that could still be the beginning of a
//! stop string is held back until it is resolved; when a stop string completes, the text before
//! it is released, the stop string and everything after it are dropped, and the matcher reports
//! `stopped` (the caller ends generation there).
//!
//! Invariant: if `T` is the concatenation of the deltas pushed up to and including the one that
//! reported `stopped` (or of all deltas, if none did), then the concatenated emits, plus
//! [`StopMatcher::finish`], equal `T` truncated at the earliest occurrence of any stop string in
//! `T` (all of `T` if none occurs). Because generation ends at the first completed stop, a
//! longer stop string that started earlier but was not yet complete does not count.
//!
//! Text is only ever split on char boundaries: every piece returned is valid UTF-8 on its own.

/// Result of one [`StopMatcher::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to show now.
    pub emit: String,
    /// A stop string completed: `emit` ends just before it, and later pushes emit nothing.
    pub stopped: bool,
}

/// Watches a text stream for any of a set of stop strings.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Pushed text not emitted yet: always a proper prefix of some stop string (or empty).
    held: String,
    stopped: bool,
    /// Index in `stops` of the stop string that completed.
    matched: Option<usize>,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match before any text); no stops = passthrough.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
            stopped: false,
            matched: None,
        }
    }

    /// The stop string that ended the stream, once one has (the earliest occurrence; of two
    /// starting at the same place, the one listed first).
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Appends `delta` and returns the text that can be shown now.
    pub fn push(&mut self, delta: &str) -> StopStep {
        if self.stopped {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(delta);
        // Everything emitted earlier cannot contain the start of a stop string (see
        // `held_suffix_len`), so any occurrence lies entirely within `held`.
        let earliest = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, stop)| self.held.find(stop.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, i)) = earliest {
            self.held.truncate(at);
            self.stopped = true;
            self.matched = Some(i);
            return StopStep {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.held_suffix_len();
        let emit = self.held.drain(..self.held.len() - keep).collect();
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// Ends the stream: returns the text still held back (nothing if a stop string matched).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string: the
    /// part that might still grow into a stop. Prefixes are taken on the stop's char boundaries,
    /// so the suffix also starts on a char boundary of `held` (a valid UTF-8 string never starts
    /// with a continuation byte).
    fn held_suffix_len(&self) -> usize {
        self.stops
            .iter()
            .filter_map(|stop| {
                let longest = (stop.len() - 1).min(self.held.len());
                (1..=longest)
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| self.held.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Pushes every delta (ignoring those after a stop) and returns (emits, stopped, text pushed
    /// up to the stop).
    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool, String) {
        let mut m = matcher(stops);
        let mut emits = Vec::new();
        let mut pushed = String::new();
        for d in deltas {
            let step = m.push(d);
            pushed.push_str(d);
            emits.push(step.emit);
            if step.stopped {
                assert_eq!(
                    m.push("more"),
                    StopStep {
                        emit: String::new(),
                        stopped: true
                    }
                );
                assert_eq!(m.finish(), "");
                return (emits, true, pushed);
            }
        }
        emits.push(m.finish());
        (emits, false, pushed)
    }

    /// The naive definition: the text truncated at the earliest occurrence of any stop.
    fn naive(stops: &[&str], text: &str) -> String {
        let cut = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s))
            .min()
            .unwrap_or(text.len());
        text[..cut].to_string()
    }

    #[test]
    fn no_stops_is_passthrough() {
        let (emits, stopped, _) = run(&[], &["he", "llo", " wörld"]);
        assert_eq!(emits, vec!["he", "llo", " wörld", ""]);
        assert!(!stopped);
        // Empty stop strings are ignored.
        let (emits, _, _) = run(&["", ""], &["abc"]);
        assert_eq!(emits, vec!["abc", ""]);
    }

    #[test]
    fn stop_split_across_many_deltas() {
        let (emits, stopped, _) = run(&["</end>"], &["Hi <", "/", "e", "n", "d", ">", "tail"]);
        assert!(stopped);
        assert_eq!(emits, vec!["Hi ", "", "", "", "", ""]);
    }

    #[test]
    fn held_text_is_released_when_the_stop_does_not_complete() {
        let (emits, stopped, _) = run(&["</end>"], &["a </e", "x", "y"]);
        assert!(!stopped);
        assert_eq!(emits, vec!["a ", "</ex", "y", ""]);
        // Held back until the end, then released by finish.
        let (emits, _, _) = run(&["</end>"], &["a </en"]);
        assert_eq!(emits, vec!["a ", "</en"]);
    }

    #[test]
    fn the_matched_stop_string_is_reported() {
        let mut m = matcher(&["", "END", "ab", "abc"]);
        assert_eq!((m.push("x a").stopped, m.matched()), (false, None));
        // "ab" and "abc" both start here: the one listed first is reported.
        assert_eq!((m.push("bc END").emit.as_str(), m.matched()), ("", Some("ab")));
        let mut m = matcher(&["abc", "END"]);
        m.push("yy EN");
        assert_eq!((m.push("D abc").emit.as_str(), m.matched()), ("", Some("END")));
        let mut m = matcher(&["END"]);
        assert_eq!((m.push("no stop here").stopped, m.matched()), (false, None));
    }

    #[test]
    fn overlapping_prefixes() {
        // "ab" completes first and ends generation.
        let (emits, stopped, _) = run(&["ab", "abc"], &["x", "x", "a", "b", "d"]);
        assert!(stopped);
        assert_eq!(emits.concat(), "xx");
        let (emits, stopped, _) = run(&["abc", "ab"], &["xxabd"]);
        assert!(stopped);
        assert_eq!(emits, vec!["xx"]);
        // A stop that restarts inside a failed partial match: "aab" with stop "ab".
        let (emits, stopped, _) = run(&["ab"], &["a", "a", "b"]);
        assert!(stopped);
        assert_eq!(emits, vec!["", "a", ""]);
        // Earliest start wins when one delta completes two stops.
        let (emits, _, _) = run(&["cd", "bcde"], &["abcdef"]);
        assert_eq!(emits, vec!["a"]);
    }

    #[test]
    fn multi_byte_chars_are_never_split() {
        // Stop shares a first byte sequence with other text: "é" (C3 A9) vs "ê" (C3 AA).
        let (emits, stopped, _) = run(&["éé"], &["aé", "ê", "é", "é", "z"]);
        assert!(stopped);
        assert_eq!(emits, vec!["a", "éê", "", ""]);
        let (emits, stopped, _) = run(&["🙂!"], &["日本🙂", "?🙂", "!"]);
        assert!(stopped);
        assert_eq!(emits, vec!["日本", "🙂?", ""]);
    }

    #[test]
    fn random_streams_match_the_naive_definition() {
        let alphabet = ['a', 'b', 'c', 'é', '日', '🙂'];
        let mut rng = StdRng::seed_from_u64(0x5709);
        let random_string = |rng: &mut StdRng, max_len: usize| -> String {
            let len = rng.random_range(0..=max_len);
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        let mut stopped_runs = 0;
        for _ in 0..5_000 {
            let n_stops = rng.random_range(0..4);
            let stops: Vec<String> = (0..n_stops).map(|_| random_string(&mut rng, 4)).collect();
            let n_deltas = rng.random_range(0..12);
            let deltas: Vec<String> = (0..n_deltas).map(|_| random_string(&mut rng, 3)).collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let delta_refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
            let (emits, stopped, pushed) = run(&stop_refs, &delta_refs);
            if stopped {
                // The stop was reported on the first delta that completed one: before that
                // delta, the text held no stop. (Empty deltas never complete a stop.)
                let consumed = (0..=deltas.len())
                    .find(|&k| deltas[..k].concat() == pushed)
                    .expect("pushed text is a prefix of the deltas");
                let before = deltas[..consumed - 1].concat();
                assert_eq!(
                    naive(&stop_refs, &before),
                    before,
                    "stops {stops:?}, deltas {deltas:?}"
                );
            }
            assert_eq!(
                emits.concat(),
                naive(&stop_refs, &pushed),
                "stops {stops:?}, deltas {deltas:?}"
            );
            // Stopping happens exactly at the first delta after which a stop occurs.
            assert_eq!(stopped, naive(&stop_refs, &pushed).len() < pushed.len());
            stopped_runs += usize::from(stopped);
        }
        // The generator must exercise both outcomes for the test to mean anything.
        assert!(stopped_runs > 500 && stopped_runs < 4_500, "{stopped_runs}");
    }
}
