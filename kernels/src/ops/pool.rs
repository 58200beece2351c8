//! Mean pooling over an attention mask, then L2 normalisation: sentence-transformers' pooling.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    batch: u32,
    seq: u32,
    hidden: u32,
    normalize: u32,
}

/// out[b] = mean of hidden[b, s] over the positions where mask[b, s] != 0, then divided by its
/// L2 norm when `normalize` (max(‖v‖, 1e-12), as `torch.nn.functional.normalize`). `hidden` is
/// [B, S, H], `mask` [B, S] (u32), `out` [B, H]. A sequence with no unmasked position gives zeros.
pub fn mean_pool(rec: &mut Recorder<'_>, hidden: &Tensor, mask: &Tensor, normalize: bool, out: &Tensor) -> Result<()> {
    const NAME: &str = "mean_pool";
    expect_dtype(NAME, "hidden", hidden, DType::F32)?;
    expect_dtype(NAME, "mask", mask, DType::U32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    let [b, s, h] = *hidden.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "hidden",
            expected: "[B, S, H]".into(),
            got: hidden.shape().to_vec(),
        });
    };
    expect_shape(NAME, "mask", mask, &[b, s])?;
    expect_shape(NAME, "out", out, &[b, h])?;
    expect_distinct(NAME, out, &[hidden, mask])?;
    expect_bindable(rec.gpu(), NAME, &[("hidden", hidden), ("out", out)])?;
    let kernel = rec.gpu().kernel("mean_pool_l2_f32_seq_wg256", "mean_pool", &[Access::Read, Access::Read, Access::ReadWrite], || {
        wgsl_source!("reduce.wgsl", "pool.wgsl").into()
    })?;
    let params = PoolParams {
        batch: as_u32(NAME, "B", b)?,
        seq: as_u32(NAME, "S", s)?,
        hidden: as_u32(NAME, "H", h)?,
        normalize: u32::from(normalize),
    };
    rec.dispatch(&kernel, &[hidden, mask, out], &params, grid(b, 1))
}
