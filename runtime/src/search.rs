//! The search index: each model's stored embeddings (`AtomEmbeddings`) paged into GPU buffers as
//! f32 or f16 pieces, kept in step with the store, and scanned brute force with GPU top-k; and the
//! coarse spatial key (`SpatialCoarse`) that prefilters hybrid searches.
//!
//! Invariants:
//! - A model's rows are held in ascending atom id across its pieces, so the kernels' tie-break
//!   (the lower index) is the API's (the lower atom id), and per-piece results merge exactly.
//! - A snapshot is immutable: a refresh builds a new one, sharing the pieces it does not change,
//!   so scans never wait for a refresh and never see half of one.
//! - Pieces are resident on the GPU while the index's budget allows; the rest stay in host memory
//!   and are uploaded one at a time when scanned, so a corpus larger than the budget is scanned
//!   in pieces with the same result.
//!
//! Refresh (before every search of a model): one indexed query reads the model's (count, newest
//! EmbeddingId). Unchanged: nothing to do. Only newer rows, all for atoms above the highest
//! indexed one: they are appended (the last, partial piece is rebuilt). Anything else (deleted
//! rows, a replaced embedding, an atom embedded out of order): the model is reloaded whole. The
//! stores write a replaced embedding as a new row (a new EmbeddingId), so a vector that changes
//! is always seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hartonomous_kernels::ops::similarity::{self, CorpusPiece, Metric, MAX_K};
use hartonomous_kernels::{DType, Gpu, KernelError, Tensor};
use rand::{Rng, SeedableRng};

use crate::store::{ContentAtomId, EmbeddingWatermark, ModelId, Store, StoreError, StoredEmbedding};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("GPU: {0}")]
    Gpu(#[from] KernelError),

    /// The request is at fault; `field` names what to fix.
    #[error("{reason}")]
    Invalid { field: &'static str, reason: String },

    #[error("the scan task failed: {0}")]
    Task(String),

    #[error("the stored embeddings of model {model} are inconsistent: {what}")]
    Damaged { model: i64, what: String },
}

pub type Result<T> = std::result::Result<T, SearchError>;

/// How the index holds vectors on the GPU (and in host memory for pieces beyond the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VectorStorage {
    /// Exact stored values.
    #[default]
    F32,
    /// Half the bytes (and so about twice the scan rate where the scan is bandwidth-bound);
    /// scores change in the 4th significant digit.
    F16,
}

impl VectorStorage {
    pub fn bytes_per_value(self) -> usize {
        match self {
            VectorStorage::F32 => 4,
            VectorStorage::F16 => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VectorStorage::F32 => "f32",
            VectorStorage::F16 => "f16",
        }
    }
}

/// The metric of a search request by its API name.
pub fn parse_metric(name: &str) -> Option<Metric> {
    match name {
        "cosine" => Some(Metric::Cosine),
        "l2" => Some(Metric::L2),
        "dot" => Some(Metric::Dot),
        _ => None,
    }
}

/// Dimensions of the coarse key.
pub const COARSE_DIMENSIONS: usize = 3;

/// Seed of the coarse projection's directions (mixed with the dimension).
const COARSE_SEED: u64 = 0x4841_5254_434f_4152; // "HARTCOAR"

/// The coarse spatial key of an embedding: its unit vector projected on three orthonormal
/// directions drawn from a fixed seed for its dimension (a Johnson–Lindenstrauss random
/// projection). Every writer computes the same key with no fitting, unlike PCA, which needs the
/// corpus before its first row. Each coordinate is in [-1, 1]; a zero vector has key (0, 0, 0).
pub fn coarse_key(vector: &[f32]) -> [f64; COARSE_DIMENSIONS] {
    let norm = vector.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return [0.0; COARSE_DIMENSIONS];
    }
    let basis = coarse_basis(vector.len());
    let mut key = [0.0; COARSE_DIMENSIONS];
    for (k, direction) in key.iter_mut().zip(basis.iter()) {
        *k = vector.iter().zip(direction).map(|(&v, &d)| f64::from(v) * d).sum::<f64>() / norm;
    }
    key
}

/// The coarse projection's orthonormal directions for one dimension.
type CoarseBasis = Arc<[Vec<f64>; COARSE_DIMENSIONS]>;

/// The projection's directions for `dimension`, made once: standard normal draws (Box–Muller
/// over a seeded ChaCha8 stream), orthonormalised by Gram–Schmidt.
fn coarse_basis(dimension: usize) -> CoarseBasis {
    static BASES: OnceLock<Mutex<HashMap<usize, CoarseBasis>>> = OnceLock::new();
    let mut bases = BASES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    bases
        .entry(dimension)
        .or_insert_with(|| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(COARSE_SEED ^ dimension as u64);
            let mut normal = || {
                let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
                let u2: f64 = rng.random::<f64>();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            };
            let mut basis: [Vec<f64>; COARSE_DIMENSIONS] = std::array::from_fn(|_| (0..dimension).map(|_| normal()).collect());
            for i in 0..COARSE_DIMENSIONS {
                for j in 0..i {
                    let dot: f64 = basis[i].iter().zip(&basis[j]).map(|(a, b)| a * b).sum();
                    let previous = basis[j].clone();
                    basis[i].iter_mut().zip(&previous).for_each(|(a, b)| *a -= dot * b);
                }
                let norm = basis[i].iter().map(|a| a * a).sum::<f64>().sqrt();
                if norm > 0.0 {
                    basis[i].iter_mut().for_each(|a| *a /= norm);
                }
            }
            Arc::new(basis)
        })
        .clone()
}

/// How the daemon's index is sized and stored.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    pub storage: VectorStorage,
    /// GPU bytes the resident pieces of all models may take.
    pub gpu_budget: u64,
    /// Rows per piece (clipped to the adapter's largest storage binding).
    pub piece_rows: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions { storage: VectorStorage::F32, gpu_budget: 1 << 30, piece_rows: 65_536 }
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct SearchMetrics {
    pub queries: AtomicU64,
    pub rows_scanned: AtomicU64,
    pub refresh_appends: AtomicU64,
    pub refresh_reloads: AtomicU64,
    pub resident_bytes: AtomicU64,
    pub indexed_rows: AtomicU64,
}

/// Which rows to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Every row (of the modality asked for).
    Exact,
    /// The `candidates` rows whose coarse keys are nearest the query's, then exact scores.
    Hybrid { candidates: usize },
}

/// One search over a model's index.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub queries: Vec<Vec<f32>>,
    pub k: usize,
    pub metric: Metric,
    pub modality: Option<String>,
    pub mode: SearchMode,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub atom: ContentAtomId,
    /// Cosine similarity or dot product (higher is nearer), or L2 distance (lower is nearer).
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Best first; ties to the lower atom id.
    pub hits: Vec<Hit>,
    /// Rows whose exact score was computed.
    pub scanned: usize,
}

/// What a refresh did before a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Appended(usize),
    Reloaded(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    pub results: Vec<QueryResult>,
    /// Rows in the model's index when it was scanned.
    pub indexed_rows: usize,
    pub refresh: Refresh,
}

#[derive(Debug, Clone, Copy)]
struct Row {
    atom: ContentAtomId,
    modality: u16,
}

enum HostVectors {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

/// A piece's GPU copy; its bytes leave the budget's count when the last snapshot using it goes.
struct Resident {
    vectors: Tensor,
    norms_sq: Tensor,
    bytes: u64,
    counter: Arc<SearchMetrics>,
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.counter.resident_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

struct Piece {
    rows: Vec<Row>,
    host: HostVectors,
    coarse: Vec<[f32; COARSE_DIMENSIONS]>,
    resident: Option<Resident>,
}

impl Piece {
    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// A row on its way into a piece: the row, its vector, and its coarse key when a piece being
/// rebuilt already had it (kept, not recomputed from f16-rounded values).
type PendingRow<'a> = (Row, &'a [f32], Option<[f32; COARSE_DIMENSIONS]>);

/// One model's index as of one refresh.
struct Snapshot {
    dimension: Option<usize>,
    pieces: Vec<Arc<Piece>>,
    watermark: EmbeddingWatermark,
    modalities: Vec<String>,
}

impl Snapshot {
    fn empty() -> Self {
        Snapshot { dimension: None, pieces: Vec::new(), watermark: EmbeddingWatermark::default(), modalities: Vec::new() }
    }

    fn rows(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    fn last_atom(&self) -> Option<ContentAtomId> {
        self.pieces.last().and_then(|p| p.rows.last()).map(|r| r.atom)
    }
}

type Cell = Arc<tokio::sync::Mutex<Arc<Snapshot>>>;

/// The daemon's search index over every model's stored embeddings.
pub struct SearchIndex {
    gpu: Arc<Gpu>,
    options: IndexOptions,
    models: Mutex<HashMap<ModelId, Cell>>,
    metrics: Arc<SearchMetrics>,
}

/// Rows read from the store per query while refreshing.
const FETCH_ROWS: usize = 4096;

/// GPU scratch (dot products and selection keys) one scan pass may hold: queries are grouped,
/// and resident pieces scanned together, to stay within it.
const SCRATCH_BYTES: usize = 128 << 20;

impl SearchIndex {
    pub fn new(gpu: Arc<Gpu>, options: IndexOptions) -> Self {
        SearchIndex { gpu, options, models: Mutex::new(HashMap::new()), metrics: Arc::new(SearchMetrics::default()) }
    }

    pub fn metrics(&self) -> Arc<SearchMetrics> {
        self.metrics.clone()
    }

    pub fn options(&self) -> IndexOptions {
        self.options
    }

    fn cell(&self, model: ModelId) -> Cell {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.entry(model).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Arc::new(Snapshot::empty())))).clone()
    }

    /// Refreshes `model`'s index from the store, then scans it (on the blocking pool).
    pub async fn search(self: &Arc<Self>, store: &dyn Store, model: ModelId, request: SearchRequest) -> Result<SearchOutcome> {
        check_request(&request)?;
        let (snapshot, refresh) = self.refresh(store, model).await?;
        let index = self.clone();
        let indexed_rows = snapshot.rows();
        let results = tokio::task::spawn_blocking(move || index.scan(&snapshot, &request))
            .await
            .map_err(|e| SearchError::Task(e.to_string()))??;
        Ok(SearchOutcome { results, indexed_rows, refresh })
    }

    /// Replaces `model`'s index with `rows`, not read from a store: for benchmarks and tests of
    /// the scan alone. A later [`SearchIndex::search`] reloads the model from its store.
    pub fn load_rows(&self, model: ModelId, rows: Vec<StoredEmbedding>) -> Result<()> {
        let snapshot = self.build(model, &Snapshot::empty(), rows, true)?;
        let cell = self.cell(model);
        let mut guard = cell.try_lock().map_err(|_| SearchError::Invalid { field: "model", reason: "the index is being refreshed".into() })?;
        self.replace(&mut guard, snapshot);
        Ok(())
    }

    /// Scans `model`'s index as it is, without refreshing it.
    pub fn scan_loaded(&self, model: ModelId, request: &SearchRequest) -> Result<Vec<QueryResult>> {
        check_request(request)?;
        let cell = self.cell(model);
        let snapshot = cell.try_lock().map(|s| s.clone()).map_err(|_| SearchError::Invalid { field: "model", reason: "the index is being refreshed".into() })?;
        self.scan(&snapshot, request)
    }

    async fn refresh(&self, store: &dyn Store, model: ModelId) -> Result<(Arc<Snapshot>, Refresh)> {
        let cell = self.cell(model);
        let mut current = cell.lock().await;
        let mark = store.embedding_watermark(model).await?;
        if mark == current.watermark {
            return Ok((current.clone(), Refresh::Unchanged));
        }
        let mut read_whole = None;
        if mark.max_id > current.watermark.max_id {
            let fresh = fetch_after(store, model, current.watermark.max_id).await?;
            let upto_mark = fresh.iter().filter(|e| e.id <= mark.max_id).count() as u64;
            let in_order = current.last_atom().is_none_or(|last| fresh.iter().all(|e| e.atom > last))
                && fresh.windows(2).all(|w| w[0].atom < w[1].atom);
            if in_order && current.watermark.count + upto_mark == mark.count {
                let appended = fresh.len();
                let next = self.build(model, &current, fresh, false)?;
                self.replace(&mut current, next);
                self.metrics.refresh_appends.fetch_add(1, Ordering::Relaxed);
                return Ok((current.clone(), Refresh::Appended(appended)));
            }
            // From an empty index, what was just read is everything: not read twice.
            if current.watermark.max_id == 0 {
                read_whole = Some(fresh);
            }
        }
        let all = match read_whole {
            Some(all) => all,
            None => fetch_after(store, model, 0).await?,
        };
        let rows = all.len();
        // Drop the old pieces' residency first where no scan holds them, so the reload fits.
        self.replace(&mut current, Snapshot::empty());
        let next = self.build(model, &Snapshot::empty(), all, true)?;
        self.replace(&mut current, next);
        self.metrics.refresh_reloads.fetch_add(1, Ordering::Relaxed);
        Ok((current.clone(), Refresh::Reloaded(rows)))
    }

    /// Installs a model's new snapshot, keeping the indexed-rows gauge in step.
    fn replace(&self, current: &mut Arc<Snapshot>, next: Snapshot) {
        self.metrics.indexed_rows.fetch_add(next.rows() as u64, Ordering::Relaxed);
        self.metrics.indexed_rows.fetch_sub(current.rows() as u64, Ordering::Relaxed);
        *current = Arc::new(next);
    }

    /// A snapshot of `base` with `rows` added: a whole new one (`reload`, rows in any order) or
    /// `base` with rows above its last atom appended.
    fn build(&self, model: ModelId, base: &Snapshot, mut rows: Vec<StoredEmbedding>, reload: bool) -> Result<Snapshot> {
        let damaged = |what: String| SearchError::Damaged { model: model.0, what };
        if reload {
            // A paged read races writers: an embedding replaced between two pages shows up twice
            // (old id, then new). Keep the newest; the count then differs from the store's, so
            // the next search reloads again and sees the final state.
            rows.sort_by_key(|e| (e.atom, std::cmp::Reverse(e.id)));
            rows.dedup_by_key(|e| e.atom);
        }
        let mut dimension = base.dimension;
        for e in &rows {
            match dimension {
                None => dimension = Some(e.vector.len()),
                Some(d) if d != e.vector.len() => {
                    return Err(damaged(format!("atom {}'s embedding has {} dimensions, others {d}", e.atom.0, e.vector.len())))
                }
                Some(_) => {}
            }
        }
        let mut modalities = base.modalities.clone();
        let mut watermark = base.watermark;
        watermark.count += rows.len() as u64;
        watermark.max_id = rows.iter().map(|e| e.id).fold(watermark.max_id, i64::max);
        let Some(dimension) = dimension else {
            return Ok(Snapshot { dimension: None, pieces: Vec::new(), watermark, modalities });
        };
        let piece_rows = self.piece_rows(dimension);
        let mut pieces: Vec<Arc<Piece>> = base.pieces.clone();
        // The last piece, if not full, is rebuilt with the new rows in it.
        let mut pending: Vec<PendingRow<'_>> = Vec::new();
        let reopened = pieces.last().filter(|p| p.len() < piece_rows).cloned();
        if reopened.is_some() {
            pieces.pop();
        }
        let reopened_vectors: Vec<f32>;
        if let Some(piece) = &reopened {
            reopened_vectors = host_f32(&piece.host);
            for (i, row) in piece.rows.iter().enumerate() {
                pending.push((*row, &reopened_vectors[i * dimension..(i + 1) * dimension], piece.coarse.get(i).copied()));
            }
        }
        for e in &rows {
            let modality = match modalities.iter().position(|m| *m == e.modality) {
                Some(i) => i,
                None => {
                    modalities.push(e.modality.clone());
                    modalities.len() - 1
                }
            } as u16;
            pending.push((Row { atom: e.atom, modality }, &e.vector, None));
        }
        for chunk in pending.chunks(piece_rows) {
            pieces.push(Arc::new(self.make_piece(chunk, dimension)?));
        }
        Ok(Snapshot { dimension: Some(dimension), pieces, watermark, modalities })
    }

    fn piece_rows(&self, dimension: usize) -> usize {
        let row_bytes = (dimension * self.options.storage.bytes_per_value()).max(1) as u64;
        let binding = self.gpu.report().max_storage_buffer_binding_size;
        (binding / row_bytes).clamp(1, self.options.piece_rows.max(1) as u64) as usize
    }

    fn make_piece(&self, rows: &[PendingRow<'_>], dimension: usize) -> Result<Piece> {
        let coarse = rows.iter().map(|(_, v, known)| known.unwrap_or_else(|| coarse_key(v).map(|c| c as f32))).collect();
        let host = match self.options.storage {
            VectorStorage::F32 => HostVectors::F32(rows.iter().flat_map(|(_, v, _)| v.iter().copied()).collect()),
            VectorStorage::F16 => {
                HostVectors::F16(rows.iter().flat_map(|(_, v, _)| v.iter().map(|&x| half::f16::from_f32(x).to_bits())).collect())
            }
        };
        let bytes = (rows.len() * dimension * self.options.storage.bytes_per_value() + rows.len() * 4) as u64;
        let used = self.metrics.resident_bytes.load(Ordering::Relaxed);
        let resident = if used + bytes <= self.options.gpu_budget {
            let (vectors, norms_sq) = upload(&self.gpu, &host, rows.len(), dimension)?;
            self.metrics.resident_bytes.fetch_add(bytes, Ordering::Relaxed);
            Some(Resident { vectors, norms_sq, bytes, counter: self.metrics.clone() })
        } else {
            None
        };
        Ok(Piece { rows: rows.iter().map(|(r, _, _)| *r).collect(), host, coarse, resident })
    }

    fn scan(&self, snapshot: &Snapshot, request: &SearchRequest) -> Result<Vec<QueryResult>> {
        self.metrics.queries.fetch_add(request.queries.len() as u64, Ordering::Relaxed);
        let Some(dimension) = snapshot.dimension else {
            return Ok(request.queries.iter().map(|_| QueryResult { hits: Vec::new(), scanned: 0 }).collect());
        };
        if let Some((i, q)) = request.queries.iter().enumerate().find(|(_, q)| q.len() != dimension) {
            return Err(SearchError::Invalid {
                field: "query",
                reason: format!("query {i} has {} dimensions; this model's stored embeddings have {dimension}", q.len()),
            });
        }
        let modality = match &request.modality {
            None => None,
            Some(m) => match snapshot.modalities.iter().position(|x| x == m) {
                Some(i) => Some(i as u16),
                // No row of that modality: nothing can match.
                None => return Ok(request.queries.iter().map(|_| QueryResult { hits: Vec::new(), scanned: 0 }).collect()),
            },
        };
        // A filter that every row passes is no filter.
        let modality = modality.filter(|&m| snapshot.pieces.iter().any(|p| p.rows.iter().any(|r| r.modality != m)));
        let results = match (request.mode, modality) {
            (SearchMode::Exact, None) => self.scan_all(snapshot, request, dimension)?,
            (SearchMode::Exact, Some(m)) => {
                let rows = candidates(snapshot, |row| row.modality == m);
                self.scan_subset(snapshot, &request.queries, &rows, request, dimension)?
            }
            (SearchMode::Hybrid { candidates: wanted }, m) => {
                let mut out = Vec::with_capacity(request.queries.len());
                for query in &request.queries {
                    let rows = coarse_candidates(snapshot, query, wanted, m);
                    out.extend(self.scan_subset(snapshot, std::slice::from_ref(query), &rows, request, dimension)?);
                }
                out
            }
        };
        let scanned: usize = results.iter().map(|r| r.scanned).sum();
        self.metrics.rows_scanned.fetch_add(scanned as u64, Ordering::Relaxed);
        Ok(results)
    }

    /// Queries scored in one pass over `rows` corpus rows, so that the pass's scratch (dot
    /// products and keys, [Q, rows] f32 each) stays within [`SCRATCH_BYTES`].
    fn query_group(rows: usize) -> usize {
        (SCRATCH_BYTES / (rows.max(1) * 8)).max(1)
    }

    /// Scores `corpus` (pieces whose rows are `atoms`, in order) for `queries`, merging each
    /// query's hits into `lists`; queries go in groups that keep the scratch bounded.
    fn scan_into(&self, queries: &[Vec<f32>], corpus: &[CorpusPiece<'_>], atoms: &[ContentAtomId], request: &SearchRequest, lists: &mut [Vec<Hit>]) -> Result<()> {
        let dimension = queries.first().map_or(0, Vec::len);
        let group = Self::query_group(atoms.len());
        for (g, chunk) in queries.chunks(group).enumerate() {
            let queries_t = self.upload_queries(chunk, dimension)?;
            let found = self.gpu.run(|rec| similarity::search(rec, &queries_t, corpus, request.metric, request.k))?.download(&self.gpu, request.metric)?;
            merge_into(&mut lists[g * group..g * group + chunk.len()], found, |i| atoms.get(i as usize).copied(), request);
        }
        Ok(())
    }

    /// Every row: resident pieces together in passes of at most [`SCRATCH_BYTES`] of scratch,
    /// the others one upload at a time.
    fn scan_all(&self, snapshot: &Snapshot, request: &SearchRequest, dimension: usize) -> Result<Vec<QueryResult>> {
        let mut lists: Vec<Vec<Hit>> = vec![Vec::new(); request.queries.len()];
        let resident: Vec<&Arc<Piece>> = snapshot.pieces.iter().filter(|p| p.resident.is_some()).collect();
        // Consecutive resident pieces, as many as keep one query's scratch within the bound with
        // a group of queries (a lone query scans everything resident in one pass).
        let per_pass = SCRATCH_BYTES / (8 * request.queries.len().clamp(1, Self::query_group(self.piece_rows(dimension))));
        let mut start = 0;
        while start < resident.len() {
            let mut end = start + 1;
            let mut rows = resident[start].len();
            while end < resident.len() && rows + resident[end].len() <= per_pass {
                rows += resident[end].len();
                end += 1;
            }
            let corpus: Vec<CorpusPiece<'_>> = resident[start..end]
                .iter()
                .filter_map(|p| p.resident.as_ref().map(|r| CorpusPiece { vectors: &r.vectors, norms_sq: &r.norms_sq }))
                .collect();
            let atoms: Vec<ContentAtomId> = resident[start..end].iter().flat_map(|p| p.rows.iter().map(|r| r.atom)).collect();
            self.scan_into(&request.queries, &corpus, &atoms, request, &mut lists)?;
            start = end;
        }
        for piece in snapshot.pieces.iter().filter(|p| p.resident.is_none()) {
            let (vectors, norms_sq) = upload(&self.gpu, &piece.host, piece.len(), dimension)?;
            let atoms: Vec<ContentAtomId> = piece.rows.iter().map(|r| r.atom).collect();
            self.scan_into(&request.queries, &[CorpusPiece { vectors: &vectors, norms_sq: &norms_sq }], &atoms, request, &mut lists)?;
        }
        let total = snapshot.rows();
        Ok(lists.into_iter().map(|hits| QueryResult { hits, scanned: total }).collect())
    }

    /// The rows `rows` (global positions, ascending) gathered into temporary pieces of at most
    /// a piece's rows, and scanned exactly.
    fn scan_subset(&self, snapshot: &Snapshot, queries: &[Vec<f32>], rows: &[usize], request: &SearchRequest, dimension: usize) -> Result<Vec<QueryResult>> {
        let starts: Vec<usize> = snapshot
            .pieces
            .iter()
            .scan(0, |s, p| {
                let start = *s;
                *s += p.len();
                Some(start)
            })
            .collect();
        let mut lists: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
        for chunk in rows.chunks(self.piece_rows(dimension)) {
            let mut atoms = Vec::with_capacity(chunk.len());
            let mut host = match self.options.storage {
                VectorStorage::F32 => HostVectors::F32(Vec::with_capacity(chunk.len() * dimension)),
                VectorStorage::F16 => HostVectors::F16(Vec::with_capacity(chunk.len() * dimension)),
            };
            for &global in chunk {
                let p = starts.partition_point(|&s| s <= global) - 1;
                let piece = &snapshot.pieces[p];
                let local = global - starts[p];
                atoms.push(piece.rows[local].atom);
                let span = local * dimension..(local + 1) * dimension;
                match (&mut host, &piece.host) {
                    (HostVectors::F32(out), HostVectors::F32(src)) => out.extend_from_slice(&src[span]),
                    (HostVectors::F16(out), HostVectors::F16(src)) => out.extend_from_slice(&src[span]),
                    _ => unreachable!("one index stores one dtype"),
                }
            }
            let (vectors, norms_sq) = upload(&self.gpu, &host, chunk.len(), dimension)?;
            self.scan_into(queries, &[CorpusPiece { vectors: &vectors, norms_sq: &norms_sq }], &atoms, request, &mut lists)?;
        }
        Ok(lists.into_iter().map(|hits| QueryResult { hits, scanned: rows.len() }).collect())
    }

    fn upload_queries(&self, queries: &[Vec<f32>], dimension: usize) -> Result<Tensor> {
        let flat: Vec<f32> = queries.iter().flatten().copied().collect();
        Ok(self.gpu.upload_f32(&flat, &[queries.len(), dimension])?)
    }
}

fn check_request(request: &SearchRequest) -> Result<()> {
    if request.k == 0 || request.k > MAX_K {
        return Err(SearchError::Invalid { field: "k", reason: format!("`k` is {}; it must be between 1 and {MAX_K}", request.k) });
    }
    if request.queries.is_empty() {
        return Err(SearchError::Invalid { field: "query", reason: "no query: send a text, a vector, or an array of them".into() });
    }
    if let Some((i, _)) = request.queries.iter().enumerate().find(|(_, q)| q.iter().any(|v| !v.is_finite())) {
        return Err(SearchError::Invalid { field: "query", reason: format!("query {i} has a value that is not a finite number") });
    }
    if let SearchMode::Hybrid { candidates: 0 } = request.mode {
        return Err(SearchError::Invalid { field: "candidates", reason: "`candidates` must be at least 1".into() });
    }
    Ok(())
}

async fn fetch_after(store: &dyn Store, model: ModelId, mut after: i64) -> Result<Vec<StoredEmbedding>> {
    let mut all = Vec::new();
    loop {
        let page = store.embeddings_after(model, after, FETCH_ROWS).await?;
        let done = page.len() < FETCH_ROWS;
        if let Some(last) = page.last() {
            after = last.id;
        }
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

fn host_f32(host: &HostVectors) -> Vec<f32> {
    match host {
        HostVectors::F32(v) => v.clone(),
        HostVectors::F16(v) => v.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect(),
    }
}

/// A piece's vectors [n, D] and their squared norms on the GPU.
fn upload(gpu: &Gpu, host: &HostVectors, n: usize, dimension: usize) -> Result<(Tensor, Tensor)> {
    let vectors = match host {
        HostVectors::F32(v) => gpu.upload(v, &[n, dimension], DType::F32)?,
        HostVectors::F16(v) => gpu.upload(v, &[n, dimension], DType::F16)?,
    };
    let norms_sq = gpu.empty(&[n], DType::F32)?;
    gpu.run(|rec| similarity::row_norms_sq(rec, &vectors, &norms_sq))?;
    Ok((vectors, norms_sq))
}

/// Global positions of the rows that pass `keep`, ascending.
fn candidates(snapshot: &Snapshot, keep: impl Fn(&Row) -> bool) -> Vec<usize> {
    snapshot.pieces.iter().flat_map(|p| p.rows.iter()).enumerate().filter(|(_, r)| keep(r)).map(|(i, _)| i).collect()
}

/// The `wanted` rows (of `modality`) whose coarse keys are nearest the query's, ascending.
fn coarse_candidates(snapshot: &Snapshot, query: &[f32], wanted: usize, modality: Option<u16>) -> Vec<usize> {
    let q = coarse_key(query);
    let mut scored: Vec<(f32, usize)> = snapshot
        .pieces
        .iter()
        .flat_map(|p| p.rows.iter().zip(&p.coarse))
        .enumerate()
        .filter(|(_, (row, _))| modality.is_none_or(|m| row.modality == m))
        .map(|(i, (_, c))| {
            let d: f64 = c.iter().zip(&q).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum();
            (d as f32, i)
        })
        .collect();
    if scored.len() > wanted {
        scored.select_nth_unstable_by(wanted, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.truncate(wanted);
    }
    let mut rows: Vec<usize> = scored.into_iter().map(|(_, i)| i).collect();
    rows.sort_unstable();
    rows
}

/// Adds one scan's per-query (index, score) lists to the running best-k lists, ties to the
/// lower atom id.
fn merge_into(lists: &mut [Vec<Hit>], found: Vec<Vec<(u32, f32)>>, atom_of: impl Fn(u32) -> Option<ContentAtomId>, request: &SearchRequest) {
    for (list, hits) in lists.iter_mut().zip(found) {
        list.extend(hits.into_iter().filter_map(|(i, score)| atom_of(i).map(|atom| Hit { atom, score })));
        let better = |a: &Hit, b: &Hit| match request.metric {
            Metric::L2 => a.score.total_cmp(&b.score),
            Metric::Dot | Metric::Cosine => b.score.total_cmp(&a.score),
        };
        list.sort_by(|a, b| better(a, b).then(a.atom.cmp(&b.atom)));
        list.truncate(request.k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_keys_are_projections_of_the_unit_vector_on_orthonormal_directions() {
        let basis = coarse_basis(384);
        for i in 0..COARSE_DIMENSIONS {
            for j in 0..COARSE_DIMENSIONS {
                let dot: f64 = basis[i].iter().zip(&basis[j]).map(|(a, b)| a * b).sum();
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((dot - expected).abs() < 1e-12, "directions {i}, {j}: dot {dot}");
            }
        }
        // A direction itself projects to its unit coordinate, whatever its scale.
        let scaled: Vec<f32> = basis[1].iter().map(|&d| (d * 7.0) as f32).collect();
        let key = coarse_key(&scaled);
        assert!((key[1] - 1.0).abs() < 1e-6 && key[0].abs() < 1e-6 && key[2].abs() < 1e-6, "{key:?}");
        assert_eq!(coarse_key(&[0.0; 384]), [0.0; 3]);
        // The same for every caller: a fixed seed, not process state.
        assert_eq!(coarse_basis(384)[0], basis[0]);
    }

    #[test]
    fn merged_lists_keep_the_best_k_with_ties_to_the_lower_atom() {
        let request = SearchRequest { queries: vec![vec![0.0]], k: 3, metric: Metric::Cosine, modality: None, mode: SearchMode::Exact };
        let mut lists = vec![Vec::new()];
        merge_into(&mut lists, vec![vec![(0, 0.9), (1, 0.5)]], |i| Some(ContentAtomId(10 + i64::from(i))), &request);
        merge_into(&mut lists, vec![vec![(0, 0.5), (1, 0.95)]], |i| Some(ContentAtomId(2 + i64::from(i))), &request);
        let atoms: Vec<i64> = lists[0].iter().map(|h| h.atom.0).collect();
        assert_eq!(atoms, vec![3, 10, 2]);
        let l2 = SearchRequest { metric: Metric::L2, ..request };
        let mut lists = vec![Vec::new()];
        merge_into(&mut lists, vec![vec![(0, 0.1), (1, 0.3), (2, 0.1)]], |i| Some(ContentAtomId(5 - i64::from(i))), &l2);
        let atoms: Vec<i64> = lists[0].iter().map(|h| h.atom.0).collect();
        assert_eq!(atoms, vec![3, 5, 4]);
    }
}
