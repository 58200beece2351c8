//! Row normalisations: LayerNorm (BERT) and RMSNorm (Llama), over the last dimension.

use crate::error::Result;
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

fn check(name: &'static str, x: &Tensor, params: &[(&'static str, &Tensor)], out: &Tensor) -> Result<NormParams> {
    expect_dtype(name, "x", x, DType::F32)?;
    expect_dtype(name, "out", out, DType::F32)?;
    expect_shape(name, "out", out, x.shape())?;
    let cols = x.shape().last().copied().unwrap_or(1);
    for (what, t) in params {
        expect_dtype(name, what, t, DType::F32)?;
        expect_shape(name, what, t, &[cols])?;
    }
    let rows = x.len().checked_div(cols).unwrap_or(0);
    Ok(NormParams {
        rows: as_u32(name, "rows", rows)?,
        cols: as_u32(name, "cols", cols)?,
        eps: 0.0,
        _pad: 0,
    })
}

/// out = (x - mean) / sqrt(var + eps) · weight + bias over x's last dimension.
pub fn layer_norm(rec: &mut Recorder<'_>, x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32, out: &Tensor) -> Result<()> {
    const NAME: &str = "layer_norm";
    let mut p = check(NAME, x, &[("weight", weight), ("bias", bias)], out)?;
    p.eps = eps;
    expect_distinct(NAME, out, &[x, weight, bias])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out)])?;
    let kernel = rec.gpu().kernel(
        "layer_norm_f32_row_wg256",
        "layer_norm",
        &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
        || wgsl_source!("reduce.wgsl", "norm.wgsl").into(),
    )?;
    let rows = p.rows as usize;
    rec.dispatch(&kernel, &[x, weight, bias, out], &p, grid(rows, 1))
}

/// out = x / sqrt(mean(x²) + eps) · weight over x's last dimension.
pub fn rms_norm(rec: &mut Recorder<'_>, x: &Tensor, weight: &Tensor, eps: f32, out: &Tensor) -> Result<()> {
    const NAME: &str = "rms_norm";
    let mut p = check(NAME, x, &[("weight", weight)], out)?;
    p.eps = eps;
    expect_distinct(NAME, out, &[x, weight])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out)])?;
    let kernel = rec.gpu().kernel(
        "rms_norm_f32_row_wg256",
        "rms_norm",
        &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
        || wgsl_source!("reduce.wgsl", "norm.wgsl").into(),
    )?;
    let rows = p.rows as usize;
    // The bias binding is unused by rms_norm; the weight fills it.
    rec.dispatch(&kernel, &[x, weight, weight, out], &p, grid(rows, 1))
}
