//! Acceptance (issue 4): items 1 (both models into a fresh SQLite store: summary, `verify`
//! clean, `models` lists both), 2 (re-ingest writes nothing; a copy with one tensor changed adds
//! exactly that tensor's atoms), 4 (`rm` frees exactly the atoms no other model uses) and
//! `verify` reporting damage precisely, all through the `hartonomous` binary.
//!
//! Expected numbers come from the manifests of `tests/scripts/make_tensor_manifest.py` (tensor
//! counts, byte sizes, a SHA-256 per tensor), never from the code under test; the store is read
//! back with plain SQL.

mod support;

use support::*;

const MINILM: &str = "all-MiniLM-L6-v2";
const SMOLLM2: &str = "SmolLM2-135M-Instruct";
/// The tensor changed in the edited copy: 384 x 384 F32 = 589,824 bytes = 9 atoms of 64 KiB.
const EDITED_TENSOR: &str = "encoder.layer.0.attention.self.query.weight";

#[test]
fn both_models_ingest_verify_list_and_reingest_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let (minilm, smollm2) = (tensor_manifest(MINILM_MANIFEST), tensor_manifest(SMOLLM2_MANIFEST));

    // The human summary, for MiniLM.
    let text = run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);
    assert!(text.starts_with(&format!("ingested {MINILM}:1 from ")), "{text}");
    for line in [
        format!("tensors       {} (", minilm.tensor_count),
        format!("atoms         {}: {} new, 0 reused (0.0%)", minilm.atoms(), minilm.atoms()),
        format!("bytes         {} written of {} tensor bytes (dedup ratio 1.00x)", minilm.tensor_bytes(), minilm.tensor_bytes()),
        "weights root  ".to_string(),
        "MB/s".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    // The same summary as JSON, for SmolLM2.
    let r = ingest_json(&db, &smollm2_path(), SMOLLM2);
    assert_eq!(r["outcome"], "ingested");
    assert_eq!(r["model"], format!("{SMOLLM2}:1"));
    assert_eq!(r["tensors"], smollm2.tensor_count);
    assert_eq!(r["atoms"], smollm2.atoms());
    assert_eq!(r["new_atoms"], smollm2.atoms(), "SmolLM2 shares no atom with MiniLM and repeats none");
    assert_eq!(r["bytes_written"], smollm2.tensor_bytes());
    // F32 norms of SmolLM2 (576 elements) get geometry by default; the Q4_1/Q8_0 matrices do not.
    let norms = smollm2.tensors.iter().filter(|t| t.dtype == "F32").count();
    assert_eq!(r["geometry_layers"], norms as u64);

    let verify = run_ok(&["verify", "--db", s(&db)]);
    let layers = minilm.tensor_count + smollm2.tensor_count;
    let atoms = minilm.atoms() + smollm2.atoms();
    assert!(verify.contains(&format!("verified 2 models, {layers} layers, {atoms} atoms")), "{verify}");
    assert!(verify.trim_end().ends_with(": clean"), "{verify}");

    let models: serde_json::Value = serde_json::from_str(&run_ok(&["models", "--json", "--db", s(&db)])).expect("JSON");
    let listed: Vec<(String, u64, u64, String)> = models
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_string(),
                m["tensor_count"].as_u64().expect("tensors"),
                m["parameter_count"].as_u64().expect("parameters"),
                m["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (SMOLLM2.to_string(), smollm2.tensor_count, smollm2.parameter_count, "ready".into()),
            (MINILM.to_string(), minilm.tensor_count, minilm.parameter_count, "ready".into()),
        ]
    );
    let table = run_ok(&["models", "--db", s(&db)]);
    assert!(table.contains(&format!("{MINILM}:1")) && table.contains(&format!("{SMOLLM2}:1")), "{table}");

    // Read back with plain SQL: every tensor reassembles, byte for byte, to the manifest's SHA-256.
    let conn = raw(&db);
    for (name, manifest) in [(MINILM, &minilm), (SMOLLM2, &smollm2)] {
        let stored = stored_tensor_hashes(&conn, name);
        let expected: Vec<(String, String)> = manifest.tensors.iter().map(|t| (t.name.clone(), t.sha256.clone())).collect();
        assert_eq!(stored, expected, "{name}: tensors reassembled from the store");
    }
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtoms") as u64, atoms);
    assert_eq!(count(&conn, "SELECT SUM(ByteLength) FROM TensorAtoms") as u64, minilm.tensor_bytes() + smollm2.tensor_bytes());
    assert_eq!(count(&conn, "SELECT SUM(ReferenceCount) FROM TensorAtoms") as u64, atoms);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtomCoefficients") as u64, atoms);

    // Re-ingest: already present, 100% reused, nothing written.
    for (path, name, manifest) in [(minilm_path(), MINILM, &minilm), (smollm2_path(), SMOLLM2, &smollm2)] {
        let r = ingest_json(&db, &path, name);
        assert_eq!(r["outcome"], "already_present", "{r}");
        assert_eq!((r["new_atoms"].as_u64(), r["reused_atoms"].as_u64()), (Some(0), Some(manifest.atoms())), "{r}");
        assert_eq!(r["bytes_written"], 0);
    }
    let text = run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);
    assert!(text.contains("already in") && text.contains(": 0 new, ") && text.contains("(100.0%)"), "{text}");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtoms") as u64, atoms);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM Models"), 2);

    // Same name and version, other weights: refused with advice.
    let out = hartonomous(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", MINILM]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already holds other weights") && stderr.contains("--version"), "{stderr}");
}

#[test]
fn a_changed_tensor_adds_only_its_atoms_and_rm_frees_exactly_the_unshared() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let minilm = tensor_manifest(MINILM_MANIFEST);
    let edited = dir.path().join("model.safetensors");
    write_with_tensor_changed(&minilm_path(), &edited, EDITED_TENSOR, 4);
    let changed = tensor_atoms(minilm.tensor(EDITED_TENSOR));
    let changed_bytes = minilm.tensor(EDITED_TENSOR).n_bytes;
    assert_eq!((changed, changed_bytes), (9, 589_824), "the manifest says 384 x 384 F32");

    let first = ingest_json(&db, &minilm_path(), MINILM);
    assert_eq!(first["new_atoms"], minilm.atoms());
    let r = ingest_json(&db, &edited, "minilm-edited");
    assert_eq!(r["outcome"], "ingested");
    assert_eq!(r["new_atoms"], changed, "only the changed tensor's atoms are new: {r}");
    assert_eq!(r["reused_atoms"], minilm.atoms() - changed);
    assert_eq!(r["bytes_written"], changed_bytes);
    assert_ne!(r["weights_root"], first["weights_root"]);
    assert!(run_ok(&["verify", "--db", s(&db)]).contains(": clean"));

    let conn = raw(&db);
    let atoms = |conn: &rusqlite::Connection| count(conn, "SELECT COUNT(*) FROM TensorAtoms") as u64;
    assert_eq!(atoms(&conn), minilm.atoms() + changed);
    assert_eq!(count(&conn, "SELECT SUM(ReferenceCount) FROM TensorAtoms") as u64, 2 * minilm.atoms());

    // Removing the original frees exactly its version of the changed tensor.
    let out = run_ok(&["rm", "--db", s(&db), &format!("{MINILM}:1")]);
    assert!(
        out.contains(&format!("freed {changed} atoms ({changed_bytes} bytes); {} atoms kept", minilm.atoms() - changed)),
        "{out}"
    );
    assert!(run_ok(&["verify", "--db", s(&db)]).contains("verified 1 models"));
    assert_eq!(atoms(&conn), minilm.atoms());
    let kept = stored_tensor_hashes(&conn, "minilm-edited");
    for (name, sha) in kept.iter().filter(|(n, _)| n != EDITED_TENSOR) {
        assert_eq!(sha, &minilm.tensor(name).sha256, "{name} survives the removal of the other model intact");
    }

    // Removing the last model frees everything.
    let out = run_ok(&["rm", "--db", s(&db), "minilm-edited"]);
    assert!(out.contains(&format!("freed {} atoms", minilm.atoms())), "{out}");
    assert_eq!(atoms(&conn), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtomCoefficients"), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM ModelLayers"), 0);
    assert!(run_ok(&["models", "--db", s(&db)]).contains("no models stored"));

    let out = hartonomous(&["rm", "--db", s(&db), "minilm-edited"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model minilm-edited"));
}

#[test]
fn verify_reports_each_damage_precisely_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    ingest_json(&db, &minilm_path(), MINILM);
    let conn = raw(&db);
    let atom_of = |tensor: &str, ordinal: i64| -> (i64, String) {
        conn.query_row(
            "SELECT a.AtomId, hex(a.ContentHash) FROM TensorAtoms a \
             JOIN TensorAtomCoefficients c ON c.AtomId = a.AtomId JOIN ModelLayers l ON l.LayerId = c.LayerId \
             WHERE l.TensorName = ?1 AND c.Ordinal = ?2",
            rusqlite::params![tensor, ordinal],
            |r| Ok((r.get(0)?, r.get::<_, String>(1)?.to_lowercase())),
        )
        .expect("atom")
    };

    // 1. One flipped bit in a payload of the word embeddings.
    let (flipped, flipped_hex) = atom_of("embeddings.word_embeddings.weight", 3);
    let mut payload: Vec<u8> = conn.query_row("SELECT Payload FROM TensorAtoms WHERE AtomId = ?1", [flipped], |r| r.get(0)).expect("payload");
    payload[100] ^= 0x10;
    conn.execute("UPDATE TensorAtoms SET Payload = ?2 WHERE AtomId = ?1", rusqlite::params![flipped, payload]).expect("corrupt");
    // 2. A reference count off by one.
    let (miscounted, miscounted_hex) = atom_of("encoder.layer.2.output.dense.weight", 0);
    conn.execute("UPDATE TensorAtoms SET ReferenceCount = ReferenceCount + 1 WHERE AtomId = ?1", [miscounted]).expect("miscount");
    // 3. Two atoms of a layer swapped: every atom is intact but the layer is wrong.
    let swapped_layer = "encoder.layer.5.intermediate.dense.weight";
    let ((a0, _), (a1, _)) = (atom_of(swapped_layer, 0), atom_of(swapped_layer, 1));
    conn.execute(
        "UPDATE TensorAtomCoefficients SET AtomId = CASE Ordinal WHEN 0 THEN ?2 ELSE ?1 END \
         WHERE Ordinal IN (0, 1) AND LayerId = (SELECT LayerId FROM ModelLayers WHERE TensorName = ?3)",
        rusqlite::params![a0, a1, swapped_layer],
    )
    .expect("swap");
    // 4. An orphan: a valid atom that no layer uses.
    let orphan_payload = [0u8; 64];
    let orphan_id = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"F32\0");
        h.update(orphan_payload);
        h.finalize().to_vec()
    };
    conn.execute(
        "INSERT INTO TensorAtoms (ContentHash, Encoding, ByteLength, ReferenceCount, Payload) VALUES (?1, 'F32', 64, 0, ?2)",
        rusqlite::params![orphan_id, &orphan_payload[..]],
    )
    .expect("orphan");

    let out = hartonomous(&["verify", "--db", s(&db)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "damage gives exit status 2:\n{stdout}");
    let damage: Vec<&str> = stdout.lines().filter(|l| l.starts_with("DAMAGE ")).collect();
    assert_eq!(damage.len(), 4, "exactly the four injected problems:\n{stdout}");
    let find = |needle: &str| damage.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{stdout}"));
    let hash_line = find(&flipped_hex);
    assert!(
        hash_line.contains("payload hashes to") && hash_line.contains(&format!("{MINILM}:1 layer embeddings.word_embeddings.weight (atom 3)")),
        "{hash_line}"
    );
    let count_line = find(&miscounted_hex);
    assert!(count_line.contains("ReferenceCount 2 but 1 coefficient rows reference it"), "{count_line}");
    let layer_line = find(swapped_layer);
    assert!(layer_line.contains("reassemble tensor root") && layer_line.contains(&format!("{MINILM}:1")), "{layer_line}");
    let orphan_line = find(&hex::encode(&orphan_id));
    assert!(orphan_line.contains("orphan"), "{orphan_line}");
    assert!(stdout.contains(": 4 problems found"), "{stdout}");

    // Scoped to the model: the same damage except the orphan, which belongs to no model.
    let out = hartonomous(&["verify", "--db", s(&db), MINILM]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("DAMAGE ")).count(), 3, "{stdout}");
}

#[test]
fn a_missing_file_is_one_clear_error_naming_the_file_and_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("h.db");
    let missing = dir.path().join("no-such-model.gguf");
    let out = hartonomous(&["ingest", s(&missing), "--db", s(&db)]);
    assert!(!out.status.success(), "ingest of a missing file must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(s(&missing)), "the error names the file: {stderr}");
    // The loader's error already names the OS cause; the chain must not print it a second time.
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "cause printed once: {stderr}");
}
