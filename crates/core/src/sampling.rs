//! Token sampling: turns one step's logits into the next token id.
//!
//! The pipeline follows what HF transformers / vLLM / LLaMA Factory users expect:
//!
//! 1. penalties, applied to `logits` in place:
//!    - `repetition_penalty` (HF / CTRL style) over every *distinct* id of prompt + generated:
//!      a positive logit is divided by the penalty, any other is multiplied by it;
//!    - `presence_penalty` / `frequency_penalty` (OpenAI style) over generated ids only:
//!      `logit -= presence * [count > 0] + frequency * count`;
//! 2. `temperature == 0` → greedy argmax (ties → lowest id); otherwise
//! 3. temperature → top_k → top_p (nucleus: the smallest most-probable set whose mass is
//!    ≥ top_p, never empty) → min_p (drop tokens with prob < min_p · max prob) → one draw from
//!    the renormalised distribution with a seeded [`StdRng`].
//!
//! Invariants:
//! - Deterministic: the same params (with a seed) and the same inputs give the same tokens.
//!   Ties are always broken towards the lower id, so the order of work never leaks into results.
//! - Never panics, whatever the logits (NaN, ±inf, empty) or ids (out of range ids are ignored).
//!   NaN logits count as impossible tokens; if no token is possible, id 0 is returned.
//! - Cost per token on a 150k–260k vocabulary: O(vocab) plus a partial selection; no full sort
//!   unless top_p needs most of the vocabulary, and no allocation once the sampler's buffers
//!   have grown to the vocabulary size.
//!
//! Log-probabilities ([`token_logprobs`], OpenAI's `logprobs`) are a separate pass, run only
//! for requests that ask: they describe the model's own distribution (`log_softmax` of the raw
//! logits, before penalties, temperature, filters or a grammar mask), as OpenAI and vLLM
//! report them; the distribution after those stages is degenerate for greedy decoding.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;

mod logprobs;
pub use logprobs::{token_logprobs, TokenLogprobs, MAX_TOP_LOGPROBS};

/// A [`SamplingParams`] field outside its allowed range (or NaN).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `field` must satisfy `limit`, e.g. "top_p must be in (0, 1], got 1.5".
    #[error("{field} must be {limit}, got {value}")]
    OutOfRange {
        field: &'static str,
        limit: &'static str,
        value: f32,
    },
}

/// How to pick the next token. Neutral values switch a stage off: `top_p` 1, `top_k` 0,
/// `min_p` 0, `repetition_penalty` 1, `presence_penalty` / `frequency_penalty` 0.
/// Missing fields deserialize to their [`Default`] values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` seeds the sampler from OS entropy.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution: temperature 1, every filter and penalty off.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0), everything else neutral.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field's range; NaN is rejected everywhere.
    pub fn validate(&self) -> Result<(), SamplingError> {
        // (field, value, allowed, description of the limit)
        let checks = [
            (
                "temperature",
                self.temperature,
                self.temperature.is_finite() && self.temperature >= 0.0,
                "finite and >= 0",
            ),
            (
                "top_p",
                self.top_p,
                self.top_p > 0.0 && self.top_p <= 1.0,
                "in (0, 1]",
            ),
            (
                "min_p",
                self.min_p,
                (0.0..=1.0).contains(&self.min_p),
                "in [0, 1]",
            ),
            (
                "repetition_penalty",
                self.repetition_penalty,
                self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
                "finite and > 0",
            ),
            (
                "presence_penalty",
                self.presence_penalty,
                (-2.0..=2.0).contains(&self.presence_penalty),
                "in [-2, 2]",
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                (-2.0..=2.0).contains(&self.frequency_penalty),
                "in [-2, 2]",
            ),
        ];
        // NaN fails every comparison above, so it is rejected by each check.
        match checks.into_iter().find(|&(_, _, ok, _)| !ok) {
            Some((field, value, _, limit)) => Err(SamplingError::OutOfRange {
                field,
                limit,
                value,
            }),
            None => Ok(()),
        }
    }
}

/// A token still in the running, with its unnormalised probability `exp((logit - max) / T)`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    weight: f32,
}

/// Most probable first; equal weights → lower id first, so selections are deterministic.
fn by_weight_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.weight.total_cmp(&a.weight).then(a.id.cmp(&b.id))
}

/// Index of the largest logit, lowest index on ties; NaN never wins. 0 if nothing beats -inf.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_logit = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_logit {
            best = i;
            best_logit = l;
        }
    }
    best as u32
}

/// Samples token ids for one sequence. Holds the RNG and scratch buffers reused across steps.
/// Expects validated params; invalid ones never panic (out-of-range filters act as neutral or
/// as strict as they can), but their results are unspecified.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Surviving tokens of the current step; grows once to the vocabulary size.
    candidates: Vec<Candidate>,
    /// Sorted copies of prompt / generated ids, to visit each distinct id once.
    id_scratch: Vec<u32>,
}

/// Nucleus selection starts from this many top tokens and grows ×4 until the mass is reached:
/// the nucleus is usually small, so this avoids sorting the whole vocabulary.
const NUCLEUS_FIRST_CHUNK: usize = 64;

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            candidates: Vec::new(),
            id_scratch: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (one per vocabulary id), given the ids of the prompt
    /// and of the tokens generated so far. Penalties are applied to `logits` in place.
    pub fn sample(&mut self, logits: &mut [f32], prompt: &[u32], generated: &[u32]) -> u32 {
        self.apply_penalties(logits, prompt, generated);
        let temperature = self.params.temperature;
        // NaN and negative temperatures (rejected by `validate`) fall back to greedy, not a panic.
        if temperature.is_nan() || temperature <= 0.0 {
            return argmax(logits);
        }
        if !self.collect_candidates(logits, temperature) {
            return argmax(logits);
        }
        self.apply_top_k();
        self.apply_top_p();
        self.apply_min_p();
        self.draw()
    }

    fn apply_penalties(&mut self, logits: &mut [f32], prompt: &[u32], generated: &[u32]) {
        let p = &self.params;
        let repetition = p.repetition_penalty;
        if repetition != 1.0 {
            self.id_scratch.clear();
            self.id_scratch.extend_from_slice(prompt);
            self.id_scratch.extend_from_slice(generated);
            self.id_scratch.sort_unstable();
            self.id_scratch.dedup();
            for &id in &self.id_scratch {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / repetition
                    } else {
                        *l * repetition
                    };
                }
            }
        }
        let (presence, frequency) = (p.presence_penalty, p.frequency_penalty);
        if presence != 0.0 || frequency != 0.0 {
            self.id_scratch.clear();
            self.id_scratch.extend_from_slice(generated);
            self.id_scratch.sort_unstable();
            // Runs of equal ids in the sorted copy give each id's count.
            for run in self.id_scratch.chunk_by(|a, b| a == b) {
                if let Some(l) = logits.get_mut(run[0] as usize) {
                    *l -= presence + frequency * run.len() as f32;
                }
            }
        }
    }

    /// Fills `candidates` with every token of non-zero probability and its weight relative to
    /// the most likely token (whose weight is exactly 1). Subtracting the max before dividing by
    /// `temperature` keeps tiny temperatures from overflowing. Returns false if no token is
    /// possible (all logits NaN or -inf).
    fn collect_candidates(&mut self, logits: &[f32], temperature: f32) -> bool {
        let max = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        self.candidates.clear();
        if max == f32::NEG_INFINITY {
            return false;
        }
        let ids = (0u32..).zip(logits.iter().copied());
        if max == f32::INFINITY {
            // +inf logits take all the mass, shared equally.
            let top = ids.filter(|&(_, l)| l == f32::INFINITY);
            self.candidates
                .extend(top.map(|(id, _)| Candidate { id, weight: 1.0 }));
        } else {
            let weighted = ids.map(|(id, l)| Candidate {
                id,
                weight: ((l - max) / temperature).exp(),
            });
            // NaN logits give NaN weights; underflowed ones give 0: neither can be drawn.
            self.candidates.extend(weighted.filter(|c| c.weight > 0.0));
        }
        true
    }

    fn apply_top_k(&mut self) {
        let k = self.params.top_k;
        if k == 0 || k >= self.candidates.len() {
            return;
        }
        self.candidates
            .select_nth_unstable_by(k - 1, by_weight_desc);
        self.candidates.truncate(k);
    }

    /// Keeps the smallest most-probable prefix whose mass is ≥ `top_p` of the candidates' mass.
    fn apply_top_p(&mut self) {
        let top_p = self.params.top_p;
        if top_p.is_nan() || top_p >= 1.0 {
            return;
        }
        let total: f64 = self.candidates.iter().map(|c| f64::from(c.weight)).sum();
        let target = f64::from(top_p) * total;
        let n = self.candidates.len();
        // candidates[..sorted] hold the top `sorted` tokens in order; extend chunk by chunk.
        let mut sorted = 0;
        let mut chunk_end = NUCLEUS_FIRST_CHUNK.min(n);
        let mut mass = 0.0f64;
        while sorted < n {
            let rest = &mut self.candidates[sorted..];
            let take = chunk_end - sorted;
            if take < rest.len() {
                rest.select_nth_unstable_by(take - 1, by_weight_desc);
            }
            rest[..take].sort_unstable_by(by_weight_desc);
            for i in sorted..chunk_end {
                mass += f64::from(self.candidates[i].weight);
                if mass >= target {
                    self.candidates.truncate(i + 1);
                    return;
                }
            }
            sorted = chunk_end;
            chunk_end = chunk_end.saturating_mul(4).min(n);
        }
        // Rounding kept the sum just under the target: the nucleus is everything.
    }

    /// Drops tokens less likely than `min_p` times the most likely one. The most likely token
    /// has weight 1 (see `collect_candidates`) and always survives top_k / top_p.
    fn apply_min_p(&mut self) {
        let min_p = self.params.min_p;
        // Capping at 1 (below) keeps the top token even for invalid values.
        if min_p.is_nan() || min_p <= 0.0 {
            return;
        }
        let threshold = min_p.min(1.0);
        self.candidates.retain(|c| c.weight >= threshold);
    }

    /// One draw from the candidates, proportionally to their weights.
    fn draw(&mut self) -> u32 {
        let total: f64 = self.candidates.iter().map(|c| f64::from(c.weight)).sum();
        let mut r = self.rng.random::<f64>() * total;
        for c in &self.candidates {
            r -= f64::from(c.weight);
            if r < 0.0 {
                return c.id;
            }
        }
        // Rounding left `r` at or just above 0: the last candidate is the one reached.
        self.candidates.last().map_or(0, |c| c.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(params: SamplingParams, seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            seed: Some(seed),
            ..params
        })
    }

    /// A fixed pseudo-random logit vector (no RNG dependency in the expectation).
    pub(super) fn wavy_logits(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37).sin() * 3.0) + ((i * 7919) % 13) as f32 * 0.1)
            .collect()
    }

    pub(super) fn softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| f64::from((l - max) / temperature).exp())
            .collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            let mut l = logits.to_vec();
            counts[sampler.sample(&mut l, &[], &[]) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn assert_close(observed: &[f64], expected: &[f64], tol: f64) {
        for (i, (o, e)) in observed.iter().zip(expected).enumerate() {
            assert!(
                (o - e).abs() <= tol,
                "token {i}: observed {o}, expected {e}"
            );
        }
    }

    #[test]
    fn defaults_and_greedy_constructor() {
        let d = SamplingParams::default();
        assert_eq!(
            (d.temperature, d.top_p, d.top_k, d.min_p),
            (1.0, 1.0, 0, 0.0)
        );
        assert_eq!(
            (
                d.repetition_penalty,
                d.presence_penalty,
                d.frequency_penalty,
                d.seed
            ),
            (1.0, 0.0, 0.0, None)
        );
        assert!(!d.is_greedy());
        assert!(SamplingParams::greedy().is_greedy());
        assert!(d.validate().is_ok() && SamplingParams::greedy().validate().is_ok());
    }

    #[test]
    fn missing_json_fields_take_defaults() {
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.5,"seed":7}"#).expect("valid json");
        assert_eq!(
            p,
            SamplingParams {
                temperature: 0.5,
                seed: Some(7),
                ..SamplingParams::default()
            }
        );
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9], &[], &[]), 1);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 3.0], &[], &[]), 1);
        let logits = wavy_logits(50_000);
        let expected = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b })
            .0 as u32;
        assert_eq!(s.sample(&mut logits.clone(), &[], &[]), expected);
    }

    #[test]
    fn nan_inf_and_empty_logits_do_not_panic() {
        for params in [
            SamplingParams::greedy(),
            SamplingParams::default(),
            SamplingParams {
                top_k: 2,
                top_p: 0.5,
                min_p: 0.1,
                ..SamplingParams::default()
            },
        ] {
            let mut s = seeded(params, 1);
            // NaN is never chosen while a real token exists.
            assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN], &[], &[]), 1);
            assert_eq!(s.sample(&mut [f32::NAN, f32::NAN], &[], &[]), 0);
            assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 3], &[], &[]), 0);
            assert_eq!(s.sample(&mut [], &[], &[]), 0);
            let inf = s.sample(&mut [0.0, f32::INFINITY, 5.0, f32::INFINITY], &[], &[]);
            assert!(inf == 1 || inf == 3, "got {inf}");
            // Out-of-range ids in the history are ignored.
            assert_eq!(s.sample(&mut [0.0, 30.0], &[7, 1], &[u32::MAX]), 1);
        }
        // Invalid params that skipped validation must not panic either.
        let wild = SamplingParams {
            temperature: f32::NAN,
            top_p: f32::NAN,
            min_p: 7.0,
            repetition_penalty: -1.0,
            ..SamplingParams::default()
        };
        seeded(wild, 0).sample(&mut [1.0, 2.0], &[0], &[1]);
        let tiny_t = SamplingParams {
            temperature: 1e-30,
            min_p: 7.0,
            top_p: -1.0,
            ..SamplingParams::default()
        };
        assert_eq!(seeded(tiny_t, 0).sample(&mut [1.0, 2.0, 1.5], &[], &[]), 1);
    }

    fn sequence(seed: u64, n: usize) -> Vec<u32> {
        let mut s = seeded(SamplingParams::default(), seed);
        let logits = vec![0.0f32; 16];
        (0..n)
            .map(|_| s.sample(&mut logits.clone(), &[], &[]))
            .collect()
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different() {
        assert_eq!(sequence(42, 64), sequence(42, 64));
        // 64 uniform draws over 16 tokens: equal by chance with probability 16^-64.
        assert_ne!(sequence(42, 64), sequence(43, 64));
    }

    #[test]
    fn top_k_1_and_tiny_top_p_are_greedy() {
        let logits = wavy_logits(152_000);
        let greedy = argmax(&logits);
        for params in [
            SamplingParams {
                top_k: 1,
                temperature: 2.0,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 1e-6,
                temperature: 2.0,
                ..SamplingParams::default()
            },
        ] {
            let mut s = seeded(params, 3);
            for _ in 0..20 {
                assert_eq!(s.sample(&mut logits.clone(), &[], &[]), greedy);
            }
        }
        // Ties: both pick the lowest id among the best, like greedy.
        for params in [
            SamplingParams {
                top_k: 1,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 1e-6,
                ..SamplingParams::default()
            },
        ] {
            let mut s = seeded(params, 3);
            for _ in 0..20 {
                assert_eq!(s.sample(&mut [0.0, 5.0, 1.0, 5.0], &[], &[]), 1);
            }
        }
    }

    #[test]
    fn empirical_distribution_matches_softmax_with_temperature() {
        let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5, 0.0];
        for temperature in [0.7f32, 1.0, 1.8] {
            let params = SamplingParams {
                temperature,
                ..SamplingParams::default()
            };
            let observed = frequencies(&mut seeded(params, 9), &logits, 20_000);
            // Std dev of a frequency is ≤ sqrt(0.25 / 20000) ≈ 0.0035; allow ~4 sigma.
            assert_close(&observed, &softmax(&logits, temperature), 0.015);
        }
    }

    #[test]
    fn top_k_keeps_the_k_best_renormalised() {
        let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5, 0.0];
        let params = SamplingParams {
            top_k: 3,
            ..SamplingParams::default()
        };
        let observed = frequencies(&mut seeded(params, 5), &logits, 20_000);
        let kept = softmax(&[1.0, 2.0, 1.5], 1.0);
        let expected = [kept[0], kept[1], 0.0, 0.0, kept[2], 0.0];
        assert_close(&observed, &expected, 0.015);
    }

    #[test]
    fn top_p_keeps_smallest_set_reaching_the_mass() {
        // probs 0.5, 0.25, 0.125, 0.0625, 0.0625
        let logits: Vec<f32> = [0.5f32, 0.25, 0.125, 0.0625, 0.0625]
            .iter()
            .map(|p| p.ln())
            .collect();
        let run = |top_p: f32| {
            let params = SamplingParams {
                top_p,
                ..SamplingParams::default()
            };
            frequencies(&mut seeded(params, 11), &logits, 20_000)
        };
        // 0.5 + 0.25 = 0.75 ≥ 0.7: two tokens, renormalised to 2/3 and 1/3.
        assert_close(&run(0.7), &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0, 0.0], 0.015);
        // Exactly reaching the mass is enough: 0.75 ≥ 0.75.
        assert_close(&run(0.75), &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0, 0.0], 0.015);
        // 0.76 needs the third token.
        assert_close(
            &run(0.76),
            &[4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0, 0.0, 0.0],
            0.015,
        );
    }

    #[test]
    fn top_p_on_a_large_flat_vocabulary_grows_past_the_first_chunk() {
        // 1000 equal tokens: top_p 0.5 keeps exactly the 500 lowest ids (ties → lower id).
        let logits = vec![0.0f32; 1000];
        let params = SamplingParams {
            top_p: 0.5,
            ..SamplingParams::default()
        };
        let mut s = seeded(params, 2);
        let mut seen = [false; 1000];
        for _ in 0..20_000 {
            seen[s.sample(&mut logits.clone(), &[], &[]) as usize] = true;
        }
        assert!(seen[..500].iter().all(|&x| x), "every kept token is drawn");
        assert!(seen[500..].iter().all(|&x| !x), "no dropped token is drawn");
    }

    #[test]
    fn min_p_drops_tokens_below_fraction_of_max() {
        // probs ∝ 1, 0.5, 0.2, 0.05: min_p 0.25 keeps the first two.
        let logits: Vec<f32> = [1.0f32, 0.5, 0.2, 0.05].iter().map(|p| p.ln()).collect();
        let params = SamplingParams {
            min_p: 0.25,
            ..SamplingParams::default()
        };
        let observed = frequencies(&mut seeded(params, 4), &logits, 20_000);
        assert_close(&observed, &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0], 0.015);
        // min_p 1 keeps only the most likely token.
        let params = SamplingParams {
            min_p: 1.0,
            ..SamplingParams::default()
        };
        let observed = frequencies(&mut seeded(params, 4), &logits, 2_000);
        assert_close(&observed, &[1.0, 0.0, 0.0, 0.0], 0.0);
    }

    /// Runs only the penalty stage (greedy sampling leaves the logits as penalised).
    fn penalised(
        params: SamplingParams,
        logits: &[f32],
        prompt: &[u32],
        generated: &[u32],
    ) -> Vec<f32> {
        let mut l = logits.to_vec();
        Sampler::new(SamplingParams {
            temperature: 0.0,
            ..params
        })
        .sample(&mut l, prompt, generated);
        l
    }

    #[test]
    fn repetition_penalty_divides_positive_multiplies_negative_once_per_id() {
        let logits = [2.0f32, -1.0, 3.0, 0.0, 4.0];
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        };
        // id 0 appears three times across prompt and generated, yet is penalised once.
        let got = penalised(params, &logits, &[0, 1, 0], &[3, 0, 2]);
        assert_eq!(got, vec![1.0, -2.0, 1.5, 0.0, 4.0]);
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_only() {
        let logits = [1.0f32, 1.0, 1.0, 1.0];
        let params = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::default()
        };
        // id 3 is only in the prompt: untouched. id 0 generated 3×, id 1 once.
        let got = penalised(params.clone(), &logits, &[3, 3], &[0, 1, 0, 0]);
        assert_eq!(got, vec![1.0 - 0.5 - 0.75, 1.0 - 0.5 - 0.25, 1.0, 1.0]);
        let presence_only = SamplingParams {
            frequency_penalty: 0.0,
            ..params.clone()
        };
        assert_eq!(
            penalised(presence_only, &logits, &[], &[0, 1, 0, 0]),
            vec![0.5, 0.5, 1.0, 1.0]
        );
        let frequency_only = SamplingParams {
            presence_penalty: 0.0,
            ..params
        };
        assert_eq!(
            penalised(frequency_only, &logits, &[], &[0, 1, 0, 0]),
            vec![0.25, 0.75, 1.0, 1.0]
        );
    }

    #[test]
    fn penalties_apply_before_greedy() {
        let params = SamplingParams {
            frequency_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params);
        // Token 0 leads by 1 but was generated once: 3 - 2 = 1 < 2.
        assert_eq!(s.sample(&mut [3.0, 2.0], &[], &[0]), 1);
    }

    #[test]
    fn validation_names_field_and_limit() {
        let bad = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            p.validate().expect_err("must be rejected").to_string()
        };
        assert_eq!(bad(|p| p.top_p = 1.5), "top_p must be in (0, 1], got 1.5");
        assert_eq!(bad(|p| p.top_p = 0.0), "top_p must be in (0, 1], got 0");
        assert_eq!(
            bad(|p| p.temperature = -0.1),
            "temperature must be finite and >= 0, got -0.1"
        );
        assert_eq!(
            bad(|p| p.temperature = f32::INFINITY),
            "temperature must be finite and >= 0, got inf"
        );
        assert_eq!(bad(|p| p.min_p = 1.1), "min_p must be in [0, 1], got 1.1");
        assert_eq!(
            bad(|p| p.repetition_penalty = 0.0),
            "repetition_penalty must be finite and > 0, got 0"
        );
        assert_eq!(
            bad(|p| p.presence_penalty = 2.5),
            "presence_penalty must be in [-2, 2], got 2.5"
        );
        assert_eq!(
            bad(|p| p.frequency_penalty = -3.0),
            "frequency_penalty must be in [-2, 2], got -3"
        );
        for set_nan in [
            |p: &mut SamplingParams| p.temperature = f32::NAN,
            |p: &mut SamplingParams| p.top_p = f32::NAN,
            |p: &mut SamplingParams| p.min_p = f32::NAN,
            |p: &mut SamplingParams| p.repetition_penalty = f32::NAN,
            |p: &mut SamplingParams| p.presence_penalty = f32::NAN,
            |p: &mut SamplingParams| p.frequency_penalty = f32::NAN,
        ] {
            assert!(bad(set_nan).ends_with("got NaN"));
        }
        // Boundaries that are allowed.
        let edge = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 1.0,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            ..SamplingParams::default()
        };
        assert_eq!(edge.validate(), Ok(()));
    }
}
