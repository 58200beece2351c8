//! Elementwise ops: GELU (erf form) and SiLU; add, mul and the SwiGLU gate with the second
//! operand broadcast along rows (bias, per-column scale) or of the same shape (residual).

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// x·Φ(x) with Φ through erf, as BERT.
    Gelu,
    /// x·sigmoid(x).
    Silu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
    /// silu(a)·b: `a` the gate projection, `b` the up projection (Llama's MLP).
    SwiGlu,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryParams {
    n: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryParams {
    n: u32,
    b_len: u32,
    _pad: [u32; 2],
}

/// out = op(x), elementwise; `out` has x's shape.
pub fn unary(rec: &mut Recorder<'_>, op: UnaryOp, x: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "unary";
    expect_dtype(NAME, "x", x, DType::F32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_shape(NAME, "out", out, x.shape())?;
    expect_distinct(NAME, out, &[x])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out)])?;
    let n = as_u32(NAME, "x", x.len())?;
    let (label, entry) = match op {
        UnaryOp::Gelu => ("gelu_erf_f32_wg256", "gelu"),
        UnaryOp::Silu => ("silu_f32_wg256", "silu_op"),
    };
    let kernel = rec.gpu().kernel(label, entry, &[Access::Read, Access::ReadWrite], || wgsl_source!("unary.wgsl").into())?;
    rec.dispatch(&kernel, &[x, out], &UnaryParams { n, _pad: [0; 3] }, grid(x.len(), 256))
}

/// out = a op b elementwise, with b's elements repeated along a (b's length must divide a's:
/// the same shape, or one row of a's last dimension).
pub fn binary(rec: &mut Recorder<'_>, op: BinaryOp, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "binary";
    expect_dtype(NAME, "a", a, DType::F32)?;
    expect_dtype(NAME, "b", b, DType::F32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_shape(NAME, "out", out, a.shape())?;
    if b.is_empty() != a.is_empty() || (!b.is_empty() && a.len() % b.len() != 0) {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "b",
            expected: format!("a shape whose element count divides {} (a's {:?})", a.len(), a.shape()),
            got: b.shape().to_vec(),
        });
    }
    expect_distinct(NAME, out, &[a, b])?;
    expect_bindable(rec.gpu(), NAME, &[("a", a), ("b", b), ("out", out)])?;
    let (label, entry) = match op {
        BinaryOp::Add => ("add_f32_broadcast_wg256", "add"),
        BinaryOp::Mul => ("mul_f32_broadcast_wg256", "mul"),
        BinaryOp::SwiGlu => ("swiglu_f32_broadcast_wg256", "swiglu"),
    };
    let kernel = rec.gpu().kernel(label, entry, &[Access::Read, Access::Read, Access::ReadWrite], || {
        wgsl_source!("binary.wgsl").into()
    })?;
    let params = BinaryParams {
        n: as_u32(NAME, "a", a.len())?,
        b_len: as_u32(NAME, "b", b.len().max(1))?,
        _pad: [0; 2],
    };
    rec.dispatch(&kernel, &[a, b, out], &params, grid(a.len(), 256))
}
