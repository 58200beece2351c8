//! Rotary position embedding in both conventions, from a cos/sin table computed in f64.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Gpu, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

/// Which elements rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs (x[2i], x[2i+1]): GGUF Llama weights (llama.cpp rope type NORM).
    Interleaved,
    /// (x[i], x[i + rotary/2]): Hugging Face Llama, GPT-NeoX.
    Halves,
}

/// cos and sin of position · base^(-2i/rotary) for every position below `max_positions` and
/// pair i below rotary/2, computed in f64 and stored as f32 pairs.
pub struct RopeTable {
    table: Tensor,
    rotary: usize,
    max_positions: usize,
}

impl RopeTable {
    pub fn new(gpu: &Gpu, base: f64, rotary: usize, max_positions: usize) -> Result<Self> {
        if rotary == 0 || rotary % 2 != 0 || max_positions == 0 {
            return Err(KernelError::InvalidArgument {
                op: "rope_table",
                what: "rotary dimensions",
                reason: format!("need an even, non-zero rotary dimension and positions, got {rotary} and {max_positions}"),
            });
        }
        let values = crate::reference::rope_cos_sin(base, rotary, max_positions);
        let table = gpu.upload_f32(&values, &[max_positions, rotary / 2, 2])?;
        Ok(Self {
            table,
            rotary,
            max_positions,
        })
    }

    pub fn rotary(&self) -> usize {
        self.rotary
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    rotary: u32,
    interleaved: u32,
    max_pos: u32,
    _pad: [u32; 2],
}

/// out = RoPE(x) with `x` [T, heads, D] and `positions` [T] (u32, each below the table's
/// `max_positions`; larger ones are clamped to the last row, as the kernel cannot fail). The
/// first `table.rotary()` dimensions of each head rotate, the rest are copied.
pub fn rope(rec: &mut Recorder<'_>, x: &Tensor, positions: &Tensor, table: &RopeTable, layout: RopeLayout, out: &Tensor) -> Result<()> {
    const NAME: &str = "rope";
    expect_dtype(NAME, "x", x, DType::F32)?;
    expect_dtype(NAME, "positions", positions, DType::U32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    let [t, heads, d] = *x.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "x",
            expected: "[T, heads, head_dim]".into(),
            got: x.shape().to_vec(),
        });
    };
    if d % 2 != 0 || table.rotary > d {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "head_dim",
            reason: format!("head dimension {d} must be even and at least the table's rotary dimension {}", table.rotary),
        });
    }
    expect_shape(NAME, "positions", positions, &[t])?;
    expect_shape(NAME, "out", out, x.shape())?;
    expect_distinct(NAME, out, &[x, positions, &table.table])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out), ("table", &table.table)])?;
    let kernel = rec.gpu().kernel(
        "rope_f32_table_wg256",
        "rope",
        &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
        || wgsl_source!("rope.wgsl").into(),
    )?;
    let params = RopeParams {
        tokens: as_u32(NAME, "T", t)?,
        heads: as_u32(NAME, "heads", heads)?,
        head_dim: as_u32(NAME, "head_dim", d)?,
        rotary: as_u32(NAME, "rotary", table.rotary)?,
        interleaved: u32::from(layout == RopeLayout::Interleaved),
        max_pos: as_u32(NAME, "max_positions", table.max_positions)?,
        _pad: [0; 2],
    };
    rec.dispatch(&kernel, &[x, positions, &table.table, out], &params, grid(t * heads * (d / 2), 256))
}
