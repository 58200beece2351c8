//! `hartonomous student` end to end, through the real binary on a temporary SQLite store with
//! all-MiniLM-L6-v2 ingested. What the command wrote is read back with plain SQL (rusqlite, not
//! the store's code), and the expectations are worked out here from the parent's stored atoms:
//! - a 3-block student writes no atom payload, names only the parent's atoms and adds one
//!   reference per use;
//! - it serves: loaded as the daemon loads a BERT model, its embeddings match the float64
//!   reference of MiniLM cut to 3 layers (`tests/fixtures/models/minilm_student3_embeddings.json`,
//!   made by `tests/scripts/make_student_reference.py`), before and after its parent is removed;
//! - its lineage names the parent (`models` and SQL), and removing either model keeps the other;
//! - pruning writes new atoms exactly for the chunks holding a weight under the quantile;
//! - bad options fail naming the option, and write nothing.

mod support;

/// The kernels' tolerance helper (`assert_close`), which explains a failure.
#[path = "../../kernels/tests/common/mod.rs"]
mod kernel_common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hartonomous_kernels::Gpu;
use hartonomous_runtime::models::bert::{BertConfig, BertEncoder, BertTokenizer};
use hartonomous_runtime::pager::{Pager, WeightsSource};
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::Store;
use serde_json::Value;
use support::*;

const PARENT: &str = "all-MiniLM-L6-v2";
const STUDENT: &str = "minilm-3";

/// Model-level acceptance, as for the parent in `serve_embeddings.rs`.
const MIN_COSINE: f64 = 0.9999;

struct Stored {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

fn stored_minilm() -> Stored {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", PARENT]);
    Stored { _dir: dir, db }
}

/// (rows, summed ByteLength, summed payload length) of TensorAtoms.
fn atom_totals(conn: &rusqlite::Connection) -> (i64, i64, i64) {
    conn.query_row("SELECT COUNT(*), COALESCE(SUM(ByteLength), 0), COALESCE(SUM(length(Payload)), 0) FROM TensorAtoms", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .expect("atom totals")
}

fn reference_counts(conn: &rusqlite::Connection) -> HashMap<i64, i64> {
    let mut st = conn.prepare("SELECT AtomId, ReferenceCount FROM TensorAtoms").expect("prepare");
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// (tensor name, shape, atom ids in order) of every layer of a model, in ordinal order.
fn layers_of(conn: &rusqlite::Connection, model: &str) -> Vec<(String, Vec<u64>, Vec<i64>)> {
    let mut st = conn
        .prepare(
            "SELECT l.LayerId, l.TensorName, l.Shape FROM ModelLayers l JOIN Models m ON m.ModelId = l.ModelId \
             WHERE m.Name = ?1 ORDER BY l.Ordinal",
        )
        .expect("prepare");
    let layers: Vec<(i64, String, String)> =
        st.query_map([model], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows");
    let mut atoms = conn.prepare("SELECT AtomId FROM TensorAtomCoefficients WHERE LayerId = ?1 ORDER BY Ordinal").expect("prepare");
    layers
        .into_iter()
        .map(|(id, name, shape)| {
            let ids = atoms.query_map([id], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
            (name, serde_json::from_str(&shape).expect("shape JSON"), ids)
        })
        .collect()
}

fn payload(conn: &rusqlite::Connection, atom: i64) -> Vec<u8> {
    conn.query_row("SELECT Payload FROM TensorAtoms WHERE AtomId = ?1", [atom], |r| r.get(0)).expect("payload")
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// The block of a BERT tensor name, read here independently of the command's parser.
fn bert_block(name: &str) -> Option<u32> {
    name.strip_prefix("encoder.layer.")?.split('.').next()?.parse().ok()
}

#[test]
fn a_three_block_student_writes_no_payload_and_references_only_its_parents_atoms() {
    let stored = stored_minilm();
    let conn = raw(&stored.db);
    let before = atom_totals(&conn);
    let counts_before = reference_counts(&conn);
    let parent_layers = layers_of(&conn, PARENT);
    let parent_atoms: HashSet<i64> = parent_layers.iter().flat_map(|(_, _, a)| a.iter().copied()).collect();

    let out = run_ok(&["student", "--db", s(&stored.db), "--from", PARENT, "--name", STUDENT, "--layers", "0-2"]);
    assert!(out.contains(&format!("made {STUDENT}:1 from {PARENT}:1")), "{out}");

    assert_eq!(atom_totals(&conn), before, "TensorAtoms (rows, ByteLength, payload bytes) unchanged by the student");
    let student_layers = layers_of(&conn, STUDENT);
    // The parent's tensors outside blocks 3-5, in the parent's order (104 - 3 × 16 = 56).
    let expected: Vec<&(String, Vec<u64>, Vec<i64>)> =
        parent_layers.iter().filter(|(name, ..)| bert_block(name).is_none_or(|b| b <= 2)).collect();
    assert_eq!(student_layers.len(), 56);
    assert_eq!(student_layers.len(), expected.len());
    for (got, want) in student_layers.iter().zip(&expected) {
        assert_eq!(got, *want, "student layer {} is the parent's, same atoms in the same order", got.0);
    }
    let mut uses: HashMap<i64, i64> = HashMap::new();
    for (_, _, atoms) in &student_layers {
        for atom in atoms {
            assert!(parent_atoms.contains(atom), "student atom {atom} is not one of the parent's");
            *uses.entry(*atom).or_default() += 1;
        }
    }
    let counts_after = reference_counts(&conn);
    for (atom, before) in &counts_before {
        let added = uses.get(atom).copied().unwrap_or(0);
        assert_eq!(counts_after[atom], before + added, "atom {atom}: one more reference per use by the student");
    }
    assert!(uses.values().all(|&n| n == 1), "MiniLM's blocks 0-2 use each atom once");

    let config: String = conn
        .query_row("SELECT ConfigJson FROM Models WHERE Name = ?1", [STUDENT], |r| r.get(0))
        .expect("student config");
    let config: Value = serde_json::from_str(&config).expect("config JSON");
    assert_eq!(config["num_hidden_layers"], 3);
    assert_eq!(config["hidden_size"], 384, "the rest of config.json is the parent's");
    assert!(config["companions"]["1_Pooling/config.json"].is_object(), "companions kept");

    assert!(run_ok(&["verify", "--db", s(&stored.db)]).contains("clean"));

    // Removing the student frees nothing the parent uses and gives back its references.
    let rm = run_ok(&["rm", "--db", s(&stored.db), STUDENT]);
    assert!(rm.contains("freed 0 atoms (0 bytes)"), "{rm}");
    assert_eq!(atom_totals(&conn), before);
    assert_eq!(reference_counts(&conn), counts_before);
}

/// Loads a stored BERT model as the daemon does (`serve::load_model`) and embeds `texts`.
fn embed(db: &Path, model: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store: Arc<dyn Store> = Arc::new(runtime.block_on(SqliteStore::open(db, false)).expect("store"));
    let (row, material, layers) = runtime.block_on(async {
        let row = store.model(model, None).await.expect("query").expect("model");
        let material = store.model_material(row.id).await.expect("query").expect("material");
        let layers = store.layers(row.id).await.expect("layers");
        (row, material, layers)
    });
    let label = row.label();
    let config = BertConfig::from_json(&label, &material.config_json).expect("config");
    let tokenizer = BertTokenizer::new(&label, &material, &config).expect("tokenizer");
    let encoder = BertEncoder::new(&label, config, layers).expect("encoder");
    let gpu = Arc::new(Gpu::new().expect("an adapter (scripts/test.sh installs lavapipe where there is none)"));
    let mut pager = Pager::new(gpu, store, runtime.handle().clone(), 1 << 30, WeightsSource::Atoms);
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode_text(t).expect("tokenizes").ids).collect();
    let inputs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    encoder.embed(&mut pager, &inputs).expect("embeds")
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let x = f64::from(x);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    dot / (na.sqrt() * nb.sqrt())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

#[test]
fn the_student_serves_the_embeddings_of_minilm_cut_to_three_layers_even_after_its_parent_is_removed() {
    let fixture_path = fixture("models/minilm_student3_embeddings.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&fixture_path).expect("fixture")).expect("JSON");
    assert_eq!(reference["generated_by"], "tests/scripts/make_student_reference.py");
    assert_eq!(reference["student"]["num_layers"], 3);
    let cases = reference["cases"].as_array().expect("cases");
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().expect("text")).collect();

    let stored = stored_minilm();
    run_ok(&["student", "--db", s(&stored.db), "--from", PARENT, "--name", STUDENT, "--layers", "0-2"]);
    let got = embed(&stored.db, STUDENT, &texts);
    for (case, got) in cases.iter().zip(&got) {
        let name = case["name"].as_str().expect("name");
        let want = floats(&case["embedding"]);
        let cos = cosine(got, &want);
        assert!(cos >= MIN_COSINE, "{name}: cosine {cos} with the 3-layer float64 reference is below {MIN_COSINE}");
        // Unit vectors of O(0.05) elements from f32 arithmetic: a few 1e-6 apart at most.
        kernel_common::assert_close(got, &want, |i| 2e-5 + 1e-3 * want[i].abs(), &format!("{name}: student embedding"));
    }

    // Not the parent's embedding: the 6-layer reference of the same text is elsewhere.
    let parent_ref: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("models/minilm_embeddings.json")).expect("fixture")).expect("JSON");
    let parent_short = parent_ref["cases"].as_array().expect("cases").iter().find(|c| c["name"] == "short").expect("short");
    assert_eq!(parent_short["text"], cases[0]["text"]);
    let cos = cosine(&got[0], &floats(&parent_short["embedding"]));
    assert!(cos < 0.99, "the student's embedding should not be the 6-layer parent's (cosine {cos})");

    // The parent goes; the student keeps every atom it uses and embeds bit for bit as before.
    let rm = run_ok(&["rm", "--db", s(&stored.db), PARENT]);
    assert!(rm.contains("removed all-MiniLM-L6-v2:1"), "{rm}");
    let conn = raw(&stored.db);
    let student_atoms: HashSet<i64> = layers_of(&conn, STUDENT).into_iter().flat_map(|(_, _, a)| a).collect();
    assert_eq!(atom_totals(&conn).0 as usize, student_atoms.len(), "exactly the student's atoms are left");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtoms WHERE ReferenceCount <> 1"), 0, "each held by the student only");
    assert!(run_ok(&["verify", "--db", s(&stored.db)]).contains("clean"));
    assert_eq!(embed(&stored.db, STUDENT, &texts), got);
}

#[test]
fn the_students_lineage_names_its_parent_until_the_parent_is_removed() {
    let stored = stored_minilm();
    run_ok(&["student", "--db", s(&stored.db), "--from", PARENT, "--name", "minilm-2:7", "--layers", "1-2"]);
    let conn = raw(&stored.db);
    let (parent_id, child_parent, derived_by): (i64, Option<i64>, String) = conn
        .query_row(
            "SELECT p.ModelId, c.ParentModelId, c.DerivedBy FROM Models c, Models p \
             WHERE c.Name = 'minilm-2' AND c.Version = '7' AND p.Name = ?1",
            [PARENT],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("both rows");
    assert_eq!(child_parent, Some(parent_id));
    assert!(derived_by.contains("all-MiniLM-L6-v2:1") && derived_by.contains("--layers 1-2"), "{derived_by}");
    let parent_lineage: (Option<i64>, Option<String>) = conn
        .query_row("SELECT ParentModelId, DerivedBy FROM Models WHERE Name = ?1", [PARENT], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("parent row");
    assert_eq!(parent_lineage, (None, None), "an ingested model has no parent");

    // Blocks 1-2 renumbered 0-1: the student's block 0 is the parent's block 1.
    let root = |model: &str, tensor: &str| -> Vec<u8> {
        conn.query_row(
            "SELECT l.TensorRoot FROM ModelLayers l JOIN Models m ON m.ModelId = l.ModelId WHERE m.Name = ?1 AND l.TensorName = ?2",
            [model, tensor],
            |r| r.get(0),
        )
        .expect("tensor root")
    };
    assert_eq!(root("minilm-2", "encoder.layer.0.output.dense.weight"), root(PARENT, "encoder.layer.1.output.dense.weight"));
    assert_eq!(root("minilm-2", "encoder.layer.1.output.dense.weight"), root(PARENT, "encoder.layer.2.output.dense.weight"));
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM ModelLayers l JOIN Models m ON m.ModelId = l.ModelId WHERE m.Name = 'minilm-2' AND l.TensorName LIKE 'encoder.layer.2.%'"), 0);

    let table = run_ok(&["models", "--db", s(&stored.db)]);
    let line = table.lines().find(|l| l.starts_with("minilm-2:7")).expect("student listed");
    assert!(line.contains("all-MiniLM-L6-v2:1"), "the student's line names its parent: {table}");
    let json: Value = serde_json::from_str(&run_ok(&["models", "--json", "--db", s(&stored.db)])).expect("JSON");
    let student = json.as_array().expect("list").iter().find(|m| m["name"] == "minilm-2").expect("student");
    assert_eq!(student["parent"], parent_id);

    run_ok(&["rm", "--db", s(&stored.db), PARENT]);
    let (child_parent, kept): (Option<i64>, String) = conn
        .query_row("SELECT ParentModelId, DerivedBy FROM Models WHERE Name = 'minilm-2'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("student row");
    assert_eq!(child_parent, None, "the link goes with the parent");
    assert_eq!(kept, derived_by, "DerivedBy still names the parent");
    let table = run_ok(&["models", "--db", s(&stored.db)]);
    assert!(table.contains("(removed)"), "{table}");
    assert!(run_ok(&["verify", "--db", s(&stored.db)]).contains("clean"));
}

#[test]
fn pruning_writes_new_atoms_only_for_the_chunks_it_changes() {
    let stored = stored_minilm();
    let conn = raw(&stored.db);
    let (atoms_before, ..) = atom_totals(&conn);
    let parent_layers = layers_of(&conn, PARENT);

    run_ok(&["student", "--db", s(&stored.db), "--from", PARENT, "--name", "minilm-pruned", "--prune-importance", "0.5"]);
    let student_layers = layers_of(&conn, "minilm-pruned");
    assert_eq!(student_layers.len(), parent_layers.len());

    // Worked out from the parent's atoms: in each block matrix, the weights with |w| under the
    // tensor's median-rank |w| (the floor(n/2)-th smallest) become 0; a chunk changes when it
    // holds such a weight that is not 0 already.
    let mut changed_chunks = 0i64;
    let mut pruned_tensors = 0;
    for ((name, shape, parent_atoms), (student_name, student_shape, student_atoms)) in parent_layers.iter().zip(&student_layers) {
        assert_eq!((name, shape), (student_name, student_shape));
        assert_eq!(parent_atoms.len(), student_atoms.len(), "{name}: same chunking");
        let prunable = bert_block(name).is_some() && shape.len() == 2;
        if !prunable {
            assert_eq!(parent_atoms, student_atoms, "{name}: not a block matrix, kept as it was");
            continue;
        }
        pruned_tensors += 1;
        let chunks: Vec<Vec<f32>> = parent_atoms.iter().map(|&a| f32s(&payload(&conn, a))).collect();
        let mut magnitudes: Vec<f32> = chunks.iter().flatten().map(|w| w.abs()).collect();
        magnitudes.sort_by(f32::total_cmp);
        let threshold = magnitudes[magnitudes.len() / 2];
        let n = magnitudes.len();
        let mut zeros = 0usize;
        for ((chunk, &parent_atom), &student_atom) in chunks.iter().zip(parent_atoms).zip(student_atoms) {
            let changes = chunk.iter().any(|w| w.abs() < threshold && w.to_bits() != 0);
            changed_chunks += i64::from(changes);
            if !changes {
                assert_eq!(student_atom, parent_atom, "{name}: an unchanged chunk keeps the parent's atom");
                zeros += chunk.iter().filter(|w| **w == 0.0).count();
                continue;
            }
            assert_ne!(student_atom, parent_atom, "{name}: a changed chunk is a new atom");
            let pruned = f32s(&payload(&conn, student_atom));
            for (w, p) in chunk.iter().zip(&pruned) {
                let want = if w.abs() < threshold { 0.0 } else { *w };
                assert_eq!(p.to_bits(), want.to_bits(), "{name}: weight {w} should be {want} after pruning, is {p}");
            }
            zeros += pruned.iter().filter(|w| **w == 0.0).count();
        }
        let fraction = zeros as f64 / n as f64;
        assert!((fraction - 0.5).abs() < 0.01, "{name}: {zeros} of {n} weights are zero ({fraction:.4}), not about half");
    }
    assert_eq!(pruned_tensors, 36, "6 blocks × 6 matrices");
    assert!(changed_chunks > 0);
    let (atoms_after, ..) = atom_totals(&conn);
    assert_eq!(atoms_after - atoms_before, changed_chunks, "new atoms = chunks with a weight zeroed");
    assert!(run_ok(&["verify", "--db", s(&stored.db)]).contains("clean"));

    // The pruned model loads and embeds: a different, still unit-length, embedding.
    let got = embed(&stored.db, "minilm-pruned", &["The quick brown fox jumps over the lazy dog."]);
    let norm: f64 = got[0].iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

/// Runs a failing command and returns its stderr, asserting nothing was written.
#[track_caller]
fn fails(db: &Path, args: &[&str], flag: &str) {
    let conn = raw(db);
    let snapshot = |conn: &rusqlite::Connection| {
        (
            atom_totals(conn),
            count(conn, "SELECT COUNT(*) FROM Models"),
            count(conn, "SELECT COUNT(*) FROM ModelLayers"),
            count(conn, "SELECT COUNT(*) FROM TensorAtomCoefficients"),
            count(conn, "SELECT SUM(ReferenceCount) FROM TensorAtoms"),
        )
    };
    let before = snapshot(&conn);
    let mut full = vec!["student", "--db", s(db)];
    full.extend_from_slice(args);
    let out = hartonomous(&full);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "hartonomous {} succeeded", full.join(" "));
    assert!(stderr.contains(flag), "hartonomous {}: the message should name {flag}: {stderr}", full.join(" "));
    assert_eq!(snapshot(&conn), before, "hartonomous {} wrote to the store", full.join(" "));
}

#[test]
fn bad_options_fail_naming_the_option_and_write_nothing() {
    let stored = stored_minilm();
    let db = stored.db.as_path();
    fails(db, &["--from", "no-such-model", "--name", "x", "--layers", "0-2"], "--from");
    fails(db, &["--from", PARENT, "--name", PARENT, "--layers", "0-2"], "--name");
    fails(db, &["--from", PARENT, "--name", "x", "--layers", "5-9"], "--layers");
    fails(db, &["--from", PARENT, "--name", "x", "--layers", "2-1"], "--layers");
    fails(db, &["--from", PARENT, "--name", "x", "--layers", "two"], "--layers");
    for q in ["0", "1", "1.5", "-0.25", "NaN", "half"] {
        let arg = format!("--prune-importance={q}");
        fails(db, &["--from", PARENT, "--name", "x", &arg], "--prune-importance");
    }
    fails(db, &["--from", PARENT, "--name", "x", "--layers", "0-2", "--prune-importance", "0.5"], "--prune-importance");
    fails(db, &["--from", PARENT, "--name", "x"], "--layers");
    fails(db, &["--from", PARENT, "--name", "x"], "--prune-importance");
    // A student's name is taken like any model's.
    run_ok(&["student", "--db", s(db), "--from", PARENT, "--name", "x", "--layers", "0"]);
    fails(db, &["--from", PARENT, "--name", "x:1", "--layers", "1"], "--name");
}

#[test]
fn quantized_gguf_blocks_are_refused_for_pruning_by_name_and_cut_by_block_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", "smollm2"]);
    let conn = raw(&db);
    let before = atom_totals(&conn);
    let out = hartonomous(&["student", "--db", s(&db), "--from", "smollm2", "--name", "p", "--prune-importance", "0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The first block matrix in file order, and its stored type (tests/fixtures manifest).
    assert!(stderr.contains("--prune-importance") && stderr.contains("blk.0.") && stderr.contains("Q4_1"), "{stderr}");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM Models"), 1);

    run_ok(&["student", "--db", s(&db), "--from", "smollm2", "--name", "smollm2-4", "--layers", "0-3"]);
    assert_eq!(atom_totals(&conn), before);
    let config: String = conn.query_row("SELECT ConfigJson FROM Models WHERE Name = 'smollm2-4'", [], |r| r.get(0)).expect("config");
    let config: Value = serde_json::from_str(&config).expect("JSON");
    assert_eq!(config["llama.block_count"], 4);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM ModelLayers l JOIN Models m ON m.ModelId = l.ModelId WHERE m.Name = 'smollm2-4' AND l.TensorName LIKE 'blk.4.%'"), 0);
    assert!(run_ok(&["verify", "--db", s(&db)]).contains("clean"));
}
