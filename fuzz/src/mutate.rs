//! Byte-level mutations, plus dictionary tokens for text formats.

/// xorshift64*: fast, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Integers that make parsers and size checks take their edges.
const INTERESTING: [u64; 14] =
    [0, 1, 2, 7, 8, 255, 0x7fff, 65_535, 100_000, 1 << 31, u32::MAX as u64, 1 << 40, 1 << 60, u64::MAX];

pub struct Mutator {
    dictionary: &'static [&'static str],
    max_len: usize,
}

impl Mutator {
    pub fn new(dictionary: &'static [&'static str], max_len: usize) -> Self {
        Mutator { dictionary, max_len }
    }

    /// A mutant of a random corpus entry: one to four stacked mutations.
    pub fn mutate(&self, rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut data = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(4) {
            self.once(rng, &mut data, corpus);
        }
        data.truncate(self.max_len);
        data
    }

    fn once(&self, rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let pos = |rng: &mut Rng, data: &Vec<u8>| rng.below(data.len() + 1);
        match rng.below(9) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = [0, 0xff, 0x7f, 0x80, 1, b'{', b'}', b'%', b'"'][rng.below(9)];
            }
            2 if data.len() >= 8 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let i = rng.below(data.len() - width + 1);
                data[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            3 if !self.dictionary.is_empty() => {
                let token = self.dictionary[rng.below(self.dictionary.len())].as_bytes();
                let i = pos(rng, data);
                data.splice(i..i, token.iter().copied());
            }
            4 if !data.is_empty() => {
                let i = rng.below(data.len());
                let len = 1 + rng.below((data.len() - i).min(64));
                data.drain(i..i + len);
            }
            5 if !data.is_empty() => {
                let i = rng.below(data.len());
                let len = 1 + rng.below((data.len() - i).min(256));
                let chunk = data[i..i + len].to_vec();
                let at = pos(rng, data);
                data.splice(at..at, chunk);
            }
            6 => {
                // Splice: this entry's head with another's tail.
                let other = &corpus[rng.below(corpus.len())];
                let (cut, from) = (pos(rng, data), rng.below(other.len() + 1));
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 => {
                let i = pos(rng, data);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            _ if !data.is_empty() => {
                // A decimal number somewhere: text formats carry sizes as digits.
                let v = INTERESTING[rng.below(INTERESTING.len())].to_string();
                let i = pos(rng, data);
                data.splice(i..i, v.into_bytes());
            }
            _ => data.push(rng.next() as u8),
        }
    }
}
