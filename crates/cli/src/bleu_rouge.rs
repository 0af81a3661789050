//! BLEU-4 and ROUGE-1/2/L of predictions against labels, computed as LLaMA Factory's
//! evaluation does (`ComputeSimilarity` in its sft metrics, and `scripts/eval_bleu_rouge.py`).
//!
//! Per sample, then averaged over samples, each score ×100 and rounded to 4 decimals:
//! - **BLEU-4** is nltk's `sentence_bleu` on the *characters* of the texts (LLaMA Factory
//!   passes `list(label)`, `list(predict)`, not words), uniform weights over 1..4-grams, clipped
//!   counts, brevity penalty, and smoothing `method3` (each n-gram order with no match counts as
//!   `1 / (2^k · n-gram count)`, k = 1, 2, ... in order). No matching character scores 0.
//! - **ROUGE-1/2/L** is `rouge-chinese`'s F-score on jieba words: the texts are cut with jieba
//!   (precise mode, HMM on), the words joined by spaces, cut into sentences at `。！？?`, `......`
//!   and `……` (rouge-chinese's `cut_sent`), and each sentence split on whitespace. ROUGE-N uses
//!   the *sets* of distinct n-grams (rouge-chinese's default, `exclusive=True`); ROUGE-L the
//!   longest common subsequence of the whole word sequences. F = 2PR / (P + R + 1e-8), as there.
//!   A prediction or label with no words scores 0 on all three.
//!
//! Jieba is jieba-rs, a port of Python's jieba with the same dictionary and HMM. Text that is
//! not Chinese is cut as Python's jieba cuts it: runs of ASCII letters, digits and `+#&._%-`
//! form blocks, inside which `[A-Za-z0-9]+(\.\d+)?%?` is a word and the text between two such
//! words is one; any other character is a word of its own, and whitespace is dropped. English
//! is thus scored on case-sensitive, unstemmed words with punctuation apart (`Hello` `,`).
//! jieba-rs keeps `xs.reverse` and `well-known` whole where Python's jieba cuts them; that is
//! undone here (`python_jieba_split`). Known remaining difference: jieba-rs counts the CJK
//! extension blocks as Chinese, Python's jieba only U+4E00..U+9FD5, which changes words only
//! for rare characters.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use jieba_rs::Jieba;

/// One sample's scores (or an average of them), ×100.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub bleu4: f64,
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

/// Scores predictions; holds the jieba dictionary (loading it takes a moment).
pub struct Similarity {
    jieba: Jieba,
}

impl Similarity {
    pub fn new() -> Self {
        Self { jieba: Jieba::new() }
    }

    pub fn score(&self, predict: &str, label: &str) -> Scores {
        let (hyp, reference) = (self.words(predict), self.words(label));
        let (rouge1, rouge2, rouge_l) = if hyp.is_empty() || reference.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (rouge_n(&hyp, &reference, 1), rouge_n(&hyp, &reference, 2), rouge_l(&hyp, &reference))
        };
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        Scores {
            bleu4: round4(bleu4(&chars(predict), &chars(label)) * 100.0),
            rouge1: round4(rouge1 * 100.0),
            rouge2: round4(rouge2 * 100.0),
            rouge_l: round4(rouge_l * 100.0),
        }
    }

    /// The words rouge-chinese sees, or none when the text has no word at all. A blank
    /// "sentence" (between two line breaks) counts as one empty word, as it does there.
    fn words(&self, text: &str) -> Vec<String> {
        let tokens: Vec<&str> = self.jieba.cut(text, true).into_iter().flat_map(|t| python_jieba_split(t.word)).collect();
        let joined = tokens.join(" ");
        if joined.split(is_py_space).all(str::is_empty) {
            return Vec::new();
        }
        cut_sentences(&joined)
            .iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| {
                let normalised = s.split(is_py_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
                normalised.split(' ').map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Undoes jieba-rs's one departure from Python's jieba that matters here: jieba-rs keeps
/// alphanumeric runs joined by `.`, `_` or `-` as one word (`xs.reverse`, `well-known`), where
/// Python's jieba (its HMM segmenter's `[a-zA-Z0-9]+(\.\d+)?%?`) cuts them into runs and the
/// text between them (`xs` `.` `reverse`). Other words pass through unchanged.
fn python_jieba_split(word: &str) -> Vec<&str> {
    let b = word.as_bytes();
    let joined = b.windows(3).any(|w| {
        w[0].is_ascii_alphanumeric() && matches!(w[1], b'.' | b'_' | b'-') && w[2].is_ascii_alphanumeric()
    });
    if !word.is_ascii() || !joined {
        return vec![word];
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i].is_ascii_alphanumeric() {
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && b[i] == b'%' {
                i += 1;
            }
        } else {
            while i < b.len() && !b[i].is_ascii_alphanumeric() {
                i += 1;
            }
        }
        parts.push(&word[start..i]);
    }
    parts
}

/// The mean of each score over `samples`; zeros for none.
pub fn average(samples: &[Scores]) -> Scores {
    if samples.is_empty() {
        return Scores::default();
    }
    let n = samples.len() as f64;
    let mean = |f: fn(&Scores) -> f64| samples.iter().map(f).sum::<f64>() / n;
    Scores { bleu4: mean(|s| s.bleu4), rouge1: mean(|s| s.rouge1), rouge2: mean(|s| s.rouge2), rouge_l: mean(|s| s.rouge_l) }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Python's `str.split()` whitespace: Unicode White_Space plus the four ASCII separators.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// rouge-chinese's `cut_sent`: a line break after sentence-ending punctuation (unless a closing
/// quote follows), after `......` and `……`, and after an ending mark plus closing quote; then
/// trailing whitespace stripped and the text split at line breaks. Each rule is one left-to-right
/// pass of non-overlapping matches, as `re.sub` makes.
fn cut_sentences(text: &str) -> Vec<String> {
    const ENDS: &[char] = &['。', '！', '？', '?'];
    const QUOTES: &[char] = &['”', '’'];
    let mut chars: Vec<char> = text.chars().collect();
    // (the marks matched, the condition on the character after them)
    let after_mark = |c: char| !QUOTES.contains(&c);
    chars = break_after(&chars, |w| ENDS.contains(&w[0]), 1, after_mark);
    chars = break_after(&chars, |w| w.iter().all(|&c| c == '.'), 6, after_mark);
    chars = break_after(&chars, |w| w.iter().all(|&c| c == '…'), 2, after_mark);
    chars = break_after(&chars, |w| ENDS.contains(&w[0]) && QUOTES.contains(&w[1]), 2, |c| {
        !matches!(c, '，' | '。' | '！' | '？' | '?')
    });
    let text: String = chars.into_iter().collect();
    text.trim_end_matches(is_py_space).split('\n').map(str::to_owned).collect()
}

/// One `re.sub('(MARKS)(NEXT)', r'\1\n\2')` pass: `marks` tests `len` characters, `next` the one
/// after them; matches do not overlap.
fn break_after(chars: &[char], marks: impl Fn(&[char]) -> bool, len: usize, next: impl Fn(char) -> bool) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + len < chars.len() && marks(&chars[i..i + len]) && next(chars[i + len]) {
            out.extend_from_slice(&chars[i..i + len]);
            out.push('\n');
            out.push(chars[i + len]);
            i += len + 1;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn ngrams<T: Hash + Eq + Clone>(seq: &[T], n: usize) -> impl Iterator<Item = &[T]> {
    seq.windows(n)
}

/// rouge-chinese's ROUGE-N F-score over sets of distinct n-grams.
fn rouge_n(hyp: &[String], reference: &[String], n: usize) -> f64 {
    let h: HashSet<&[String]> = ngrams(hyp, n).collect();
    let r: HashSet<&[String]> = ngrams(reference, n).collect();
    let overlap = h.intersection(&r).count() as f64;
    let p = if h.is_empty() { 0.0 } else { overlap / h.len() as f64 };
    let rec = if r.is_empty() { 0.0 } else { overlap / r.len() as f64 };
    2.0 * (p * rec) / (p + rec + 1e-8)
}

/// rouge-chinese's ROUGE-L F-score: the longest common subsequence of the word sequences.
fn rouge_l(hyp: &[String], reference: &[String]) -> f64 {
    let lcs = lcs_len(reference, hyp) as f64;
    let (r, p) = (lcs / reference.len() as f64, lcs / hyp.len() as f64);
    2.0 * (p * r) / (p + r + 1e-8)
}

fn lcs_len<T: PartialEq>(x: &[T], y: &[T]) -> usize {
    let mut prev = vec![0usize; y.len() + 1];
    let mut row = vec![0usize; y.len() + 1];
    for a in x {
        for (j, b) in y.iter().enumerate() {
            row[j + 1] = if a == b { prev[j] + 1 } else { row[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[y.len()]
}

/// nltk's `sentence_bleu([reference], hypothesis, smoothing_function=method3)` with the default
/// weights (0.25 for each of 1..4-grams).
fn bleu4<T: Hash + Eq + Clone>(hyp: &[T], reference: &[T]) -> f64 {
    let mut precisions = Vec::with_capacity(4);
    for n in 1..=4 {
        let mut ref_counts: HashMap<&[T], usize> = HashMap::new();
        for g in ngrams(reference, n) {
            *ref_counts.entry(g).or_default() += 1;
        }
        let mut hyp_counts: HashMap<&[T], usize> = HashMap::new();
        for g in ngrams(hyp, n) {
            *hyp_counts.entry(g).or_default() += 1;
        }
        let clipped: usize = hyp_counts.iter().map(|(g, c)| (*c).min(ref_counts.get(g).copied().unwrap_or(0))).sum();
        // nltk never divides by zero: an order longer than the hypothesis has denominator 1.
        let total = hyp_counts.values().sum::<usize>().max(1);
        precisions.push((clipped, total));
    }
    if precisions[0].0 == 0 {
        return 0.0;
    }
    let (c, r) = (hyp.len() as f64, reference.len() as f64);
    let brevity = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    let mut k = 0;
    let log_sum: f64 = precisions
        .iter()
        .map(|&(matched, total)| {
            let p = if matched == 0 {
                k += 1;
                1.0 / (2f64.powi(k) * total as f64)
            } else {
                matched as f64 / total as f64
            };
            0.25 * p.ln()
        })
        .sum();
    brevity * log_sum.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn bleu_matches_hand_computed_values() {
        assert!(close(bleu4(&chars("the cat"), &chars("the cat")), 1.0));
        // p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 -> 1/2; equal lengths.
        let want = (0.75f64 * (2.0 / 3.0) * 0.5 * 0.5).powf(0.25);
        assert!(close(bleu4(&chars("abcd"), &chars("abce")), want));
        // p1 = 2/2, p2 = 1/1, p3 = 0/1 -> 1/2, p4 = 0/1 -> 1/4; brevity exp(1 - 4/2).
        let want = (0.5f64 * 0.25).powf(0.25) * (-1f64).exp();
        assert!(close(bleu4(&chars("ab"), &chars("abcd")), want));
        // Clipping: "aaaa" against "ab" matches one "a" of four; no 2-, 3- or 4-gram matches, so
        // they smooth to 1/(2·3), 1/(4·2), 1/(8·1); longer than the reference, no penalty.
        let want = (0.25f64 * (1.0 / 6.0) * (1.0 / 8.0) * (1.0 / 8.0)).powf(0.25);
        assert!(close(bleu4(&chars("aaaa"), &chars("ab")), want));
        assert_eq!(bleu4(&chars("xy"), &chars("ab")), 0.0);
        assert_eq!(bleu4(&chars(""), &chars("ab")), 0.0);
    }

    #[test]
    fn rouge_counts_distinct_ngrams_and_the_longest_common_subsequence() {
        let s = Similarity::new();
        let sc = s.score("the cat sat", "the cat ran");
        assert_eq!((sc.rouge1, sc.rouge2, sc.rouge_l), (66.6667, 50.0, 66.6667));
        // Repeated words count once for ROUGE-N, every time for ROUGE-L (LCS 2 of 4 and 2).
        let sc = s.score("a a a b", "a b");
        assert_eq!((sc.rouge1, sc.rouge_l), (100.0, 66.6667));
        // Punctuation is a word of its own, and identical texts score 100 everywhere.
        let sc = s.score("Hello, world.", "Hello, world.");
        assert_eq!(sc, Scores { bleu4: 100.0, rouge1: 100.0, rouge2: 100.0, rouge_l: 100.0 });
        assert_eq!(s.score("", "anything"), Scores::default());
        assert_eq!(s.score("  \n", "anything"), Scores::default());
    }

    #[test]
    fn chinese_is_cut_into_jieba_words() {
        let s = Similarity::new();
        assert_eq!(s.words("我爱北京天安门"), ["我", "爱", "北京", "天安门"]);
        // Three of four words, all three of the reference's: P 3/4, R 1.
        let sc = s.score("我爱北京天安门", "我爱北京");
        assert_eq!(sc.rouge1, 85.7143);
        assert_eq!(s.words("3.14 and xs[::-1]"), ["3.14", "and", "xs", "[", ":", ":", "-", "1", "]"]);
        // As Python's jieba cuts them (checked against jieba 0.42).
        for (text, words) in [
            ("xs.reverse()", &["xs", ".", "reverse", "(", ")"][..]),
            ("well-known 1.2.3", &["well", "-", "known", "1.2", ".", "3"]),
            ("OPENSSL_1_1_1 50%", &["OPENSSL", "_", "1", "_", "1", "_", "1", "50%"]),
            ("a.-b C++ and c#", &["a", ".-", "b", "C++", "and", "c#"]),
            ("我的xs.reverse方法", &["我", "的", "xs", ".", "reverse", "方法"]),
        ] {
            assert_eq!(s.words(text), words, "{text}");
        }
    }

    #[test]
    fn sentences_break_like_rouge_chinese() {
        assert_eq!(cut_sentences("好。再见！"), ["好。", "再见！"]);
        assert_eq!(cut_sentences("他说：“好。”然后走了"), ["他说：“好。”", "然后走了"]);
        assert_eq!(cut_sentences("a?b  "), ["a?", "b"]);
        // A blank line is a sentence of its own: one empty word.
        let s = Similarity::new();
        assert_eq!(s.words("a\n\nb"), ["a", "", "b"]);
    }

    #[test]
    fn averages_are_per_score_means() {
        let a = Scores { bleu4: 10.0, rouge1: 20.0, rouge2: 30.0, rouge_l: 40.0 };
        let b = Scores { bleu4: 30.0, rouge1: 40.0, rouge2: 50.0, rouge_l: 60.0 };
        assert_eq!(average(&[a, b]), Scores { bleu4: 20.0, rouge1: 30.0, rouge2: 40.0, rouge_l: 50.0 });
        assert_eq!(average(&[]), Scores::default());
    }
}
