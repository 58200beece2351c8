//! Scaled dot-product attention over a KV cache: prefill (many queries), decode (one query per
//! step), grouped-query heads, causal and key-padding masks.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

/// Largest head dimension: one workgroup invocation per output dimension.
pub const MAX_HEAD_DIM: usize = 256;

/// How the queries see the keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionMask<'a> {
    /// Query t sits at position `q_pos0 + t` and sees keys at positions <= its own.
    pub causal: bool,
    /// Position of the first query (the number of tokens already in the cache when decoding).
    pub q_pos0: usize,
    /// [B, capacity] u32, 0 = a padding key.
    pub key_mask: Option<&'a Tensor>,
    /// Slotted cache (continuous batching): [B, 2] u32 giving batch row b the cache slot it
    /// reads and the position of its first query, replacing `q_pos0`. The cache then holds
    /// [slots, capacity, kv_heads, D] for any number of slots, and attention must be causal
    /// (a row's keys are the positions up to its own).
    pub rows: Option<&'a Tensor>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionParams {
    batch: u32,
    q_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    kv_len: u32,
    capacity: u32,
    q_pos0: u32,
    causal: u32,
    use_mask: u32,
    scale: f32,
    use_rows: u32,
}

/// out = softmax(scale · q·kᵀ + mask) · v. `q` and `out` are [B, T, heads, D]; `k` and `v` are
/// caches [B, capacity, kv_heads, D] whose first `kv_len` positions are used; heads must be a
/// multiple of kv_heads.
#[allow(clippy::too_many_arguments)] // the operands and shape of one kernel call, each named
pub fn attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    mask: AttentionMask<'_>,
    scale: f32,
    out: &Tensor,
) -> Result<()> {
    const NAME: &str = "attention";
    for (what, t) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        expect_dtype(NAME, what, t, DType::F32)?;
    }
    let [b, t, heads, d] = *q.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "q",
            expected: "[B, T, heads, head_dim]".into(),
            got: q.shape().to_vec(),
        });
    };
    let [kb, capacity, kv_heads, kd] = *k.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "k",
            expected: "[B, capacity, kv_heads, head_dim]".into(),
            got: k.shape().to_vec(),
        });
    };
    let slotted = mask.rows.is_some();
    if (kb != b && !slotted) || kb == 0 || kd != d || kv_heads == 0 || heads % kv_heads != 0 {
        let batch = if slotted { "slots".to_string() } else { b.to_string() };
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "k",
            expected: format!("[{batch}, capacity, kv_heads dividing {heads}, {d}]"),
            got: k.shape().to_vec(),
        });
    }
    expect_shape(NAME, "v", v, k.shape())?;
    expect_shape(NAME, "out", out, q.shape())?;
    if d == 0 || d > MAX_HEAD_DIM {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "head_dim",
            reason: format!("{d} is outside 1..={MAX_HEAD_DIM}"),
        });
    }
    if kv_len > capacity {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "kv_len",
            reason: format!("{kv_len} keys do not fit in a cache of {capacity}"),
        });
    }
    if let Some(m) = mask.key_mask {
        expect_dtype(NAME, "key_mask", m, DType::U32)?;
        expect_shape(NAME, "key_mask", m, &[kb, capacity])?;
    }
    if let Some(rows) = mask.rows {
        expect_dtype(NAME, "rows", rows, DType::U32)?;
        expect_shape(NAME, "rows", rows, &[b, 2])?;
        if !mask.causal {
            return Err(KernelError::InvalidArgument {
                op: NAME,
                what: "rows",
                reason: "a slotted cache needs causal attention: a row's keys are those up to its position".into(),
            });
        }
    }
    expect_distinct(NAME, out, &[q, k, v])?;
    expect_bindable(rec.gpu(), NAME, &[("q", q), ("k", k), ("v", v), ("out", out)])?;
    let storage = [Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite];
    let params = AttentionParams {
        batch: as_u32(NAME, "B", b)?,
        q_len: as_u32(NAME, "T", t)?,
        heads: as_u32(NAME, "heads", heads)?,
        kv_heads: as_u32(NAME, "kv_heads", kv_heads)?,
        head_dim: as_u32(NAME, "head_dim", d)?,
        kv_len: as_u32(NAME, "kv_len", kv_len)?,
        capacity: as_u32(NAME, "capacity", capacity)?,
        q_pos0: as_u32(NAME, "q_pos0", mask.q_pos0)?,
        causal: u32::from(mask.causal),
        use_mask: u32::from(mask.key_mask.is_some()),
        scale,
        use_rows: u32::from(slotted),
    };
    // Unused bindings still need a buffer: any bound tensor will do, it is never read.
    let key_mask = mask.key_mask.unwrap_or(q);
    let rows = mask.rows.unwrap_or(q);
    // CPU adapters: one row per lane, no barriers (see attention_rows.wgsl for why).
    if rec.gpu().report().software && d % 4 == 0 {
        let label = format!("attention_rows_f32_gqa_online_softmax_d{d}_wg8");
        let kernel = rec.gpu().kernel_generated(&label, "attention_rows", &storage, || {
            crate::unroll::expand(wgsl_source!("attention_rows.wgsl"), &[("D4", d / 4)])
        })?;
        return rec.dispatch(&kernel, &[q, k, v, key_mask, rows, out], &params, grid(b * t * heads, 8));
    }
    let kernel = rec.gpu().kernel(
        "attention_f32_gqa_online_softmax_chunk256_wg256",
        "attention",
        &storage,
        || wgsl_source!("reduce.wgsl", "attention.wgsl").into(),
    )?;
    rec.dispatch(&kernel, &[q, k, v, key_mask, rows, out], &params, grid(b * t * heads, 1))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct KvWriteParams {
    batch: u32,
    q_len: u32,
    width4: u32,
    capacity: u32,
    slots: u32,
    _pad: [u32; 3],
}

/// Appends keys or values to a slotted cache: `src` [B, T, width] goes to
/// `cache[rows[b].slot, rows[b].position + t, ..]`, where `cache` is [slots, capacity, ...] with
/// `width` f32 per position (kv_heads · head_dim, a multiple of 4). One dispatch appends a
/// prompt (B = 1) or one token of each of B decoding sequences; rows whose positions fall outside
/// the cache are dropped by the kernel, so callers check them (the positions live on the GPU).
pub fn kv_write(rec: &mut Recorder<'_>, src: &Tensor, rows: &Tensor, cache: &Tensor) -> Result<()> {
    const NAME: &str = "kv_write";
    expect_dtype(NAME, "src", src, DType::F32)?;
    expect_dtype(NAME, "cache", cache, DType::F32)?;
    expect_dtype(NAME, "rows", rows, DType::U32)?;
    let [b, t, width] = *src.shape() else {
        return Err(KernelError::ShapeMismatch { op: NAME, what: "src", expected: "[B, T, width]".into(), got: src.shape().to_vec() });
    };
    let (slots, capacity) = match cache.shape() {
        [slots, capacity, rest @ ..] if rest.iter().product::<usize>() == width => (*slots, *capacity),
        _ => {
            return Err(KernelError::ShapeMismatch {
                op: NAME,
                what: "cache",
                expected: format!("[slots, capacity, ..] with {width} elements per position"),
                got: cache.shape().to_vec(),
            })
        }
    };
    expect_shape(NAME, "rows", rows, &[b, 2])?;
    if width % 4 != 0 {
        return Err(KernelError::InvalidArgument { op: NAME, what: "width", reason: format!("{width} is not a multiple of 4 (vec4 moves)") });
    }
    expect_distinct(NAME, cache, &[src, rows])?;
    expect_bindable(rec.gpu(), NAME, &[("src", src), ("cache", cache)])?;
    let kernel = rec.gpu().kernel("kv_write_f32_vec4_slotted_wg256", "kv_write", &[Access::Read, Access::Read, Access::ReadWrite], || {
        wgsl_source!("kv_write.wgsl").into()
    })?;
    let params = KvWriteParams {
        batch: as_u32(NAME, "B", b)?,
        q_len: as_u32(NAME, "T", t)?,
        width4: as_u32(NAME, "width", width / 4)?,
        capacity: as_u32(NAME, "capacity", capacity)?,
        slots: as_u32(NAME, "slots", slots)?,
        _pad: [0; 3],
    };
    rec.dispatch(&kernel, &[src, rows, cache], &params, grid(src.len() / 4, 256))
}
