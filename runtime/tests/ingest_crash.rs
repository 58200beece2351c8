//! Acceptance (issue 4, item 3): an ingest killed at any point leaves the store as it was, and
//! the re-run completes: `verify` clean, no orphan atoms, reference counts exact.
//!
//! The ingest under test runs as a child process of the real binary, killed at known points by
//! its fault-injection hooks (`abort()` after the first atom, mid-way, and with every layer
//! written just before commit) and by a real `kill -9` while it is stalled mid-transaction.
//! Before each kill the store already holds MiniLM, and the killed ingest is of a copy that
//! shares all but one tensor with it, so a leaked reference on a shared atom would show.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const EDITED_TENSOR: &str = "encoder.layer.0.attention.self.query.weight";

/// `hartonomous ARGS` with `env`, core dumps off (an abort must not write a core file).
fn child(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -c 0 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_hartonomous")]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// What the store must look like whatever was killed: exactly `models`, every reference counted
/// once per coefficient row, no atom without a reference, and `verify` clean.
#[track_caller]
fn assert_store_exact(db: &Path, models: &[&str], atoms: u64, references: u64, when: &str) {
    let conn = raw(db);
    let mut names: Vec<String> = conn
        .prepare("SELECT Name FROM Models ORDER BY Name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("names");
    names.sort();
    let mut want: Vec<String> = models.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "{when}: models");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtoms") as u64, atoms, "{when}: atoms");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM TensorAtomCoefficients") as u64, references, "{when}: coefficient rows");
    assert_eq!(count(&conn, "SELECT COALESCE(SUM(ReferenceCount), 0) FROM TensorAtoms") as u64, references, "{when}: reference counts");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM TensorAtoms a WHERE NOT EXISTS (SELECT 1 FROM TensorAtomCoefficients c WHERE c.AtomId = a.AtomId)"),
        0,
        "{when}: orphan atoms"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM TensorAtoms a WHERE a.ReferenceCount <> \
             (SELECT COUNT(*) FROM TensorAtomCoefficients c WHERE c.AtomId = a.AtomId)"
        ),
        0,
        "{when}: atoms whose count is off"
    );
    drop(conn);
    let verify = run_ok(&["verify", "--db", s(db)]);
    assert!(verify.trim_end().ends_with(": clean"), "{when}: {verify}");
}

#[test]
fn ingest_killed_anywhere_leaves_nothing_and_the_rerun_is_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let (minilm, smollm2) = (tensor_manifest(MINILM_MANIFEST), tensor_manifest(SMOLLM2_MANIFEST));
    let edited = dir.path().join("model.safetensors");
    write_with_tensor_changed(&minilm_path(), &edited, EDITED_TENSOR, 4);
    let changed = tensor_atoms(minilm.tensor(EDITED_TENSOR));

    ingest_json(&db, &minilm_path(), "minilm");
    let (base_atoms, base_refs) = (minilm.atoms(), minilm.atoms());
    assert_store_exact(&db, &["minilm"], base_atoms, base_refs, "before any kill");

    let ingest_edited = ["ingest", "--db", s(&db), s(&edited), "--name", "minilm-edited"];
    let mid_way = (minilm.atoms() / 2).to_string();
    for (hook, value) in [
        ("HARTONOMOUS_FAULT_AFTER_ATOMS", "1"),
        ("HARTONOMOUS_FAULT_AFTER_ATOMS", mid_way.as_str()),
        ("HARTONOMOUS_FAULT_BEFORE_COMMIT", "1"),
    ] {
        let when = format!("after {hook}={value}");
        let out = child(&[(hook, value)], &ingest_edited).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{when}: the child should have aborted:\n{stderr}");
        assert!(stderr.contains("fault injection: aborting"), "{when}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ingested"), "{when}");
        assert_store_exact(&db, &["minilm"], base_atoms, base_refs, &when);
    }

    // A real kill -9, mid-transaction, while writing a model of all-new atoms.
    let stall_at = (smollm2.atoms() / 3).to_string();
    let mut stalled = child(
        &[("HARTONOMOUS_FAULT_STALL_AFTER_ATOMS", stall_at.as_str())],
        &["ingest", "--db", s(&db), s(&smollm2_path()), "--name", "smollm2"],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .expect("spawns");
    let mut lines = BufReader::new(stalled.stderr.take().expect("stderr")).lines();
    let stalled_line = lines.find_map(|l| l.ok().filter(|l| l.contains("stalled after"))).expect("the child reports its stall");
    assert!(stalled.try_wait().expect("status").is_none(), "still running at the kill: {stalled_line}");
    stalled.kill().expect("kill -9"); // SIGKILL on Unix
    let status = stalled.wait().expect("reaped");
    assert!(!status.success());
    assert_store_exact(&db, &["minilm"], base_atoms, base_refs, "after kill -9 of a stalled ingest");

    // The re-runs complete and are exact.
    let r = ingest_json(&db, &edited, "minilm-edited");
    assert_eq!(r["new_atoms"], changed, "{r}");
    let r = ingest_json(&db, &smollm2_path(), "smollm2");
    assert_eq!(r["new_atoms"], smollm2.atoms(), "{r}");
    assert_store_exact(
        &db,
        &["minilm", "minilm-edited", "smollm2"],
        base_atoms + changed + smollm2.atoms(),
        2 * minilm.atoms() + smollm2.atoms(),
        "after the re-runs",
    );
}
