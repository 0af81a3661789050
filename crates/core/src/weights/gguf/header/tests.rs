//! Each limit refuses a header built in the test; files are sparse, so a header can claim far
//! more than the test writes without the file-size checks catching it first.

use std::fs::File;
use std::io::{Cursor, Write};

use super::*;
use crate::weights::gguf::GgufFile;
use crate::weights::LoadError;

/// A GGUF v3 header: `tensors` claimed, then metadata `(key, type, payload)` entries.
fn header(tensors: u64, kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(tensors.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (key, value_type, payload) in kvs {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(value_type.to_le_bytes());
        b.extend(payload);
    }
    b
}

fn string(s: &str) -> Vec<u8> {
    [(s.len() as u64).to_le_bytes().as_slice(), s.as_bytes()].concat()
}

/// `bytes` as a GGUF file of `len` bytes (sparse past the header), opened.
fn open(name: &str, bytes: &[u8], len: u64) -> Result<GgufFile, LoadError> {
    let path = ingot_testkit::scratch_dir(name).join("model.gguf");
    let mut file = File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    file.set_len(len.max(bytes.len() as u64)).expect("set_len");
    GgufFile::open(&path)
}

#[track_caller]
fn assert_refused(result: Result<GgufFile, LoadError>, field: &str, value: u64) {
    match result {
        Err(LoadError::OverLimit { source, .. }) => {
            assert!(source.field.contains(field), "{source}");
            assert_eq!(source.value, value, "{source}");
        }
        other => panic!("expected {field} refused, got {other:?}"),
    }
}

#[test]
fn a_header_claiming_2_40_tensors_is_refused() {
    // A 1 TiB (sparse) file has room for 2^35 minimal tensor entries; candle would loop over
    // them all. The count alone refuses it.
    assert_refused(open("tensors", &header(1 << 40, &[]), 1 << 40), "tensor count", 1 << 40);
    assert_refused(open("tensors35", &header(1 << 35, &[]), 1 << 40), "tensor count", 1 << 35);
}

#[test]
fn a_string_length_of_2_60_is_refused() {
    let mut kv = (1u64 << 60).to_le_bytes().to_vec();
    kv.extend(b"abc");
    let bytes = header(0, &[("tokenizer.chat_template", 8, kv)]);
    assert_refused(open("string", &bytes, 1 << 30), "string length in `tokenizer.chat_template`", 1 << 60);
    // A key longer than the spec's 65535 bytes.
    let mut bytes = header(0, &[]);
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend(100_000u64.to_le_bytes());
    assert_refused(open("key", &bytes, 1 << 30), "metadata key length", 100_000);
}

#[test]
fn metadata_counts_and_arrays_are_bounded() {
    let mut bytes = header(0, &[]);
    bytes[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_refused(open("keys", &bytes, 1 << 30), "metadata key count", 1 << 20);
    // 2^30 u8 elements fit in a 2 GiB file but would take 32 GiB as candle values.
    let array = [0u32.to_le_bytes().as_slice(), &(1u64 << 30).to_le_bytes()].concat();
    let bytes = header(0, &[("tokenizer.ggml.token_type", 9, array)]);
    assert_refused(open("array", &bytes, 1 << 31), "metadata array elements", 1 << 30);
    // Arrays of arrays of arrays.
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend(1u64.to_le_bytes());
    nested.extend(9u32.to_le_bytes());
    nested.extend(1u64.to_le_bytes());
    nested.extend(9u32.to_le_bytes());
    nested.extend(1u64.to_le_bytes());
    let bytes = header(0, &[("x", 9, nested)]);
    assert_refused(open("nested", &bytes, 1 << 20), "array nesting", 3);
}

#[test]
fn tensor_shapes_must_fit_the_file() {
    let mut bytes = header(1, &[]);
    bytes.extend(string("token_embd.weight"));
    bytes.extend(2u32.to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend([0; 12]);
    assert_refused(open("dims", &bytes, 1 << 20), "tensor `token_embd.weight` element count", u64::MAX);
    let mut bytes = header(1, &[]);
    bytes.extend(string("t"));
    bytes.extend(5u32.to_le_bytes());
    assert_refused(open("ndims", &bytes, 1 << 20), "tensor `t` dimension count", 5);
}

#[test]
fn a_zero_alignment_is_refused() {
    // candle would divide by it.
    // Any integer type candle reads it as; a negative one it ignores.
    for (name, value_type, payload) in [("align", 4, 0u32.to_le_bytes().to_vec()), ("align16", 3, 24u16.to_le_bytes().to_vec())] {
        match open(name, &header(0, &[("general.alignment", value_type, payload)]), 1 << 10) {
            Err(LoadError::Corrupt { problem, .. }) => assert!(problem.contains("not a power of two"), "{problem}"),
            other => panic!("expected the alignment refused, got {other:?}"),
        }
    }
    let bytes = header(0, &[("general.alignment", 5, (-8i32).to_le_bytes().to_vec())]);
    assert_eq!(check(Cursor::new(&bytes), bytes.len() as u64), Ok(()));
}

#[test]
fn malformed_headers_are_left_to_candle() {
    // Truncated, bad magic, unknown value type: not a limit, candle's own error.
    for bytes in [header(2, &[])[..10].to_vec(), b"NOPE".repeat(8), header(0, &[("k", 99, vec![0; 8])])] {
        assert_eq!(check(Cursor::new(&bytes), bytes.len() as u64), Ok(()));
        let path = ingot_testkit::scratch_dir("malformed").join("m.gguf");
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(GgufFile::open(&path), Err(LoadError::Corrupt { .. })));
    }
    // A well-formed header within every limit passes.
    let bytes = header(0, &[("general.alignment", 4, 32u32.to_le_bytes().to_vec()), ("s", 8, string("hi"))]);
    assert_eq!(check(Cursor::new(&bytes), bytes.len() as u64), Ok(()));
}
