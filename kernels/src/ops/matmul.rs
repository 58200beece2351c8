//! f32 matmul with weights in [out, in] layout: C = A · Wᵀ (+ bias) (+ residual), batched.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, wgsl_source};

/// The tile each workgroup computes (see `matmul.wgsl`).
const TILE: usize = 64;

/// What is added to A · Wᵀ in the same pass, saving a kernel and a round trip through memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// [N], added to every row.
    pub bias: Option<&'a Tensor>,
    /// Same shape as the output (a residual connection).
    pub residual: Option<&'a Tensor>,
}

impl Epilogue<'_> {
    /// Checks the epilogue against an output of `out_shape` with `n` columns and returns the
    /// kernels' flags (1 = bias, 2 = residual).
    pub(crate) fn flags(&self, op: &'static str, n: usize, out_shape: &[usize]) -> Result<u32> {
        let mut flags = 0;
        if let Some(bias) = self.bias {
            expect_dtype(op, "bias", bias, DType::F32)?;
            expect_shape(op, "bias", bias, &[n])?;
            flags |= 1;
        }
        if let Some(residual) = self.residual {
            expect_dtype(op, "residual", residual, DType::F32)?;
            expect_shape(op, "residual", residual, out_shape)?;
            flags |= 2;
        }
        Ok(flags)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a_stride: u32,
    w_stride: u32,
    c_stride: u32,
    _pad: u32,
}

/// out = a · wᵀ (+ bias) (+ residual). `a` is [M, K] or [B, M, K]; `w` is [N, K] (shared by
/// every batch) or [B, N, K]; `out` is [M, N] or [B, M, N].
pub fn matmul(rec: &mut Recorder<'_>, a: &Tensor, w: &Tensor, epilogue: Epilogue<'_>, out: &Tensor) -> Result<()> {
    const NAME: &str = "matmul";
    for (what, t) in [("a", a), ("w", w), ("out", out)] {
        expect_dtype(NAME, what, t, DType::F32)?;
    }
    let (batch, m, k) = match *a.shape() {
        [m, k] => (1, m, k),
        [b, m, k] => (b, m, k),
        _ => {
            return Err(KernelError::ShapeMismatch {
                op: NAME,
                what: "a",
                expected: "[M, K] or [B, M, K]".into(),
                got: a.shape().to_vec(),
            })
        }
    };
    let (n, w_batched) = match *w.shape() {
        [n, wk] if wk == k => (n, false),
        [wb, n, wk] if wk == k && wb == batch && a.shape().len() == 3 => (n, true),
        _ => {
            return Err(KernelError::ShapeMismatch {
                op: NAME,
                what: "w",
                expected: format!("[N, {k}] or [{batch}, N, {k}]"),
                got: w.shape().to_vec(),
            })
        }
    };
    let out_shape: Vec<usize> = if a.shape().len() == 3 { vec![batch, m, n] } else { vec![m, n] };
    expect_shape(NAME, "out", out, &out_shape)?;
    let flags = epilogue.flags(NAME, n, &out_shape)?;
    let bias = epilogue.bias.unwrap_or(a);
    let residual = epilogue.residual.unwrap_or(a);
    expect_distinct(NAME, out, &[a, w, bias, residual])?;
    expect_bindable(rec.gpu(), NAME, &[("a", a), ("w", w), ("out", out)])?;
    let groups = [n.div_ceil(TILE), m.div_ceil(TILE), batch];
    if groups.contains(&0) {
        return Ok(());
    }
    let params = MatmulParams {
        m: as_u32(NAME, "M", m)?,
        n: as_u32(NAME, "N", n)?,
        k: as_u32(NAME, "K", k)?,
        flags,
        a_stride: as_u32(NAME, "a", m * k)?,
        w_stride: if w_batched { as_u32(NAME, "w", n * k)? } else { 0 },
        c_stride: as_u32(NAME, "out", m * n)?,
        _pad: 0,
    };
    let storage = [Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite];
    // CPU adapters run the register-blocked kernel (no workgroup memory or barriers, which
    // lavapipe executes slowly); it needs whole vec4s along K and batch strides. Fewer than 16
    // rows (a few tokens) take a 4-row block so that little work is spent on clamped rows.
    if rec.gpu().report().software && k % 4 == 0 {
        let rows = if m >= 16 { 16 } else { 4 };
        let cols = 16;
        let label = format!("matmul_f32_nt_regs{rows}x{cols}_wg8x8");
        let kernel = rec.gpu().kernel_generated(&label, "matmul_registers", &storage, || {
            crate::unroll::expand(wgsl_source!("matmul_registers.wgsl"), &[("ROWS", rows), ("COLS", cols)])
        })?;
        let groups = [n.div_ceil(8 * cols) as u32, m.div_ceil(8 * rows) as u32, batch as u32];
        return rec.dispatch(&kernel, &[a, w, bias, residual, out], &params, groups);
    }
    let kernel = rec.gpu().kernel("matmul_f32_nt_tile64x64x16_wg16x16", "matmul", &storage, || wgsl_source!("matmul.wgsl").into())?;
    rec.dispatch(&kernel, &[a, w, bias, residual, out], &params, groups.map(|g| g as u32))
}
