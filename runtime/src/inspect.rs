//! `hartonomous inspect`: what a model file holds and what atomizing it would store: format,
//! architecture, every tensor, parameter and atom counts, bytes after in-model deduplication,
//! and the weights root that lineage will record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hartonomous_loader::atom::{atomize, AtomizeOptions};
use hartonomous_loader::dequant::can_dequantize;
use hartonomous_loader::geometry::GeometryOptions;
use hartonomous_loader::model::{Hyperparameters, TokenizerMaterial};
use hartonomous_loader::{Format, ModelFile};
use serde::Serialize;

use crate::progress::DelayedBar;

/// The report printed by `hartonomous inspect` (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub format: &'static str,
    /// GGUF version; `None` for safetensors.
    pub format_version: Option<u32>,
    pub architecture: String,
    pub name: Option<String>,
    pub hyperparameters: Hyperparameters,
    /// `hugging_face`, `gguf` or `none`.
    pub tokenizer: &'static str,
    pub file_bytes: u64,
    pub tensor_count: usize,
    pub parameter_count: u64,
    /// Tensor data bytes as stored.
    pub tensor_bytes: u64,
    /// Tensor count per dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// Target atom size used.
    pub atom_bytes: u64,
    pub atom_count: usize,
    pub unique_atom_count: usize,
    /// Bytes of distinct atoms: what storing this model alone costs.
    pub unique_atom_bytes: u64,
    /// Tensors small enough (and of a dequantizable dtype) to get LINESTRING ZM geometry by default.
    pub geometry_tensors: usize,
    pub weights_root: String,
    pub tensors: Vec<TensorRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
    pub atoms: usize,
    pub root: String,
}

/// Opens and atomizes `path` (nothing is written anywhere) and builds its report.
pub fn inspect(path: &Path, options: &AtomizeOptions) -> hartonomous_loader::Result<InspectReport> {
    let model = ModelFile::open(path)?;
    let tensor_bytes: u64 = model.tensors().iter().map(|t| t.byte_len).sum();
    let mut bar = DelayedBar::bytes(tensor_bytes, "atomizing");
    let atomized = atomize(&model, options, &mut |atom| {
        bar.advance(atom.bytes.len() as u64);
        Ok(())
    })?;
    bar.finish();

    let (unique_atom_count, unique_atom_bytes) = atomized.unique_atoms();
    let mut dtypes = BTreeMap::new();
    for t in model.tensors() {
        *dtypes.entry(t.dtype.to_string()).or_insert(0) += 1;
    }
    let max_points = GeometryOptions::default().max_points;
    let description = &model.description;
    Ok(InspectReport {
        path: path.display().to_string(),
        format: model.format.name(),
        format_version: match model.format {
            Format::Gguf { version } => Some(version),
            Format::Safetensors => None,
        },
        architecture: description.architecture.clone(),
        name: description.name.clone(),
        hyperparameters: description.hyperparameters.clone(),
        tokenizer: match description.tokenizer {
            TokenizerMaterial::None => "none",
            TokenizerMaterial::HuggingFace { .. } => "hugging_face",
            TokenizerMaterial::Gguf { .. } => "gguf",
        },
        file_bytes: model.file_len(),
        tensor_count: model.tensors().len(),
        parameter_count: model.parameter_count(),
        tensor_bytes,
        dtypes,
        atom_bytes: options.atom_bytes,
        atom_count: atomized.atom_count(),
        unique_atom_count,
        unique_atom_bytes,
        geometry_tensors: model
            .tensors()
            .iter()
            .filter(|t| t.element_count() <= max_points && can_dequantize(t.dtype) && !t.dtype.is_integer())
            .count(),
        weights_root: atomized.weights_root.to_hex(),
        tensors: atomized
            .tensors
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                dtype: t.dtype.to_string(),
                shape: t.shape.clone(),
                bytes: t.byte_len,
                atoms: t.atoms.len(),
                root: t.root.to_hex(),
            })
            .collect(),
    })
}

impl InspectReport {
    /// The human-readable form: a summary, then one line per tensor.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let version = self.format_version.map(|v| format!(" v{v}")).unwrap_or_default();
        let h = &self.hyperparameters;
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        let _ = writeln!(s, "file          {}", self.path);
        let _ = writeln!(s, "format        {}{version}, {} bytes", self.format, self.file_bytes);
        let _ = writeln!(
            s,
            "architecture  {}{}",
            self.architecture,
            self.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "shape         {} layers, hidden {}, {} heads / {} kv heads, ffn {}, vocab {}, context {}",
            opt(h.layers),
            opt(h.hidden_size),
            opt(h.attention_heads),
            opt(h.kv_heads),
            opt(h.ffn_size),
            opt(h.vocab_size),
            opt(h.context_length)
        );
        let _ = writeln!(s, "tokenizer     {}", self.tokenizer);
        let dtypes: Vec<String> = self.dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
        let _ = writeln!(
            s,
            "tensors       {} ({}), {} parameters, {} bytes",
            self.tensor_count,
            dtypes.join(", "),
            group_digits(self.parameter_count),
            self.tensor_bytes
        );
        let _ = writeln!(
            s,
            "atoms         {} of <= {} bytes, {} distinct, {} bytes after in-model dedup ({:.2}% of tensor bytes)",
            self.atom_count,
            self.atom_bytes,
            self.unique_atom_count,
            self.unique_atom_bytes,
            100.0 * self.unique_atom_bytes as f64 / self.tensor_bytes.max(1) as f64
        );
        let _ = writeln!(s, "geometry      {} tensors within the default point limit", self.geometry_tensors);
        let _ = writeln!(s, "weights root  {}", self.weights_root);
        let _ = writeln!(s);
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(s, "{:<width$}  {:<6}  {:<16}  {:>12}  {:>6}", "name", "dtype", "shape", "bytes", "atoms");
        for t in &self.tensors {
            let shape = format!("{:?}", t.shape);
            let _ = writeln!(s, "{:<width$}  {:<6}  {:<16}  {:>12}  {:>6}", t.name, t.dtype, shape, t.bytes, t.atoms);
        }
        s
    }
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_grouped_by_thousands() {
        assert_eq!(super::group_digits(22_713_728), "22,713,728");
        assert_eq!(super::group_digits(999), "999");
        assert_eq!(super::group_digits(1_000), "1,000");
    }
}
