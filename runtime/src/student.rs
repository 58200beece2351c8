//! `hartonomous student`: a new model made from a stored one without copying its weights.
//!
//! Two derivations, both written through one [`ModelWriter`] begun with
//! [`Store::begin_derived_model`], so the new model appears whole at commit or not at all:
//!
//! - **A subset of the blocks** (`--layers A-B`): the transformer blocks A..=B, renumbered from
//!   0, with every tensor outside the blocks (embeddings, final norm, pooler, output). The layer
//!   rows name the parent's atoms, so no payload is written: only layer rows, coefficient rows
//!   and one more reference on each atom. The stored configuration is the parent's with its
//!   depth changed (`num_hidden_layers` of a Hugging Face `config.json`, `<arch>.block_count` of
//!   GGUF metadata), so a loader that reads the depth asks only for the blocks that exist. Taking
//!   the first blocks of a pretrained encoder is the initialisation of DistilBERT-style students
//!   (Sanh et al. 2019, https://arxiv.org/abs/1910.01108, which takes every other layer).
//! - **Magnitude pruning** (`--prune-importance Q`): in every weight matrix inside the blocks
//!   (rank 2; embedding tables, norms and biases are kept), the weights whose importance falls
//!   below the tensor's Q-quantile become 0. Importance is the Z coordinate of the layer geometry
//!   (`loader/src/geometry.rs`): |w| / max |w| over the tensor, computed here from the atoms
//!   because ingest stores geometry only for small tensors. Atoms are fixed-size cuts, so only
//!   the chunks holding a zeroed weight become new atoms; every other chunk stays the parent's
//!   atom. f32, f16 and bf16 are rewritten; a quantized block format (GGUF Q4_1, ...) is refused
//!   by name, as zeroing inside its blocks would need requantizing them.
//!
//! The atoms read for pruning are re-hashed before use, as the pager does: nothing is derived
//! from weights that do not match their ids. Memory is one tensor at a time.
//!
//! The new row records its parent (`ParentModelId`) and how it was made (`DerivedBy`, which
//! names the parent's label and weights root so that it stays readable once the parent is
//! removed). Its `SourceFileHash`, as it was read from no file, is
//! SHA-256("hartonomous-derived" ‖ 0 ‖ parent weights root ‖ DerivedBy).

use std::collections::HashSet;
use std::ops::Range;
use std::str::FromStr;

use hartonomous_loader::atom::{atom_id, tensor_root, weights_root, SpatialSignature};
use hartonomous_loader::dequant::dequantize;
use hartonomous_loader::geometry::{decode_layer, encode_linestring_zm, PointZm};
use hartonomous_loader::{DType, Hash256};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{
    parse_model_ref, AtomRecord, BeginModel, LayerRecord, LayerRow, ModelLineage, ModelRow, ModelSeal, ModelWriter,
    NewModel, PutAtomsOutcome, Store, StoreError, PUT_BATCH_ATOMS,
};

/// Version of a student named without one, as `ingest` does.
pub const DEFAULT_VERSION: &str = "1";

/// Blocks `first..=last` of the parent, as given to `--layers` (`0-2`, or `3` for one block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub first: u32,
    pub last: u32,
}

impl FromStr for BlockRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a block range: write FIRST-LAST, e.g. 0-2 for the first three blocks");
        let number = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("{text:?}: the first block {first} comes after the last {last}; write FIRST-LAST"));
        }
        Ok(BlockRange { first, last })
    }
}

/// How the student is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Derivation {
    /// Keep these blocks, renumbered from 0, and everything outside the blocks.
    Blocks(BlockRange),
    /// Zero the block matrices' weights below this quantile of importance (0 < Q < 1).
    Prune(f64),
}

/// What `hartonomous student` was asked.
#[derive(Debug, Clone)]
pub struct StudentOptions {
    /// The parent, `NAME[:VERSION]` (`--from`).
    pub parent: String,
    /// The new model, `NAME[:VERSION]` (`--name`); version [`DEFAULT_VERSION`] when not given.
    pub name: String,
    pub derivation: Derivation,
}

#[derive(Debug, thiserror::Error)]
pub enum StudentError {
    /// The command line asks for something impossible; `flag` names the option to fix.
    #[error("{flag}: {what}")]
    Usage { flag: &'static str, what: String },

    #[error("--prune-importance: tensor {tensor} of {model} is stored as {dtype}, a quantized block format; pruning rewrites f32, f16 and bf16 weights only (use --layers for a student of this model)")]
    QuantizedPrune { model: String, tensor: String, dtype: String },

    #[error("model {model}: {what}")]
    Model { model: String, what: String },

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Loader(#[from] hartonomous_loader::Error),
}

/// What was made (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct StudentReport {
    pub model: String,
    pub parent: String,
    pub derived_by: String,
    pub store: String,
    pub tensors: u64,
    pub parameters: u64,
    /// Tensors rewritten by pruning (0 for a subset of blocks).
    pub pruned_tensors: u64,
    /// Weights set to 0 by pruning (ones already 0 not counted).
    pub zeroed_weights: u64,
    /// Atoms written (chunks that changed).
    pub new_atoms: u64,
    /// Atom references that name an atom already stored.
    pub reused_atoms: u64,
    pub bytes_written: u64,
    pub weights_root: Hash256,
}

impl StudentReport {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "made {} from {} in {}: {} tensors, {} parameters\n  {}\n",
            self.model, self.parent, self.store, self.tensors, self.parameters, self.derived_by
        );
        if self.pruned_tensors > 0 {
            out.push_str(&format!("  pruned {} tensors: {} weights zeroed\n", self.pruned_tensors, self.zeroed_weights));
        }
        out.push_str(&format!(
            "  atoms: {} new ({} bytes written), {} references to stored atoms\n  weights root {}\n",
            self.new_atoms, self.bytes_written, self.reused_atoms, self.weights_root
        ));
        out
    }
}

/// Makes the student and returns what was written. Bad options are refused before anything is
/// written; a failure after the writer began leaves the store as it was.
pub async fn create_student(store: &dyn Store, options: &StudentOptions) -> Result<StudentReport, StudentError> {
    if let Derivation::Prune(q) = options.derivation {
        if !(q > 0.0 && q < 1.0) {
            return Err(StudentError::Usage {
                flag: "--prune-importance",
                what: format!("{q} is not a quantile strictly between 0 and 1 (e.g. 0.5 zeroes the less important half)"),
            });
        }
    }
    let (parent_name, parent_version) = parse_model_ref(&options.parent);
    let parent = store.model(parent_name, parent_version).await?.ok_or_else(|| StudentError::Usage {
        flag: "--from",
        what: format!("no model {} in {} (`hartonomous models` lists them)", options.parent, store.location()),
    })?;
    let (name, version) = parse_model_ref(&options.name);
    let version = version.unwrap_or(DEFAULT_VERSION);
    if let Some(existing) = store.model(name, Some(version)).await? {
        return Err(StudentError::Usage {
            flag: "--name",
            what: format!("model {} already exists in {}: choose another name or version", existing.label(), store.location()),
        });
    }
    let parent_label = parent.label();
    let parent_root = parent.weights_root.ok_or_else(|| StoreError::Damaged {
        location: store.location().to_string(),
        what: format!("model {parent_label} is ready but has no weights root"),
    })?;
    let material = store.model_material(parent.id).await?.ok_or_else(|| StoreError::ModelNotFound {
        location: store.location().to_string(),
        name: parent.name.clone(),
        version: Some(parent.version.clone()),
    })?;
    let layers = store.layers(parent.id).await?;
    let mut config: Value = serde_json::from_str(&material.config_json).map_err(|e| StudentError::Model {
        model: parent_label.clone(),
        what: format!("its stored configuration is not JSON: {e}"),
    })?;
    let depth_key = depth_key(&parent, &config)?;
    let depth = config.get(&depth_key).and_then(Value::as_u64).ok_or_else(|| StudentError::Model {
        model: parent_label.clone(),
        what: format!("its stored configuration has no integer `{depth_key}`, so its depth is unknown"),
    })?;
    let block_count = layers.iter().filter_map(|l| block_of(&l.tensor_name)).map(|(b, _)| b).collect::<HashSet<_>>().len();
    if block_count as u64 != depth {
        return Err(StudentError::Model {
            model: parent_label,
            what: format!("its configuration says `{depth_key}` = {depth}, but its tensors make {block_count} blocks"),
        });
    }

    // The layers of the student, in the parent's order, before any pruning.
    let (kept, derived_by) = match options.derivation {
        Derivation::Blocks(range) => {
            if u64::from(range.last) >= depth {
                return Err(StudentError::Usage {
                    flag: "--layers",
                    what: format!(
                        "{}-{} goes past the last block of {parent_label}, which has {depth} blocks (0-{})",
                        range.first,
                        range.last,
                        depth - 1
                    ),
                });
            }
            let kept: Vec<(LayerRow, String)> = layers
                .into_iter()
                .filter_map(|l| match block_of(&l.tensor_name) {
                    None => {
                        let name = l.tensor_name.clone();
                        Some((l, name))
                    }
                    Some((b, at)) if (range.first..=range.last).contains(&b) => {
                        let renamed = format!("{}{}{}", &l.tensor_name[..at.start], b - range.first, &l.tensor_name[at.end..]);
                        Some((l, renamed))
                    }
                    Some(_) => None,
                })
                .collect();
            let blocks = range.last - range.first + 1;
            if let Some(map) = config.as_object_mut() {
                map.insert(depth_key.clone(), Value::from(blocks));
            }
            let derived_by = format!(
                "student --from {parent_label} --layers {}-{}: blocks {}-{} of {depth} (renumbered from 0) and every tensor outside the blocks; parent weights root {parent_root}",
                range.first, range.last, range.first, range.last
            );
            (kept, derived_by)
        }
        Derivation::Prune(q) => {
            let kept = layers
                .into_iter()
                .map(|l| {
                    let name = l.tensor_name.clone();
                    (l, name)
                })
                .collect();
            let derived_by = format!(
                "student --from {parent_label} --prune-importance {q}: weights below the {q} quantile of importance |w|/max|w| zeroed in every block matrix; parent weights root {parent_root}"
            );
            (kept, derived_by)
        }
    };
    let config_json = serde_json::to_string(&config).map_err(|e| StudentError::Model {
        model: parent_label.clone(),
        what: format!("its configuration does not serialise: {e}"),
    })?;

    let new_model = NewModel {
        name: name.to_string(),
        version: version.to_string(),
        architecture: parent.architecture.clone(),
        format: parent.format.clone(),
        config_json,
        tokenizer_kind: material.tokenizer_kind.clone(),
        tokenizer_material: material.tokenizer_material.clone(),
        parameter_count: kept.iter().map(|(l, _)| l.parameter_count).sum(),
        tensor_count: kept.len() as u64,
    };
    let lineage = ModelLineage { parent: parent.id, derived_by: derived_by.clone() };
    let writer = match store.begin_derived_model(&new_model, &lineage).await? {
        BeginModel::Writer(writer) => writer,
        // Made by someone else since the check above.
        BeginModel::Exists(row) => {
            return Err(StudentError::Usage {
                flag: "--name",
                what: format!("model {} already exists in {}: choose another name or version", row.label(), store.location()),
            })
        }
    };
    let prune = match options.derivation {
        Derivation::Prune(q) => Some(q),
        Derivation::Blocks(_) => None,
    };
    let mut work = Work { store, model: parent_label.clone(), writer, totals: PutAtomsOutcome::default(), pruned: 0, zeroed: 0 };
    let written = work.write_layers(kept, prune).await;
    let Work { writer, totals, pruned, zeroed, .. } = work;
    let (records, reused) = match written {
        Ok(done) => done,
        Err(e) => {
            // The writer's transaction is discarded either way; abort says so explicitly.
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    let root = weights_root(records.iter().map(|(name, root)| (name.as_str(), *root)));
    let mut seal = Sha256::new();
    seal.update(b"hartonomous-derived\0");
    seal.update(parent_root.0);
    seal.update(derived_by.as_bytes());
    let row = writer
        .commit(ModelSeal { weights_root: root, source_file_hash: Hash256(seal.finalize().into()) })
        .await?;
    Ok(StudentReport {
        model: row.label(),
        parent: parent_label,
        derived_by,
        store: store.location().to_string(),
        tensors: row.tensor_count,
        parameters: row.parameter_count,
        pruned_tensors: pruned,
        zeroed_weights: zeroed,
        new_atoms: totals.new,
        reused_atoms: reused,
        bytes_written: totals.bytes_written,
        weights_root: root,
    })
}

/// The configuration key that holds a model's depth.
fn depth_key(parent: &ModelRow, config: &Value) -> Result<String, StudentError> {
    if parent.format == "gguf" {
        let arch = config.get("general.architecture").and_then(Value::as_str).ok_or_else(|| StudentError::Model {
            model: parent.label(),
            what: "its stored GGUF metadata has no general.architecture".into(),
        })?;
        return Ok(format!("{arch}.block_count"));
    }
    Ok("num_hidden_layers".into())
}

/// The block a tensor belongs to, and where its number sits in the name: the number after
/// `layer.` (BERT's `encoder.layer.N.`), `layers.` (Hugging Face Llama's `model.layers.N.`),
/// `blk.` (GGUF) or `h.` (GPT-2). `None` for tensors outside the blocks.
pub fn block_of(name: &str) -> Option<(u32, Range<usize>)> {
    let mut start = 0;
    let mut previous = "";
    let segments: Vec<&str> = name.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        if !is_last
            && matches!(previous, "layer" | "layers" | "blk" | "h")
            && !segment.is_empty()
            && segment.bytes().all(|b| b.is_ascii_digit())
        {
            if let Ok(block) = segment.parse() {
                return Some((block, start..start + segment.len()));
            }
        }
        previous = segment;
        start += segment.len() + 1;
    }
    None
}

/// The writing half of [`create_student`], holding the open writer.
struct Work<'a> {
    store: &'a dyn Store,
    model: String,
    writer: Box<dyn ModelWriter>,
    totals: PutAtomsOutcome,
    pruned: u64,
    zeroed: u64,
}

impl Work<'_> {
    /// Puts every layer (pruned when `prune` is set), renamed and renumbered in order. Returns
    /// (name, tensor root) of each and the references to atoms that were already stored.
    async fn write_layers(
        &mut self,
        kept: Vec<(LayerRow, String)>,
        prune: Option<f64>,
    ) -> Result<(Vec<(String, Hash256)>, u64), StudentError> {
        let mut roots = Vec::with_capacity(kept.len());
        let mut reused = 0u64;
        for (ordinal, (layer, name)) in kept.into_iter().enumerate() {
            let dtype = DType::from_tag(&layer.dtype).ok_or_else(|| StudentError::Model {
                model: self.model.clone(),
                what: format!("layer {} has dtype {:?}, which this build does not know", layer.tensor_name, layer.dtype),
            })?;
            let geometry = if layer.has_geometry { self.store.layer_geometry(layer.id).await? } else { None };
            let prunable = block_of(&layer.tensor_name).is_some() && layer.shape.len() == 2 && !dtype.is_integer();
            let (atoms, tensor_root, geometry) = match prune {
                Some(q) if prunable => {
                    let (atoms, geometry, new) = self.prune_layer(&layer, dtype, q, geometry).await?;
                    reused += atoms.len() as u64 - new;
                    (atoms.clone(), tensor_root(dtype, &layer.shape, &atoms), geometry)
                }
                _ => {
                    reused += layer.atoms.len() as u64;
                    (layer.atoms.iter().map(|a| a.atom).collect(), layer.tensor_root, geometry)
                }
            };
            roots.push((name.clone(), tensor_root));
            let record = LayerRecord {
                ordinal: u32::try_from(ordinal).expect("a model has fewer than 2^32 layers: this is a bug"),
                tensor_name: name,
                dtype,
                shape: layer.shape.clone(),
                byte_length: layer.byte_length,
                tensor_root,
                atoms,
                geometry,
            };
            self.writer.put_layers(vec![record]).await?;
        }
        Ok((roots, reused))
    }

    /// Zeroes the weights of one layer whose importance is below its `q`-quantile, puts the
    /// chunks that changed as new atoms, and returns the layer's atom list, its geometry (redrawn
    /// when the parent had one) and how many of its atom references are new atoms.
    async fn prune_layer(
        &mut self,
        layer: &LayerRow,
        dtype: DType,
        q: f64,
        geometry: Option<Vec<u8>>,
    ) -> Result<(Vec<Hash256>, Option<Vec<u8>>, u64), StudentError> {
        let width = match dtype {
            DType::F32 => 4usize,
            DType::F16 | DType::BF16 => 2,
            other => {
                return Err(StudentError::QuantizedPrune {
                    model: self.model.clone(),
                    tensor: layer.tensor_name.clone(),
                    dtype: other.tag().to_string(),
                })
            }
        };
        let hashes: Vec<Hash256> = layer.atoms.iter().map(|a| a.atom).collect();
        let fetched = self.store.fetch_atoms(&hashes).await?;
        let by_hash: std::collections::HashMap<Hash256, Vec<u8>> = fetched
            .into_iter()
            .map(|a| {
                // Re-hashed before use, as the pager does.
                if a.encoding != dtype.tag() || atom_id(dtype, &a.payload) != a.hash {
                    return Err(StoreError::Damaged {
                        location: self.store.location().to_string(),
                        what: format!("atom {} of {} layer {} does not hash to its id", a.hash, self.model, layer.tensor_name),
                    });
                }
                Ok((a.hash, a.payload))
            })
            .collect::<Result<_, _>>()?;
        let mut bytes = Vec::with_capacity(layer.byte_length as usize);
        let mut cuts = Vec::with_capacity(hashes.len());
        for hash in &hashes {
            let payload = by_hash.get(hash).expect("fetch_atoms returns every atom asked for: this is a bug");
            cuts.push(bytes.len()..bytes.len() + payload.len());
            bytes.extend_from_slice(payload);
        }
        let mut values = vec![0f32; bytes.len() / width];
        dequantize(dtype, &bytes, &mut values)?;

        // Importance as the layer geometry's Z: |w| / max |w| over the tensor.
        let max_abs = values.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
        let importance = |v: f32| if max_abs > 0.0 { f64::from(v).abs() / max_abs } else { 0.0 };
        let mut sorted: Vec<f64> = values.iter().map(|&v| importance(v)).collect();
        // The weights strictly below the k-th smallest importance, k = floor(q·n), are zeroed:
        // q·n of them when importances are distinct.
        let k = ((q * sorted.len() as f64).floor() as usize).min(sorted.len().saturating_sub(1));
        let threshold = if sorted.is_empty() { 0.0 } else { *sorted.select_nth_unstable_by(k, f64::total_cmp).1 };
        drop(sorted);

        let zero = vec![0u8; width];
        let mut changed = vec![false; cuts.len()];
        let mut chunk = 0;
        for (i, v) in values.iter_mut().enumerate() {
            let at = i * width;
            while at >= cuts[chunk].end {
                chunk += 1;
            }
            if importance(*v) < threshold && bytes[at..at + width] != zero[..] {
                bytes[at..at + width].copy_from_slice(&zero);
                *v = 0.0;
                changed[chunk] = true;
                self.zeroed += 1;
            }
        }
        self.pruned += 1;

        let mut atoms = Vec::with_capacity(cuts.len());
        let mut records = Vec::new();
        for ((cut, old), changed) in cuts.iter().zip(&hashes).zip(&changed) {
            if !changed {
                atoms.push(*old);
                continue;
            }
            let payload = bytes[cut.clone()].to_vec();
            let hash = atom_id(dtype, &payload);
            let signature = SpatialSignature::of(&values[cut.start / width..cut.end / width]);
            atoms.push(hash);
            records.push(AtomRecord { hash, encoding: dtype, payload, signature });
        }
        let mut new = 0;
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(PUT_BATCH_ATOMS));
            let outcome = self.writer.put_atoms(std::mem::replace(&mut records, rest)).await?;
            new += outcome.new;
            self.totals += outcome;
        }

        // The parent's geometry, if it had one, redrawn from the pruned values with its stamp.
        let geometry = match geometry {
            Some(wkb) => {
                let stamp = decode_layer(&wkb)?.version_stamp.unwrap_or(0.0);
                let points: Vec<PointZm> = values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| PointZm { x: i as f64, y: f64::from(v), z: importance(v), m: stamp })
                    .collect();
                Some(encode_linestring_zm(&points)?)
            }
            None => None,
        };
        Ok((atoms, geometry, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_are_found_in_every_naming_scheme() {
        assert_eq!(block_of("encoder.layer.11.attention.self.query.weight"), Some((11, 14..16)));
        assert_eq!(block_of("bert.encoder.layer.0.output.dense.bias"), Some((0, 19..20)));
        assert_eq!(block_of("blk.29.ffn_up.weight"), Some((29, 4..6)));
        assert_eq!(block_of("model.layers.3.mlp.up_proj.weight"), Some((3, 13..14)));
        assert_eq!(block_of("embeddings.word_embeddings.weight"), None);
        assert_eq!(block_of("token_embd.weight"), None);
        assert_eq!(block_of("pooler.dense.weight"), None);
    }

    #[test]
    fn block_ranges_parse_and_refuse_nonsense() {
        assert_eq!("0-2".parse(), Ok(BlockRange { first: 0, last: 2 }));
        assert_eq!("4".parse(), Ok(BlockRange { first: 4, last: 4 }));
        assert!("3-1".parse::<BlockRange>().unwrap_err().contains("comes after"));
        assert!("a-b".parse::<BlockRange>().unwrap_err().contains("FIRST-LAST"));
        assert!("-1".parse::<BlockRange>().is_err());
    }
}
