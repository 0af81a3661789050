//! Lookup (prompt n-gram) drafting for speculative decoding, as llama.cpp's `lookup` and
//! vLLM's `ngram` proposer draft: the last few tokens of a sequence are looked up among its
//! earlier tokens (prompt and generated text), and the tokens that followed their most recent
//! occurrence are proposed as the next ones. Outputs that copy from their inputs (code edits,
//! extraction, "repeat this") then verify several tokens in one forward step.
//!
//! The scheduler feeds a draft after the sequence's last token and samples every row in turn,
//! exactly as plain decoding would sample them one step at a time; a draft only says which rows
//! are worth computing ahead (see `Scheduler::accept` for why that is exact).
//!
//! Drafting is not free: each draft row costs a share of a step, so a draft only pays when it
//! is likely to be accepted. Every sequence tracks how often the drafter's next-token guess
//! was the token actually sampled (also on steps that fed no draft, so a sequence that stopped
//! drafting notices when its output starts copying), and [`Drafter::worth`] feeds the draft
//! length that maximises expected tokens per unit of step cost. The scheduler also caps draft
//! rows per step at what one weight tile computes anyway ([`STEP_ROWS`]), so a full batch
//! drafts nothing.
//!
//! Invariant: the index maps every n-gram (n = 1..=[`MAX_NGRAM`]) of `tokens` that has a
//! successor to the position of the successor of its latest occurrence. It is updated as
//! tokens arrive (at most [`MAX_NGRAM`] inserts per token), so drafting never rescans the
//! sequence, however long the prompt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest suffix looked up; shorter ones are tried when it is not found (down to one token).
pub(crate) const MAX_NGRAM: usize = 3;

/// Rows a step may fill with drafts, counting every decoding sequence's own row: the
/// activation rows one weight tile of the kernels takes (8 on AVX-512). Up to there extra rows
/// reuse weights already decoded; beyond it they cost nearly a full row each.
pub(crate) const STEP_ROWS: usize = 8;

/// Cost of one draft row relative to a decode step's single row: one activation row more in
/// every matmul. Measured from the kernels' GEMM rate at m = 1 and m = 8 (8 rows cost about
/// 3.5x one row on AVX-512 VNNI, 4.5x on AVX2: 0.35-0.5 per extra row).
const DRAFT_ROW_COST: f32 = 0.4;

/// Weight of the newest observation in the hit rate's moving average.
const HIT_RATE_WEIGHT: f32 = 0.2;

/// Hit rate a new sequence starts from: one-token drafts until it has a record.
const INITIAL_HIT_RATE: f32 = 0.5;

/// An n-gram, left-aligned and zero-padded, with its length (so `[5]` and `[5, 0]` differ).
type Key = (u8, [u32; MAX_NGRAM]);

fn key(gram: &[u32]) -> Key {
    let mut k = [0u32; MAX_NGRAM];
    k[..gram.len()].copy_from_slice(gram);
    (gram.len() as u8, k)
}

/// One sequence's tokens and their n-gram index.
pub(crate) struct Drafter {
    /// Most tokens a draft proposes.
    max_draft: usize,
    /// Prompt and generated tokens so far.
    tokens: Vec<u32>,
    /// See the module's invariant.
    index: HashMap<Key, u32>,
    /// Moving average of "the next-token guess was the token sampled".
    hit_rate: f32,
}

impl Drafter {
    /// A drafter proposing up to `max_draft` tokens, indexing `prompt` once.
    pub(crate) fn new(max_draft: usize, prompt: &[u32]) -> Self {
        let index = HashMap::with_capacity(prompt.len() * MAX_NGRAM);
        let mut d = Self { max_draft, tokens: Vec::with_capacity(prompt.len() + 64), index, hit_rate: INITIAL_HIT_RATE };
        for &id in prompt {
            d.push(id);
        }
        d
    }

    /// Appends a sampled token, first scoring the guess the drafter had for it.
    pub(crate) fn sampled(&mut self, id: u32) {
        if let Some(&guess) = self.draft(1).first() {
            let hit = if guess == id { 1.0 } else { 0.0 };
            self.hit_rate += HIT_RATE_WEIGHT * (hit - self.hit_rate);
        }
        self.push(id);
    }

    /// How many of a `candidate`-token draft are worth feeding: the length maximising
    /// expected tokens per step, `(1 + p + … + p^d) / (1 + DRAFT_ROW_COST·d)` with `p` the
    /// sequence's hit rate (0: plain decoding pays more).
    pub(crate) fn worth(&self, candidate: usize) -> usize {
        let p = self.hit_rate;
        let (mut best, mut best_rate, mut tokens, mut pk) = (0, 1.0f32, 1.0f32, 1.0f32);
        for d in 1..=candidate {
            pk *= p;
            tokens += pk;
            let rate = tokens / (1.0 + DRAFT_ROW_COST * d as f32);
            if rate > best_rate {
                (best, best_rate) = (d, rate);
            }
        }
        best
    }

    /// Appends a token: the n-grams ending just before it now have it as their successor.
    fn push(&mut self, id: u32) {
        let at = self.tokens.len();
        for n in 1..=MAX_NGRAM.min(at) {
            self.index.insert(key(&self.tokens[at - n..at]), at as u32);
        }
        self.tokens.push(id);
    }

    /// The tokens that followed the latest earlier occurrence of the longest suffix found
    /// (at most `limit` and the drafter's maximum); empty when no suffix recurs.
    pub(crate) fn draft(&self, limit: usize) -> &[u32] {
        let len = self.tokens.len();
        let limit = limit.min(self.max_draft);
        if limit == 0 {
            return &[];
        }
        for n in (1..=MAX_NGRAM.min(len)).rev() {
            if let Some(&next) = self.index.get(&key(&self.tokens[len - n..])) {
                let next = next as usize;
                return &self.tokens[next..len.min(next + limit)];
            }
        }
        &[]
    }
}

/// Engine-wide lookup counters (shared with the handles): draft tokens fed and accepted.
/// Every accepted token is a forward step plain decoding would have run.
#[derive(Debug, Default)]
pub(crate) struct LookupCounters {
    drafted: AtomicUsize,
    accepted: AtomicUsize,
}

impl LookupCounters {
    pub(crate) fn add(&self, drafted: usize, accepted: usize) {
        self.drafted.fetch_add(drafted, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LookupStats {
        LookupStats { drafted: self.drafted.load(Ordering::Relaxed), accepted: self.accepted.load(Ordering::Relaxed) }
    }
}

/// Lookup decoding since the engine started: draft tokens verified, and those accepted (each
/// one a decode step saved).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    pub drafted: usize,
    pub accepted: usize,
}

impl LookupStats {
    /// Accepted over drafted (0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// The counts accumulated since `earlier`.
    pub fn since(&self, earlier: LookupStats) -> LookupStats {
        LookupStats { drafted: self.drafted - earlier.drafted, accepted: self.accepted - earlier.accepted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_latest_occurrence_of_the_longest_suffix() {
        // "a b c d | x b c" : the suffix "b c" last occurred at 1..3, followed by "d x b c".
        let mut d = Drafter::new(3, &[1, 2, 3, 4, 9, 2]);
        d.push(3);
        assert_eq!(d.draft(10), [4, 9, 2]);
        assert_eq!(d.draft(2), [4, 9], "the caller's limit");
        // A later occurrence of "3" followed by 7 wins for the 1-gram, but the 2-gram "2 3"
        // still points after its own latest occurrence.
        d.push(7);
        d.push(2);
        d.push(3);
        assert_eq!(d.draft(10), [7, 2, 3]);
    }

    #[test]
    fn longer_matches_beat_more_recent_shorter_ones() {
        // "5 6 7 8 ... 1 6 9 ... 5 6": the 2-gram "5 6" is followed by 7, the 1-gram "6" most
        // recently by 9.
        let mut d = Drafter::new(4, &[5, 6, 7, 8, 1, 6, 9]);
        d.push(5);
        d.push(6);
        assert_eq!(d.draft(4), [7, 8, 1, 6]);
    }

    #[test]
    fn nothing_to_draft_without_a_recurring_suffix() {
        let mut d = Drafter::new(4, &[1, 2, 3]);
        assert!(d.draft(4).is_empty(), "3 never occurred before");
        d.push(4);
        assert!(d.draft(4).is_empty());
        assert!(Drafter::new(4, &[]).draft(4).is_empty());
        assert!(Drafter::new(0, &[1, 1, 1]).draft(4).is_empty(), "max_draft 0 is off");
    }

    #[test]
    fn a_repeating_tail_drafts_the_repetition() {
        let d = Drafter::new(5, &[8, 8, 8]);
        // "8 8" last followed by the third 8: the draft runs to the end of what is known.
        assert_eq!(d.draft(5), [8]);
    }

    #[test]
    fn draft_length_follows_the_hit_rate() {
        // A sequence copying its prompt: every guess hits, drafts grow to the maximum.
        let prompt: Vec<u32> = (0..40).collect();
        let mut d = Drafter::new(4, &prompt);
        assert_eq!(d.worth(4), 1, "a new sequence drafts one token");
        for id in 0..20 {
            d.sampled(id);
        }
        assert!(d.hit_rate > 0.9, "{}", d.hit_rate);
        assert_eq!(d.worth(4), 4);
        assert_eq!(d.worth(2), 2, "never more than the candidate");
        // Output that stops copying: guesses miss (also while nothing is fed), drafts stop.
        for id in [100, 7, 101, 3, 102, 9, 103, 11, 104, 13] {
            d.sampled(id);
        }
        assert!(d.hit_rate < 0.35, "{}", d.hit_rate);
        assert_eq!(d.worth(4), 0);
    }

    #[test]
    fn stats_report_acceptance_and_differences() {
        let c = LookupCounters::default();
        c.add(10, 4);
        let a = c.snapshot();
        c.add(6, 6);
        let b = c.snapshot();
        assert_eq!(b, LookupStats { drafted: 16, accepted: 10 });
        assert_eq!(b.since(a), LookupStats { drafted: 6, accepted: 6 });
        assert_eq!(b.since(a).acceptance(), 1.0);
        assert_eq!(LookupStats::default().acceptance(), 0.0);
    }
}
