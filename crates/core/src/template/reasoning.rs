//! Reasoning ("thinking") text of models such as Qwen3 and DeepSeek-R1, separated from the
//! answer: `<think>…</think>` becomes `reasoning_content`, the rest `content`.
//!
//! Rules ([`split_reasoning`], and [`ReasoningStream`] for a reply that streams):
//! - A reply whose first non-space text is `<think>` reasons until `</think>`. When the prompt
//!   itself ends with `<think>` (DeepSeek-R1's templates open the block for the model, see
//!   [`prompt_opens_thinking`]) the reply starts inside the block.
//! - The reasoning is trimmed of surrounding whitespace and is `None` when empty (Qwen3 with
//!   thinking switched off writes an empty block); the content after `</think>` loses its
//!   leading whitespace. A block never closed (generation cut short) is all reasoning.
//! - A reply without the block is all content, unchanged.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Whether a rendered prompt leaves the model inside a thinking block.
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    prompt.trim_end().ends_with(OPEN)
}

/// Splits a complete reply into its reasoning and its content (see the module doc);
/// `prompt_opens_thinking` as [`prompt_opens_thinking`] tells for the prompt.
pub fn split_reasoning(text: &str, prompt_opens_thinking: bool) -> (Option<String>, String) {
    let inside = if prompt_opens_thinking {
        Some(text)
    } else {
        text.trim_start().strip_prefix(OPEN)
    };
    let Some(inside) = inside else {
        return (None, text.to_owned());
    };
    let (reasoning, content) = match inside.find(CLOSE) {
        Some(end) => (&inside[..end], inside[end + CLOSE.len()..].trim_start()),
        None => (inside, ""),
    };
    let reasoning = reasoning.trim();
    (
        (!reasoning.is_empty()).then(|| reasoning.to_owned()),
        content.to_owned(),
    )
}

/// LLaMA Factory's `remove_thought`, which reasoning templates apply to earlier assistant turns:
/// every `<think>\n…\n</think>\n\n` block removed (leftmost first, shortest), then leading
/// newlines.
pub(super) fn remove_thought(text: &str) -> String {
    const START: &str = "<think>\n";
    const END: &str = "\n</think>\n\n";
    let (mut out, mut rest) = (String::new(), text);
    while let Some(start) = rest.find(START) {
        let body = start + START.len();
        let Some(end) = rest[body..].find(END) else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[body + end + END.len()..];
    }
    out.push_str(rest);
    out.trim_start_matches('\n').to_owned()
}

/// Text a [`ReasoningStream`] passes on: reasoning, content, or (at the switch) both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasoningDelta {
    pub reasoning: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet known whether the reply opens a thinking block.
    Start,
    /// Inside the block; `started` once non-space reasoning was passed on.
    Reasoning { started: bool },
    /// After the block (or without one); `started` once content was passed on (leading
    /// whitespace after `</think>` is dropped).
    Content { started: bool },
}

/// [`split_reasoning`] for a reply arriving in pieces.
///
/// Invariant: for any split of a reply into deltas, the reasoning and content of the
/// [`push`](Self::push) results followed by [`finish`](Self::finish)'s, concatenated, are
/// [`split_reasoning`]'s reasoning (empty for `None`) and content for the whole reply. Held
/// back meanwhile: a possible `<think>` at the start, a possible `</think>` and whitespace at
/// the end of the reasoning so far.
#[derive(Debug, Clone)]
pub struct ReasoningStream {
    phase: Phase,
    /// Text of the current phase not passed on yet.
    pending: String,
}

impl ReasoningStream {
    pub fn new(prompt_opens_thinking: bool) -> Self {
        let phase = if prompt_opens_thinking {
            Phase::Reasoning { started: false }
        } else {
            Phase::Start
        };
        Self {
            phase,
            pending: String::new(),
        }
    }

    /// Adds a delta of the reply; returns what it makes certain.
    pub fn push(&mut self, delta: &str) -> ReasoningDelta {
        self.pending.push_str(delta);
        let mut out = ReasoningDelta::default();
        loop {
            match self.phase {
                Phase::Start => {
                    let text = self.pending.trim_start();
                    if let Some(inside) = text.strip_prefix(OPEN) {
                        self.pending = inside.to_owned();
                        self.phase = Phase::Reasoning { started: false };
                    } else if OPEN.starts_with(text) {
                        return out;
                    } else {
                        self.phase = Phase::Content { started: true };
                    }
                }
                Phase::Reasoning { started } => {
                    if !started {
                        self.pending = self.pending.trim_start().to_owned();
                    }
                    if let Some(end) = self.pending.find(CLOSE) {
                        out.reasoning.push_str(self.pending[..end].trim_end());
                        self.pending.drain(..end + CLOSE.len());
                        self.phase = Phase::Content { started: false };
                        continue;
                    }
                    // Keep a possible `</think>` beginning and trailing whitespace.
                    let keep = (1..CLOSE.len())
                        .rev()
                        .find(|&n| self.pending.ends_with(&CLOSE[..n]))
                        .unwrap_or(0);
                    let certain = self.pending[..self.pending.len() - keep].trim_end().len();
                    out.reasoning.push_str(&self.pending[..certain]);
                    self.pending.drain(..certain);
                    self.phase = Phase::Reasoning {
                        started: started || certain > 0,
                    };
                    return out;
                }
                Phase::Content { started } => {
                    let text = if started {
                        self.pending.as_str()
                    } else {
                        self.pending.trim_start()
                    };
                    out.content.push_str(text);
                    self.phase = Phase::Content {
                        started: started || !text.is_empty(),
                    };
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// Ends the reply: what was still held back.
    pub fn finish(mut self) -> ReasoningDelta {
        match self.phase {
            // Whitespace and part of `<think>`: plain content after all.
            Phase::Start => ReasoningDelta {
                reasoning: String::new(),
                content: self.pending,
            },
            // A block never closed: the rest is reasoning, without trailing whitespace.
            Phase::Reasoning { started } => {
                let text = if started {
                    self.pending.trim_end()
                } else {
                    self.pending.trim()
                };
                ReasoningDelta {
                    reasoning: text.to_owned(),
                    content: String::new(),
                }
            }
            Phase::Content { .. } => self.push(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_think_blocks() {
        let split = |text: &str, opened| split_reasoning(text, opened);
        assert_eq!(
            split("<think>\nThe user greets me.\n</think>\n\nHello!", false),
            (Some("The user greets me.".to_owned()), "Hello!".to_owned())
        );
        // Qwen3 with thinking off: an empty block.
        assert_eq!(
            split("<think>\n\n</think>\n\nHi", false),
            (None, "Hi".to_owned())
        );
        // DeepSeek-R1: the prompt opened the block.
        assert_eq!(
            split("Let me think.\n</think>\n\n42", true),
            (Some("Let me think.".to_owned()), "42".to_owned())
        );
        // Cut short inside the block.
        assert_eq!(
            split("  <think>hmm, so", false),
            (Some("hmm, so".to_owned()), String::new())
        );
        // No block: unchanged, even with `</think>` later or a block not at the start.
        for text in ["Hi </think> there", " Say <think> now", "\n", ""] {
            assert_eq!(split(text, false), (None, text.to_owned()));
        }
        assert!(prompt_opens_thinking("<｜Assistant｜><think>\n"));
        assert!(!prompt_opens_thinking(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
    }

    #[test]
    fn removes_thoughts_as_llama_factory_does() {
        assert_eq!(remove_thought("<think>\nadd\n</think>\n\n4"), "4");
        assert_eq!(
            remove_thought("a<think>\n1\n</think>\n\nb<think>\n\n</think>\n\n\nc"),
            "ab\nc"
        );
        // Python's regex needs the newlines: these stay.
        for text in [
            "<think>\n</think>\n\nx",
            "<think>x</think>y",
            "<think>\nopen",
        ] {
            assert_eq!(remove_thought(text), text);
        }
        assert_eq!(remove_thought("\n\nx\n"), "x\n");
    }

    fn stream(text: &str, opened: bool, cuts: &[usize]) -> Vec<ReasoningDelta> {
        let mut stream = ReasoningStream::new(opened);
        let mut start = 0;
        let mut out = Vec::new();
        for &cut in cuts {
            out.push(stream.push(&text[start..cut]));
            start = cut;
        }
        out.push(stream.push(&text[start..]));
        out.push(stream.finish());
        let (reasoning, content) = split_reasoning(text, opened);
        let joined = |f: fn(&ReasoningDelta) -> &str| out.iter().map(f).collect::<String>();
        assert_eq!(
            joined(|d| &d.reasoning),
            reasoning.unwrap_or_default(),
            "{text:?} cut at {cuts:?}"
        );
        assert_eq!(joined(|d| &d.content), content, "{text:?} cut at {cuts:?}");
        out
    }

    #[test]
    fn streaming_matches_one_shot_at_every_split() {
        let samples = [
            (
                "<think>\nStep 1. x < y </thin k>\nStep 2.\n</think>\n\nAnswer: é 🌍",
                false,
            ),
            ("\n <think></think>Answer", false),
            ("<think>\n\n</think>\n\n", false),
            ("<thinking> is not a block", false),
            ("  <thi", false),
            ("<think> never closed  \n", false),
            ("Plain answer", false),
            ("Reasoning from the prompt\n</think>\n\nDone", true),
            ("  no close  ", true),
        ];
        for (text, opened) in samples {
            let boundaries: Vec<usize> = (1..text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for &cut in &boundaries {
                stream(text, opened, &[cut]);
            }
            stream(text, opened, &boundaries);
        }
    }

    #[test]
    fn streaming_passes_text_on_early() {
        let text = "<think>\nFirst, add. </think>Sum";
        let out = stream(text, false, &[8, 14, 20, 23]);
        assert_eq!(out[0], ReasoningDelta::default());
        assert_eq!(out[1].reasoning, "First,");
        assert_eq!(out[2].reasoning, " add.");
        assert_eq!(out[3], ReasoningDelta::default());
        let out = stream("Hello", false, &[1]);
        assert_eq!(out[0].content, "H");
    }
}
