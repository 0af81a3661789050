//! What every front end on remote engines shares: the servers checked before anything runs,
//! and the generation settings under OpenAI's (and vLLM's) field names.

use std::time::Duration;

use anyhow::Context;
use ingot_engine::{GenParams, Prompter};
use serde_json::{json, Map, Value};

use super::Endpoint;

/// Connects to every server and checks it before any request runs: reachable, serving
/// `prompter`'s tokenizer where it has a tokenize route, answering a one-token completion,
/// and which JSON-schema field (if any) it enforces. `who` names the command in messages.
pub fn connect_all(urls: &[String], prompter: &Prompter, timeout: Duration, who: &str) -> anyhow::Result<Vec<Endpoint>> {
    let probe_text = "Hi";
    let probe = prompter.tokenizer().encode_prompt(probe_text).context("tokenizing a test prompt")?;
    let mut endpoints = Vec::with_capacity(urls.len());
    for url in urls {
        let mut e = Endpoint::connect(url, timeout)?;
        if !e.check_tokenizer(prompter.tokenizer())? {
            eprintln!("warning: {who}: {} has no /tokenize route: cannot check that it serves --model's tokenizer", e.url);
        }
        e.check_completions(&probe, probe_text)?;
        e.check_structured(&probe, probe_text);
        let how = if e.text_prompts { "text prompts" } else { "token-id prompts" };
        let schema = e.schema_field.map_or("no JSON-schema field".to_owned(), |f| format!("JSON schemas via {f:?}"));
        eprintln!("{who}: {} serves `{}` ({how}, {schema})", e.url, e.model);
        endpoints.push(e);
    }
    Ok(endpoints)
}

/// The generation settings given, under OpenAI's (and vLLM's) names; `do_sample: false` is
/// temperature 0. Structured output and tool choice are not among them: the caller decides
/// what a server can enforce.
pub fn openai_params(p: &GenParams) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let greedy = p.do_sample == Some(false);
    put("temperature", if greedy { Some(json!(0)) } else { p.temperature.map(|v| json!(v)) });
    put("top_p", p.top_p.map(|v| json!(v)));
    put("top_k", p.top_k.map(|v| json!(v)));
    put("min_p", p.min_p.map(|v| json!(v)));
    put("repetition_penalty", p.repetition_penalty.map(|v| json!(v)));
    put("presence_penalty", p.presence_penalty.map(|v| json!(v)));
    put("frequency_penalty", p.frequency_penalty.map(|v| json!(v)));
    put("max_tokens", p.max_new_tokens.map(|v| json!(v)));
    put("seed", p.seed.map(|v| json!(v)));
    put("skip_special_tokens", p.skip_special_tokens.map(|v| json!(v)));
    put("ignore_eos", p.ignore_eos.map(|v| json!(v)));
    put("stop", (!p.stop.is_empty()).then(|| json!(p.stop)));
    put("stop_token_ids", (!p.stop_token_ids.is_empty()).then(|| json!(p.stop_token_ids)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_openai_fields_and_do_sample_false_is_greedy() {
        let p = GenParams { do_sample: Some(false), temperature: Some(0.7), max_new_tokens: Some(8), stop: vec!["END".into()], ..GenParams::default() };
        let m = openai_params(&p);
        assert_eq!(Value::Object(m), json!({"temperature": 0, "max_tokens": 8, "stop": ["END"]}));
        assert!(openai_params(&GenParams::default()).is_empty());
    }
}
