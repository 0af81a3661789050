//! OpenAI's `logprobs`: a generated token's log-probability and the most likely alternatives
//! at its step, from the model's own distribution (`log_softmax` of the raw logits, before
//! penalties, temperature, filters or a grammar mask; see the parent module). Computed only for
//! requests that ask: one O(vocab) pass plus a sorted list of at most 20 entries.

/// Most alternatives [`token_logprobs`] reports per token (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A generated token's log-probability and its most likely alternatives at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub id: u32,
    pub logprob: f32,
    /// `(id, logprob)`, most likely first (ties: lower id first).
    pub top: Vec<(u32, f32)>,
}

/// `log_softmax(logits)` at `chosen` and at the `top_n` most likely ids (at most
/// [`MAX_TOP_LOGPROBS`]). Computed in f64 against the largest logit, so it neither overflows
/// nor loses the small probabilities. NaN logits count as impossible (-inf), as in sampling.
pub fn token_logprobs(logits: &[f32], chosen: u32, top_n: usize) -> TokenLogprobs {
    let value = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l };
    let max = logits.iter().copied().map(value).fold(f32::NEG_INFINITY, f32::max);
    let log_sum = if max.is_finite() {
        let sum: f64 = logits.iter().map(|&l| (f64::from(value(l)) - f64::from(max)).exp()).sum();
        f64::from(max) + sum.ln()
    } else {
        // No finite logit: +inf tokens share all the mass, anything else has none.
        f64::from(max) + (logits.iter().filter(|&&l| l == max).count().max(1) as f64).ln()
    };
    let logprob = |l: f32| {
        let lp = f64::from(value(l)) - log_sum;
        if lp.is_nan() { 0.0 } else { lp as f32 }
    };
    // A small sorted list beats a selection over the whole vocabulary for n ≤ 20.
    let n = top_n.min(MAX_TOP_LOGPROBS).min(logits.len());
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (id, &l) in (0u32..).zip(logits) {
            let l = value(l);
            if top.len() == n && l <= top[n - 1].1 {
                continue;
            }
            // After every equal logit: ties keep the lower id first.
            let at = top.partition_point(|&(_, t)| t >= l);
            top.insert(at, (id, l));
            top.truncate(n);
        }
    }
    TokenLogprobs {
        id: chosen,
        logprob: logits.get(chosen as usize).map_or(f32::NEG_INFINITY, |&l| logprob(l)),
        top: top.into_iter().map(|(id, l)| (id, logprob(l))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::argmax;
    use crate::sampling::tests::{softmax, wavy_logits};

    #[test]
    fn logprobs_are_log_softmax_with_the_most_likely_first() {
        let logits = wavy_logits(5_000);
        let chosen = argmax(&logits);
        let lp = token_logprobs(&logits, chosen, 20);
        let expected: Vec<f64> = softmax(&logits, 1.0).iter().map(|p| p.ln()).collect();
        assert!((f64::from(lp.logprob) - expected[chosen as usize]).abs() < 1e-5);
        assert_eq!(lp.top.len(), 20);
        assert_eq!(lp.top[0], (chosen, lp.logprob), "greedy: the chosen token is the most likely");
        for w in lp.top.windows(2) {
            assert!(w[0].1 >= w[1].1, "sorted: {:?}", lp.top);
        }
        let mut order: Vec<u32> = (0..5_000).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, order[..20]);
        for &(id, l) in &lp.top {
            assert!((f64::from(l) - expected[id as usize]).abs() < 1e-5, "token {id}");
        }
        let mass: f64 = lp.top.iter().map(|t| f64::from(t.1).exp()).sum();
        assert!(mass <= 1.0 + 1e-6, "{mass}");
        // A chosen token need not be among the top ones; more than the limit is capped.
        let worst = token_logprobs(&logits, order[4_999], 100);
        assert_eq!(worst.top.len(), MAX_TOP_LOGPROBS);
        assert!(worst.logprob < worst.top[19].1);
        assert!(token_logprobs(&logits, chosen, 0).top.is_empty());
    }

    #[test]
    fn logprobs_of_odd_logits_are_defined() {
        // Ties: lower id first; a uniform distribution over 4 tokens gives ln(1/4).
        let lp = token_logprobs(&[1.0, 1.0, 1.0, 1.0], 2, 2);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 1]);
        assert!((lp.logprob - 0.25f32.ln()).abs() < 1e-6);
        let lp = token_logprobs(&[f32::NAN, 0.0, f32::NEG_INFINITY], 0, 3);
        assert_eq!((lp.logprob, lp.top[0]), (f32::NEG_INFINITY, (1, 0.0)));
        let lp = token_logprobs(&[f32::INFINITY, 0.0], 0, 1);
        assert_eq!((lp.logprob, lp.top.len()), (0.0, 1));
        assert_eq!(token_logprobs(&[], 3, 5), TokenLogprobs { id: 3, logprob: f32::NEG_INFINITY, top: Vec::new() });
    }
}
