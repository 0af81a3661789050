//! Limits on a GGUF header, checked by one pass over it that allocates nothing in proportion to
//! what the file claims, before candle parses it into vectors and maps.
//!
//! candle already refuses counts that cannot fit in the file, but its own caps (2³⁰ array
//! elements or string bytes) still let a large file claim tens of GB of metadata in memory,
//! and `general.alignment = 0` makes it divide by zero. The limits here are about a hundred
//! times what published models use (the largest vocabularies have ~260k tokens, the largest
//! MoE files ~2k tensors, chat templates are under 50 KB):
//!
//! | field | limit |
//! |---|---|
//! | tensor count | [`MAX_TENSORS`] |
//! | metadata key count | [`MAX_METADATA_KEYS`] |
//! | metadata array elements, all arrays together | [`MAX_ARRAY_ELEMENTS`] |
//! | arrays nested in arrays | [`MAX_ARRAY_NESTING`] |
//! | a key's length | [`MAX_KEY_BYTES`] (the GGUF spec's) |
//! | a string value's or tensor name's length | [`MAX_STRING_BYTES`] |
//! | tensor dimensions | [`MAX_DIMS`] (ggml's), their product at most 8 × the file size |
//! | `general.alignment` | a power of two (when not negative, which candle ignores) |
//!
//! Anything else malformed (bad magic, unknown value types, truncation) is left for candle to
//! report with its own message.

use std::io::{self, Read};

pub const MAX_TENSORS: u64 = 1 << 20;
pub const MAX_METADATA_KEYS: u64 = 1 << 16;
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
pub const MAX_ARRAY_NESTING: usize = 2;
pub const MAX_KEY_BYTES: u64 = 65_535;
pub const MAX_STRING_BYTES: u64 = 16 << 20;
pub const MAX_DIMS: u64 = 4;

/// A header field past its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {value}, over the limit of {limit}")]
pub struct OverLimit {
    pub field: String,
    pub value: u64,
    pub limit: u64,
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    OverLimit(OverLimit),
    /// Well within the limits but something candle would crash on.
    Malformed(String),
}

/// Why the pass stopped early.
enum Stop {
    Refuse(Refusal),
    /// Malformed in a way candle reports itself (or an I/O error it will meet again).
    Defer,
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Self {
        Stop::Defer
    }
}

fn over(field: impl Into<String>, value: u64, limit: u64) -> Stop {
    Stop::Refuse(Refusal::OverLimit(OverLimit { field: field.into(), value, limit }))
}

/// Checks the header that `reader` (positioned at the file's start) holds against the limits.
/// Reads sequentially (buffer it) and only as far as the header goes.
pub fn check(reader: impl Read, file_len: u64) -> Result<(), Refusal> {
    let mut walk = Walk { reader, pos: 0, file_len, wide: true, elements: 0 };
    match walk.header() {
        Ok(()) | Err(Stop::Defer) => Ok(()),
        Err(Stop::Refuse(e)) => Err(e),
    }
}

struct Walk<R> {
    reader: R,
    /// Bytes read so far.
    pos: u64,
    file_len: u64,
    /// Lengths and counts are u64 (GGUF v2, v3) rather than u32 (v1).
    wide: bool,
    /// Metadata array elements so far.
    elements: u64,
}

impl<R: Read> Walk<R> {
    fn header(&mut self) -> Result<(), Stop> {
        if !matches!(self.u32()?, 0x4655_4747 | 0x4747_5546) {
            return Err(Stop::Defer);
        }
        self.wide = match self.u32()? {
            1 => false,
            2 | 3 => true,
            _ => return Err(Stop::Defer),
        };
        let tensors = self.len()?;
        let keys = self.len()?;
        if tensors > MAX_TENSORS {
            return Err(over("tensor count", tensors, MAX_TENSORS));
        }
        if keys > MAX_METADATA_KEYS {
            return Err(over("metadata key count", keys, MAX_METADATA_KEYS));
        }
        for _ in 0..keys {
            let key = self.key()?;
            let value_type = self.u32()?;
            self.value(&key, value_type, 0)?;
        }
        for _ in 0..tensors {
            self.tensor()?;
        }
        Ok(())
    }

    fn tensor(&mut self) -> Result<(), Stop> {
        let name = self.string("tensor name length", MAX_STRING_BYTES)?;
        let dims = u64::from(self.u32()?);
        if dims > MAX_DIMS {
            return Err(over(format!("tensor `{name}` dimension count"), dims, MAX_DIMS));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let dim = self.len()?;
            elements = elements.saturating_mul(dim);
        }
        let limit = self.file_len.saturating_mul(8);
        if elements > limit {
            return Err(over(format!("tensor `{name}` element count (8 × the file size)"), elements, limit));
        }
        self.skip(4 + 8) // type, offset
    }

    /// One metadata value of type `value_type` under `key`, `depth` arrays deep.
    fn value(&mut self, key: &str, value_type: u32, depth: usize) -> Result<(), Stop> {
        match value_type {
            0..=5 if key == "general.alignment" && depth == 0 => self.alignment(value_type),
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            5 | 6 => self.skip(4),
            10..=12 => self.skip(8),
            4 => self.skip(4),
            8 => {
                let len = self.string_len(&format!("string length in `{key}`"), MAX_STRING_BYTES)?;
                self.skip(len)
            }
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(over(format!("array nesting in `{key}`"), depth as u64 + 1, MAX_ARRAY_NESTING as u64));
                }
                let item_type = self.u32()?;
                let len = self.len()?;
                self.elements = self.elements.saturating_add(len);
                if self.elements > MAX_ARRAY_ELEMENTS {
                    return Err(over(format!("metadata array elements (at `{key}`)"), self.elements, MAX_ARRAY_ELEMENTS));
                }
                for _ in 0..len {
                    self.value(key, item_type, depth + 1)?;
                }
                Ok(())
            }
            _ => Err(Stop::Defer),
        }
    }

    /// `general.alignment` of integer type `value_type` (0..=5): candle divides by it unless it
    /// is negative, so it must be a power of two.
    fn alignment(&mut self, value_type: u32) -> Result<(), Stop> {
        let width = [1, 1, 2, 2, 4, 4][value_type as usize];
        let mut b = [0; 8];
        self.read(&mut b[..width])?;
        let negative = value_type % 2 == 1 && b[width - 1] & 0x80 != 0;
        let alignment = u64::from_le_bytes(b);
        if !negative && !alignment.is_power_of_two() {
            let problem = format!("general.alignment is {alignment}, not a power of two");
            return Err(Stop::Refuse(Refusal::Malformed(problem)));
        }
        Ok(())
    }

    fn key(&mut self) -> Result<String, Stop> {
        self.string("metadata key length", MAX_KEY_BYTES)
    }

    /// A string (up to `limit` bytes, for names in errors).
    fn string(&mut self, field: &str, limit: u64) -> Result<String, Stop> {
        let len = self.string_len(field, limit)?;
        let mut bytes = vec![0; len as usize];
        self.read(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A string's length prefix, checked against `limit` and the bytes left in the file.
    fn string_len(&mut self, field: &str, limit: u64) -> Result<u64, Stop> {
        let len = self.len()?;
        if len > limit {
            return Err(over(field, len, limit));
        }
        if len > self.file_len.saturating_sub(self.pos) {
            return Err(Stop::Defer);
        }
        Ok(len)
    }

    /// Reads past `bytes` bytes (through a small buffer: skipped strings are not held).
    fn skip(&mut self, bytes: u64) -> Result<(), Stop> {
        let skipped = io::copy(&mut self.reader.by_ref().take(bytes), &mut io::sink())?;
        self.pos += skipped;
        if skipped < bytes {
            return Err(Stop::Defer);
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), Stop> {
        self.reader.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        let mut b = [0; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn len(&mut self) -> Result<u64, Stop> {
        if !self.wide {
            return Ok(u64::from(self.u32()?));
        }
        let mut b = [0; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests;
