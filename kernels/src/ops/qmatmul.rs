//! Matmul against weights in their stored format (f16 or a GGUF block format), decoded in
//! registers: C = A · Wᵀ (+ bias) (+ residual), W [N, K].

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor, TEXEL_ROW};
use crate::ops::elementwise::{binary, BinaryOp};
use crate::ops::matmul::Epilogue;
use crate::ops::norm::rms_norm;
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape};

const TILE: usize = 64;
/// Up to this many rows of `a` take the matvec kernel (see `qmatvec.wgsl`).
pub const MATVEC_MAX_M: usize = 8;

/// The most tokens × rows (the rows of all the matrices) for which [`qmatmul_input`] runs
/// several products in one dispatch of the CPU rows kernel. Each workgroup there also runs one
/// masked pass of each other matrix's loop (gallivm executes a branch it skips under an empty
/// mask): one step of its rows for its tokens, whatever K, so the cost grows with tokens × rows,
/// while the dispatches saved are a fixed 35–90 µs each on lavapipe. On a 2-core AMD EPYC VM
/// (the kernel bench's alternating rounds; benches/NOTES.md), one dispatch against a dispatch a
/// product took, at 1, 2, 4, 8 and 128 tokens:
/// - SmolLM2's Q, K and V (960 rows): 0.56–0.70, 0.65–0.80, 0.77–0.85, 1.02–1.15, 1.25–1.35;
/// - its gate and up (3,072 rows): 0.87–0.92, 1.00–1.06, 0.97–1.06, 1.10–1.13, 1.12–1.18;
/// - two K-quant matrices of 576 × 1536 (1,152 rows): 0.96–0.97, 0.93–1.02, 1.05–1.10, …
///
/// 4,096 takes every case that gained by more than the noise, and none that lost more than 2%.
pub const FUSED_PRODUCTS_MAX_ROW_TOKENS: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    /// The rms_norm epsilon of an [`Input::RmsNorm`] (the rows kernel; the others ignore it).
    eps: f32,
    /// Rows of the second and third matrix of a fused rows kernel (`RowsPlan::mats`).
    n1: u32,
    n2: u32,
    _pad: u32,
}

/// The left operand of [`qmatmul_input`]: rows as they are, or the output of the op before the
/// matmul, which the CPU adapters' rows kernel computes as it loads them (one dispatch instead of
/// two: on lavapipe each dispatch costs ~85 us of thread wake-ups, benches/NOTES.md) and other
/// adapters run as that op's own kernel first.
#[derive(Clone, Copy)]
pub enum Input<'t> {
    /// `a` [M, K] f32 as it is.
    Plain(&'t Tensor),
    /// rms_norm(x, weight, eps) ([`rms_norm`]): `x` [M, K], `weight` [K], both f32.
    RmsNorm { x: &'t Tensor, weight: &'t Tensor, eps: f32 },
    /// silu(gate) · up ([`BinaryOp::SwiGlu`]): `gate` and `up` [M, K] f32.
    SwiGlu { gate: &'t Tensor, up: &'t Tensor },
}

impl<'t> Input<'t> {
    /// The rows the product runs over (x, or the gate), which give its M and K.
    fn rows(&self) -> &'t Tensor {
        match *self {
            Input::Plain(a) => a,
            Input::RmsNorm { x, .. } => x,
            Input::SwiGlu { gate, .. } => gate,
        }
    }

    /// Checks the second operand against the rows [M, K].
    fn check(&self, op: &'static str, m: usize, k: usize) -> Result<()> {
        match *self {
            Input::Plain(_) => Ok(()),
            Input::RmsNorm { weight, eps, .. } => {
                expect_dtype(op, "rms_norm weight", weight, DType::F32)?;
                expect_shape(op, "rms_norm weight", weight, &[k])?;
                if !(eps.is_finite() && eps >= 0.0) {
                    return Err(KernelError::InvalidArgument {
                        op,
                        what: "rms_norm eps",
                        reason: format!("{eps} is not a finite non-negative number"),
                    });
                }
                Ok(())
            }
            Input::SwiGlu { up, .. } => {
                expect_dtype(op, "up", up, DType::F32)?;
                expect_shape(op, "up", up, &[m, k])
            }
        }
    }

    /// The rows kernel's `aux` binding (the rows themselves where there is none) and label part.
    fn aux(&self) -> (&'t Tensor, &'static str) {
        match *self {
            Input::Plain(a) => (a, "x"),
            Input::RmsNorm { weight, .. } => (weight, "xrmsnorm"),
            Input::SwiGlu { up, .. } => (up, "xswiglu"),
        }
    }

    fn eps(&self) -> f32 {
        match *self {
            Input::RmsNorm { eps, .. } => eps,
            _ => 0.0,
        }
    }
}

/// The source of a kernel that reads stored weights through `quant.wgsl`: the format constants
/// for `dtype`, the shared declarations, the decoders, then `kernel` (the op's own WGSL).
pub(crate) fn quant_kernel_source(dtype: DType, kernel: &str) -> Option<String> {
    let format = format_id(dtype)?;
    let (block_elements, block_bytes) = dtype.block();
    Some(format!(
        "const FORMAT: u32 = {format}u;\nconst BLOCK_ELEMENTS: u32 = {block_elements}u;\nconst BLOCK_BYTES: u32 = {block_bytes}u;\n{}\n{kernel}",
        crate::ops::wgsl_source!("quant.wgsl")
    ))
}

/// Fails unless `t` holds weights in a format `quant.wgsl` decodes.
pub(crate) fn expect_weight_format(op: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
    format_id(t.dtype()).map(|_| ()).ok_or(KernelError::DTypeMismatch {
        op,
        what,
        expected: "f32, f16 or a GGUF block format",
        got: t.dtype().name(),
    })
}

/// The `FORMAT` id `quant.wgsl` switches on.
pub(crate) fn format_id(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q8_0 => 2,
        DType::Q4_0 => 3,
        DType::Q4_1 => 4,
        DType::Q5_0 => 5,
        DType::Q5_1 => 6,
        DType::Q4K => 7,
        DType::Q5K => 8,
        DType::Q6K => 9,
        DType::U32 => return None,
    })
}

/// out = a · wᵀ (+ bias) (+ residual) with `a` [M, K] f32, `w` [N, K] in any weight format,
/// `out` [M, N]. Up to [`MATVEC_MAX_M`] rows (decoding) run the bandwidth-bound matvec; more run
/// the tiled matmul on GPUs and the rows kernel in groups of 8 on CPU adapters.
pub fn qmatmul(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    qmatmul_routed(rec, a, w, epilogue, out, Route::Auto)
}

/// One product of [`qmatmul_input`]: out = input · wᵀ (+ epilogue).
#[derive(Clone, Copy)]
pub struct Product<'t> {
    pub w: &'t Tensor,
    pub epilogue: Epilogue<'t>,
    pub out: &'t Tensor,
}

/// [`qmatmul`] of `input`, the output of the op before the matmul, by each of `products` (Llama's
/// Q, K and V of one normed input). Where the CPU adapters' rows kernel runs, it transforms the
/// rows as it loads them, and 2 or 3 products share one dispatch where they can
/// ([`FUSED_PRODUCTS_MAX_ROW_TOKENS`]; otherwise a dispatch a product); elsewhere that op's
/// kernel runs once, into a temporary, then the matmuls. Each output must be distinct from the
/// others and from every weight, whichever route runs.
pub fn qmatmul_input(rec: &mut Recorder<'_>, input: Input<'_>, products: &[Product<'_>]) -> Result<()> {
    let k = check_products(input, products)?;
    let fused = rows_kernel_runs(rec.gpu(), k) && rec.gpu().fused_inputs();
    if fused && rec.gpu().fused_products() && fused_products(rec, input, products, FUSED_PRODUCTS_MAX_ROW_TOKENS)? {
        return Ok(());
    }
    let transformed = if fused { None } else { materialize(rec, input)? };
    let input = transformed.as_ref().map_or(input, Input::Plain);
    products.iter().try_for_each(|p| qmatmul_with(rec, input, p.w, p.epilogue, p.out, Route::Auto, None))
}

/// [`qmatmul_input`]'s products in one dispatch of the CPU rows kernel whatever the number of
/// rows, so that benchmarks can measure it past [`FUSED_PRODUCTS_MAX_ROW_TOKENS`]; an error where they
/// cannot share one (not the rows kernel, weights in two formats or some with texel copies and
/// some without, an epilogue, other than 2 or 3 products).
pub fn qmatmul_products_one_dispatch(rec: &mut Recorder<'_>, input: Input<'_>, products: &[Product<'_>]) -> Result<()> {
    let k = check_products(input, products)?;
    if rows_kernel_runs(rec.gpu(), k) && fused_products(rec, input, products, usize::MAX)? {
        return Ok(());
    }
    Err(KernelError::InvalidArgument {
        op: "qmatmul",
        what: "products",
        reason: format!(
            "these {} cannot share a dispatch: that needs the CPU rows kernel (a software adapter with 64-bit shader integers, K a multiple of 32; K is {k}) and 2 or 3 weights [N, {k}] in one format, all with texel copies or all without, and no epilogue",
            products.len()
        ),
    })
}

/// Checks what every route of [`qmatmul_input`] needs: the input's op against its rows, and
/// each product's output distinct from the other outputs and from every weight (the products
/// may run in one dispatch, in any order). Returns K, the input's row length.
fn check_products(input: Input<'_>, products: &[Product<'_>]) -> Result<usize> {
    let k = input.rows().shape().last().copied().unwrap_or(0);
    if let [m, k] = *input.rows().shape() {
        input.check("qmatmul", m, k)?;
    }
    for (i, p) in products.iter().enumerate() {
        let others: Vec<&Tensor> = products.iter().enumerate().filter(|&(j, _)| j != i).flat_map(|(_, q)| [q.out, q.w]).collect();
        expect_distinct("qmatmul", p.out, &others)?;
    }
    Ok(k)
}

/// Records 2 or 3 products of one input as one dispatch of the rows kernel (one workgroup range
/// a matrix, `qmatvec_rows.wgsl`) where they can share it: every weight in one format and read
/// the same way (all from texel copies or all from buffers), no epilogue, at most
/// `max_row_tokens` tokens × rows. Returns whether it did; the
/// caller runs them one by one otherwise. The outputs' distinctness from one another and from
/// the other weights is [`check_products`]'s.
fn fused_products(rec: &mut Recorder<'_>, input: Input<'_>, products: &[Product<'_>], max_row_tokens: usize) -> Result<bool> {
    const NAME: &str = "qmatmul";
    let a = input.rows();
    let &[m, k] = a.shape() else { return Ok(false) };
    let [first, ..] = products else { return Ok(false) };
    let dtype = first.w.dtype();
    let shareable = |p: &Product<'_>| {
        p.w.dtype() == dtype && p.w.has_texels() == first.w.has_texels() && p.w.shape().len() == 2 && p.w.shape()[1] == k && p.epilogue.bias.is_none() && p.epilogue.residual.is_none()
    };
    if !(2..=3).contains(&products.len()) || !products.iter().all(shareable) || a.dtype() != DType::F32 {
        return Ok(false);
    }
    if m.saturating_mul(products.iter().map(|p| p.w.shape()[0]).sum()) > max_row_tokens {
        return Ok(false);
    }
    expect_weight_format(NAME, "w", first.w)?;
    let (aux, x_input) = input.aux();
    let mut rows = [0usize; 3];
    for (i, p) in products.iter().enumerate() {
        rows[i] = p.w.shape()[0];
        expect_dtype(NAME, "out", p.out, DType::F32)?;
        expect_shape(NAME, "out", p.out, &[m, rows[i]])?;
        expect_distinct(NAME, p.out, &[a, aux, p.w])?;
        expect_bindable(rec.gpu(), NAME, &[("a", a), ("w", p.w), ("out", p.out)])?;
    }
    let total: usize = rows.iter().sum();
    if total == 0 || m == 0 {
        return Ok(true);
    }
    let report = rec.gpu().report();
    let shared_x = report.subgroup_size == Some(8);
    // Rows an invocation as for the largest matrix alone (each workgroup takes one matrix).
    let texels = first.w.has_texels();
    let mut plan = RowsPlan::new(dtype, k, rows.iter().copied().max().unwrap_or(0), m, shared_x, texels, x_input, None);
    plan.mats = products.len();
    let weights = if texels { Access::Texels } else { Access::Read };
    let mut storage = vec![Access::Read, weights, Access::Read, Access::Read, Access::ReadWrite, Access::Read];
    let mut tensors: Vec<&Tensor> = vec![a, first.w, a, a, first.out, aux];
    for p in &products[1..] {
        storage.extend([weights, Access::ReadWrite]);
        tensors.extend([p.w, p.out]);
    }
    let kernel = rec.gpu().kernel_generated(&plan.label(), "qmatvec_rows", &storage, || plan.source(None))?;
    let per = 8 * plan.rows;
    let workgroups: usize = rows.iter().map(|n| n.div_ceil(per)).sum();
    let mut groups = crate::ops::grid(workgroups * per, per);
    groups[2] = as_u32(NAME, "M", m.div_ceil(plan.tokens))?;
    let params = QMatmulParams {
        m: as_u32(NAME, "M", m)?,
        n: as_u32(NAME, "N", rows[0])?,
        k: as_u32(NAME, "K", k)?,
        flags: 0,
        eps: input.eps(),
        n1: as_u32(NAME, "N", rows[1])?,
        n2: as_u32(NAME, "N", rows[2])?,
        _pad: 0,
    };
    rec.dispatch(&kernel, &tensors, &params, groups)?;
    Ok(true)
}

/// Times the CPU rows kernel reading a weight from its texel copy against reading its buffer,
/// for [`crate::Gpu::measure_texel_weights`]: a Q4_1 weight of 65,536 × 1,536 (63 MB, or what
/// one binding holds where that is less), more than a server CPU's last-level cache, because a
/// decode step streams every weight from memory and the routes rank differently there (on the
/// AMD EPYC measured, texels won from cache by up to 1.12x and lost from memory by 1.37-1.64x;
/// benches/NOTES.md). One token, two products a submission, the routes alternating over three
/// rounds after a first run of each (which compiles its kernel). Returns whether texels took
/// less time at their best. The weights' buffers are destroyed afterwards, not pooled.
pub(crate) fn texels_measured_faster(gpu: &crate::Gpu) -> Result<bool> {
    let (k, dtype) = (1536, DType::Q4_1);
    // 65,536 rows, or as many as one binding holds (with room for its slack) where that is less.
    let row_bytes = dtype.bytes_for(k as u64);
    let bindable = gpu.limits().max_storage_buffer_binding_size.saturating_sub(4096) / row_bytes;
    let n = (bindable.min(65536) as usize) & !7;
    if n == 0 {
        return Ok(false);
    }
    // 0x11 everywhere: scales and mins are small normal f16 values, every quant 1.
    let bytes = vec![0x11u8; dtype.bytes_for((n * k) as u64) as usize];
    let weight_bytes = bytes.len() as u64;
    let timed = time_both_routes(gpu, &bytes, n, k, dtype);
    // The two weights went back to the pool as they dropped: 63 MB each that no later tensor is
    // likely to fit, held in host memory on a software adapter.
    gpu.discard_free_buffers(weight_bytes);
    let (from_buffer, from_texels) = match timed? {
        Some(times) => times,
        None => return Ok(false),
    };
    let faster = from_texels < from_buffer;
    tracing::info!(
        buffer_us = (from_buffer * 1e6).round(),
        texels_us = (from_texels * 1e6).round(),
        "CPU matvec: weights {}",
        if faster { "get texel copies (texel fetches were faster)" } else { "stay in buffers (storage loads were faster)" }
    );
    Ok(faster)
}

/// [`texels_measured_faster`]'s rounds: the best time a product from the buffer and from the
/// texel copy of one weight, in seconds; `None` where the adapter made no texel copy.
fn time_both_routes(gpu: &crate::Gpu, bytes: &[u8], n: usize, k: usize, dtype: DType) -> Result<Option<(f64, f64)>> {
    const REPS: usize = 2;
    const ROUNDS: usize = 3;
    let buffer = gpu.upload(bytes, &[n, k], dtype)?;
    let texels = gpu.upload_weights_with_texels(bytes, &[n, k], dtype)?;
    if !texels.has_texels() {
        return Ok(None);
    }
    let x = gpu.upload_f32(&vec![0.25; k], &[1, k])?;
    let out = gpu.empty(&[1, n], DType::F32)?;
    let time = |w: &Tensor| -> Result<f64> {
        let start = std::time::Instant::now();
        gpu.run(|rec| (0..REPS).try_for_each(|_| qmatmul(rec, &x, w, Epilogue::default(), &out)))?;
        gpu.sync()?;
        Ok(start.elapsed().as_secs_f64() / REPS as f64)
    };
    time(&buffer)?;
    time(&texels)?;
    let (mut from_buffer, mut from_texels) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..ROUNDS {
        from_buffer = from_buffer.min(time(&buffer)?);
        from_texels = from_texels.min(time(&texels)?);
    }
    Ok(Some((from_buffer, from_texels)))
}


/// Whether [`qmatmul`] takes the CPU adapters' rows kernel for rows of `k` elements: on software
/// adapters with 64-bit shader integers, K a multiple of 32.
fn rows_kernel_runs(gpu: &crate::gpu::Gpu, k: usize) -> bool {
    let report = gpu.report();
    k % 32 == 0 && report.software && report.shader_int64
}

/// Runs the op `input` stands for as its own kernel into a new tensor (the recorder keeps it
/// alive until its submission); `None` for plain rows. Shapes are checked by the ops.
fn materialize(rec: &mut Recorder<'_>, input: Input<'_>) -> Result<Option<Tensor>> {
    let rows = input.rows();
    Ok(match input {
        Input::Plain(_) => None,
        Input::RmsNorm { x, weight, eps } => {
            let out = rec.gpu().empty(rows.shape(), DType::F32)?;
            rms_norm(rec, x, weight, eps, &out)?;
            Some(out)
        }
        Input::SwiGlu { gate, up } => {
            expect_shape("qmatmul", "up", up, gate.shape())?;
            let out = rec.gpu().empty(rows.shape(), DType::F32)?;
            binary(rec, BinaryOp::SwiGlu, gate, up, &out)?;
            Some(out)
        }
    })
}

/// [`qmatmul_input`] through the rows kernel with every invocation loading x itself (see
/// [`qmatmul_rows_local_x`]), so that tests on lavapipe check that variant's transforms too.
pub fn qmatmul_input_rows_local_x(rec: &mut Recorder<'_>, input: Input<'_>, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    qmatmul_with(rec, input, w, epilogue, out, Route::RowsLocalX, None)
}

/// [`qmatmul`] always through the tiled kernel (GPUs' path for more than 8 rows), so that tests
/// and benchmarks on a CPU adapter still check and measure it.
pub fn qmatmul_tiled(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    qmatmul_routed(rec, a, w, epilogue, out, Route::Tiled)
}

/// [`qmatmul`] always through the GPU matvec (`qmatvec.wgsl`, GPUs' path for up to 8 rows; more
/// rows run in groups of 8), so that tests on a CPU adapter check it too. K must be a multiple
/// of 32.
pub fn qmatmul_matvec(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    qmatmul_routed(rec, a, w, epilogue, out, Route::Matvec)
}

/// [`qmatmul`] through the CPU adapters' rows kernel with every invocation loading x itself, as
/// adapters whose subgroups are not 8 lanes wide run it (lavapipe's are, and shares x through
/// them), so that tests on lavapipe check that variant too. Needs 64-bit shader integers and K a
/// multiple of 32.
pub fn qmatmul_rows_local_x(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    qmatmul_routed(rec, a, w, epilogue, out, Route::RowsLocalX)
}

/// A variant of the rows kernel for probes: `template` in place of `qmatvec_rows.wgsl`, its
/// pipelines labelled with `name`, and `rows` forcing the rows an invocation. Not an API.
#[doc(hidden)]
pub struct RowsVariant<'t> {
    pub name: &'t str,
    pub template: &'t str,
    pub rows: Option<usize>,
}

/// [`qmatmul`] (no epilogue) with `variant` wherever the rows kernel runs: for probes that compare
/// kernel variants in one process (`benches/src/bin/matvec_probe.rs`). Not an API.
#[doc(hidden)]
pub fn qmatmul_rows_variant(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, out: &Tensor, variant: &RowsVariant<'_>) -> Result<()> {
    qmatmul_with(rec, Input::Plain(a), w, Epilogue::default(), out, Route::Auto, Some(variant))
}

/// Which kernel runs a qmatmul: chosen by the adapter and the shape, or forced (tests, benches).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Auto,
    Tiled,
    Matvec,
    RowsLocalX,
}

/// How the CPU adapters' rows kernel (`qmatvec_rows.wgsl`) is specialised for a weight format,
/// a shape and a number of tokens.
struct RowsPlan {
    dtype: DType,
    tokens: usize,
    rows: usize,
    step: usize,
    paired: bool,
    blocked: bool,
    shared_x: bool,
    /// W read from its texel copy (`Tensor::texels`) rather than its buffer.
    texels: bool,
    /// How x is transformed as it is loaded ([`Input`]): "x", "xrmsnorm" or "xswiglu".
    x_input: &'static str,
    /// Weight matrices of the one input (1 to 3), all read the same way (`texels`).
    mats: usize,
}

impl RowsPlan {
    /// `rows` forces the rows an invocation (probes); `None` chooses them by shape.
    #[allow(clippy::too_many_arguments)] // the shape and the adapter's choices of one launch, each named
    fn new(dtype: DType, k: usize, n: usize, m: usize, shared_x: bool, texels: bool, x_input: &'static str, rows: Option<usize>) -> RowsPlan {
        let tokens = m.min(MATVEC_MAX_M);
        // Elements a row's step decodes: those that share loaded bytes (qmatvec_rows.wgsl); two
        // blocks of Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 where K holds whole pairs, which aligns them.
        let paired = matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1) && k % 64 == 0;
        // The K-quants fetch each row's whole block once per block (BLOCKED), not per step.
        let blocked = matches!(dtype, DType::Q4K | DType::Q5K | DType::Q6K);
        let step = match dtype {
            DType::Q4K | DType::Q5K => 64,
            DType::Q6K => 128,
            _ if paired => 64,
            _ => 32,
        };
        // Rows per invocation: 16 share the decoding work best on large matrices (Q4_1 tied
        // output: 72% of the vec4 copy against 53% with 8); below 4096 rows, 8 leave enough
        // workgroups for every core (Q4_1 1536×576: 55% against 40% with 16; benches/NOTES.md).
        let rows = rows.unwrap_or(if n >= 4096 && !(3..=4).contains(&tokens) { 16 } else { 8 });
        RowsPlan { dtype, tokens, rows, step, paired, blocked, shared_x, texels, x_input, mats: 1 }
    }

    fn label(&self) -> String {
        let x_mode = if self.shared_x { "xshared" } else { "xlocal" };
        format!(
            "qmatvec_rows_{}_{}{}_{}_step{}_rows{}_tokens{}_{x_mode}_wg8",
            self.dtype.name(),
            self.x_input,
            if self.mats > 1 { format!("_mats{}", self.mats) } else { String::new() },
            if self.texels { "texels" } else { "storage" },
            self.step,
            self.rows,
            self.tokens
        )
    }

    /// The kernel's WGSL: `template` (or `qmatvec_rows.wgsl`) expanded for this plan.
    fn source(&self, template: Option<&str>) -> Result<String> {
        let dtype = self.dtype;
        let (block_elements, block_bytes) = dtype.block();
        let format = format_id(dtype).expect("a weight format") as usize;
        let template = match template {
            Some(text) => format!("{}\n{text}", include_str!("../wgsl/common.wgsl")),
            None => crate::ops::wgsl_source!("qmatvec_rows.wgsl").to_string(),
        };
        // Where a format's decoder leaves the quants of a vec4's four bytes in place (bits 8c..
        // of the word for component c, one mask and no shift), x is scaled to match.
        let in_place = matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q4K | DType::Q6K);
        let x_scale = if in_place { "1.0, 0x1p-8f, 0x1p-16f, 0x1p-24f" } else { "1.0, 1.0, 1.0, 1.0" };
        let source = format!(
            "const BLOCK_ELEMENTS: u32 = {block_elements}u;\nconst BLOCK_BYTES: u32 = {block_bytes}u;\nconst XSCALE = vec4<f32>({x_scale});\nconst TEXEL_ROW: u32 = {TEXEL_ROW}u;\n{template}"
        );
        // Vec4s that share a scale (a block or sub-block: 16 elements of Q6_K, 32 otherwise), and
        // whether the format adds an offset (zero point or min) times Σx to each.
        let sub = if dtype == DType::Q6K { 4 } else { 8 };
        let offset = matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K | DType::Q6K);
        let section = if self.paired { format!("F{format}_PAIR") } else { format!("F{format}") };
        let formats = ["F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F2_PAIR", "F3_PAIR", "F4_PAIR", "F5_PAIR", "F6_PAIR"]
            .map(|name| (name, usize::from(name == section)));
        let counts = [
            ("ROWS", self.rows),
            ("TOKENS", self.tokens),
            ("STEP", self.step),
            ("VECS", self.step / 4),
            ("GROUPS", self.step / 32),
            ("EIGHT", 8),
            ("FOUR", 4),
            ("SHARED_X", usize::from(self.shared_x)),
            ("LOCAL_X", usize::from(!self.shared_x)),
            ("BLOCKED", usize::from(self.blocked)),
            ("FLAT", usize::from(!self.blocked)),
            ("SUB", sub),
            ("SUB_REST", sub - 1),
            ("SCALES", self.step / 4 / sub),
            ("OFFSET", usize::from(offset)),
            ("SUBSTEPS", if self.blocked { 256 / self.step } else { 1 }),
            // 16-byte units of a block's window (k_block): Q6_K's 210 bytes start at any even byte.
            ("UNITS", if dtype == DType::Q6K { 14 } else if self.blocked { block_bytes as usize / 16 } else { 1 }),
            ("SIXTEEN", 16),
            ("STORAGE", usize::from(!self.texels)),
            ("TEXELS", usize::from(self.texels)),
            ("THREE", 3),
            ("FIVE", 5),
            ("SIX", 6),
            ("NINE", 9),
            ("ELEVEN", 11),
            ("SEVENTEEN", 17),
            ("X_PLAIN", usize::from(self.x_input == "x")),
            ("X_RMS", usize::from(self.x_input == "xrmsnorm")),
            ("X_NOT_RMS", usize::from(self.x_input != "xrmsnorm")),
            ("X_SWIGLU", usize::from(self.x_input == "xswiglu")),
            ("MAT1", usize::from(self.mats >= 2)),
            ("MAT2", usize::from(self.mats >= 3)),
            // The uniform follows the bindings: 6, and a weight (texture or buffer) and an output
            // for each further matrix.
            ("UNIFORM", 6 + 2 * (self.mats - 1)),
        ];
        crate::unroll::expand(&source, &[&counts[..], &formats[..]].concat())
    }
}

/// Invocations per output row of the GPU matvec (see `qmatvec.wgsl`).
const MATVEC_TPR: usize = 32;

fn qmatmul_routed(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor, route: Route) -> Result<()> {
    qmatmul_with(rec, Input::Plain(a), w, epilogue, out, route, None)
}

/// The launcher; `variant` replaces `qmatvec_rows.wgsl` (with a label suffix) for probes.
fn qmatmul_with(
    rec: &mut Recorder<'_>,
    input: Input<'_>,
    w: &Tensor,
    epilogue: Epilogue<'_>,
    out: &Tensor,
    route: Route,
    variant: Option<&RowsVariant<'_>>,
) -> Result<()> {
    const NAME: &str = "qmatmul";
    let a = input.rows();
    expect_dtype(NAME, "a", a, DType::F32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_weight_format(NAME, "w", w)?;
    let ([m, k], [n, wk]) = (a.shape(), w.shape()) else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "a and w",
            expected: "a [M, K] and w [N, K]".into(),
            got: [a.shape(), w.shape()].concat(),
        });
    };
    let (m, k, n) = (*m, *k, *n);
    if *wk != k {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "w",
            expected: format!("[N, {k}]"),
            got: w.shape().to_vec(),
        });
    }
    expect_shape(NAME, "out", out, &[m, n])?;
    input.check(NAME, m, k)?;
    let flags = epilogue.flags(NAME, n, &[m, n])?;
    let bias = epilogue.bias.unwrap_or(a);
    let residual = epilogue.residual.unwrap_or(a);
    let (aux, x_input) = input.aux();
    expect_distinct(NAME, out, &[a, w, bias, residual, aux])?;
    expect_bindable(rec.gpu(), NAME, &[("a", a), ("w", w), ("out", out)])?;
    let groups = [n.div_ceil(TILE), m.div_ceil(TILE), 1];
    if groups.contains(&0) {
        return Ok(());
    }
    let params = QMatmulParams {
        m: as_u32(NAME, "M", m)?,
        n: as_u32(NAME, "N", n)?,
        k: as_u32(NAME, "K", k)?,
        flags,
        eps: input.eps(),
        n1: 0,
        n2: 0,
        _pad: 0,
    };
    let storage = [Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite];
    let source = |kernel: &str| quant_kernel_source(w.dtype(), kernel).expect("format checked above");
    // A few tokens (decoding): the bandwidth-bound matvec, which needs K in whole 32-element chunks.
    // CPU adapters with 64-bit shader integers: the rows kernel for any number of tokens,
    // MATVEC_MAX_M at a time. On lavapipe it beats the tiled kernel even on full 64-row tiles
    // (Q4_1 at 512 tokens: 15 GFLOP/s, the tiled kernel 0.4 when last measured; BENCHMARKS.md and
    // benches/NOTES.md), since its cost is the count of weight loads, shared by 8 tokens. A CPU
    // adapter without int64 takes the GPU kernels below.
    let report = rec.gpu().report();
    if route == Route::RowsLocalX && (k % 32 != 0 || !report.shader_int64) {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "route",
            reason: format!("the rows kernel needs K a multiple of 32 (got {k}) and 64-bit shader integers (adapter: {})", report.shader_int64),
        });
    }
    let rows_kernel = route == Route::Auto && rows_kernel_runs(rec.gpu(), k);
    if rows_kernel || route == Route::RowsLocalX {
        // The 8-lane workgroup is one subgroup only where the adapter's subgroups are 8 wide.
        let shared_x = report.subgroup_size == Some(8) && route == Route::Auto;
        // Weights uploaded where texel fetches beat storage loads carry a texel copy (gpu.rs).
        let texels = w.texels().is_some() && route == Route::Auto;
        let plan = RowsPlan::new(w.dtype(), k, n, m, shared_x, texels, x_input, variant.and_then(|v| v.rows));
        let weights = if texels { Access::Texels } else { Access::Read };
        let storage = [Access::Read, weights, Access::Read, Access::Read, Access::ReadWrite, Access::Read];
        let suffix = variant.map(|v| format!("_{}", v.name)).unwrap_or_default();
        let kernel = rec.gpu().kernel_generated(&format!("{}{suffix}", plan.label()), "qmatvec_rows", &storage, || {
            plan.source(variant.map(|v| v.template))
        })?;
        let (tokens, rows) = (plan.tokens, plan.rows);
        let mut groups = crate::ops::grid(n, 8 * rows);
        groups[2] = as_u32(NAME, "M", m.div_ceil(tokens))?;
        return rec.dispatch(&kernel, &[a, w, bias, residual, out, aux], &params, groups);
    }
    // Elsewhere the op before the matmul runs as its own kernel first.
    let transformed = materialize(rec, input)?;
    let a = transformed.as_ref().unwrap_or(a);
    let bias = epilogue.bias.unwrap_or(a);
    let residual = epilogue.residual.unwrap_or(a);
    if route == Route::Matvec && k % 32 != 0 {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "a",
            expected: "K a multiple of 32 for the matvec kernel".into(),
            got: a.shape().to_vec(),
        });
    }
    if (route == Route::Matvec || (route == Route::Auto && m <= MATVEC_MAX_M)) && k % 32 == 0 {
        let tokens = m.min(MATVEC_MAX_M);
        let label = format!("qmatvec_{}_f32_tpr{MATVEC_TPR}_tokens{tokens}_wg256", w.dtype().name());
        let kernel = rec.gpu().kernel(&label, "qmatvec", &storage, || {
            format!("const TPR: u32 = {MATVEC_TPR}u;\nconst TOKENS: u32 = {tokens}u;\n{}", source(include_str!("../wgsl/qmatvec.wgsl")))
        })?;
        let mut groups = crate::ops::grid(n, 256 / MATVEC_TPR);
        groups[2] = as_u32(NAME, "M", m.div_ceil(tokens))?;
        return rec.dispatch(&kernel, &[a, w, bias, residual, out], &params, groups);
    }
    let label = format!("qmatmul_{}_f32_nt_tile64x64x16_wg16x16", w.dtype().name());
    let kernel = rec.gpu().kernel(&label, "qmatmul", &storage, || source(include_str!("../wgsl/qmatmul.wgsl")))?;
    rec.dispatch(&kernel, &[a, w, bias, residual, out], &params, groups.map(|g| g as u32))
}
