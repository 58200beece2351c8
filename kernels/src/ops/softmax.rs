//! Row-wise softmax of scale·x over the last dimension, with an optional key mask.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    scale: f32,
    rows_per_mask: u32,
}

/// out = softmax(scale · x) over x's last dimension. `mask` (u32, 0 = masked out) has shape
/// [mask_rows, cols] with mask_rows dividing x's row count: consecutive blocks of rows share a
/// mask row (a padding mask per sequence, shared by its heads and query positions). A row whose
/// columns are all masked comes out as zeros.
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, mask: Option<&Tensor>, scale: f32, out: &Tensor) -> Result<()> {
    const NAME: &str = "softmax";
    expect_dtype(NAME, "x", x, DType::F32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_shape(NAME, "out", out, x.shape())?;
    let cols = x.shape().last().copied().unwrap_or(1);
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let rows_per_mask = match mask {
        None => 0,
        Some(m) => {
            expect_dtype(NAME, "mask", m, DType::U32)?;
            let mask_rows = m.shape().first().copied().unwrap_or(0);
            if m.shape().len() != 2 || m.shape()[1] != cols || mask_rows == 0 || rows % mask_rows != 0 {
                return Err(KernelError::ShapeMismatch {
                    op: NAME,
                    what: "mask",
                    expected: format!("[mask_rows, {cols}] with mask_rows dividing the {rows} rows"),
                    got: m.shape().to_vec(),
                });
            }
            rows / mask_rows
        }
    };
    expect_distinct(NAME, out, &[x])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out)])?;
    let kernel = rec.gpu().kernel(
        "softmax_f32_masked_row_wg256",
        "softmax",
        &[Access::Read, Access::Read, Access::ReadWrite],
        || wgsl_source!("reduce.wgsl", "softmax.wgsl").into(),
    )?;
    let params = SoftmaxParams {
        rows: as_u32(NAME, "rows", rows)?,
        cols: as_u32(NAME, "cols", cols)?,
        scale,
        rows_per_mask: as_u32(NAME, "mask", rows_per_mask)?,
    };
    // Without a mask the mask binding is unused; x fills it.
    let mask_binding = mask.unwrap_or(x);
    rec.dispatch(&kernel, &[x, mask_binding, out], &params, grid(rows, 1))
}
