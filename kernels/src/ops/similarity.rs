//! Similarity search: cosine, L2 and dot scores of Q queries against corpus vectors stored f32
//! or f16 (scored as a matmul, queries · corpusᵀ, through `qmatmul`), and top-k (k <= 1024)
//! selected on the GPU with ties to the lower index. Corpora larger than one storage binding are
//! given as pieces, scanned one after another into the same candidate lists; only the final
//! [Q, k] result is ever downloaded.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Gpu, Recorder, Tensor};
use crate::ops::matmul::Epilogue;
use crate::ops::qmatmul::{expect_weight_format, qmatmul, quant_kernel_source};
use crate::ops::{as_u32, expect_dtype, expect_shape, grid, wgsl_source};

/// Largest k served.
pub const MAX_K: usize = 1024;
/// Entries sorted per workgroup in each top-k pass (see `topk.wgsl`).
const CHUNK: usize = 2048;
/// The index of a padding entry (fewer than k candidates exist).
pub const NO_INDEX: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// q·x, higher is closer.
    Dot,
    /// q·x / (‖q‖‖x‖), higher is closer; 0 for a zero vector.
    Cosine,
    /// ‖q - x‖, lower is closer (selected by the key -‖q - x‖²).
    L2,
}

impl Metric {
    fn id(self) -> u32 {
        match self {
            Metric::Dot => 0,
            Metric::Cosine => 1,
            Metric::L2 => 2,
        }
    }

    /// The reported score of a selection key.
    pub fn score(self, key: f32) -> f32 {
        match self {
            Metric::Dot | Metric::Cosine => key,
            Metric::L2 => (-key).max(0.0).sqrt(),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormsParams {
    rows: u32,
    dim: u32,
    _pad: [u32; 2],
}

/// out[r] = ‖x[r]‖² for `x` [rows, D] in f32, f16 or a block format. Computed once per corpus
/// piece and kept beside it.
pub fn row_norms_sq(rec: &mut Recorder<'_>, x: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "row_norms_sq";
    expect_dtype(NAME, "out", out, DType::F32)?;
    expect_weight_format(NAME, "x", x)?;
    let [rows, dim] = *x.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "x",
            expected: "[rows, D]".into(),
            got: x.shape().to_vec(),
        });
    };
    expect_shape(NAME, "out", out, &[rows])?;
    let label = format!("row_norms_sq_{}_wg256", x.dtype().name());
    let kernel = rec.gpu().kernel(&label, "row_norms", &[Access::Read, Access::ReadWrite], || {
        quant_kernel_source(x.dtype(), include_str!("../wgsl/similarity.wgsl")).expect("format checked above")
    })?;
    let params = NormsParams {
        rows: as_u32(NAME, "rows", rows)?,
        dim: as_u32(NAME, "D", dim)?,
        _pad: [0; 2],
    };
    rec.dispatch(&kernel, &[x, out], &params, grid(rows, 256))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MetricParams {
    queries: u32,
    n: u32,
    metric: u32,
    _pad: u32,
}

/// Selection keys [Q, N] (higher is better) of `metric` from dot products and squared norms.
pub fn metric_keys(rec: &mut Recorder<'_>, dots: &Tensor, q_norms: &Tensor, x_norms: &Tensor, metric: Metric, out: &Tensor) -> Result<()> {
    const NAME: &str = "metric_keys";
    let [q, n] = *dots.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "dots",
            expected: "[Q, N]".into(),
            got: dots.shape().to_vec(),
        });
    };
    expect_shape(NAME, "q_norms", q_norms, &[q])?;
    expect_shape(NAME, "x_norms", x_norms, &[n])?;
    expect_shape(NAME, "out", out, &[q, n])?;
    let kernel = rec.gpu().kernel(
        "metric_keys_f32_wg256",
        "metric_keys",
        &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
        || wgsl_source!("metric.wgsl").into(),
    )?;
    let params = MetricParams {
        queries: as_u32(NAME, "Q", q)?,
        n: as_u32(NAME, "N", n)?,
        metric: metric.id(),
        _pad: 0,
    };
    rec.dispatch(&kernel, &[dots, q_norms, x_norms, out], &params, grid(q * n, 256))
}

/// The best `k` entries per query: keys [Q, k] and indices [Q, k] (u32), best first, padded
/// with [`NO_INDEX`] when fewer than k entries exist.
pub struct TopK {
    pub keys: Tensor,
    pub indices: Tensor,
    pub k: usize,
}

impl TopK {
    /// Downloads the [Q, k] result (nothing bigger leaves the GPU) as (index, score) per query,
    /// padding dropped.
    pub fn download(&self, gpu: &Gpu, metric: Metric) -> Result<Vec<Vec<(u32, f32)>>> {
        let keys = gpu.download_f32(&self.keys)?;
        let indices = gpu.download_u32(&self.indices)?;
        Ok(keys
            .chunks(self.k.max(1))
            .zip(indices.chunks(self.k.max(1)))
            .map(|(ks, is)| is.iter().zip(ks).filter(|(&i, _)| i != NO_INDEX).map(|(&i, &k)| (i, metric.score(k))).collect())
            .collect())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TopkParams {
    queries: u32,
    n: u32,
    k: u32,
    index_base: u32,
    out_lists: u32,
    out_list_base: u32,
    lists_per_group: u32,
    _pad: u32,
}

/// Largest k the CPU-adapter top-k (`topk_rows.wgsl`) serves; a larger k takes the bitonic
/// kernel on every adapter.
pub const ROWS_MAX_K: usize = 64;
/// Keys one invocation of `select_runs` scans, and lists one invocation of `merge_runs` merges.
const RUN: usize = 512;
const MERGE_LISTS: usize = 64;

/// Top-k of keys given in pieces [Q, n_i] (indices count across pieces in order). On GPUs, and
/// for k > [`ROWS_MAX_K`], chunks of 2048 sorted in workgroup memory (`topk.wgsl`); on CPU
/// adapters, one invocation per run of keys keeping its best k (`topk_rows.wgsl`). Both give
/// the same lists, exactly.
pub fn top_k(rec: &mut Recorder<'_>, pieces: &[&Tensor], k: usize) -> Result<TopK> {
    let rows = rec.gpu().report().software && k <= ROWS_MAX_K;
    top_k_with(rec, pieces, k, rows)
}

/// [`top_k`] through the bitonic kernel whatever the adapter, so that CPU-adapter CI checks it
/// for small k too.
pub fn top_k_sorted(rec: &mut Recorder<'_>, pieces: &[&Tensor], k: usize) -> Result<TopK> {
    top_k_with(rec, pieces, k, false)
}

fn top_k_with(rec: &mut Recorder<'_>, pieces: &[&Tensor], k: usize, rows: bool) -> Result<TopK> {
    const NAME: &str = "top_k";
    if k == 0 || k > MAX_K {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "k",
            reason: format!("{k} is outside 1..={MAX_K}"),
        });
    }
    let queries = pieces.first().and_then(|p| p.shape().first().copied()).unwrap_or(0);
    for piece in pieces {
        expect_dtype(NAME, "keys", piece, DType::F32)?;
        if piece.shape().len() != 2 || piece.shape()[0] != queries {
            return Err(KernelError::ShapeMismatch {
                op: NAME,
                what: "keys",
                expected: format!("[{queries}, n] for every piece"),
                got: piece.shape().to_vec(),
            });
        }
    }
    let total: usize = pieces.iter().map(|p| p.shape()[1]).sum();
    as_u32(NAME, "corpus size", total)?;
    // Keys per selected list, and lists merged into one per merge step.
    let (per_list, per_group) = if rows { (RUN, MERGE_LISTS) } else { (CHUNK, (CHUNK / k).max(1)) };
    let lists: usize = pieces.iter().map(|p| p.shape()[1].div_ceil(per_list).max(1)).sum();
    let gpu = rec.gpu();
    let storage = [Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite];
    let (select, merge) = if rows {
        (
            gpu.kernel("topk_select_f32_run512_insertion_k64_wg64", "select_runs", &storage, || wgsl_source!("topk_rows.wgsl").into())?,
            gpu.kernel("topk_merge_f32_lists64_insertion_k64_wg64", "merge_runs", &storage, || wgsl_source!("topk_rows.wgsl").into())?,
        )
    } else {
        (
            gpu.kernel("topk_select_f32_chunk2048_bitonic_wg256", "select_chunks", &storage, || wgsl_source!("topk.wgsl").into())?,
            gpu.kernel("topk_merge_f32_chunk2048_bitonic_wg256", "merge_lists", &storage, || wgsl_source!("topk.wgsl").into())?,
        )
    };

    let mut keys = gpu.empty(&[queries, lists, k], DType::F32)?;
    let mut indices = gpu.empty(&[queries, lists, k], DType::U32)?;
    let (mut index_base, mut list_base) = (0usize, 0usize);
    // A workgroup sorts one chunk (bitonic), or 64 invocations each scan one run (rows).
    let groups = |units: usize| if rows { units.div_ceil(64) } else { units };
    for piece in pieces {
        let n = piece.shape()[1];
        let chunks = n.div_ceil(per_list).max(1);
        let params = TopkParams {
            queries: as_u32(NAME, "Q", queries)?,
            n: as_u32(NAME, "n", n)?,
            k: k as u32,
            index_base: index_base as u32,
            out_lists: lists as u32,
            out_list_base: list_base as u32,
            lists_per_group: if rows { RUN as u32 } else { 0 },
            _pad: 0,
        };
        // The indices input is unused when selecting; the keys fill its binding.
        rec.dispatch(&select, &[piece, piece, &keys, &indices], &params, [groups(chunks) as u32, queries as u32, 1])?;
        index_base += n;
        list_base += chunks;
    }
    let mut current = lists;
    while current > 1 {
        let next = current.div_ceil(per_group);
        let next_keys = gpu.empty(&[queries, next, k], DType::F32)?;
        let next_indices = gpu.empty(&[queries, next, k], DType::U32)?;
        let params = TopkParams {
            queries: queries as u32,
            n: current as u32,
            k: k as u32,
            index_base: 0,
            out_lists: next as u32,
            out_list_base: 0,
            lists_per_group: per_group as u32,
            _pad: 0,
        };
        rec.dispatch(&merge, &[&keys, &indices, &next_keys, &next_indices], &params, [groups(next) as u32, queries as u32, 1])?;
        (keys, indices, current) = (next_keys, next_indices, next);
    }
    Ok(TopK {
        keys: keys.reshape(&[queries, k])?,
        indices: indices.reshape(&[queries, k])?,
        k,
    })
}

/// One piece of a corpus: vectors [n, D] (f32 or f16) and their squared norms [n] (from
/// [`row_norms_sq`], computed when the piece is loaded).
pub struct CorpusPiece<'a> {
    pub vectors: &'a Tensor,
    pub norms_sq: &'a Tensor,
}

/// The `k` corpus vectors closest to each query under `metric`: queries [Q, D] f32; the corpus
/// in pieces, each at most one storage binding.
pub fn search(rec: &mut Recorder<'_>, queries: &Tensor, corpus: &[CorpusPiece<'_>], metric: Metric, k: usize) -> Result<TopK> {
    const NAME: &str = "search";
    expect_dtype(NAME, "queries", queries, DType::F32)?;
    let [q, d] = *queries.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "queries",
            expected: "[Q, D]".into(),
            got: queries.shape().to_vec(),
        });
    };
    let gpu = rec.gpu();
    let q_norms = gpu.empty(&[q], DType::F32)?;
    row_norms_sq(rec, queries, &q_norms)?;
    let mut key_pieces = Vec::with_capacity(corpus.len());
    for piece in corpus {
        if !matches!(piece.vectors.dtype(), DType::F32 | DType::F16) || piece.vectors.shape().get(1) != Some(&d) {
            return Err(KernelError::ShapeMismatch {
                op: NAME,
                what: "corpus piece",
                expected: format!("[n, {d}] f32 or f16"),
                got: piece.vectors.shape().to_vec(),
            });
        }
        let n = piece.vectors.shape()[0];
        let dots = gpu.empty(&[q, n], DType::F32)?;
        qmatmul(rec, queries, piece.vectors, Epilogue::default(), &dots)?;
        let keys = gpu.empty(&[q, n], DType::F32)?;
        metric_keys(rec, &dots, &q_norms, piece.norms_sq, metric, &keys)?;
        key_pieces.push(keys);
    }
    top_k(rec, &key_pieces.iter().collect::<Vec<_>>(), k)
}
