//! Embedding gather from a table in any stored format (token ids → rows).

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::qmatmul::{expect_weight_format, quant_kernel_source};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    tokens: u32,
    dim: u32,
    rows: u32,
    _pad: u32,
}

/// out[t] = table[ids[t]] with `table` [rows, D] in any weight format (decoded in registers),
/// `ids` [T] u32, `out` [T, D] f32. Ids must be below `rows`; larger ones give zero rows.
pub fn embedding(rec: &mut Recorder<'_>, table: &Tensor, ids: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "embedding";
    expect_dtype(NAME, "ids", ids, DType::U32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_weight_format(NAME, "table", table)?;
    let [rows, dim] = *table.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "table",
            expected: "[rows, D]".into(),
            got: table.shape().to_vec(),
        });
    };
    let [tokens] = *ids.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "ids",
            expected: "[T]".into(),
            got: ids.shape().to_vec(),
        });
    };
    expect_shape(NAME, "out", out, &[tokens, dim])?;
    expect_distinct(NAME, out, &[table, ids])?;
    expect_bindable(rec.gpu(), NAME, &[("table", table), ("out", out)])?;
    let label = format!("embedding_gather_{}_f32_wg256", table.dtype().name());
    let kernel = rec.gpu().kernel(&label, "gather", &[Access::Read, Access::Read, Access::ReadWrite], || {
        quant_kernel_source(table.dtype(), include_str!("../wgsl/gather.wgsl")).expect("format checked above")
    })?;
    let params = GatherParams {
        tokens: as_u32(NAME, "T", tokens)?,
        dim: as_u32(NAME, "D", dim)?,
        rows: as_u32(NAME, "rows", rows)?,
        _pad: 0,
    };
    rec.dispatch(&kernel, &[table, ids, out], &params, grid(tokens * dim, 256))
}
