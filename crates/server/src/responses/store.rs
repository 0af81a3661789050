//! The responses kept for `previous_response_id` and `GET /v1/responses/{id}`: in memory, at
//! most [`MAX_RESPONSES`] of them and [`MAX_BYTES`] of text, the oldest dropped first. A
//! restart forgets them all; a client continuing a forgotten response gets a 400 saying so.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

use crate::openai::{ChatMessage, Content};

/// Most responses kept.
pub const MAX_RESPONSES: usize = 256;
/// Most text kept, over all responses (their JSON and their conversations' text), in bytes.
pub const MAX_BYTES: usize = 64 << 20;

/// One kept response.
#[derive(Clone)]
pub struct Kept {
    /// The response object as it was returned.
    pub response: Value,
    /// The conversation up to and including this response's output, instructions aside.
    pub conversation: Vec<ChatMessage>,
}

#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, (Kept, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Text bytes a kept response holds, as the bound counts them.
fn size(kept: &Kept) -> usize {
    let text = |m: &ChatMessage| match &m.content {
        Some(Content::Text(t)) => t.len(),
        Some(Content::Parts(parts)) => parts.iter().map(|p| p.text.as_ref().map_or(0, String::len) + 64).sum(),
        None => 0,
    };
    let calls = |m: &ChatMessage| m.tool_calls.iter().flatten().map(|c| c.function.arguments.len() + c.function.name.len() + 64).sum::<usize>();
    kept.response.to_string().len() + kept.conversation.iter().map(|m| text(m) + calls(m) + 64).sum::<usize>()
}

impl Store {
    pub fn get(&self, id: &str) -> Option<Kept> {
        self.lock().by_id.get(id).map(|(k, _)| k.clone())
    }

    /// Keeps `kept` under `id`, dropping the oldest responses while over a bound. A response
    /// larger than the whole bound is not kept.
    pub fn put(&self, id: String, kept: Kept) {
        let bytes = size(&kept);
        if bytes > MAX_BYTES {
            return;
        }
        let mut inner = self.lock();
        while inner.order.len() >= MAX_RESPONSES || inner.bytes + bytes > MAX_BYTES {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some((_, b)) = inner.by_id.remove(&old) {
                inner.bytes -= b;
            }
        }
        inner.bytes += bytes;
        inner.order.push_back(id.clone());
        inner.by_id.insert(id, (kept, bytes));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one insert
        // or remove at a time), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Role;

    fn kept(text: &str) -> Kept {
        let m = ChatMessage { role: Role::User, content: Some(Content::Text(text.into())), tool_calls: None, tool_call_id: None, name: None };
        Kept { response: serde_json::json!({"id": "x"}), conversation: vec![m] }
    }

    #[test]
    fn oldest_go_first_past_the_count_bound() {
        let store = Store::default();
        for i in 0..MAX_RESPONSES + 2 {
            store.put(format!("r{i}"), kept("hi"));
        }
        assert!(store.get("r0").is_none() && store.get("r1").is_none());
        assert!(store.get("r2").is_some() && store.get(&format!("r{}", MAX_RESPONSES + 1)).is_some());
    }

    #[test]
    fn byte_bound_holds() {
        let store = Store::default();
        // Three fit (with their overhead); the fourth pushes the first out.
        let big = "x".repeat(MAX_BYTES / 3 - 1000);
        for i in 0..4 {
            store.put(format!("r{i}"), kept(&big));
        }
        assert!(store.get("r0").is_none() && store.get("r1").is_some() && store.get("r3").is_some());
        store.put("huge".into(), kept(&"x".repeat(MAX_BYTES + 1)));
        assert!(store.get("huge").is_none() && store.get("r3").is_some());
    }
}
