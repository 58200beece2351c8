//! An opened model file: its format (detected from content, never from the extension), its
//! tensors, and its description (architecture, hyper-parameters, tokenizer material), which is
//! everything the runtime needs besides the weights, so that later it needs nothing but the store.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::{self, GgufHeader, GgufValue};
use crate::safetensors::{self, SafetensorsHeader};
use crate::source::{read_range, ByteSource, FileSource};
use crate::DType;

/// One tensor as stored in a model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major, outermost dimension first (GGUF's innermost-first dims are reversed).
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub byte_len: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        // Checked when the header was parsed.
        self.shape.iter().product()
    }
}

/// The container format of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Safetensors,
    Gguf { version: u32 },
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf { .. } => "gguf",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Safetensors => f.write_str("safetensors"),
            Format::Gguf { version } => write!(f, "GGUF v{version}"),
        }
    }
}

/// Identifies the format from the first bytes of `source`.
pub fn detect_format(source: &dyn ByteSource) -> Result<Format> {
    let mut first = [0u8; 16];
    let n = (source.len() as usize).min(first.len());
    read_range(source, 0, &mut first[..n], || "file magic".into())?;
    let first = &first[..n];
    if first.starts_with(&gguf::MAGIC) {
        let version = first
            .get(4..8)
            .map(|v| u32::from_le_bytes(v.try_into().expect("4 bytes")))
            .unwrap_or(0);
        return Ok(Format::Gguf { version });
    }
    if safetensors::looks_like(first) {
        return Ok(Format::Safetensors);
    }
    let hint = if first.starts_with(b"PK\x03\x04") {
        ": this is a zip archive, perhaps a PyTorch checkpoint; convert it to safetensors"
    } else if first.starts_with(&[0x80, 0x02]) || first.starts_with(&[0x80, 0x04]) {
        ": this looks like a Python pickle; convert it to safetensors"
    } else if ["lmgg", "fmgg", "tjgg"].iter().any(|m| first.starts_with(m.as_bytes())) {
        ": this is a legacy GGML/GGJT file; re-convert it to GGUF with llama.cpp"
    } else {
        ""
    };
    let found = if first.is_empty() {
        "the file is empty".to_string()
    } else {
        format!("first bytes {}", hex::encode(first))
    };
    Err(Error::UnknownFormat {
        path: source.path().to_path_buf(),
        found,
        hint: hint.into(),
    })
}

/// Fails if any two tensors' byte ranges overlap. `tensors` need not be sorted.
pub(crate) fn check_no_overlap(path: &Path, tensors: &[TensorInfo]) -> Result<()> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.byte_len > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.byte_len > b.offset {
            return Err(Error::OverlappingData {
                path: path.to_path_buf(),
                first: a.name.clone(),
                first_start: a.offset,
                first_end: a.offset + a.byte_len,
                second: b.name.clone(),
                second_start: b.offset,
                second_end: b.offset + b.byte_len,
            });
        }
    }
    Ok(())
}

/// Format-specific header data kept beside the tensors.
#[derive(Debug, Clone)]
pub enum Header {
    Safetensors(SafetensorsHeader),
    Gguf(GgufHeader),
}

/// Hyper-parameters common to the transformer families we run, read once from `config.json` or
/// GGUF metadata; `None` where the source does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub attention_heads: Option<u64>,
    pub kv_heads: Option<u64>,
    pub ffn_size: Option<u64>,
    pub vocab_size: Option<u64>,
    pub context_length: Option<u64>,
    pub norm_eps: Option<f64>,
    pub rope_base: Option<f64>,
}

/// How a model's text is turned into token ids, kept verbatim from the model's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenizerMaterial {
    /// No tokenizer was found beside the weights.
    None,
    /// A Hugging Face `tokenizer.json`, verbatim.
    HuggingFace { tokenizer_json: String },
    /// The `tokenizer.*` metadata of a GGUF file (tokens, merges, token types, pre-tokenizer,
    /// special ids, chat template), as JSON.
    Gguf { metadata: serde_json::Map<String, serde_json::Value> },
}

/// Everything about a model except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    /// `safetensors` or `gguf`.
    pub format: String,
    /// The architecture family, e.g. `bert` or `llama` (`unknown` when nothing says).
    pub architecture: String,
    /// A name from the model's own metadata, if any.
    pub name: Option<String>,
    pub hyperparameters: Hyperparameters,
    /// `config.json` verbatim, or the GGUF metadata without the `tokenizer.*` keys.
    pub config: serde_json::Value,
    pub tokenizer: TokenizerMaterial,
    /// Small text files that travel with a safetensors model (pooling config, tokenizer config,
    /// vocab), by path relative to the model's folder.
    pub companions: BTreeMap<String, String>,
}

/// Files kept beside a safetensors model, relative to its folder. `1_Pooling/config.json` and
/// `sentence_bert_config.json` carry sentence-transformers' pooling and maximum length.
pub const COMPANION_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "generation_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Companion files larger than this are refused: they are configuration, not data.
pub const MAX_COMPANION_BYTES: u64 = 64 * 1024 * 1024;

/// An opened model file. Holds the parsed header and a handle; tensor data is read on demand.
pub struct ModelFile {
    source: Box<dyn ByteSource>,
    pub format: Format,
    pub header: Header,
    pub description: ModelDescription,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile")
            .field("path", &self.source.path())
            .field("format", &self.format)
            .field("tensors", &self.tensors().len())
            .finish()
    }
}

impl ModelFile {
    /// Opens a model file and reads its description, including companion files in its folder.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = FileSource::open(path)?;
        let folder = path.parent().map(Path::to_path_buf);
        Self::from_source(Box::new(source), folder.as_deref())
    }

    /// Parses a model from any byte source; companion files are looked for in `folder`.
    pub fn from_source(source: Box<dyn ByteSource>, folder: Option<&Path>) -> Result<Self> {
        let format = detect_format(source.as_ref())?;
        let header = match format {
            Format::Safetensors => Header::Safetensors(safetensors::parse(source.as_ref())?),
            Format::Gguf { .. } => Header::Gguf(gguf::parse(source.as_ref())?),
        };
        let description = match &header {
            Header::Safetensors(h) => describe_safetensors(h, folder)?,
            Header::Gguf(h) => describe_gguf(h),
        };
        Ok(Self {
            source,
            format,
            header,
            description,
        })
    }

    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.source.len()
    }

    /// Tensors in file (data) order.
    pub fn tensors(&self) -> &[TensorInfo] {
        match &self.header {
            Header::Safetensors(h) => &h.tensors,
            Header::Gguf(h) => &h.tensors,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors().iter().find(|t| t.name == name)
    }

    /// Total elements over all tensors (integer tensors included).
    pub fn parameter_count(&self) -> u64 {
        self.tensors().iter().map(TensorInfo::element_count).sum()
    }

    /// Reads `buf.len()` bytes of `tensor` starting `offset` bytes into its data.
    pub fn read_tensor_bytes(&self, tensor: &TensorInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > tensor.byte_len) || tensor.offset.checked_add(tensor.byte_len).is_none() {
            return Err(Error::InvalidOption(format!(
                "read of {} bytes at {offset} is outside tensor `{}` ({} bytes)",
                buf.len(),
                tensor.name,
                tensor.byte_len
            )));
        }
        read_range(self.source.as_ref(), tensor.offset + offset, buf, || {
            format!("data of tensor `{}`", tensor.name)
        })
    }
}

fn describe_safetensors(header: &SafetensorsHeader, folder: Option<&Path>) -> Result<ModelDescription> {
    let mut companions = BTreeMap::new();
    if let Some(folder) = folder {
        for rel in COMPANION_FILES {
            let path = folder.join(rel);
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_COMPANION_BYTES {
                return Err(Error::Companion {
                    path,
                    reason: format!(
                        "{} bytes is more than the {MAX_COMPANION_BYTES} allowed for a configuration file",
                        meta.len()
                    ),
                });
            }
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
                path: path.clone(),
                what: "companion file".into(),
                offset: e.utf8_error().valid_up_to() as u64,
            })?;
            companions.insert(rel.to_string(), text);
        }
    }
    let config: serde_json::Value = match companions.get("config.json") {
        Some(text) => serde_json::from_str(text).map_err(|e| Error::Companion {
            path: folder.map(|f| f.join("config.json")).unwrap_or_default(),
            reason: format!("not valid JSON: {e}"),
        })?,
        None => serde_json::Value::Null,
    };
    let tokenizer = match companions.remove("tokenizer.json") {
        Some(tokenizer_json) => TokenizerMaterial::HuggingFace { tokenizer_json },
        None => TokenizerMaterial::None,
    };
    let u = |key: &str| config.get(key).and_then(serde_json::Value::as_u64);
    let f = |key: &str| config.get(key).and_then(serde_json::Value::as_f64);
    let architecture = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .or_else(|| config.pointer("/architectures/0").and_then(|v| v.as_str()))
        .unwrap_or("unknown")
        .to_string();
    let hyperparameters = Hyperparameters {
        layers: u("num_hidden_layers"),
        hidden_size: u("hidden_size"),
        attention_heads: u("num_attention_heads"),
        kv_heads: u("num_key_value_heads").or(u("num_attention_heads")),
        ffn_size: u("intermediate_size"),
        vocab_size: u("vocab_size"),
        context_length: u("max_position_embeddings"),
        norm_eps: f("layer_norm_eps").or(f("rms_norm_eps")),
        rope_base: f("rope_theta"),
    };
    let name = header
        .metadata
        .get("name")
        .cloned()
        .or_else(|| config.get("_name_or_path").and_then(|v| v.as_str()).map(str::to_string));
    Ok(ModelDescription {
        format: "safetensors".into(),
        architecture,
        name,
        hyperparameters,
        config,
        tokenizer,
        companions,
    })
}

fn describe_gguf(header: &GgufHeader) -> ModelDescription {
    let architecture = header
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .unwrap_or("unknown")
        .to_string();
    let arch_u = |key: &str| {
        header
            .get(&format!("{architecture}.{key}"))
            .and_then(GgufValue::as_u64)
    };
    let arch_f = |key: &str| {
        header
            .get(&format!("{architecture}.{key}"))
            .and_then(GgufValue::as_f64)
    };
    let vocab_size = arch_u("vocab_size").or_else(|| match header.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(tokens)) => Some(tokens.len() as u64),
        _ => None,
    });
    let hyperparameters = Hyperparameters {
        layers: arch_u("block_count"),
        hidden_size: arch_u("embedding_length"),
        attention_heads: arch_u("attention.head_count"),
        kv_heads: arch_u("attention.head_count_kv").or(arch_u("attention.head_count")),
        ffn_size: arch_u("feed_forward_length"),
        vocab_size,
        context_length: arch_u("context_length"),
        norm_eps: arch_f("attention.layer_norm_rms_epsilon").or(arch_f("attention.layer_norm_epsilon")),
        rope_base: arch_f("rope.freq_base"),
    };
    let mut config = serde_json::Map::new();
    let mut tokenizer = serde_json::Map::new();
    for (key, value) in &header.metadata {
        let target = if key.starts_with("tokenizer.") { &mut tokenizer } else { &mut config };
        target.insert(key.clone(), value.to_json());
    }
    ModelDescription {
        format: "gguf".into(),
        architecture,
        name: header.get("general.name").and_then(GgufValue::as_str).map(str::to_string),
        hyperparameters,
        config: serde_json::Value::Object(config),
        tokenizer: if tokenizer.is_empty() {
            TokenizerMaterial::None
        } else {
            TokenizerMaterial::Gguf { metadata: tokenizer }
        },
        companions: BTreeMap::new(),
    }
}
