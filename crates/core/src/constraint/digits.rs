//! Numbers that cannot run away: at most [`MAX_DIGITS`] digits in a row outside JSON strings.
//!
//! A JSON schema's `integer` or `number` without bounds lets a small model write digits until
//! `max_new_tokens` runs out (llguidance's number lexemes are `[0-9]*`). llama.cpp's schema
//! converter bounds each part of a number (integer part, fraction and exponent) to 16 digits;
//! this guard does the same over the grammar's mask: outside strings, a token that would make
//! a run of digits longer than 16 is not allowed, so the grammar's other choices (`.`, `e`, a
//! separator, the end of the value) remain. A run is any stretch of digits between non-digits,
//! so each part of a number is bounded on its own. Strings are not touched (a string of digits
//! is text), and where a schema demands longer numbers (e.g. `minimum: 1e20`) the guard steps
//! aside rather than block every token.

use std::sync::Arc;

/// Longest run of digits allowed outside strings (llama.cpp's bound for each number part).
pub const MAX_DIGITS: usize = 16;

/// The vocabulary as the guard needs it: every token's bytes, and the tokens that start with
/// digits (with how many), the only ones that can lengthen a run.
#[derive(Debug)]
pub(super) struct DigitTable {
    bytes: Vec<Vec<u8>>,
    leading: Vec<(u32, usize)>,
}

impl DigitTable {
    pub(super) fn new(tokens: &[Option<Vec<u8>>]) -> Self {
        let bytes: Vec<Vec<u8>> = tokens.iter().map(|t| t.clone().unwrap_or_default()).collect();
        let leading = (0u32..)
            .zip(&bytes)
            .map(|(id, b)| (id, b.iter().take_while(|c| c.is_ascii_digit()).count()))
            .filter(|&(_, n)| n > 0)
            .collect();
        Self { bytes, leading }
    }
}

/// One sequence's position in the JSON text, as far as digit runs go.
#[derive(Debug, Clone)]
pub(super) struct DigitGuard {
    table: Arc<DigitTable>,
    in_string: bool,
    escaped: bool,
    run: usize,
}

impl DigitGuard {
    pub(super) fn new(table: Arc<DigitTable>) -> Self {
        Self { table, in_string: false, escaped: false, run: 0 }
    }

    /// Disallows (sets to -inf) the tokens that would make the current run longer than
    /// [`MAX_DIGITS`], unless nothing else would remain allowed.
    pub(super) fn mask(&self, logits: &mut [f32]) {
        if self.in_string || self.run == 0 {
            return;
        }
        let too_long = |&&(id, n): &&(u32, usize)| self.run + n > MAX_DIGITS && logits.get(id as usize).is_some_and(|l| *l > f32::NEG_INFINITY);
        let blocked = self.table.leading.iter().filter(too_long).count();
        let allowed = logits.iter().filter(|&&l| l > f32::NEG_INFINITY).count();
        if blocked == 0 || blocked == allowed {
            return;
        }
        for &(id, n) in &self.table.leading {
            if self.run + n > MAX_DIGITS {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Moves past a generated token's text.
    pub(super) fn advance(&mut self, id: u32) {
        let Some(bytes) = self.table.bytes.get(id as usize) else { return };
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else if b.is_ascii_digit() {
                self.run += 1;
            } else {
                self.in_string = b == b'"';
                self.run = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> DigitGuard {
        let words = ["0", "1", "12", "123", ".", "\"", "a", ", ", "}", "\\\""];
        let tokens: Vec<Option<Vec<u8>>> = words.iter().map(|w| Some(w.as_bytes().to_vec())).collect();
        DigitGuard::new(Arc::new(DigitTable::new(&tokens)))
    }

    fn allowed(g: &DigitGuard) -> Vec<usize> {
        let mut logits = vec![0.0f32; 10];
        g.mask(&mut logits);
        (0..10).filter(|&i| logits[i] == 0.0).collect()
    }

    #[test]
    fn runs_stop_at_sixteen_digits_outside_strings() {
        let mut g = guard();
        assert_eq!(allowed(&g).len(), 10, "no run yet");
        for _ in 0..5 {
            g.advance(3); // "123"
        }
        // 15 digits: one more single digit fits, "12" and "123" do not.
        assert_eq!(allowed(&g), [0, 1, 4, 5, 6, 7, 8, 9]);
        g.advance(1);
        assert_eq!(allowed(&g), [4, 5, 6, 7, 8, 9]);
        // The fraction is a run of its own.
        g.advance(4);
        assert_eq!(allowed(&g).len(), 10);
        // Inside a string digits are text; an escaped quote does not end it.
        g.advance(7);
        g.advance(5);
        for _ in 0..10 {
            g.advance(3);
        }
        g.advance(9);
        assert_eq!(allowed(&g).len(), 10);
        g.advance(5);
        g.advance(3);
        assert_eq!(g.run, 3, "the string has ended");
    }

    #[test]
    fn the_guard_steps_aside_when_only_digits_remain() {
        let mut g = guard();
        for _ in 0..16 {
            g.advance(1);
        }
        let mut logits = vec![f32::NEG_INFINITY; 10];
        logits[1] = 0.5;
        g.mask(&mut logits);
        assert_eq!(logits[1], 0.5, "the schema demands more digits: not blocked");
    }
}
