//! The KV budget and the prefix pool: which caches live in memory, and which finished ones
//! are kept for requests that share their prefix. Our own code (the engine's edge).
//!
//! One byte budget covers both: running sequences reserve their whole need (prompt plus
//! `max_new_tokens` positions) at admission, so a running sequence never runs out of room and
//! nothing needs preempting; finished sequences' caches stay pooled, inside the same budget,
//! and are evicted least recently used first when an admission needs the room.
//!
//! Reuse: an admission takes the pooled cache sharing its longest key prefix. Keys are token
//! ids, or for media tokens a key tied to the media's bytes, so a prefix is shared only when
//! it is the same tokens and the same media. Every entry also carries the LoRA adapter its
//! keys and values were computed with (`None`: the base model), and only a request with the
//! same adapter reuses it: two adapters never share KV entries.
//!
//! Invariant: reserved plus pooled bytes never exceed the budget. Generic over the cache
//! type, so it is tested without a model.

/// A finished sequence's cache, kept for requests that share its prefix.
struct Pooled<C> {
    /// The LoRA adapter the cache was computed with.
    adapter: Option<usize>,
    /// The prefix keys of the positions the cache holds.
    keys: Vec<u64>,
    cache: C,
    bytes: usize,
    last_used: u64,
}

/// What an admission got: the budget reserved, and maybe a pooled cache to start from.
pub(crate) struct Admission<C> {
    /// A pooled cache and how many of its leading positions the new request shares.
    pub reused: Option<(C, usize)>,
}

pub(crate) struct PrefixPool<C> {
    capacity: usize,
    /// Bytes reserved by running sequences plus bytes held by the pool.
    used: usize,
    entries: Vec<Pooled<C>>,
    /// Whether finished caches are kept at all.
    enabled: bool,
    /// Ticks once per admission; orders the pool by recency.
    clock: u64,
}

impl<C> PrefixPool<C> {
    pub fn new(capacity: usize, enabled: bool) -> Self {
        Self { capacity, used: 0, entries: Vec::new(), enabled, clock: 0 }
    }

    /// Bytes reserved or pooled.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Admits a request running with `adapter` whose prompt has `keys` and which needs
    /// `need` bytes in all: takes the pooled cache of the same adapter with the longest shared
    /// prefix (at most `max_reuse` positions; none when nothing is shared), evicts least
    /// recently used entries until `need` fits, and reserves it. `None` when it cannot fit yet
    /// (the taken cache goes back to the pool).
    pub fn admit(&mut self, adapter: Option<usize>, keys: &[u64], max_reuse: usize, need: usize) -> Option<Admission<C>> {
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, p)| p.adapter == adapter)
            .map(|(i, p)| (i, common_prefix(&p.keys, keys).min(max_reuse)))
            .filter(|&(_, k)| k > 0)
            .max_by_key(|&(i, k)| (k, self.entries[i].last_used));
        let reuse = best.map(|(i, k)| (self.entries.swap_remove(i), k));
        if let Some((p, _)) = &reuse {
            self.used -= p.bytes;
        }
        while self.used + need > self.capacity && !self.entries.is_empty() {
            let lru = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used).expect("pool not empty");
            self.used -= self.entries.swap_remove(lru).bytes;
        }
        if self.used + need > self.capacity {
            if let Some((p, _)) = reuse {
                self.used += p.bytes;
                self.entries.push(p);
            }
            return None;
        }
        self.used += need;
        self.clock += 1;
        Some(Admission { reused: reuse.map(|(p, k)| (p.cache, k)) })
    }

    /// A running sequence's reservation ends.
    pub fn release(&mut self, bytes: usize) {
        self.used -= bytes;
    }

    /// Offers a finished sequence's cache (computed with `adapter`, already trimmed to `keys`,
    /// `bytes` in size). It is kept unless a pooled entry of the same adapter already covers it
    /// or it does not fit; pooled entries it covers are dropped, being redundant now.
    pub fn offer(&mut self, adapter: Option<usize>, keys: Vec<u64>, cache: C, bytes: usize) {
        if !self.enabled || keys.is_empty() {
            return;
        }
        // If these keys are a prefix of a pooled entry, that entry serves every request these would.
        if self.entries.iter().any(|p| p.adapter == adapter && p.keys.starts_with(&keys)) {
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].adapter == adapter && keys.starts_with(&self.entries[i].keys) {
                self.used -= self.entries.swap_remove(i).bytes;
            } else {
                i += 1;
            }
        }
        if self.used + bytes <= self.capacity {
            self.used += bytes;
            self.entries.push(Pooled { adapter, keys, cache, bytes, last_used: self.clock });
        }
    }
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in cache: its name.
    type Pool = PrefixPool<&'static str>;

    fn keys(n: u64) -> Vec<u64> {
        (0..n).collect()
    }

    #[test]
    fn admission_reserves_and_release_returns() {
        let mut p = Pool::new(100, true);
        let a = p.admit(None, &keys(5), 4, 60).expect("fits");
        assert!(a.reused.is_none());
        assert_eq!(p.used(), 60);
        assert!(p.admit(None, &keys(5), 4, 50).is_none(), "60 + 50 > 100");
        assert_eq!(p.used(), 60, "a refused admission reserves nothing");
        p.release(60);
        assert_eq!(p.used(), 0);
    }

    #[test]
    fn the_longest_shared_prefix_is_reused_up_to_the_limit() {
        let mut p = Pool::new(1000, true);
        p.offer(None, keys(3), "short", 30);
        p.offer(None, vec![0, 1, 9, 9, 9], "diverges", 50);
        p.offer(None, vec![7, 7], "unrelated", 20);
        let a = p.admit(None, &keys(10), 9, 100).expect("fits");
        assert_eq!(a.reused, Some(("short", 3)));
        // The taken entry's bytes left the pool; the others stay.
        assert_eq!(p.used(), 50 + 20 + 100);
        // The last prompt token is always recomputed: reuse is capped by the caller's limit.
        p.offer(None, keys(10), "full", 100);
        let a = p.admit(None, &keys(10), 9, 10).expect("fits");
        assert_eq!(a.reused, Some(("full", 9)));
    }

    #[test]
    fn least_recently_used_entries_are_evicted_for_room() {
        let mut p = Pool::new(100, true);
        p.offer(None, vec![1], "old", 40);
        p.admit(None, &[5], 0, 0).expect("a tick of the clock");
        p.offer(None, vec![2], "new", 40);
        let a = p.admit(None, &[9], 0, 50).expect("fits after evicting one");
        assert!(a.reused.is_none());
        assert_eq!(p.used(), 40 + 50);
        // "new" survived: a request sharing its prefix reuses it.
        p.release(50);
        assert_eq!(p.admit(None, &[2, 3], 1, 10).expect("fits").reused, Some(("new", 1)));
    }

    #[test]
    fn a_cache_that_cannot_fit_goes_back_to_the_pool() {
        let mut p = Pool::new(100, true);
        p.admit(None, &[0], 0, 70).expect("running");
        p.offer(None, vec![1, 2], "kept", 30);
        assert!(p.admit(None, &[1, 2, 3], 2, 90).is_none(), "70 reserved: 90 never fits");
        assert_eq!(p.used(), 100);
        p.release(70);
        assert_eq!(p.admit(None, &[1, 2, 3], 2, 60).expect("fits").reused, Some(("kept", 2)));
    }

    #[test]
    fn redundant_entries_are_not_kept_twice() {
        let mut p = Pool::new(1000, true);
        p.offer(None, keys(4), "four", 40);
        p.offer(None, keys(2), "two", 20);
        assert_eq!(p.used(), 40, "a prefix of a pooled entry adds nothing");
        p.offer(None, keys(6), "six", 60);
        assert_eq!(p.used(), 60, "an entry extending a pooled one replaces it");
        let disabled = &mut Pool::new(1000, false);
        disabled.offer(None, keys(3), "x", 30);
        assert_eq!(disabled.used(), 0);
    }

    #[test]
    fn caches_of_different_adapters_are_never_shared() {
        let mut p = Pool::new(1000, true);
        p.offer(Some(0), keys(4), "adapter 0", 40);
        p.offer(None, keys(4), "base", 40);
        assert_eq!(p.used(), 80, "the same keys under two adapters are two entries");
        assert!(p.admit(Some(1), &keys(6), 5, 10).expect("fits").reused.is_none(), "another adapter's prefix");
        assert_eq!(p.admit(Some(0), &keys(6), 5, 10).expect("fits").reused, Some(("adapter 0", 4)));
        assert_eq!(p.admit(None, &keys(6), 5, 10).expect("fits").reused, Some(("base", 4)));
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        // A deterministic random walk of admissions, releases and offers.
        let mut p = Pool::new(1000, true);
        let mut running: Vec<usize> = Vec::new();
        let mut x: u64 = 12345;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            match next() % 3 {
                0 => {
                    let k: Vec<u64> = (0..next() % 8).map(|_| next() % 3).collect();
                    let need = (next() % 400) as usize;
                    if p.admit(None, &k, k.len().saturating_sub(1), need).is_some() {
                        running.push(need);
                    }
                }
                1 if !running.is_empty() => {
                    let i = (next() as usize) % running.len();
                    p.release(running.swap_remove(i));
                }
                _ => {
                    let k: Vec<u64> = (0..1 + next() % 8).map(|_| next() % 3).collect();
                    p.offer(None, k, "c", (next() % 300) as usize);
                }
            }
            assert!(p.used() <= p.capacity(), "used {} > {}", p.used(), p.capacity());
        }
    }
}
