//! The vocabulary's token texts, packed into one buffer: held as one `String` per token, a
//! 262k-token vocabulary (Gemma 3) costs ~14 MiB of 24-byte headers and small heap blocks;
//! packed, it costs its bytes plus one offset per token.
//!
//! Invariant: `ends` is non-decreasing, its last entry is `text.len()`, and every entry lies on a
//! char boundary of `text` (token `id` is `text[ends[id - 1]..ends[id]]`, from 0 for id 0).

/// Token texts by id.
pub(super) struct Texts {
    text: String,
    ends: Vec<usize>,
}

impl Texts {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, id: usize) -> Option<&str> {
        let end = *self.ends.get(id)?;
        let start = id.checked_sub(1).map_or(0, |prev| self.ends[prev]);
        Some(&self.text[start..end])
    }

    /// The texts in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|id| self.get(id))
    }
}

/// Like slice indexing: panics for an id outside the vocabulary.
impl std::ops::Index<usize> for Texts {
    type Output = str;

    fn index(&self, id: usize) -> &str {
        match self.get(id) {
            Some(text) => text,
            None => panic!("token id {id} is outside the vocabulary ({} tokens)", self.len()),
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Texts {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut texts = Texts { text: String::new(), ends: Vec::new() };
        for s in iter {
            texts.text.push_str(s.as_ref());
            texts.ends.push(texts.text.len());
        }
        texts.text.shrink_to_fit();
        texts.ends.shrink_to_fit();
        texts
    }
}

#[cfg(test)]
mod tests {
    use super::Texts;

    #[test]
    fn texts_by_id_including_empty_ones() {
        let texts: Texts = ["<s>", "", "▁hé", "x"].into_iter().collect();
        assert_eq!(texts.len(), 4);
        assert_eq!((texts.get(0), texts.get(1), texts.get(2), texts.get(4)), (Some("<s>"), Some(""), Some("▁hé"), None));
        assert_eq!(&texts[3], "x");
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["<s>", "", "▁hé", "x"]);
        let empty: Texts = std::iter::empty::<&str>().collect();
        assert_eq!((empty.len(), empty.get(0)), (0, None));
    }
}
