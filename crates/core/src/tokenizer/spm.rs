//! llama.cpp's SentencePiece encoder (`llm_tokenizer_spm_session`) for GGUF `llama`
//! vocabularies. Spaces become `▁`; the text starts as one symbol per character; the adjacent
//! pair whose concatenation is a vocabulary token of the highest score is merged (equal scores:
//! the leftmost pair), and again, until no adjacent pair spells a token. A symbol left that is
//! not a token (a character outside the vocabulary) is spelled by its UTF-8 bytes' `<0xXX>`
//! tokens.
//!
//! Memory is the vocabulary's own: a hash index of ids keyed by their text (the texts stay in
//! the [`super::Tokenizer`]), one score per token and the 256 byte tokens. Nothing is derived
//! per pair of tokens.
//!
//! Invariants: the index holds, for every distinct text of the `texts` it was built from, the
//! last id with that text (llama.cpp's `token_to_id`), and is only ever queried with those same
//! `texts`; `scores.len() == texts.len()`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::hash_table::{Entry, HashTable};

use super::texts::Texts;
use super::TokenizerError;

/// Text → id over a vocabulary held elsewhere (ids are stored, texts are not copied).
pub(super) struct VocabIndex {
    table: HashTable<u32>,
    hasher: RandomState,
}

impl VocabIndex {
    /// With duplicate texts the last id wins, as in llama.cpp's `token_to_id`.
    pub(super) fn new(texts: &Texts) -> Self {
        let hasher = RandomState::new();
        let mut table = HashTable::with_capacity(texts.len());
        let rehash = |&id: &u32| hasher.hash_one(&texts[id as usize]);
        for (id, text) in (0u32..).zip(texts.iter()) {
            let hash = hasher.hash_one(text);
            match table.entry(hash, |&other: &u32| &texts[other as usize] == text, rehash) {
                Entry::Occupied(mut e) => *e.get_mut() = id,
                Entry::Vacant(e) => {
                    e.insert(id);
                }
            }
        }
        Self { table, hasher }
    }

    /// `texts` must be the vocabulary the index was built from.
    pub(super) fn get(&self, texts: &Texts, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.table.find(hash, |&id| &texts[id as usize] == text).copied()
    }
}

/// The SentencePiece encoder of one vocabulary.
pub(super) struct Spm {
    index: VocabIndex,
    scores: Vec<f32>,
    /// llama.cpp's `byte_to_token`: the `<0xXX>` token of each byte. (Its second choice, the
    /// byte's own one-byte text, can only help a byte that is not a whole character, and such
    /// a text is not UTF-8, so no vocabulary loaded here has it.)
    bytes: [Option<u32>; 256],
}

/// One symbol of the text being merged: `text[start..start + len]`; `len == 0` once merged
/// into its left neighbour. Symbols only ever absorb their right neighbour, so symbol 0 always
/// starts the chain.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`, whose texts were `len` bytes together.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

/// `BinaryHeap` pops the greatest: the highest score, then the leftmost pair (llama.cpp's
/// `llm_bigram_spm::comparator`, where incomparable scores count as equal).
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.partial_cmp(&other.score).unwrap_or(Ordering::Equal).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl Spm {
    /// `scores[id]` is token `id`'s score; `texts` the vocabulary, one text per score.
    pub(super) fn new(texts: &Texts, scores: Vec<f32>) -> Self {
        let index = VocabIndex::new(texts);
        let bytes = std::array::from_fn(|b| index.get(texts, &format!("<0x{b:02X}>")));
        Self { index, scores, bytes }
    }

    /// The id of a token given its text; `texts` must be the vocabulary of [`Spm::new`].
    pub(super) fn token_to_id(&self, texts: &Texts, text: &str) -> Option<u32> {
        self.index.get(texts, text)
    }

    /// Appends the ids of `text` (raw: spaces are escaped here) to `out`. Fails only when a
    /// character outside the vocabulary has a byte that no token spells.
    pub(super) fn encode(&self, texts: &Texts, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        // llama.cpp's `llama_escape_whitespace`.
        let text = text.replace(' ', "▁");
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (start + c.len_utf8() < text.len()).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.push_bigram(texts, &text, &symbols, right - 1, right, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (left, right) = (symbols[b.left], symbols[b.right]);
            // Stale: a side was merged away or has grown since the pair was queued (lengths
            // only grow, so equal lengths mean both are unchanged).
            if left.len == 0 || right.len == 0 || left.len + right.len != b.len {
                continue;
            }
            symbols[b.left].len = b.len;
            symbols[b.left].next = right.next;
            symbols[b.right].len = 0;
            if let Some(next) = right.next {
                symbols[next].prev = Some(b.left);
                self.push_bigram(texts, &text, &symbols, b.left, next, &mut queue);
            }
            if let Some(prev) = left.prev {
                self.push_bigram(texts, &text, &symbols, prev, b.left, &mut queue);
            }
        }
        // Every merged symbol is a token; only single characters can be unknown (so llama.cpp's
        // `rev_merge` re-segmentation never splits a merged symbol).
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let Symbol { start, len, next, .. } = symbols[i];
            let piece = &text[start..start + len];
            match self.index.get(texts, piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let id = self.bytes[usize::from(b)]
                            .ok_or_else(|| TokenizerError::Encode(format!("no token spells the byte 0x{b:02X} of {piece:?}")))?;
                        out.push(id);
                    }
                }
            }
            at = next;
        }
        Ok(())
    }

    /// Queues the merge of `left` and its right neighbour `right` if their text is a token.
    fn push_bigram(&self, texts: &Texts, text: &str, symbols: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Bigram>) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(id) = self.index.get(texts, &text[start..start + len]) {
            queue.push(Bigram { score: self.scores[id as usize], left, right, len });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Spm, Texts};

    /// A vocabulary of `(text, score)` pieces; ids are positions.
    fn spm(pieces: &[(&str, f32)]) -> (Texts, Spm) {
        let texts: Texts = pieces.iter().map(|(t, _)| t).collect();
        let spm = Spm::new(&texts, pieces.iter().map(|&(_, s)| s).collect());
        (texts, spm)
    }

    fn encode(texts: &Texts, spm: &Spm, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        spm.encode(texts, text, &mut ids).expect("encode");
        ids
    }

    #[test]
    fn merges_the_best_scoring_pair_first() {
        let (t, s) = spm(&[("▁", 0.0), ("h", 0.0), ("e", 0.0), ("l", 0.0), ("o", 0.0), ("he", -3.0), ("ll", -1.0), ("llo", -2.0), ("hell", -0.5), ("▁h", -4.0)]);
        // ll (-1) first, then llo (-2): hell (-0.5) never gets its chance. Then he (-3) takes
        // the h from ▁h (-4).
        assert_eq!(encode(&t, &s, "hello"), [5, 7]);
        assert_eq!(encode(&t, &s, " hello"), [0, 5, 7]);
        assert_eq!(encode(&t, &s, ""), Vec::<u32>::new());
    }

    #[test]
    fn equal_scores_merge_the_leftmost_pair() {
        // `bc` has the lower id, so a rank ordered by id would pick it; llama.cpp takes the
        // leftmost pair.
        let (t, s) = spm(&[("a", 0.0), ("b", 0.0), ("c", 0.0), ("bc", -1.0), ("ab", -1.0)]);
        assert_eq!(encode(&t, &s, "abc"), [4, 2]);
        assert_eq!(encode(&t, &s, "bcab"), [3, 4]);
        // Overlapping pairs building the same token: the leftmost `aa` wins; the `aaa` then
        // queued is stale once its right symbol has grown into the second `aa`.
        let (t, s) = spm(&[("a", 0.0), ("aa", -1.0), ("aaa", -2.0)]);
        assert_eq!(encode(&t, &s, "aaa"), [2]);
        assert_eq!(encode(&t, &s, "aaaa"), [1, 1]);
        assert_eq!(encode(&t, &s, "aaaaa"), [1, 2]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let mut pieces: Vec<(String, f32)> = (0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)).collect();
        pieces.extend([("a".to_owned(), 0.0), ("xé".to_owned(), -1.0), ("x".to_owned(), 0.0)]);
        let pieces: Vec<(&str, f32)> = pieces.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (t, s) = spm(&pieces);
        // `ü` is no token: its two UTF-8 bytes are.
        assert_eq!(encode(&t, &s, "aüa"), [256, 0xC3, 0xBC, 256]);
        // `é` alone is no token, yet `x` + `é` is: llama.cpp merges characters, not tokens.
        assert_eq!(encode(&t, &s, "xéé"), [257, 0xC3, 0xA9]);
    }

    #[test]
    fn an_unknown_character_without_byte_tokens_is_an_error() {
        let (t, s) = spm(&[("a", 0.0), ("b", 0.0)]);
        let mut ids = Vec::new();
        let e = s.encode(&t, "aü", &mut ids).expect_err("no token spells ü's bytes");
        assert!(e.to_string().contains("0xC3"), "{e}");
    }

    #[test]
    fn duplicate_texts_resolve_to_the_last_id() {
        let (t, s) = spm(&[("a", 0.0), ("b", 0.0), ("ab", -1.0), ("ab", -2.0)]);
        assert_eq!(s.token_to_id(&t, "ab"), Some(3));
        assert_eq!(s.token_to_id(&t, "abc"), None);
        assert_eq!(encode(&t, &s, "ab"), [3]);
    }
}
