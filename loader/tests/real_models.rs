//! The two real test models, against manifests made independently by
//! `tests/scripts/make_tensor_manifest.py` (gguf-py's reader and the `safetensors` package):
//! tensor names, dtypes, shapes and a SHA-256 of every tensor's stored bytes.
//!
//! Acceptance (issue 2): item 2, every tensor's atoms reassemble to the source bytes; item 5,
//! atomizing is deterministic and a copy with one tensor changed shares every other atom.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hartonomous_loader::atom::{atom_id, atomize, AtomizeOptions};
use hartonomous_loader::geometry::{decode_layer, tensor_geometry, GeometryOptions};
use hartonomous_loader::{AtomizedModel, Hash256, ModelFile};
use sha2::{Digest, Sha256};
use support::{minilm_path, smollm2_path, tensor_manifest, MINILM_MANIFEST, SMOLLM2_MANIFEST};

/// Atomizes `path`, keeping every distinct atom's bytes.
fn atomize_keeping_payloads(path: &Path, options: &AtomizeOptions) -> (AtomizedModel, HashMap<Hash256, Vec<u8>>) {
    let model = ModelFile::open(path).expect("model opens");
    let mut payloads = HashMap::new();
    let atomized = atomize(&model, options, &mut |atom| {
        payloads.entry(atom.id).or_insert_with(|| atom.bytes.to_vec());
        Ok(())
    })
    .expect("model atomizes");
    (atomized, payloads)
}

fn check_against_manifest(path: &Path, manifest_name: &str) {
    let expected = tensor_manifest(manifest_name);
    let model = ModelFile::open(path).expect("model opens");
    assert_eq!(model.tensors().len() as u64, expected.tensor_count);
    assert_eq!(model.parameter_count(), expected.parameter_count);
    let got: Vec<(String, String, Vec<u64>, u64)> = model
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dtype.to_string(), t.shape.clone(), t.byte_len))
        .collect();
    let want: Vec<(String, String, Vec<u64>, u64)> =
        expected.tensors.iter().map(|t| (t.name.clone(), t.dtype.clone(), t.shape.clone(), t.n_bytes)).collect();
    assert_eq!(got, want, "names, dtypes, shapes and sizes in file order");

    let (atomized, payloads) = atomize_keeping_payloads(path, &AtomizeOptions::default());
    for (tensor, want) in atomized.tensors.iter().zip(&expected.tensors) {
        let (name, bytes, sha) = (&want.name, &want.n_bytes, &want.sha256);
        assert_eq!(&tensor.name, name);
        let mut hasher = Sha256::new();
        let mut offset = 0;
        for atom in &tensor.atoms {
            let payload = &payloads[&atom.id];
            assert_eq!(atom.byte_offset, offset, "{name}: atoms are contiguous");
            assert_eq!(atom_id(tensor.dtype, payload), atom.id, "{name}: the payload hashes to its id");
            hasher.update(payload);
            offset += payload.len() as u64;
        }
        assert_eq!(offset, *bytes, "{name}: atoms cover the tensor");
        assert_eq!(hex::encode(hasher.finalize()), *sha, "{name}: reassembled bytes equal the source's");
    }
}

#[test]
fn minilm_atoms_reassemble_to_the_source_bytes() {
    check_against_manifest(&minilm_path(), MINILM_MANIFEST);
}

#[test]
fn smollm2_atoms_reassemble_to_the_source_bytes() {
    check_against_manifest(&smollm2_path(), SMOLLM2_MANIFEST);
}

#[test]
fn atomizing_twice_gives_the_same_atoms_and_weights_root() {
    for path in [minilm_path(), smollm2_path()] {
        let (a, _) = atomize_keeping_payloads(&path, &AtomizeOptions::default());
        let (b, _) = atomize_keeping_payloads(&path, &AtomizeOptions::default());
        assert_eq!(a, b, "{}", path.display());
    }
}

/// Copies `source` to a temporary folder with the first `count` bytes of tensor `name` inverted,
/// returning the copy's path and the byte range that changed (relative to the tensor).
fn copy_with_changed_tensor(source: &Path, name: &str, at: u64, count: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let model = ModelFile::open(source).expect("model opens");
    let tensor = model.tensor(name).expect("tensor exists").clone();
    let mut bytes = std::fs::read(source).expect("read model");
    for b in &mut bytes[(tensor.offset + at) as usize..(tensor.offset + at + count) as usize] {
        *b ^= 0x5A;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("changed.model");
    std::fs::write(&copy, bytes).expect("write copy");
    (dir, copy)
}

fn check_one_tensor_change(source: &Path, name: &str, at: u64, count: u64) {
    let options = AtomizeOptions::default();
    let (original, _) = atomize_keeping_payloads(source, &options);
    let (_dir, copy) = copy_with_changed_tensor(source, name, at, count);
    let (changed, _) = atomize_keeping_payloads(&copy, &options);

    let original_atoms: HashSet<Hash256> = original.tensors.iter().flat_map(|t| t.atoms.iter().map(|a| a.id)).collect();
    let mut new_atoms = 0;
    for (o, c) in original.tensors.iter().zip(&changed.tensors) {
        assert_eq!(o.name, c.name);
        if o.name == name {
            assert_ne!(o.root, c.root, "{name}: the changed tensor gets a new root");
            for (oa, ca) in o.atoms.iter().zip(&c.atoms) {
                let touched = ca.byte_offset < at + count && at < ca.byte_offset + ca.byte_len;
                assert_eq!(oa.id != ca.id, touched, "{name}: atom at {} changes iff it holds changed bytes", ca.byte_offset);
                new_atoms += usize::from(!original_atoms.contains(&ca.id));
            }
        } else {
            assert_eq!(o, c, "{}: untouched tensors keep their atoms and root", o.name);
        }
    }
    let atom_len = AtomizeOptions::default().atom_len(original.tensors.iter().find(|t| t.name == name).expect("t").dtype);
    let expected_new = ((at + count).div_ceil(atom_len) - at / atom_len) as usize;
    assert_eq!(new_atoms, expected_new, "only the atoms holding changed bytes are new");
    assert_ne!(original.weights_root, changed.weights_root);
}

#[test]
fn a_minilm_copy_with_one_tensor_changed_shares_every_other_atom() {
    // 8 bytes straddling the boundary between the first two atoms: exactly two new atoms.
    let atom = AtomizeOptions::default().atom_bytes;
    check_one_tensor_change(&minilm_path(), "encoder.layer.3.intermediate.dense.weight", atom - 4, 8);
}

#[test]
fn a_smollm2_copy_with_one_quantized_tensor_changed_shares_every_other_atom() {
    check_one_tensor_change(&smollm2_path(), "blk.7.ffn_down.weight", 100, 4);
}

#[test]
fn geometry_of_a_real_layer_decodes_to_its_values() {
    let model = ModelFile::open(smollm2_path()).expect("model opens");
    let tensor = model.tensor("blk.0.attn_k.weight").expect("tensor").clone();
    let options = GeometryOptions { version_stamp: 7.0, ..GeometryOptions::default() };
    let wkb = tensor_geometry(&model, &tensor, &options).expect("reads").expect("small enough");
    assert_eq!(wkb.len(), 9 + 32 * tensor.element_count() as usize);
    let layer = decode_layer(&wkb).expect("decodes");
    assert_eq!(layer.version_stamp, Some(7.0));

    let mut bytes = vec![0; tensor.byte_len as usize];
    model.read_tensor_bytes(&tensor, 0, &mut bytes).expect("reads");
    let mut values = vec![f32::NAN; tensor.element_count() as usize];
    hartonomous_loader::dequant::dequantize(tensor.dtype, &bytes, &mut values).expect("dequantizes");
    let max_abs = values.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    for (i, &v) in values.iter().enumerate() {
        assert_eq!(layer.values[i], f64::from(v), "value {i}");
        assert_eq!(layer.importance[i], f64::from(v).abs() / max_abs, "importance {i}");
    }
    assert!(layer.importance.iter().any(|&z| z == 1.0), "the largest weight has importance 1");

    let embeddings = model.tensor("token_embd.weight").expect("tensor").clone();
    assert!(tensor_geometry(&model, &embeddings, &options).expect("reads").is_none(), "28 M points exceed the default limit");
}

#[test]
fn descriptions_carry_what_the_runtime_needs() {
    use hartonomous_loader::model::TokenizerMaterial;
    let minilm = ModelFile::open(minilm_path()).expect("opens");
    let d = &minilm.description;
    assert_eq!((d.format.as_str(), d.architecture.as_str()), ("safetensors", "bert"));
    assert_eq!(d.config["layer_norm_eps"], 1e-12);
    assert_eq!(d.config["hidden_act"], "gelu");
    let TokenizerMaterial::HuggingFace { tokenizer_json } = &d.tokenizer else { panic!("tokenizer.json expected") };
    let tokenizer: serde_json::Value = serde_json::from_str(tokenizer_json).expect("JSON");
    assert_eq!(tokenizer["model"]["type"], "WordPiece");
    let pooling: serde_json::Value = serde_json::from_str(&d.companions["1_Pooling/config.json"]).expect("JSON");
    assert_eq!(pooling["pooling_mode_mean_tokens"], true);
    assert!(d.companions["sentence_bert_config.json"].contains("256"), "max_seq_length is kept");

    let smol = ModelFile::open(smollm2_path()).expect("opens");
    let d = &smol.description;
    assert_eq!((d.format.as_str(), d.architecture.as_str()), ("gguf", "llama"));
    let h = &d.hyperparameters;
    assert_eq!((h.layers, h.hidden_size, h.ffn_size, h.context_length), (Some(30), Some(576), Some(1536), Some(8192)));
    assert_eq!((h.attention_heads, h.kv_heads, h.rope_base, h.norm_eps), (Some(9), Some(3), Some(1e5), Some(f64::from(1e-5f32))));
    let TokenizerMaterial::Gguf { metadata } = &d.tokenizer else { panic!("GGUF tokenizer expected") };
    assert_eq!(metadata["tokenizer.ggml.model"], "gpt2");
    assert_eq!(metadata["tokenizer.ggml.pre"], "smollm");
    assert_eq!(metadata["tokenizer.ggml.tokens"].as_array().map(Vec::len), Some(49_152));
    assert_eq!(metadata["tokenizer.ggml.merges"].as_array().map(Vec::len), Some(48_900));
    assert_eq!((metadata["tokenizer.ggml.bos_token_id"].clone(), metadata["tokenizer.ggml.eos_token_id"].clone()), (1.into(), 2.into()));
    assert!(metadata["tokenizer.chat_template"].as_str().is_some_and(|t| t.contains("<|im_start|>")), "ChatML template kept");
    assert!(d.config.get("tokenizer.ggml.tokens").is_none(), "tokenizer keys are not duplicated into config");
    // The whole description survives JSON, which is how the store keeps it.
    let json = serde_json::to_string(d).expect("serialises");
    assert_eq!(&serde_json::from_str::<hartonomous_loader::ModelDescription>(&json).expect("parses"), d);
}
