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

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeAppendParams {
    tokens: u32,
    q_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    rotary: u32,
    interleaved: u32,
    max_pos: u32,
    capacity: u32,
    slots: u32,
    _pad: [u32; 2],
}

/// The operands of [`rope_append`]: a step of N = B·T tokens (T of each of B sequences).
pub struct RopeAppend<'t> {
    /// [N, heads, D] queries, rotated into `q_out` ([N, heads, D]).
    pub q: &'t Tensor,
    /// [N, kv_heads, D] keys, rotated and appended to `k_cache`.
    pub k: &'t Tensor,
    /// [N, kv_heads, D] values, appended to `v_cache`.
    pub v: &'t Tensor,
    /// [N] u32 positions of the tokens (for the rotation).
    pub positions: &'t Tensor,
    pub table: &'t RopeTable,
    pub layout: RopeLayout,
    /// [B, 2] u32 (slot, first position) of each sequence, as [`kv_write`](crate::ops::attention::kv_write) takes.
    pub rows: &'t Tensor,
    pub q_out: &'t Tensor,
    /// [slots, capacity, kv_heads, D] f32 each.
    pub k_cache: &'t Tensor,
    pub v_cache: &'t Tensor,
}

/// Rotates `q` into `q_out` and appends the rotated `k` and `v` to their caches: [`rope`] twice
/// and [`kv_write`](crate::ops::attention::kv_write) twice, in one dispatch (`rope_append.wgsl`)
/// where the adapter binds 9 storage buffers a shader, else as those four kernels. Rows whose
/// positions fall outside the caches are dropped, as `kv_write` drops them.
pub fn rope_append(rec: &mut Recorder<'_>, op: &RopeAppend<'_>) -> Result<()> {
    const NAME: &str = "rope_append";
    let RopeAppend { q, k, v, positions, table, layout, rows, q_out, k_cache, v_cache } = *op;
    for (what, t) in [("q", q), ("k", k), ("v", v), ("q_out", q_out), ("k_cache", k_cache), ("v_cache", v_cache)] {
        expect_dtype(NAME, what, t, DType::F32)?;
    }
    expect_dtype(NAME, "positions", positions, DType::U32)?;
    expect_dtype(NAME, "rows", rows, DType::U32)?;
    let (&[n, heads, d], &[kn, kv_heads, kd]) = (q.shape(), k.shape()) else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "q and k",
            expected: "q [N, heads, head_dim] and k [N, kv_heads, head_dim]".into(),
            got: [q.shape(), k.shape()].concat(),
        });
    };
    if (kn, kd) != (n, d) {
        return Err(KernelError::ShapeMismatch { op: NAME, what: "k", expected: format!("[{n}, kv_heads, {d}]"), got: k.shape().to_vec() });
    }
    if d % 2 != 0 || table.rotary > d {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "head_dim",
            reason: format!("head dimension {d} must be even and at least the table's rotary dimension {}", table.rotary),
        });
    }
    expect_shape(NAME, "v", v, k.shape())?;
    expect_shape(NAME, "positions", positions, &[n])?;
    expect_shape(NAME, "q_out", q_out, q.shape())?;
    let b = rows.shape().first().copied().unwrap_or(0);
    expect_shape(NAME, "rows", rows, &[b, 2])?;
    if b == 0 || n % b != 0 {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "rows",
            expected: format!("[B, 2] with B dividing the {n} tokens"),
            got: rows.shape().to_vec(),
        });
    }
    let [slots, capacity, ..] = *k_cache.shape() else {
        return Err(KernelError::ShapeMismatch { op: NAME, what: "k_cache", expected: "[slots, capacity, kv_heads, head_dim]".into(), got: k_cache.shape().to_vec() });
    };
    expect_shape(NAME, "k_cache", k_cache, &[slots, capacity, kv_heads, d])?;
    expect_shape(NAME, "v_cache", v_cache, &[slots, capacity, kv_heads, d])?;
    expect_distinct(NAME, q_out, &[q, k, v, positions, rows, &table.table, k_cache, v_cache])?;
    expect_distinct(NAME, k_cache, &[q, k, v, positions, rows, &table.table, v_cache])?;
    expect_distinct(NAME, v_cache, &[q, k, v, positions, rows, &table.table])?;
    if rec.gpu().limits().max_storage_buffers_per_shader_stage < 9 {
        let k_rotated = rec.gpu().empty(k.shape(), DType::F32)?;
        rope(rec, q, positions, table, layout, q_out)?;
        rope(rec, k, positions, table, layout, &k_rotated)?;
        let width = kv_heads * d;
        crate::ops::attention::kv_write(rec, &k_rotated.reshape(&[b, n / b, width])?, rows, k_cache)?;
        return crate::ops::attention::kv_write(rec, &v.reshape(&[b, n / b, width])?, rows, v_cache);
    }
    expect_bindable(rec.gpu(), NAME, &[("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("table", &table.table)])?;
    let kernel = rec.gpu().kernel(
        "rope_append_f32_table_wg256",
        "rope_append",
        &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite],
        || wgsl_source!("rope_append.wgsl").into(),
    )?;
    let params = RopeAppendParams {
        tokens: as_u32(NAME, "N", n)?,
        q_len: as_u32(NAME, "T", n / b)?,
        heads: as_u32(NAME, "heads", heads)?,
        kv_heads: as_u32(NAME, "kv_heads", kv_heads)?,
        head_dim: as_u32(NAME, "head_dim", d)?,
        rotary: as_u32(NAME, "rotary", table.rotary)?,
        interleaved: u32::from(layout == RopeLayout::Interleaved),
        max_pos: as_u32(NAME, "max_positions", table.max_positions)?,
        capacity: as_u32(NAME, "capacity", capacity)?,
        slots: as_u32(NAME, "slots", slots)?,
        _pad: [0; 2],
    };
    let invocations = n * (heads + kv_heads) * (d / 2) + n * kv_heads * d;
    as_u32(NAME, "invocations", invocations)?;
    rec.dispatch(&kernel, &[q, k, v, positions, &table.table, rows, q_out, k_cache, v_cache], &params, grid(invocations, 256))
}
