//! Exactness against llama.cpp (the `real/` fixtures), streaming, and malformed metadata.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use serde_json::Value as Json;

use super::{StreamDecoder, Tokenizer, TokenizerError};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

/// Loads a model's tokenizer once per test binary; a missing file fails the test.
fn load(file: &str) -> (Tokenizer, u128) {
    let path = ingot_testkit::model_path(&crate::load::models_dir(), file);
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let content = Content::read(&mut f).expect("GGUF header");
    let start = Instant::now();
    let tokenizer = Tokenizer::from_gguf(&content).expect("tokenizer");
    (tokenizer, start.elapsed().as_millis())
}

pub(crate) fn qwen() -> &'static Tokenizer {
    static T: OnceLock<(Tokenizer, u128)> = OnceLock::new();
    &T.get_or_init(|| load(QWEN)).0
}

fn gemma() -> &'static Tokenizer {
    static T: OnceLock<(Tokenizer, u128)> = OnceLock::new();
    &T.get_or_init(|| load(GEMMA)).0
}

fn fixture(name: &str) -> Json {
    let path = ingot_testkit::fixtures_dir().join("real").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set INGOT_FIXTURES_DIR)", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).expect("id"))
        .collect()
}

fn items(fixture: &Json) -> &[Json] {
    fixture["items"].as_array().expect("items")
}

/// Every fixture string: llama.cpp's ids, and llama.cpp's text back from them.
fn check_tokenize_fixture(tok: &Tokenizer, name: &str, with_bos: bool) {
    let fx = fixture(name);
    let mut failures = Vec::new();
    for item in items(&fx) {
        let text = item["text"].as_str().expect("text");
        let want = ids(&item["llama_cpp_ids"]);
        let got = tok.encode(text, false).expect("encode");
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
        if with_bos {
            let got = tok.encode(text, true).expect("encode");
            let want = ids(&item["llama_cpp_ids_add_bos"]);
            if got != want {
                failures.push(format!("{text:?} with BOS: got {got:?}, want {want:?}"));
            }
        }
        let detok = item["llama_cpp_detokenized"].as_str().expect("detokenized");
        let got = tok.decode(&want, true).expect("decode");
        if got != detok {
            failures.push(format!("decode of {text:?}: got {got:?}, want {detok:?}"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn qwen_matches_llama_cpp_tokenize_fixture() {
    check_tokenize_fixture(qwen(), "qwen2.5-coder-0.5b-tokenize.json", false);
}

#[test]
fn gemma_matches_llama_cpp_tokenize_fixture() {
    check_tokenize_fixture(gemma(), "gemma-3-270m-tokenize.json", true);
}

#[test]
fn greedy_fixture_prompts_and_generations() {
    for (tok, name, prompt_key, output_key, add_bos) in [
        (qwen(), "qwen2.5-coder-0.5b-greedy.json", "prompt_text", "text", false),
        (gemma(), "gemma-3-270m-greedy.json", "text", "completion", true),
    ] {
        let fx = fixture(name);
        for item in items(&fx) {
            let prompt = item[prompt_key].as_str().expect("prompt text");
            assert_eq!(tok.encode(prompt, add_bos).expect("encode"), ids(&item["prompt_ids"]), "{name}: {prompt:?}");
            // The generated text is the new ids detokenized (the EOS, a control token, prints nothing).
            let output = item[output_key].as_str().expect("generated text");
            assert_eq!(tok.decode(&ids(&item["new_ids"]), true).expect("decode"), output, "{name}: {prompt:?}");
        }
    }
}

#[test]
fn special_token_metadata() {
    let q = qwen();
    assert_eq!(q.vocab_size(), 151_936);
    assert_eq!((q.bos_id(), q.eos_id(), q.add_bos()), (Some(151_643), Some(151_645), false));
    assert_eq!((q.bos_token(), q.eos_token()), ("<|endoftext|>", "<|im_end|>"));
    assert_eq!(q.eog_ids(), vec![151_643, 151_645]);
    assert_eq!(q.token_to_id("<tool_call>"), Some(151_657));
    assert_eq!(q.token_to_id("Ġworld"), Some(1879));
    assert!(q.is_eog(151_645) && !q.is_eog(151_644));

    let g = gemma();
    assert_eq!(g.vocab_size(), 262_144);
    assert_eq!((g.bos_id(), g.eos_id(), g.add_bos()), (Some(2), Some(1), true));
    assert_eq!((g.bos_token(), g.eos_token()), ("<bos>", "<eos>"));
    assert_eq!(g.eog_ids(), vec![1, 106]); // <eos>, <end_of_turn>
    assert_eq!(g.token_to_id("<start_of_turn>"), Some(105));
}

#[test]
fn decode_keeps_user_defined_and_drops_control_only_when_asked() {
    let q = qwen();
    let ids = q.encode("<|im_start|>a<tool_call>b<|im_end|>", false).expect("encode");
    assert_eq!(q.decode(&ids, true).expect("decode"), "a<tool_call>b");
    assert_eq!(q.decode(&ids, false).expect("decode"), "<|im_start|>a<tool_call>b<|im_end|>");
    // Unused `[PAD…]` tokens print nothing, as in llama.cpp.
    assert_eq!(q.decode(&[151_665], false).expect("decode"), "");

    let g = gemma();
    let ids = g.encode("<start_of_turn>user\n<b>hi</b><end_of_turn>", true).expect("encode");
    assert_eq!(ids[..2], [2, 105]);
    assert_eq!(g.decode(&ids, true).expect("decode"), "user\n<b>hi</b>");
    assert_eq!(g.decode(&ids, false).expect("decode"), "<bos><start_of_turn>user\n<b>hi</b><end_of_turn>");
    assert!(matches!(
        g.decode(&[262_144], true),
        Err(TokenizerError::IdOutOfRange { id: 262_144, vocab_size: 262_144 })
    ));
}

/// Pushes `ids` one by one; checks the deltas add up to `decode` and returns them.
pub(super) fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut dec = StreamDecoder::new(tok, skip_special);
    let mut deltas: Vec<String> = ids.iter().map(|&id| dec.push(id).expect("push")).collect();
    deltas.push(dec.finish());
    assert_eq!(deltas.concat(), tok.decode(ids, skip_special).expect("decode"), "ids {ids:?}");
    deltas
}

#[test]
fn stream_decoder_emits_whole_characters() {
    // Characters that the vocabularies spell with several byte tokens.
    for (tok, text) in [
        (qwen(), "家族 👨‍👩‍👧‍👦 and 𝔘𝔫𝔦"),
        (gemma(), "𠜎𠜱 and 🫠 done"),
    ] {
        let ids = tok.encode(text, false).expect("encode");
        assert!(ids.len() > text.split(' ').count(), "{text:?} should need byte tokens: {ids:?}");
        let deltas = stream(tok, &ids, true);
        assert_eq!(deltas.concat(), text);
        assert!(deltas.iter().all(|d| !d.contains(char::REPLACEMENT_CHARACTER)), "{deltas:?}");
        // Some token ended inside a character, so its delta was held back.
        assert!(deltas.iter().any(String::is_empty), "{deltas:?}");
    }
}

#[test]
fn stream_decoder_matches_decode_on_fixtures() {
    for (tok, name) in [
        (qwen(), "qwen2.5-coder-0.5b-tokenize.json"),
        (gemma(), "gemma-3-270m-tokenize.json"),
    ] {
        let fx = fixture(name);
        for item in items(&fx) {
            for key in ["llama_cpp_ids", "llama_cpp_ids_add_bos"] {
                if item.get(key).is_some() {
                    let ids = ids(&item[key]);
                    stream(tok, &ids, true);
                    stream(tok, &ids, false);
                }
            }
        }
    }
    // A lone continuation byte is invalid: replaced, not held back forever.
    let g = gemma();
    let byte_80 = g.token_to_id("<0x80>").expect("byte token");
    let a = g.token_to_id("a").expect("a");
    assert_eq!(stream(g, &[byte_80, a], true), ["\u{FFFD}", "a", ""]);
}

/// Gemma strings whose ids the former encoder (a `tokenizers` BPE with a merge per split of
/// every token) gave: the SentencePiece merge loop reproduces them, byte fallback included.
#[test]
fn gemma_matches_the_former_bpe_encoder() {
    let cases: [(&str, &[u32]); 6] = [
        (
            "Hello world! Ünïcödé 𠜎 🫠 tabs\tand  spaces",
            &[2, 9259, 1902, 236888, 15356, 236749, 238527, 236755, 55515, 236859, 236743, 478, 398, 394, 380, 236743, 253547, 42364, 255968, 624, 138, 35220],
        ),
        ("fn main() {\n    println!(\"hi\");\n}", &[2, 15059, 1689, 825, 642, 107, 140, 4629, 36492, 2202, 1443, 107, 236783]),
        ("東京は日本の首都です。", &[2, 31414, 237048, 76444, 120211, 3652, 236924]),
        ("<0x41> antidisestablishmentarianism", &[2, 236820, 236771, 236781, 236812, 236770, 236813, 2314, 33090, 163524, 8225, 1929]),
        ("  ", &[2, 138]),
        ("\u{E000}\u{10FFFD}x", &[2, 245863, 482, 381, 429, 427, 236781]),
    ];
    let g = gemma();
    for (text, want) in cases {
        assert_eq!(g.encode(text, true).expect("encode"), want, "{text:?}");
    }
}

#[test]
fn gemma_leading_spaces_survive_decode_and_stream() {
    // add_space_prefix is false: nothing is added on encode, nothing stripped on decode.
    let g = gemma();
    for text in [" leading space", "  two", "\n x"] {
        let ids = g.encode(text, true).expect("encode");
        assert_eq!(g.decode(&ids, true).expect("decode"), text);
        assert_eq!(stream(g, &ids, true).concat(), text);
    }
}

#[test]
fn gemma_loads_fast_enough() {
    let (_, ms) = load(GEMMA);
    eprintln!("Gemma 3 tokenizer (262,144 tokens) built in {ms} ms");
    let (_, ms_qwen) = load(QWEN);
    eprintln!("Qwen2.5 tokenizer (151,936 tokens) built in {ms_qwen} ms");
    // Generous: debug builds of this crate on a shared 2-core machine.
    assert!(ms < 20_000, "{ms} ms");
}

// ---- synthetic vocabularies ----

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String((*s).to_owned())).collect())
}

fn content(entries: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<HashMap<_, _>>(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

/// A small SentencePiece vocabulary: `<unk> <s> </s>`, bytes 0x00..=0xFF, then pieces.
fn spm(add_space_prefix: Option<bool>) -> Content {
    let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    let pieces = ["▁", "h", "e", "l", "o", "he", "ll", "llo", "hello", "▁hello", "<b>"];
    let mut tokens = vec!["<unk>", "<s>", "</s>"];
    tokens.extend(bytes.iter().map(String::as_str));
    tokens.extend(pieces);
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    types.extend((0..256).map(|_| Value::I32(6)));
    types.extend(pieces.iter().map(|p| Value::I32(if *p == "<b>" { 4 } else { 1 })));
    let scores = (0..tokens.len()).map(|i| Value::F32(-(i as f32))).collect();
    let mut entries = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.scores", Value::Array(scores)),
    ];
    if let Some(p) = add_space_prefix {
        entries.push(("tokenizer.ggml.add_space_prefix", Value::Bool(p)));
    }
    content(entries)
}

#[test]
fn spm_space_prefix_byte_fallback_and_defaults() {
    // No add_space_prefix key: llama.cpp's default (true); BOS 1 / EOS 2 / add BOS by default.
    let t = Tokenizer::from_gguf(&spm(None)).expect("tokenizer");
    assert_eq!((t.bos_id(), t.eos_id(), t.add_bos()), (Some(1), Some(2), true));
    let hello = t.token_to_id("▁hello").expect("piece");
    let b = t.token_to_id("<b>").expect("user-defined");
    // The prefix space comes back after each special token; `ü` falls back to its two bytes.
    let ids = t.encode("hello<b>hello ü", true).expect("encode");
    assert_eq!(ids, [1, hello, b, hello, t.token_to_id("▁").expect("▁"), 3 + 0xC3, 3 + 0xBC]);
    // One leading space is stripped after a BOS-less start; llama.cpp keeps it after a dropped BOS.
    assert_eq!(t.decode(&ids[1..], true).expect("decode"), "hello<b> hello ü");
    assert_eq!(t.decode(&ids, true).expect("decode"), " hello<b> hello ü");
    for skip in [true, false] {
        stream(&t, &ids, skip);
        stream(&t, &ids[1..], skip);
    }

    let t = Tokenizer::from_gguf(&spm(Some(false))).expect("tokenizer");
    let ids = t.encode("hello hello", false).expect("encode");
    assert_eq!(ids, [t.token_to_id("hello").expect("hello"), hello]);
    assert_eq!(t.decode(&ids, true).expect("decode"), "hello hello");
}

fn expect_err(c: &Content) -> String {
    match Tokenizer::from_gguf(c) {
        Ok(_) => panic!("malformed metadata was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_metadata_is_an_error_naming_the_key() {
    let model = |m: &str| ("tokenizer.ggml.model", Value::String(m.into()));
    let tokens = || ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"]));
    let merges = || ("tokenizer.ggml.merges", strings(&["a b"]));

    let e = expect_err(&content(vec![model("gpt2"), merges()]));
    assert!(e.contains("tokenizer.ggml.tokens") && e.contains("missing"), "{e}");
    let e = expect_err(&content(vec![tokens()]));
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
    let e = expect_err(&content(vec![model("bert"), tokens()]));
    assert!(e.contains("bert") && e.contains("gpt2, llama"), "{e}");
    let e = expect_err(&content(vec![
        model("gpt2"),
        tokens(),
        merges(),
        ("tokenizer.ggml.pre", Value::String("tekken".into())),
    ]));
    assert!(e.contains("tekken") && e.contains("qwen2") && e.contains("llama3"), "{e}");
    let e = expect_err(&content(vec![model("gpt2"), tokens()]));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = expect_err(&content(vec![
        model("gpt2"),
        tokens(),
        merges(),
        ("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1)])),
    ]));
    assert!(e.contains("tokenizer.ggml.token_type") && e.contains("1 entries") && e.contains('3'), "{e}");
    let e = expect_err(&content(vec![
        model("gpt2"),
        tokens(),
        merges(),
        ("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1), Value::I32(9), Value::I32(1)])),
    ]));
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
    let e = expect_err(&content(vec![model("gpt2"), tokens(), merges(), ("tokenizer.ggml.eos_token_id", Value::U32(3))]));
    assert!(e.contains("tokenizer.ggml.eos_token_id"), "{e}");
    let e = expect_err(&content(vec![model("gpt2"), tokens(), ("tokenizer.ggml.merges", strings(&["a c"]))]));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = expect_err(&content(vec![model("llama"), tokens()]));
    assert!(e.contains("tokenizer.ggml.scores"), "{e}");
    let e = expect_err(&content(vec![
        model("llama"),
        tokens(),
        ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 2])),
    ]));
    assert!(e.contains("tokenizer.ggml.scores") && e.contains("2 entries"), "{e}");
    let e = expect_err(&content(vec![model("gpt2"), ("tokenizer.ggml.tokens", Value::U32(1)), merges()]));
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");

    // A well-formed tiny gpt2 vocabulary builds.
    let t = Tokenizer::from_gguf(&content(vec![model("gpt2"), tokens(), merges()])).expect("tokenizer");
    assert_eq!(t.encode("ab", false).expect("encode"), [2]);
}
