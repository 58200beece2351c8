//! The store seam: everything the runtime keeps in a database goes through [`Store`].
//!
//! What it holds: models ([`NewModel`], [`ModelRow`]), their layers ([`LayerRecord`],
//! [`LayerRow`]) and the content-addressed TensorAtoms those layers are made of, deduplicated by
//! SHA-256 and reference-counted; content atoms and their embeddings; and lineage (requests,
//! steps, graph edges, usage). Two implementations sit behind it: the embedded SQLite store
//! ([`sqlite::SqliteStore`], the default) and SQL Server 2025 ([`mssql::MssqlStore`], chosen by a
//! `mssql://` URL or an ADO.NET connection string).
//! One contract test suite (`runtime/tests/store_contract.rs`) runs against every implementation.
//!
//! The trait is async and batch-oriented because the production store is across a network:
//! every method that moves atoms takes or returns many per call, so a round-trip carries
//! megabytes, not one row (see ARCHITECTURE.md, "Store", for the round-trips a 100 MB model
//! costs).
//!
//! Invariants every implementation keeps (the contract tests check them):
//! - **A model is visible only when complete.** [`Store::begin_model`] hands out a
//!   [`ModelWriter`]; its atoms, layers and reference counts become visible together at
//!   [`ModelWriter::commit`]. A writer dropped, aborted or killed before then leaves the store as
//!   it was: no model row, no layer, no atom, no reference count changed.
//! - **`TensorAtoms.ReferenceCount` = the number of `TensorAtomCoefficients` rows naming the
//!   atom** (an atom used twice in one tensor counts twice), at every commit.
//! - **No atom without a reference**: removing a model deletes the atoms it held the last
//!   reference to, in the same transaction.
//! - Messages name the store ([`Store::location`]) and never contain a secret.

pub mod governance;
pub mod mssql;
pub mod sqlite;
mod url;
mod verify;

use std::fmt;

use async_trait::async_trait;
use hartonomous_loader::atom::{tensor_root, SpatialSignature};
use hartonomous_loader::{DType, Hash256};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use governance::{
    AccessRule, ApiKeyRow, GovernanceRows, NewAccessRule, NewApiKey, OperationRate, RuleEffect, TenantSettings, UsageQuery, UsageRow,
    DEFAULT_PLAN,
};
pub use url::{mask_secrets, open, open_existing, StoreUrl};

/// Atoms per [`Store::fetch_atoms`] statement: 256 atoms of 64 KiB are 16 MiB per round-trip,
/// large enough that latency is amortised and small enough to stay within a pager's staging
/// buffer and SQL Server's 100 MB response limit with room to spare.
pub const FETCH_BATCH_ATOMS: usize = 256;

/// Atoms per [`ModelWriter::put_atoms`] call made by ingest: 64 atoms of 64 KiB = 4 MiB, so the
/// atomizer and the writer overlap in steps of a few milliseconds.
pub const PUT_BATCH_ATOMS: usize = 64;

/// Largest embedding dimension, as SQL Server 2025's `VECTOR(1998)` (FACTS.md).
pub const MAX_EMBEDDING_DIMENSION: usize = 1998;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a store. Each variant names the store (a file path, or a
/// server with its password masked) and says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("SQLite store {path}: {statement} failed: {source}{hint}")]
    Sqlite {
        path: String,
        /// The name of the statement in `sqlite::statements`, or the step that failed.
        statement: &'static str,
        #[source]
        source: rusqlite::Error,
        /// Advice for the causes we recognise (locked database, missing folder, not a database).
        hint: &'static str,
    },

    #[error("SQL Server store {location}: {statement} failed: {source}{hint}")]
    Mssql {
        /// The server as `mssql://user@host:port/database`: never the password.
        location: String,
        /// The name of the block in `sql/queries/store.sql`, or the step that failed.
        statement: &'static str,
        /// Boxed: tiberius's error is large, and every `Result` of the store carries this enum.
        #[source]
        source: Box<tiberius::error::Error>,
        /// Advice for the causes we recognise (login failed, TLS, refused, no schema).
        hint: &'static str,
    },

    #[error("store {location} is not ready for this hartonomous: {what}")]
    NotReady { location: String, what: String },

    #[error("store {location} has schema version {found}, but this hartonomous knows versions up to {supported}: upgrade hartonomous to open it")]
    SchemaTooNew { location: String, found: i64, supported: i64 },

    #[error("store {url}: {reason}")]
    Unsupported {
        /// The URL as given, with any password masked.
        url: String,
        reason: String,
    },

    #[error("store {location}: no store there yet (ingest a model to create it, or pass --db)")]
    NotFound { location: String },

    #[error("store {location}: no model {name}{}", version.as_ref().map(|v| format!(":{v}")).unwrap_or_default())]
    ModelNotFound { location: String, name: String, version: Option<String> },

    #[error("store {location}: model {name} has versions {}; say which one as {name}:VERSION", versions.join(", "))]
    AmbiguousModel { location: String, name: String, versions: Vec<String> },

    #[error("store {location}: {what}")]
    InvalidRecord { location: String, what: String },

    #[error("store {location}: {count} requested atoms are not in the store (first: {first})")]
    MissingAtoms { location: String, count: usize, first: Hash256 },

    #[error("store {location} is damaged: {what}; run `hartonomous verify` for a full report")]
    Damaged { location: String, what: String },

    #[error("store {location}: a database task failed: {what}")]
    Task { location: String, what: String },
}

/// A row id of `Models`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ModelId(pub i64);

/// A row id of `ModelLayers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LayerId(pub i64);

/// A row id of `InferenceRequests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RequestId(pub i64);

/// A row id of `Atoms` (content atoms: inputs and outputs, not weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ContentAtomId(pub i64);

/// `Models.Status`: a model is `ingesting` until its writer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Ingesting,
    Ready,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Ingesting => "ingesting",
            ModelStatus::Ready => "ready",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ingesting" => Some(ModelStatus::Ingesting),
            "ready" => Some(ModelStatus::Ready),
            _ => None,
        }
    }
}

/// What [`Store::begin_model`] needs: everything about a model except its weights, which
/// arrive through the writer, and what is known only once they have been read
/// ([`ModelSeal`], given to [`ModelWriter::commit`]).
#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `safetensors` or `gguf`.
    pub format: String,
    /// `config.json` verbatim, or the GGUF metadata without the tokenizer keys, as JSON text.
    pub config_json: String,
    /// `hugging_face`, `gguf` or `none`.
    pub tokenizer_kind: String,
    /// The tokenizer as JSON text (`tokenizer.json`, or the GGUF `tokenizer.*` keys).
    pub tokenizer_material: Option<String>,
    pub parameter_count: u64,
    /// Layers the writer must put before it may commit.
    pub tensor_count: u64,
}

/// Where a derived model (a student, a pruned copy) comes from: recorded on its row as
/// `ParentModelId` and `DerivedBy`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLineage {
    /// The model whose atoms the new one reuses.
    pub parent: ModelId,
    /// How it was derived, in words that stay readable after the parent is removed (the parent's
    /// label and weights root, and the operation).
    pub derived_by: String,
}

/// What a model needs besides its weights to run: its configuration and tokenizer, as ingested.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMaterial {
    /// `config.json` (with the sentence-transformers companions under `companions`), or the GGUF
    /// metadata without the tokenizer keys, as JSON text.
    pub config_json: String,
    /// `hugging_face`, `gguf` or `none`.
    pub tokenizer_kind: String,
    pub tokenizer_material: Option<String>,
}

/// A model as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    pub id: ModelId,
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub format: String,
    pub tokenizer_kind: String,
    /// `None` only while ingesting.
    pub weights_root: Option<Hash256>,
    /// SHA-256 of the whole source file (for a derived model, of its derivation: see
    /// `student.rs`); `None` only while ingesting.
    pub source_file_hash: Option<Hash256>,
    pub parameter_count: u64,
    pub tensor_count: u64,
    /// Bytes of the distinct atoms the model references: what storing it alone would cost.
    pub atom_bytes: u64,
    pub status: ModelStatus,
    /// ISO 8601, UTC.
    pub created_at: String,
    /// The model this one was derived from; `None` for an ingested model, and once the parent
    /// has been removed (`derived_by` still names it).
    pub parent: Option<ModelId>,
    /// How a derived model was made (see [`ModelLineage`]); `None` for an ingested model.
    pub derived_by: Option<String>,
}

impl ModelRow {
    /// `name:version`, as the CLI accepts it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// What completes a model at [`ModelWriter::commit`]: known only after its file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSeal {
    /// The weights root of the layers put; the store recomputes it and refuses a mismatch.
    pub weights_root: Hash256,
    /// SHA-256 of the whole source file (for a derived model, of its derivation).
    pub source_file_hash: Hash256,
}

/// One TensorAtom as ingest hands it to the store.
#[derive(Debug, Clone)]
pub struct AtomRecord {
    /// [`hartonomous_loader::atom::atom_id`] of `encoding` and `payload`. The store trusts it
    /// (the loader just computed it); [`Store::verify`] re-hashes every payload.
    pub hash: Hash256,
    pub encoding: DType,
    pub payload: Vec<u8>,
    pub signature: Option<SpatialSignature>,
}

/// What one [`ModelWriter::put_atoms`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PutAtomsOutcome {
    /// Atoms written.
    pub new: u64,
    /// Atoms that were already stored (by another model, or earlier in this one).
    pub reused: u64,
    /// Payload bytes written.
    pub bytes_written: u64,
}

impl std::ops::AddAssign for PutAtomsOutcome {
    fn add_assign(&mut self, o: Self) {
        self.new += o.new;
        self.reused += o.reused;
        self.bytes_written += o.bytes_written;
    }
}

/// One layer (tensor) of a model with its ordered atom list.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// Position in the model file, from 0.
    pub ordinal: u32,
    pub tensor_name: String,
    pub dtype: DType,
    /// Row-major, outermost first.
    pub shape: Vec<u64>,
    pub byte_length: u64,
    /// [`tensor_root`] of `dtype`, `shape` and `atoms`; the store checks it.
    pub tensor_root: Hash256,
    /// The atoms in order; each must have been put (by this writer or earlier).
    pub atoms: Vec<Hash256>,
    /// WKB `LINESTRING ZM` of the layer's values, for small layers.
    pub geometry: Option<Vec<u8>>,
}

impl LayerRecord {
    pub fn parameter_count(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Checks what can be checked without the atoms: the root is the root of this atom list.
    pub fn check(&self, location: &str) -> Result<()> {
        let computed = tensor_root(self.dtype, &self.shape, &self.atoms);
        if computed != self.tensor_root {
            return Err(StoreError::InvalidRecord {
                location: location.into(),
                what: format!(
                    "layer {}: tensor root {} does not match its {} atoms (they give {computed})",
                    self.tensor_name,
                    self.tensor_root,
                    self.atoms.len()
                ),
            });
        }
        Ok(())
    }
}

/// One atom reference of a stored layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerAtom {
    /// Place in the layer, from 0.
    pub ordinal: u64,
    pub atom: Hash256,
    pub byte_length: u64,
    /// 1.0 for plain storage; a layer chunk is the coefficient-weighted sum of its atoms.
    pub coefficient: f64,
}

/// A layer as stored, with its atom list in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    pub id: LayerId,
    pub model: ModelId,
    pub ordinal: u32,
    pub tensor_name: String,
    /// The dtype tag (`F32`, `Q4_1`, ...).
    pub dtype: String,
    pub shape: Vec<u64>,
    pub parameter_count: u64,
    pub byte_length: u64,
    pub tensor_root: Hash256,
    pub has_geometry: bool,
    pub atoms: Vec<LayerAtom>,
}

/// An atom read back for the pager. The pager re-hashes it before use.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedAtom {
    pub hash: Hash256,
    /// The dtype tag the payload is stored in.
    pub encoding: String,
    pub payload: Vec<u8>,
}

/// What [`Store::remove_model`] freed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoveOutcome {
    pub model: String,
    pub layers: u64,
    /// Atoms whose last reference this model held, now deleted.
    pub atoms_freed: u64,
    pub bytes_freed: u64,
    /// Atoms still used by other models.
    pub atoms_kept: u64,
}

/// Where an atom is used: model `name:version`, layer, and the atom's place in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AtomUse {
    pub model: String,
    pub tensor: String,
    pub ordinal: u64,
}

impl fmt::Display for AtomUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layer {} (atom {})", self.model, self.tensor, self.ordinal)
    }
}

/// One piece of damage found by [`Store::verify`], with everything needed to find it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// The payload does not hash to the atom's id.
    AtomHash { atom: Hash256, encoding: String, actual: Hash256, used_by: Vec<AtomUse> },
    /// `ByteLength` disagrees with the payload's length.
    AtomLength { atom: Hash256, recorded: u64, actual: u64, used_by: Vec<AtomUse> },
    /// `Encoding` is not a dtype this build knows, so the id cannot be recomputed.
    AtomEncoding { atom: Hash256, encoding: String, used_by: Vec<AtomUse> },
    /// `ReferenceCount` differs from the coefficient rows that name the atom.
    ReferenceCount { atom: Hash256, recorded: i64, actual: u64 },
    /// No layer references the atom.
    OrphanAtom { atom: Hash256, bytes: u64, recorded_count: i64 },
    /// A layer's atom list does not reassemble its recorded tensor root, or is malformed.
    Layer { model: String, tensor: String, problem: String },
    /// A model's layers do not give its recorded weights root, or its counts are off.
    Model { model: String, problem: String },
    /// A row whose foreign key names no row (written by a tool with the keys switched off).
    ForeignKey { table: String, row: i64, parent: String },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uses = |used_by: &[AtomUse]| {
            if used_by.is_empty() {
                "used by no layer".to_string()
            } else {
                let list: Vec<String> = used_by.iter().map(ToString::to_string).collect();
                format!("used by {}", list.join(", "))
            }
        };
        match self {
            Damage::AtomHash { atom, encoding, actual, used_by } => write!(
                f,
                "atom {atom} ({encoding}): payload hashes to {actual}, not to its id; {}",
                uses(used_by)
            ),
            Damage::AtomLength { atom, recorded, actual, used_by } => write!(
                f,
                "atom {atom}: ByteLength {recorded} but the payload has {actual} bytes; {}",
                uses(used_by)
            ),
            Damage::AtomEncoding { atom, encoding, used_by } => {
                write!(f, "atom {atom}: unknown encoding {encoding:?}; {}", uses(used_by))
            }
            Damage::ReferenceCount { atom, recorded, actual } => write!(
                f,
                "atom {atom}: ReferenceCount {recorded} but {actual} coefficient rows reference it"
            ),
            Damage::OrphanAtom { atom, bytes, recorded_count } => write!(
                f,
                "atom {atom} ({bytes} bytes, ReferenceCount {recorded_count}) is an orphan: no layer references it"
            ),
            Damage::Layer { model, tensor, problem } => write!(f, "{model} layer {tensor}: {problem}"),
            Damage::Model { model, problem } => write!(f, "model {model}: {problem}"),
            Damage::ForeignKey { table, row, parent } => {
                write!(f, "{table} row {row} refers to a missing {parent} row")
            }
        }
    }
}

/// What [`Store::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    pub models: u64,
    pub layers: u64,
    pub atoms: u64,
    pub atom_bytes: u64,
    pub damage: Vec<Damage>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// A content atom: an input or output of inference (text, image, embedding, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ContentAtom {
    /// `text`, `image`, `audio`, `video`, `embedding`, ...
    pub modality: String,
    pub subtype: Option<String>,
    pub canonical_text: Option<String>,
    pub payload: Option<Vec<u8>>,
}

impl ContentAtom {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            modality: "text".into(),
            subtype: None,
            canonical_text: Some(text.into()),
            payload: None,
        }
    }

    /// SHA-256("A" ‖ 0 ‖ modality ‖ 0 ‖ content), where content is the UTF-8 canonical text,
    /// or the payload when there is no text: the same text is one atom whatever asked for it.
    pub fn hash(&self) -> Hash256 {
        let mut h = Sha256::new();
        h.update(b"A\0");
        h.update(self.modality.as_bytes());
        h.update([0u8]);
        match (&self.canonical_text, &self.payload) {
            (Some(text), _) => h.update(text.as_bytes()),
            (None, Some(payload)) => h.update(payload),
            (None, None) => {}
        }
        Hash256(h.finalize().into())
    }
}

/// An embedding of a content atom by a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub atom: ContentAtomId,
    pub vector: Vec<f32>,
}

/// `(count, newest id)` of a model's embeddings; equal watermarks mean nothing was added,
/// removed or replaced (a replaced embedding gets a new id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddingWatermark {
    pub count: u64,
    /// 0 when the model has none.
    pub max_id: i64,
}

/// An embedding as the search index reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// `EmbeddingId`.
    pub id: i64,
    pub atom: ContentAtomId,
    /// The atom's modality (`text`, `image`, ...).
    pub modality: String,
    pub vector: Vec<f32>,
}

/// A content atom as stored, without its payload (its length only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentAtomRow {
    pub id: ContentAtomId,
    pub hash: Hash256,
    pub modality: String,
    pub subtype: Option<String>,
    pub text: Option<String>,
    pub payload_bytes: Option<u64>,
}

/// A stored embedding near a query, by cosine similarity (higher is nearer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Neighbor {
    pub atom: ContentAtomId,
    pub atom_hash: Hash256,
    pub cosine: f32,
}

/// `InferenceRequests.Status` and `InferenceSteps.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(RunStatus::Running),
            "succeeded" => Some(RunStatus::Succeeded),
            "failed" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

/// A request as it arrives. `request_key` makes recording idempotent: recording the same key
/// twice (a retry) returns the first row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    pub request_key: String,
    pub tenant: String,
    pub operation: String,
    pub model_names: Vec<String>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestCompletion {
    pub status: RunStatus,
    pub duration_ms: f64,
    pub error_message: Option<String>,
}

/// One step of a request (one model run, one search, ...). `(request, ordinal)` is unique, so
/// a retried step is not recorded twice.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub request: RequestId,
    pub ordinal: u32,
    pub operation: String,
    pub model: Option<ModelId>,
    /// The exact weights the step ran, kept even if the model is removed later.
    pub weights_root: Option<Hash256>,
    pub parameters_json: String,
    pub status: RunStatus,
    pub duration_ms: Option<f64>,
    pub tenant: String,
}

/// A usage ledger line: one per request the daemon answered (governance writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Unique per ledger row, so that a retried write is not counted twice; `None` for rows
    /// written before schema version 3.
    pub usage_key: Option<String>,
    pub tenant: String,
    pub request: Option<RequestId>,
    pub operation: String,
    pub model: Option<ModelId>,
    /// The model(s) as the request named them (kept when the model is removed; ensembles list
    /// their members comma-separated); empty for operations on no model.
    pub model_name: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Vectors produced or consumed (embeddings returned, queries searched, vectors aggregated).
    pub vectors: u64,
    /// Wall time from admission to the response's last byte.
    pub compute_ms: f64,
    /// Units charged under the tenant's rate plan.
    pub billing_units: f64,
    /// The HTTP status answered (gRPC calls record the status of the route they map to).
    pub status_code: u16,
}

/// A node of the lineage graph: what kind of thing, and its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphNode {
    Atom(ContentAtomId),
    Model(ModelId),
    Request(RequestId),
}

impl GraphNode {
    pub fn new(kind: &str, ref_id: i64) -> Option<Self> {
        match kind {
            "atom" => Some(GraphNode::Atom(ContentAtomId(ref_id))),
            "model" => Some(GraphNode::Model(ModelId(ref_id))),
            "request" => Some(GraphNode::Request(RequestId(ref_id))),
            _ => None,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            GraphNode::Atom(_) => "atom",
            GraphNode::Model(_) => "model",
            GraphNode::Request(_) => "request",
        }
    }

    pub fn ref_id(self) -> i64 {
        match self {
            GraphNode::Atom(ContentAtomId(id)) | GraphNode::Model(ModelId(id)) | GraphNode::Request(RequestId(id)) => id,
        }
    }
}

/// A lineage edge, e.g. input atom → request (`input`), request → output atom (`output`),
/// model → request (`ran`). `(from, to, relation)` is unique: re-adding it changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LineageEdge {
    pub from: GraphNode,
    pub to: GraphNode,
    pub relation: String,
    pub weight: f64,
    pub request: Option<RequestId>,
}

/// A request with everything recorded about it: what the lineage API will show.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    pub request: NewRequest,
    pub status: RunStatus,
    pub duration_ms: Option<f64>,
    pub error_message: Option<String>,
    pub steps: Vec<StepRecord>,
    /// The edges recorded with this request, in the order they were added.
    pub edges: Vec<LineageEdge>,
    pub usage: Vec<UsageRecord>,
}

/// What [`Store::begin_model`] found.
pub enum BeginModel {
    /// No complete model of this name and version: write it through this writer. An
    /// interrupted one, if any, was removed first.
    Writer(Box<dyn ModelWriter>),
    /// A complete model of this name and version is already stored.
    Exists(Box<ModelRow>),
}

/// Writes one model. Nothing it writes is visible to readers until [`ModelWriter::commit`];
/// dropping it (or [`ModelWriter::abort`]) discards everything it wrote.
#[async_trait]
pub trait ModelWriter: Send {
    fn model(&self) -> ModelId;

    /// Stores the atoms not yet stored (deduplicated by hash, repeats within the batch
    /// included). Reference counts are not touched here: [`ModelWriter::put_layers`] counts
    /// references.
    async fn put_atoms(&mut self, atoms: Vec<AtomRecord>) -> Result<PutAtomsOutcome>;

    /// Stores layers with their ordered atom lists (coefficient 1.0) and adds one reference to
    /// each atom per place it is used. Refuses a layer whose root does not match its atoms, or
    /// that names an atom not stored.
    async fn put_layers(&mut self, layers: Vec<LayerRecord>) -> Result<()>;

    /// Makes the model visible (`Status = 'ready'`) after checking that every layer was put and
    /// that the layers give the seal's weights root.
    async fn commit(self: Box<Self>, seal: ModelSeal) -> Result<ModelRow>;

    /// Discards everything this writer wrote.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// The database behind the runtime. See the module documentation for the invariants.
#[async_trait]
pub trait Store: Send + Sync {
    /// Where the store is, for messages: a file path, or a server without credentials.
    fn location(&self) -> &str;

    /// Starts writing a model, or reports the complete model of that name and version.
    async fn begin_model(&self, model: &NewModel) -> Result<BeginModel>;

    /// Complete and interrupted models, by name then version.
    async fn list_models(&self) -> Result<Vec<ModelRow>>;

    /// The model of this name (and version; without one, the only version, else
    /// [`StoreError::AmbiguousModel`]). Only complete models are returned.
    async fn model(&self, name: &str, version: Option<&str>) -> Result<Option<ModelRow>>;

    /// A model's configuration and tokenizer; `None` for an unknown id.
    async fn model_material(&self, model: ModelId) -> Result<Option<ModelMaterial>>;

    /// A model's layers in ordinal order, each with its atom list.
    async fn layers(&self, model: ModelId) -> Result<Vec<LayerRow>>;

    /// The atoms with these hashes, one per distinct hash in order of first request, in one
    /// statement per [`FETCH_BATCH_ATOMS`]. Any missing atom is [`StoreError::MissingAtoms`].
    async fn fetch_atoms(&self, atoms: &[Hash256]) -> Result<Vec<FetchedAtom>>;

    /// `ReferenceCount` of each atom, `None` for atoms not stored.
    async fn reference_counts(&self, atoms: &[Hash256]) -> Result<Vec<Option<u64>>>;

    /// A layer's WKB `LINESTRING ZM`, when one was stored.
    async fn layer_geometry(&self, layer: LayerId) -> Result<Option<Vec<u8>>>;

    /// Removes a model in one transaction: its layers, coefficients and embeddings, one
    /// reference from each atom per use, and the atoms left with none.
    async fn remove_model(&self, name: &str, version: Option<&str>) -> Result<RemoveOutcome>;

    /// Starts writing a model derived from a stored one (a student, a pruned copy): as
    /// [`Store::begin_model`], and the new row records `lineage` (its parent and how it was
    /// made). Its layers may name atoms already stored (the parent's) without putting them
    /// again: [`ModelWriter::put_layers`] adds one reference per use, so the parent and the
    /// derived model share every atom they have in common, and removing either one leaves the
    /// other whole. Removing the parent sets the derived model's parent to `None`; `derived_by`
    /// keeps its name.
    async fn begin_derived_model(&self, model: &NewModel, lineage: &ModelLineage) -> Result<BeginModel>;

    /// Re-hashes every atom payload (of `model`, or all), checks every layer's atom list
    /// against its tensor root, each model's weights root and counts, every reference count
    /// against the coefficient rows, and (for the whole store) looks for orphan atoms.
    async fn verify(&self, model: Option<ModelId>) -> Result<VerifyReport>;

    /// Stores content atoms (deduplicated by [`ContentAtom::hash`]; each put adds one reference)
    /// and returns their ids in order.
    async fn put_content_atoms(&self, atoms: &[ContentAtom]) -> Result<Vec<ContentAtomId>>;

    /// Stores embeddings of content atoms by `model`, replacing an earlier one of the same
    /// atom and model.
    async fn put_embeddings(&self, model: ModelId, embeddings: &[Embedding]) -> Result<()>;

    /// The `k` embeddings by `model` with the highest cosine similarity to `query`, best first
    /// (ties to the lower atom id).
    async fn nearest_embeddings(&self, model: ModelId, query: &[f32], k: usize) -> Result<Vec<Neighbor>>;

    /// How many embeddings `model` has and the newest one's id: the search index's freshness
    /// check, one indexed query.
    async fn embedding_watermark(&self, model: ModelId) -> Result<EmbeddingWatermark>;

    /// At most `limit` of `model`'s embeddings with an id above `after`, in id order, with their
    /// atoms' modality: the search index's paged read.
    async fn embeddings_after(&self, model: ModelId, after: i64, limit: usize) -> Result<Vec<StoredEmbedding>>;

    /// `model`'s embeddings of `atoms`, in their order (`None` where an atom has none).
    async fn embeddings_of_atoms(&self, model: ModelId, atoms: &[ContentAtomId]) -> Result<Vec<Option<Vec<f32>>>>;

    /// Content atoms by id, in their order (`None` where there is no such atom).
    async fn content_atoms(&self, atoms: &[ContentAtomId]) -> Result<Vec<Option<ContentAtomRow>>>;

    /// Records a request, or returns the one already recorded under its key.
    async fn record_request(&self, request: &NewRequest) -> Result<RequestId>;

    /// The request recorded under `request_key`, if any.
    async fn find_request(&self, request_key: &str) -> Result<Option<RequestId>>;

    async fn complete_request(&self, request: RequestId, completion: &RequestCompletion) -> Result<()>;

    /// Records a step; recording the same `(request, ordinal)` again changes nothing.
    async fn record_step(&self, step: &StepRecord) -> Result<()>;

    async fn record_usage(&self, usage: &UsageRecord) -> Result<()>;

    /// Adds a lineage edge, creating its nodes as needed; idempotent.
    async fn add_lineage_edge(&self, edge: &LineageEdge) -> Result<()>;

    /// A request with its steps, edges and usage; `None` for an unknown id.
    async fn lineage(&self, request: RequestId) -> Result<Option<Lineage>>;

    // ---- governance (tenants, keys, access rules, rates, the ledger's read side) ----------

    /// Every tenant, key (revoked ones too), rule and rate, in one consistent read.
    async fn governance(&self) -> Result<GovernanceRows>;

    /// Creates or updates a tenant's plan and limits.
    async fn put_tenant(&self, tenant: &TenantSettings) -> Result<()>;

    /// Stores a key's hash, creating its tenant (plan [`DEFAULT_PLAN`], no limits) if new. A key id
    /// already present is an [`StoreError::InvalidRecord`].
    async fn add_api_key(&self, key: &NewApiKey) -> Result<()>;

    /// Marks a key revoked; `false` when no unrevoked key has this id.
    async fn revoke_api_key(&self, key_id: &str) -> Result<bool>;

    /// Appends a rule to its tenant's list (creating the tenant if new); returns its id.
    async fn add_access_rule(&self, rule: &NewAccessRule) -> Result<i64>;

    /// `false` when there is no such rule.
    async fn remove_access_rule(&self, rule_id: i64) -> Result<bool>;

    /// Creates or replaces the rate of one operation under one plan.
    async fn put_rate(&self, rate: &OperationRate) -> Result<()>;

    /// Ledger rows, newest first.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>>;
}

/// Splits `NAME[:VERSION]` at its last colon.
pub fn parse_model_ref(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(':') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => (name, Some(version)),
        _ => (text, None),
    }
}

/// A count or byte length as the databases' signed 64-bit integer (SQLite INTEGER, SQL Server
/// BIGINT); every one we store fits, since no file exceeds 2^63 bytes.
pub(crate) fn db_int(v: u64) -> i64 {
    i64::try_from(v).expect("counts and byte lengths fit in i64: this is a bug")
}

/// Cosine similarity in f64, 0 when either vector is all zeros.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_split_at_the_last_colon() {
        assert_eq!(parse_model_ref("minilm"), ("minilm", None));
        assert_eq!(parse_model_ref("minilm:2"), ("minilm", Some("2")));
        assert_eq!(parse_model_ref("org:model:v1"), ("org:model", Some("v1")));
        assert_eq!(parse_model_ref("trailing:"), ("trailing:", None));
    }

    #[test]
    fn content_hash_separates_modalities() {
        let text = ContentAtom::text("hello");
        // Independent: `printf 'A\0text\0hello' | sha256sum`.
        let mut h = Sha256::new();
        h.update(b"A\x00text\x00hello");
        assert_eq!(text.hash().0, <[u8; 32]>::from(h.finalize()));
        let other = ContentAtom { modality: "code".into(), ..text.clone() };
        assert_ne!(text.hash(), other.hash());
    }
}
