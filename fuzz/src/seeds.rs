//! Seed inputs: the files under `fuzz/corpus/TARGET/` (kept tiny), plus seeds built here from
//! ingot's own formats (named templates, a tiny GGUF and checkpoint, one image per codec, two
//! WAV files, request bodies and dataset rows; a dataset seed's first byte picks its format).

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};
use ingot_core::template::{ChatTemplate, ToolFormat};

/// `config.json` of the checkpoint the safetensors target loads: one layer, hidden size 8.
pub const TINY_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
"intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
"vocab_size": 16, "rms_norm_eps": 1e-05, "max_position_embeddings": 64, "rope_theta": 10000.0,
"tie_word_embeddings": true, "hidden_act": "silu"}"#;

pub fn load(target: &str, dir: &Path) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    seeds.extend(match target {
        "gguf" => vec![tiny_gguf()],
        "safetensors" => vec![tiny_checkpoint()],
        "template" => ChatTemplate::names()
            .iter()
            .filter_map(|n| ChatTemplate::named(n, "<s>", "</s>").ok())
            .map(|t| t.source().as_bytes().to_vec())
            .collect(),
        "tools" => ToolFormat::ALL
            .iter()
            .filter_map(|f| f.render_calls(&[serde_json::json!({"name": "get_weather", "arguments": {"city": "Paris"}})]).ok())
            .map(String::into_bytes)
            .collect(),
        "image" => images(),
        "audio" => vec![wav(1, 8000, 64), wav(2, 16000, 32)],
        "request" => vec![
            br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 5}"#.to_vec(),
            br#"{"prompt": ["x"], "n": 2, "stop": ["a", "b"], "logprobs": false}"#.to_vec(),
            br#"{"messages": ["ab", "cd"], "max_length": 4}"#.to_vec(),
        ],
        "dataset" => vec![
            b"\x00{\"instruction\": \"a\", \"input\": \"b\", \"output\": \"c\"}\n{\"conversations\": []}".to_vec(),
            [&[2u8][..], br#"[{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"}, {"from": "observation", "value": "o"}, {"from": "gpt", "value": "a"}], "tools": "[]"}]"#].concat(),
            [&[3u8][..], br#"{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "a"}], "images": ["a.png"]}"#].concat(),
        ],
        _ => Vec::new(),
    });
    seeds
}

fn tensor(values: Vec<f32>, shape: &[usize], dtype: candle_core::quantized::GgmlDType) -> QTensor {
    let t = Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
    QTensor::quantize(&t, dtype).expect("quantize")
}

/// A one-layer llama GGUF with a tokenizer and a chat template.
fn tiny_gguf() -> Vec<u8> {
    use candle_core::quantized::GgmlDType::{Q8_0, F32};
    use gguf_file::Value as V;
    let s = |x: &str| V::String(x.into());
    let tokens = ["<s>", "</s>", "h", "e", "l", "o", "he", "ll", "hell", "hello", " ", "w", "r", "d"];
    let metadata = [
        ("general.architecture", s("llama")),
        ("general.alignment", V::U32(32)),
        ("llama.embedding_length", V::U32(32)),
        ("llama.block_count", V::U32(1)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.feed_forward_length", V::U32(64)),
        ("llama.context_length", V::U32(64)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.tokens", V::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.merges", V::Array(["h e", "l l", "he ll", "hell o"].iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type", V::Array(tokens.iter().enumerate().map(|(i, _)| V::I32(if i < 2 { 3 } else { 1 })).collect())),
        ("tokenizer.ggml.bos_token_id", V::U32(0)),
        ("tokenizer.ggml.eos_token_id", V::U32(1)),
        ("tokenizer.chat_template", s("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")),
    ];
    let values = |len: usize| (0..len).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>();
    let tensors = [
        ("token_embd.weight", tensor(values(14 * 32), &[14, 32], F32)),
        ("output_norm.weight", tensor(values(32), &[32], F32)),
        ("blk.0.attn_q.weight", tensor(values(32 * 32), &[32, 32], Q8_0)),
        ("blk.0.attn_norm.weight", tensor(values(32), &[32], F32)),
    ];
    let metadata: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors).expect("gguf");
    out.into_inner()
}

/// The weights [`TINY_CONFIG`] asks for, f32.
fn tiny_checkpoint() -> Vec<u8> {
    let shapes: [(&str, &[usize]); 11] = [
        ("model.embed_tokens.weight", &[16, 8]),
        ("model.norm.weight", &[8]),
        ("model.layers.0.input_layernorm.weight", &[8]),
        ("model.layers.0.post_attention_layernorm.weight", &[8]),
        ("model.layers.0.self_attn.q_proj.weight", &[8, 8]),
        ("model.layers.0.self_attn.k_proj.weight", &[4, 8]),
        ("model.layers.0.self_attn.v_proj.weight", &[4, 8]),
        ("model.layers.0.self_attn.o_proj.weight", &[8, 8]),
        ("model.layers.0.mlp.gate_proj.weight", &[16, 8]),
        ("model.layers.0.mlp.up_proj.weight", &[16, 8]),
        ("model.layers.0.mlp.down_proj.weight", &[8, 16]),
    ];
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = shapes
        .iter()
        .map(|(name, shape)| {
            let len: usize = shape.iter().product();
            let bytes = (0..len).flat_map(|i| ((i as f32 * 0.1).cos()).to_le_bytes()).collect();
            (name.to_string(), bytes, shape.to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("view")))
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// A 16-bit PCM WAV file of `frames` frames.
fn wav(channels: u16, rate: u32, frames: u32) -> Vec<u8> {
    let data_len = frames * u32::from(channels) * 2;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..frames * u32::from(channels) {
        out.extend_from_slice(&(((i as f32 * 0.3).sin() * 12000.0) as i16).to_le_bytes());
    }
    out
}

/// A small gradient image in every codec ingot decodes.
fn images() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([(x * 40) as u8, (y * 50) as u8, 128]));
    [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::WebP]
        .into_iter()
        .filter_map(|format| {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).ok().map(|()| out.into_inner())
        })
        .collect()
}
