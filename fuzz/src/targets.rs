//! The fuzz targets. Each takes one input and returns its outcome class (errors are fine,
//! a panic, an abort or a hang is a bug).
//!
//! The front ends' targets (the OpenAI request parser, dataset rows) are in `front.rs`.

use std::path::PathBuf;
use std::sync::OnceLock;

use ingot_core::kernels::{Backend, GgmlDType, QMatrix};
use ingot_core::load::{load_checkpoint_model, LoadOptions};
use ingot_core::media::{Audio, Image, MediaLimits};
use ingot_core::template::{ChatTemplate, ToolCallStream, ToolFormat};
use ingot_core::tokenizer::Tokenizer;
use ingot_core::weights::gguf::GgufFile;
use ingot_core::weights::WeightSource;
use serde_json::json;

use crate::mutate::Rng;

pub struct Target {
    pub run: fn(&[u8]) -> String,
    pub dictionary: &'static [&'static str],
    pub max_len: usize,
}

pub const NAMES: [&str; 9] = ["gguf", "safetensors", "template", "tools", "image", "audio", "kernels", "request", "dataset"];

pub fn by_name(name: &str) -> Option<Target> {
    let t = |run, dictionary, max_len| Some(Target { run, dictionary, max_len });
    match name {
        "gguf" => t(gguf, GGUF_WORDS, 64 << 10),
        "safetensors" => t(safetensors, JSON_WORDS, 64 << 10),
        "template" => t(template, JINJA_WORDS, 16 << 10),
        "tools" => t(tools, TOOL_WORDS, 8 << 10),
        "image" => t(image, &[], 64 << 10),
        "audio" => t(audio, AUDIO_WORDS, 64 << 10),
        "request" => t(crate::front::request, crate::front::REQUEST_WORDS, 16 << 10),
        "dataset" => t(crate::front::dataset, crate::front::DATASET_WORDS, 16 << 10),
        "kernels" => t(kernels, &[], 64),
        _ => None,
    }
}

const AUDIO_WORDS: &[&str] = &["RIFF", "WAVE", "fmt ", "data", "LIST", "fLaC", "OggS", "\u{1}vorbis", "ID3", "Xing", "Info", "LAME"];
const GGUF_WORDS: &[&str] = &["general.architecture", "general.alignment", "llama", "tokenizer.chat_template", "GGUF"];
const JSON_WORDS: &[&str] =
    &["\"dtype\":", "\"F32\"", "\"BF16\"", "\"F16\"", "\"I64\"", "\"shape\":", "[]", "[0]", "\"data_offsets\":", "__metadata__", ",", "{", "}"];
const JINJA_WORDS: &[&str] = &[
    "{{", "}}", "{%", "%}", "{#", "#}", " for m in messages ", " endfor ", " if ", " endif ", " else ", " set ", " macro f(x) ",
    " endmacro ", " f(x) ", "loop.index", "|tojson", "|tojson(indent=2)", "|indent(4)", "|length", "|join(',')", "|trim",
    "|format(1)", "|batch(2)", "|replace('a','bb')", "|selectattr('role')", "|map(attribute='content')", "|list", "|items",
    "namespace(x=1)", "ns.x", "range(", " * ", " ~ ", " + ", "raise_exception('x')", "strftime_now('%Y')", ".split()",
    ".strip()", ".format(1)", "messages[0]", "['content']", "tools", "add_generation_prompt", "bos_token", " is defined ",
    " recursive ", "loop(", "{% break %}", "{% continue %}", "caller()", "{% call f(1) %}", "{% endcall %}", "%s", "%d",
    "{:>5}", "\u{0}",
];
const TOOL_WORDS: &[&str] = &[
    "<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{\"name\": ", "\"get_weather\"", "\"arguments\": ",
    "\"parameters\": ", "{\"city\": \"Paris\"}", "Action: ", "Action Input: ", "[", "]", "{", "}", "\"", "\\", ";", "\n",
    "<think>", "</think>",
];

/// This process's scratch directory, `ingot-fuzz-PID` in the temp dir (scripts/fuzz.sh removes it).
pub fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ingot-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// An outcome class: the message's words without numbers or quoted parts, first few only.
pub fn class(prefix: &str, message: &str) -> String {
    let words: Vec<&str> = message
        .split_whitespace()
        .filter(|w| !w.contains(|c: char| c.is_ascii_digit() || c == '\'' || c == '`' || c == '/'))
        .take(6)
        .collect();
    format!("{prefix}: {}", words.join(" "))
}

fn gguf(data: &[u8]) -> String {
    let path = scratch().join("model.gguf");
    std::fs::write(&path, data).expect("write");
    let file = match GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => return class("open", &e.to_string()),
    };
    let mut outcome = String::from("open");
    match file.config() {
        Ok(_) => outcome += " config",
        Err(e) => outcome += &class(" config", &e.to_string()),
    }
    if let Ok(tokenizer) = Tokenizer::from_gguf(file.content()) {
        outcome += " tokenizer";
        if let Ok(ids) = tokenizer.encode("hello world <s>", true) {
            let _ = tokenizer.decode(&ids, false);
        }
    }
    if let Some(source) = file.chat_template() {
        outcome += &render(source.as_bytes());
    }
    for name in ["model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.q_proj.weight"] {
        if file.matrix(name).is_ok() {
            outcome += " matrix";
        }
    }
    for name in ["model.norm.weight", "model.layers.0.input_layernorm.weight"] {
        if file.vector(name).is_ok() {
            outcome += " vector";
        }
    }
    outcome
}

fn safetensors(data: &[u8]) -> String {
    let dir = scratch().join("checkpoint");
    std::fs::create_dir_all(&dir).expect("checkpoint dir");
    std::fs::write(dir.join("config.json"), crate::seeds::TINY_CONFIG).expect("config");
    std::fs::write(dir.join("model.safetensors"), data).expect("weights");
    match load_checkpoint_model(&dir, &LoadOptions::default()) {
        Ok(_) => "loaded".into(),
        Err(e) => class("load", &e.to_string()),
    }
}

/// Template source, then after a NUL byte the messages as JSON (a default conversation when
/// that part does not parse).
fn template(data: &[u8]) -> String {
    render(data)
}

fn render(data: &[u8]) -> String {
    let (source, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let source = String::from_utf8_lossy(source);
    let messages = serde_json::from_slice(rest).unwrap_or_else(|_| {
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "sunny"}])
    });
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let template = match ChatTemplate::from_jinja(&source, "<s>", "</s>") {
        Ok(t) => t,
        Err(e) => return class(" compile", &e.to_string()),
    };
    match template.render_json(&messages, Some(&tools), true, &serde_json::Map::new()) {
        Ok(text) => format!(" rendered {}", text.len().min(1000) / 100),
        Err(e) => class(" render", &e.to_string()),
    }
}

/// A reply, parsed in every tool format at once and streamed in pieces: the two must agree.
fn tools(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let names = ["get_weather", "search"];
    let mut outcome = String::new();
    for format in ToolFormat::ALL {
        let whole = format.parse(&text, &names);
        let mut stream = ToolCallStream::new(format, &names);
        let mut streamed = String::new();
        let mut rng = Rng::new(data.len() as u64);
        let mut rest: &str = &text;
        while !rest.is_empty() {
            let mut cut = (1 + rng.below(8)).min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            streamed += &stream.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        let finished = stream.finish();
        let calls = |r: &ingot_core::template::ParsedReply| -> Vec<(String, String)> {
            r.tool_calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect()
        };
        assert_eq!(calls(&finished), calls(&whole), "{format:?}: streamed calls differ from one-shot parsing");
        assert_eq!(streamed + &finished.content, whole.content, "{format:?}: streamed content differs");
        outcome += &format!("{format:?}{} ", whole.tool_calls.len().min(3));
    }
    outcome
}

fn image(data: &[u8]) -> String {
    match Image::decode(data, "fuzz", &MediaLimits::default()) {
        Ok(img) => format!("{}x{}", img.width().min(9), img.height().min(9)),
        Err(e) => class("decode", &e.to_string()),
    }
}

fn audio(data: &[u8]) -> String {
    let limits = MediaLimits { max_audio_seconds: 5.0, ..MediaLimits::default() };
    match Audio::decode(data, "fuzz", &limits) {
        Ok(a) => format!("{} Hz {}", a.sample_rate(), (a.seconds() * 2.0) as u32),
        Err(e) => class("decode", &e.to_string()),
    }
}

/// Every backend against the scalar one on a random shape: quantized from random values
/// (compared within float rounding) and raw random bytes (must not panic).
fn kernels(data: &[u8]) -> String {
    const DTYPES: [GgmlDType; 11] = [
        GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0, GgmlDType::Q4K,
        GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16,
    ];
    let byte = |i: usize| data.get(i).copied().unwrap_or(0) as usize;
    let dtype = DTYPES[byte(0) % DTYPES.len()];
    let block = dtype.block_size();
    let (n, k, m) = (1 + byte(1) % 40, block * (1 + byte(2) % 4) + if block == 1 { byte(3) % 9 } else { 0 }, 1 + byte(4) % 12);
    let mut rng = Rng::new(data.iter().fold(7u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    let mut values = |len: usize, scale: f32| -> Vec<f32> {
        (0..len).map(|_| ((rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale).collect()
    };
    let scale = [1.0, 1e-3, 100.0][byte(5) % 3];
    let w = values(n * k, scale);
    let x = values(m * k, [1.0, 1e-4, 50.0][byte(6) % 3]);
    let mat = QMatrix::quantize_f32(n, k, &w, dtype).expect("quantize");
    let mut deq = vec![0f32; k];
    let mut magnitude = vec![0f64; m * n];
    for i in 0..n {
        mat.dequantize_row(i, &mut deq);
        for r in 0..m {
            magnitude[r * n + i] = deq.iter().zip(&x[r * k..(r + 1) * k]).map(|(a, b)| f64::from(a * b).abs()).sum();
        }
    }
    let mut want = vec![0f32; m * n];
    mat.matmul_with(Backend::Scalar, &x, m, &mut want);
    for backend in [Backend::Avx2, Backend::Avx512Vnni].into_iter().filter(|b| b.is_available()) {
        let mut got = vec![f32::NAN; m * n];
        mat.matmul_with(backend, &x, m, &mut got);
        for (idx, (&g, &s)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-4 * (1.0 + magnitude[idx]);
            assert!(f64::from((g - s).abs()) <= tol, "{dtype:?} {backend:?} m={m} n={n} k={k} [{idx}]: {g} vs scalar {s}");
        }
    }
    // Raw bytes as weights: NaN and inf scales included; only the absence of panics counts.
    let raw: Vec<u8> = (0..ingot_core::kernels::byte_size(dtype, n, k)).map(|_| rng.next() as u8).collect();
    if let Ok(raw) = QMatrix::from_ggml(dtype, n, k, &raw) {
        for backend in [Backend::Scalar, Backend::Avx2, Backend::Avx512Vnni].into_iter().filter(|b| b.is_available()) {
            raw.matmul_with(backend, &x, m, &mut want);
        }
    }
    format!("{dtype:?} m{}", m.min(9))
}
