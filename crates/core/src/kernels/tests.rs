//! Kernel tests: every dtype against an f64 reference of candle-dequantized weights, every
//! SIMD backend against the scalar one, exact `dequantize_row`, and error cases. The
//! benchmark (`bench_gops`) is `#[ignore]`d: run it with
//! `cargo test -p ingot-core --release --lib kernels::tests::bench_gops -- --ignored --nocapture`.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::*;

/// The formats with own kernels, then dense and candle-fallback ones.
const PACKED_DTYPES: [GgmlDType; 8] = PACKED;
const OTHER_DTYPES: [GgmlDType; 7] =
    [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16, GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::Q8_1, GgmlDType::Q8K];

/// Deterministic pseudo-random values in [-1, 1) with a few larger outliers and an all-zero
/// block, to exercise scales and the zero-block path.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            match i % 97 {
                0 => 8.0 * v,
                _ if (64..96).contains(&i) => 0.0,
                _ => v,
            }
        })
        .collect()
}

/// Weights quantized by candle: (raw GGML bytes, candle's dequantization).
fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let t = Tensor::from_vec(values(n * k, seed), (n, k), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, dtype).expect("quantize");
    let deq = q.dequantize(&Device::Cpu).expect("dequantize").flatten_all().expect("flatten").to_vec1::<f32>().expect("vec");
    (q.data().expect("data").into_owned(), deq)
}

fn available_backends() -> Vec<Backend> {
    [Backend::Scalar, Backend::Avx2, Backend::Avx512Vnni].into_iter().filter(|b| b.is_available()).collect()
}

/// Checks `y` against `x · wᵀ` in f64. With `act_block` set, allows the error activation
/// quantization can cause: per element at most amax(block)·(1/254 + 2⁻¹¹) (half a step, plus
/// the f16 rounding of the Q8_0 scale), times |w|; plus f32 rounding.
#[allow(clippy::too_many_arguments, reason = "test helper: shapes + data + label")]
fn check(y: &[f32], x: &[f32], w: &[f32], m: usize, n: usize, k: usize, act_block: Option<usize>, what: &str) {
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let amax: Vec<f64> = match act_block {
            Some(b) => xr.chunks(b).flat_map(|c| {
                let a = c.iter().fold(0f64, |a, &v| a.max(f64::from(v).abs()));
                std::iter::repeat_n(a, b)
            })
            .collect(),
            None => vec![0.0; k],
        };
        for i in 0..n {
            let wr = &w[i * k..(i + 1) * k];
            let (mut exact, mut mag, mut bound) = (0f64, 0f64, 0f64);
            for c in 0..k {
                let (wv, xv) = (f64::from(wr[c]), f64::from(xr[c]));
                exact += wv * xv;
                mag += (wv * xv).abs();
                bound += wv.abs() * amax[c] * (1.0 / 254.0 + 1.0 / 2048.0);
            }
            let tol = bound + 1e-4 * mag + 1e-5;
            let got = f64::from(y[r * n + i]);
            assert!((got - exact).abs() <= tol, "{what}: y[{r},{i}] = {got}, expected {exact} ± {tol}");
        }
    }
}

#[test]
fn packed_matmul_matches_reference_on_every_backend() {
    for (di, &dtype) in PACKED_DTYPES.iter().enumerate() {
        let block = dtype.block_size();
        for k in [256, 640, 896, 4864].into_iter().filter(|k| k % dtype.block_size() == 0) {
            for n in [7, 130] {
                let (bytes, w) = quantized(dtype, n, k, 1 + di as u64 + k as u64);
                let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
                // m = 512 (a whole prefill chunk) only on the small shapes: the f64 reference
                // is the slow part.
                for m in [1, 3, 17, 64, 512].into_iter().filter(|&m| m < 512 || (k <= 640 && n < 100)) {
                    let x = values(m * k, 7 * m as u64 + n as u64);
                    let mut want = vec![0f32; m * n];
                    mat.matmul_with(Backend::Scalar, &x, m, &mut want);
                    check(&want, &x, &w, m, n, k, Some(block), &format!("{dtype:?} scalar m={m} n={n} k={k}"));
                    for backend in available_backends() {
                        let mut got = vec![f32::NAN; m * n];
                        mat.matmul_with(backend, &x, m, &mut got);
                        // Same integer sums as the scalar path; only float rounding may differ.
                        for (idx, (&g, &s)) in got.iter().zip(&want).enumerate() {
                            assert!((g - s).abs() <= 1e-4 * (1.0 + s.abs()), "{dtype:?} {backend:?} m={m} n={n} k={k} [{idx}]: {g} vs scalar {s}");
                        }
                    }
                }
            }
        }
    }
}

/// Every micro-kernel instance (1..=8 activation rows on VNNI, 1..=4 on AVX2: m up to 9 hits
/// each, plus a remainder) and a partial 8-row weight group (n = 11), for every packed format.
#[test]
fn every_micro_kernel_row_count_matches_scalar() {
    let (n, k) = (11, 256);
    for (di, &dtype) in PACKED_DTYPES.iter().enumerate() {
        let (bytes, _) = quantized(dtype, n, k, 40 + di as u64);
        let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
        for m in 1..=9 {
            let x = values(m * k, 50 + m as u64);
            let mut want = vec![0f32; m * n];
            mat.matmul_with(Backend::Scalar, &x, m, &mut want);
            for backend in available_backends() {
                let mut got = vec![f32::NAN; m * n];
                mat.matmul_with(backend, &x, m, &mut got);
                for (idx, (&g, &s)) in got.iter().zip(&want).enumerate() {
                    assert!((g - s).abs() <= 1e-4 * (1.0 + s.abs()), "{dtype:?} {backend:?} m={m} [{idx}]: {g} vs scalar {s}");
                }
            }
        }
    }
    // Dense f32 with an odd k (the SIMD tail) on every backend, odd m (1-row tiles) too.
    let (n, k) = (5, 37);
    let w = values(n * k, 11);
    let mat = QMatrix::from_f32(n, k, &w).expect("load");
    for m in [1, 3] {
        let x = values(m * k, 12);
        for backend in available_backends() {
            let mut y = vec![f32::NAN; m * n];
            mat.matmul_with(backend, &x, m, &mut y);
            check(&y, &x, &w, m, n, k, None, &format!("f32 {backend:?} m={m} k={k}"));
        }
    }
}

/// The AVX2 and AVX-512 paths give the same bits: integer sums are exact and every lane's
/// float operations are the same, so a model's output does not depend on the kind of CPU
/// (GEMV, batched and prefill shapes; paired and odd 8-row groups).
#[test]
fn simd_backends_agree_bit_for_bit() {
    if !Backend::Avx512Vnni.is_available() {
        return;
    }
    for (di, &dtype) in PACKED_DTYPES.iter().enumerate() {
        let (n, k) = (27, if dtype.block_size() == 256 { 512 } else { 96 });
        let (bytes, _) = quantized(dtype, n, k, 60 + di as u64);
        let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
        for m in [1, 5, 8, 19] {
            let x = values(m * k, 70 + m as u64);
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            mat.matmul_with(Backend::Avx2, &x, m, &mut a);
            mat.matmul_with(Backend::Avx512Vnni, &x, m, &mut b);
            let differ = a.iter().zip(&b).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{dtype:?} m={m}: {differ} of {} outputs differ", a.len());
        }
    }
}

#[test]
fn dense_and_fallback_matmul_match_reference() {
    for (di, &dtype) in OTHER_DTYPES.iter().enumerate() {
        let (n, k) = (13, 512);
        let (bytes, w) = quantized(dtype, n, k, 100 + di as u64);
        let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
        for m in [1, 5] {
            let x = values(m * k, 3 + m as u64);
            for backend in available_backends() {
                let mut y = vec![f32::NAN; m * n];
                mat.matmul_with(backend, &x, m, &mut y);
                check(&y, &x, &w, m, n, k, None, &format!("{dtype:?} {backend:?} m={m}"));
            }
        }
    }
    // from_f32, with k not a multiple of the 8-wide SIMD step.
    let (n, k, m) = (9, 37, 6);
    let (w, x) = (values(n * k, 1), values(m * k, 2));
    let mat = QMatrix::from_f32(n, k, &w).expect("load");
    let mut y = vec![0f32; m * n];
    mat.matmul(&x, m, &mut y);
    check(&y, &x, &w, m, n, k, None, "from_f32");
    // The 16-bit dense types with the same odd k (the SIMD kernels' scalar tail).
    for dtype in [GgmlDType::F16, GgmlDType::BF16] {
        let (bytes, w) = quantized(dtype, n, k, 7);
        let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
        for backend in available_backends() {
            let mut y = vec![f32::NAN; m * n];
            mat.matmul_with(backend, &x, m, &mut y);
            check(&y, &x, &w, m, n, k, None, &format!("{dtype:?} {backend:?} k={k}"));
        }
    }
}

/// Odd shapes on every dispatch path: the dense kernels' four tile shapes (4 or 1 weight
/// rows × 2 or 1 activation rows) with k below, at and past the 8-wide step for each 16/32-bit
/// type, and packed formats with one row, one full 8-row group and a group plus one, at the
/// smallest k, for 1..=9 activation rows.
#[test]
fn odd_shapes_match_on_every_backend() {
    let shapes = [(1, 1, 1), (3, 7, 1), (5, 9, 3), (6, 15, 5), (4, 8, 2), (9, 33, 7), (1, 17, 2)];
    for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16] {
        for (si, &(n, k, m)) in shapes.iter().enumerate() {
            let (bytes, w) = quantized(dtype, n, k, 200 + si as u64);
            let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
            let x = values(m * k, 300 + si as u64);
            for backend in available_backends() {
                let mut y = vec![f32::NAN; m * n];
                mat.matmul_with(backend, &x, m, &mut y);
                check(&y, &x, &w, m, n, k, None, &format!("{dtype:?} {backend:?} n={n} k={k} m={m}"));
            }
        }
    }
    for (di, &dtype) in PACKED_DTYPES.iter().enumerate() {
        let k = dtype.block_size();
        for n in [1, 8, 9] {
            let (bytes, w) = quantized(dtype, n, k, 400 + di as u64 + n as u64);
            let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
            for m in 1..=9 {
                let x = values(m * k, 500 + m as u64);
                let mut want = vec![0f32; m * n];
                mat.matmul_with(Backend::Scalar, &x, m, &mut want);
                check(&want, &x, &w, m, n, k, Some(k), &format!("{dtype:?} scalar n={n} m={m}"));
                for backend in available_backends() {
                    let mut got = vec![f32::NAN; m * n];
                    mat.matmul_with(backend, &x, m, &mut got);
                    for (idx, (&g, &s)) in got.iter().zip(&want).enumerate() {
                        assert!((g - s).abs() <= 1e-4 * (1.0 + s.abs()), "{dtype:?} {backend:?} n={n} m={m} [{idx}]: {g} vs scalar {s}");
                    }
                }
            }
        }
    }
}

#[test]
fn quantize_f32_round_trips_through_the_kernels() {
    let (n, k, m) = (24, 512, 2);
    let (w, x) = (values(n * k, 5), values(m * k, 6));
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        let mat = QMatrix::quantize_f32(n, k, &w, dtype).expect("quantize");
        assert_eq!(mat.dtype(), dtype);
        let (_, deq) = quantized(dtype, n, k, 5);
        let mut y = vec![0f32; m * n];
        mat.matmul(&x, m, &mut y);
        check(&y, &x, &deq, m, n, k, Some(dtype.block_size()), &format!("quantize_f32 {dtype:?}"));
    }
}

#[test]
fn matmul_many_equals_separate_matmuls() {
    let (k, m) = (512, 5);
    let x = values(m * k, 9);
    let mats: Vec<QMatrix> = [(GgmlDType::Q5_0, 40), (GgmlDType::Q4K, 17), (GgmlDType::Q8_0, 3), (GgmlDType::F16, 9)]
        .iter()
        .enumerate()
        .map(|(i, &(dtype, n))| QMatrix::from_ggml(dtype, n, k, &quantized(dtype, n, k, 300 + i as u64).0).expect("load"))
        .collect();
    for backend in available_backends() {
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![f32::NAN; m * w.n()]).collect();
        let refs: Vec<&QMatrix> = mats.iter().collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        QMatrix::matmul_many_with(backend, &refs, &x, m, &mut slices);
        for (w, got) in mats.iter().zip(&outs) {
            let mut want = vec![0f32; m * w.n()];
            w.matmul_with(backend, &x, m, &mut want);
            assert_eq!(got, &want, "{:?} {backend:?}", w.dtype());
        }
    }
}

#[test]
fn dequantize_row_is_bit_identical_to_candle() {
    for (di, &dtype) in PACKED_DTYPES.iter().chain(&OTHER_DTYPES).enumerate() {
        let (n, k) = (11, 512);
        let (bytes, want) = quantized(dtype, n, k, 200 + di as u64);
        let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
        let mut row = vec![0f32; k];
        for i in 0..n {
            mat.dequantize_row(i, &mut row);
            for (c, (&g, &w)) in row.iter().zip(&want[i * k..]).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{dtype:?} row {i} col {c}: {g} vs candle {w}");
            }
        }
    }
}

/// Built from reads of a few rows at a time (a last chunk with a partial group of 8 rows), every
/// dtype equals candle's dequantization bit for bit; the reads cover the bytes once, in order;
/// a failing read is the error.
#[test]
fn chunked_reads_build_the_same_matrix() {
    for (di, &dtype) in PACKED_DTYPES.iter().chain(&OTHER_DTYPES).enumerate() {
        let (n, k) = (2 * GROUP + 5, 256);
        let (bytes, want) = quantized(dtype, n, k, 400 + di as u64);
        let row_bytes = byte_size(dtype, 1, k);
        let mut next = 0;
        let mat = QMatrix::read_ggml_chunked(dtype, n, k, 3 * row_bytes, |offset, chunk| {
            assert_eq!((offset, chunk.len().min(bytes.len() - offset)), (next, chunk.len()), "{dtype:?}");
            assert!(chunk.len() <= GROUP * row_bytes, "{dtype:?}: one group of rows at most");
            chunk.copy_from_slice(&bytes[offset..offset + chunk.len()]);
            next += chunk.len();
            Ok(())
        })
        .expect("load");
        assert_eq!(next, bytes.len(), "{dtype:?}");
        let mut row = vec![0f32; k];
        for i in 0..n {
            mat.dequantize_row(i, &mut row);
            let same = row.iter().zip(&want[i * k..]).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{dtype:?} row {i}");
        }
        let failing = QMatrix::read_ggml(dtype, n, k, |_, _| Err(std::io::Error::other("disk gone")));
        assert!(matches!(failing, Err(KernelError::Read(e)) if e.to_string() == "disk gone"), "{dtype:?}");
    }
}

#[test]
fn bad_sizes_are_errors() {
    let ok = byte_size(GgmlDType::Q4_0, 3, 64);
    assert!(matches!(
        QMatrix::from_ggml(GgmlDType::Q4_0, 3, 64, &vec![0; ok - 1]),
        Err(KernelError::BadSize { expected, got, .. }) if expected == ok && got == ok - 1
    ));
    assert!(matches!(QMatrix::from_ggml(GgmlDType::Q4K, 2, 640, &[]), Err(KernelError::BadK { block: 256, .. })));
    assert!(matches!(QMatrix::from_ggml(GgmlDType::Q5_0, 2, 100, &[]), Err(KernelError::BadK { block: 32, .. })));
    assert!(matches!(QMatrix::from_f32(2, 3, &[0.0; 5]), Err(KernelError::BadSize { .. })));
    assert!(matches!(QMatrix::quantize_f32(2, 48, &[0.0; 96], GgmlDType::Q8_0), Err(KernelError::BadK { .. })));
    assert!(QMatrix::from_ggml(GgmlDType::Q4_0, 3, 64, &vec![0; ok]).is_ok());
}

#[test]
fn zero_sized_shapes_do_not_panic() {
    let mat = QMatrix::from_ggml(GgmlDType::Q8_0, 0, 64, &[]).expect("empty rows");
    mat.matmul(&[0.0; 64], 1, &mut []);
    let mat = QMatrix::from_ggml(GgmlDType::Q8_0, 2, 0, &[]).expect("empty columns");
    let mut y = [1.0; 2];
    mat.matmul(&[], 1, &mut y);
    assert_eq!(y, [0.0; 2]);
}

/// Every 2-D tensor of the real model files (when present): `dequantize_row` equals candle on
/// sampled rows, and `matmul` is within the activation-quantization bound of an f64 reference
/// on sampled output features.
#[test]
#[ignore = "reads both real models (slow); run with --ignored"]
fn real_model_tensors() {
    use std::io::{Read, Seek, SeekFrom};
    let models = crate::load::models_dir();
    let paths = ["qwen2.5-coder-0.5b-instruct.gguf", "gemma-3-270m-q4_k_m.gguf"].map(|f| ingot_testkit::model_path(&models, f));
    for path in &paths {
        let mut f = std::fs::File::open(path).expect("open");
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).expect("gguf");
        let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
        names.sort();
        let mut checked = 0;
        for name in names {
            let info = &content.tensor_infos[&name];
            let &[n, k] = info.shape.dims() else { continue };
            let dtype = info.ggml_dtype;
            let mut bytes = vec![0u8; byte_size(dtype, n, k)];
            f.seek(SeekFrom::Start(content.tensor_data_offset + info.offset)).expect("seek");
            f.read_exact(&mut bytes).expect("read");
            let mat = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
            let row_bytes = bytes.len() / n;
            let sampled: Vec<usize> = (0..n).step_by((n / 64).max(1)).chain([n - 1]).collect();
            let mut w = vec![0f32; sampled.len() * k];
            for (s, &i) in sampled.iter().enumerate() {
                let want = dequantize_with_candle(dtype, k, &bytes[i * row_bytes..(i + 1) * row_bytes]).expect("candle");
                let row = &mut w[s * k..(s + 1) * k];
                mat.dequantize_row(i, row);
                assert!(row.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} row {i}");
            }
            let m = 3;
            let x = values(m * k, 11);
            let mut y = vec![0f32; m * n];
            mat.matmul(&x, m, &mut y);
            let y_sampled: Vec<f32> = (0..m).flat_map(|r| sampled.iter().map(|&i| y[r * n + i]).collect::<Vec<_>>()).collect();
            let block = mat.act_block();
            check(&y_sampled, &x, &w, m, sampled.len(), k, block, &format!("{} {name} {dtype:?}", path.display()));
            checked += 1;
        }
        assert!(checked >= 50, "{}: only {checked} matrices found", path.display());
    }
}

/// CPU time of all this process's threads (ns resolution, from /proc; 0 where unavailable).
fn process_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = dir
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}

/// GOP/s (2·m·n·k per call) of candle's kernels vs ours on the Qwen2.5-0.5B shapes, in a
/// 2-thread pool like the integrator's. The machine is shared, so besides the best wall time
/// it reports "cpu": ops per (process CPU time / 2), i.e. the rate two otherwise idle cores
/// would reach if the work stayed as CPU-efficient (rayon's spinning counts against us).
/// `INGOT_BENCH_DTYPES=Q4K,Q6K` limits the dtypes.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_gops() {
    use std::time::Instant;
    const THREADS: usize = 2;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().expect("pool");
    let time = |f: &mut dyn FnMut(), ops: f64| -> (f64, f64) {
        f();
        let (mut best, mut total, mut reps) = (f64::MAX, 0.0, 0);
        let cpu0 = process_cpu_seconds();
        while reps < 3 || (total < 0.5 && reps < 200) {
            let t = Instant::now();
            f();
            let s = t.elapsed().as_secs_f64();
            best = best.min(s);
            total += s;
            reps += 1;
        }
        let cpu = (process_cpu_seconds() - cpu0) / reps as f64 / THREADS as f64;
        (ops / best / 1e9, ops / cpu / 1e9)
    };
    // Reference: DRAM read bandwidth with the same pool (256 MiB, far beyond L3).
    let big = vec![1u64; 32 << 20];
    let (gbs, _) = pool.install(|| time(&mut || assert!(big.par_chunks(1 << 16).map(|c| c.iter().sum::<u64>()).sum::<u64>() > 0), (big.len() * 8) as f64));
    drop(big);
    println!("backend: {:?}; streaming read: {gbs:.1} GB/s", Backend::detected());
    println!("{:<5} {:>6} {:>4} {:>3} {:>13} {:>13} {:>7}", "dtype", "n", "k", "m", "candle w/cpu", "ingot w/cpu", "GB/s");
    for (n, k) in [(4864, 896), (896, 4864), (151936, 896)] {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::F16] {
            let only = std::env::var("INGOT_BENCH_DTYPES").unwrap_or_default();
            if k % dtype.block_size() != 0 || !(only.is_empty() || only.split(',').any(|d| d == format!("{dtype:?}"))) {
                continue;
            }
            let w = values(n * k, 1);
            let t = Tensor::from_vec(w, (n, k), &Device::Cpu).expect("tensor");
            let bytes = QTensor::quantize(&t, dtype).expect("quantize").data().expect("data").into_owned();
            let ours = QMatrix::from_ggml(dtype, n, k, &bytes).expect("load");
            let theirs = dtype.from_data(Cow::Borrowed(&bytes));
            for m in [1, 8, 64, 512] {
                if n > 100_000 && m == 512 {
                    continue;
                }
                let x = values(m * k, 2);
                let mut y = vec![0f32; m * n];
                let ops = 2.0 * (m * n * k) as f64;
                // candle is slow on big batches; time it where it takes < ~1 s per call.
                let candle = if m <= 64 && m * n <= 64 * 4864 {
                    pool.install(|| time(&mut || theirs.matmul_t((m, k, n), &x, &mut y).expect("candle"), ops))
                } else {
                    (f64::NAN, f64::NAN)
                };
                let ingot = pool.install(|| time(&mut || ours.matmul(&x, m, &mut y), ops));
                let gbs = ingot.0 / ops * 1e9 * ours.size_in_bytes() as f64 / 1e9;
                println!(
                    "{:<5} {:>6} {:>4} {:>3} {:>6.1}/{:<6.1} {:>6.1}/{:<6.1} {:>7.1}",
                    format!("{dtype:?}"), n, k, m, candle.0, candle.1, ingot.0, ingot.1, gbs
                );
            }
        }
    }
}
