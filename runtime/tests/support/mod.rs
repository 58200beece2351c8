//! Shared by the runtime's integration tests: the test models and their independent manifests,
//! running the `hartonomous` binary, and direct looks into a SQLite store (with rusqlite, not
//! through the store's own code).
#![allow(dead_code)] // each test binary uses a different part

pub mod contract;
pub mod daemon;

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// Models, fixtures and tensor manifests, shared with the other crates' tests.
#[path = "../../../tests/support/models.rs"]
mod models;
#[allow(unused_imports)] // not every test binary uses them
pub use models::*;

/// Bytes per atom of a manifest dtype at the 64 KiB target: whole blocks (block sizes from the
/// GGUF and safetensors specifications), written out here rather than taken from the loader.
pub fn atom_len(dtype: &str) -> u64 {
    let block = match dtype {
        "F32" => 4,
        "I64" => 8,
        "F16" | "BF16" => 2,
        "Q4_1" => 20,
        "Q8_0" => 34,
        other => panic!("no block size written down for {other}"),
    };
    65536 / block * block
}

/// Atoms of a tensor of `n_bytes`.
pub fn tensor_atoms(t: &ManifestTensor) -> u64 {
    t.n_bytes.div_ceil(atom_len(&t.dtype))
}

impl TensorManifest {
    /// Atom references over all tensors.
    pub fn atoms(&self) -> u64 {
        self.tensors.iter().map(tensor_atoms).sum()
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    pub fn tensor(&self, name: &str) -> &ManifestTensor {
        self.tensors.iter().find(|t| t.name == name).expect("tensor in manifest")
    }
}

/// `hartonomous ARGS...`, capturing its output.
pub fn hartonomous(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hartonomous")).args(args).output().expect("runs hartonomous")
}

/// Runs `hartonomous ARGS...`, asserts success, and returns stdout.
#[track_caller]
pub fn run_ok(args: &[&str]) -> String {
    let out = hartonomous(args);
    assert!(
        out.status.success(),
        "hartonomous {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `hartonomous ingest --json --db DB FILE --name NAME`, parsed.
#[track_caller]
pub fn ingest_json(db: &Path, file: &Path, name: &str) -> serde_json::Value {
    let out = run_ok(&["ingest", "--json", "--db", s(db), s(file), "--name", name]);
    serde_json::from_str(out.trim()).expect("ingest --json prints one JSON object")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A direct connection to a SQLite store, bypassing the store code.
pub fn raw(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).expect("opens the store file")
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The SHA-256 (hex) of every tensor of a stored model, reassembled from its atoms in order.
pub fn stored_tensor_hashes(conn: &rusqlite::Connection, model: &str) -> Vec<(String, String)> {
    let mut layers = conn
        .prepare(
            "SELECT l.LayerId, l.TensorName FROM ModelLayers l JOIN Models m ON m.ModelId = l.ModelId \
             WHERE m.Name = ?1 ORDER BY l.Ordinal",
        )
        .expect("prepare");
    let layers: Vec<(i64, String)> = layers
        .query_map([model], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut atoms = conn
        .prepare(
            "SELECT a.Payload FROM TensorAtomCoefficients c JOIN TensorAtoms a ON a.AtomId = c.AtomId \
             WHERE c.LayerId = ?1 ORDER BY c.Ordinal",
        )
        .expect("prepare");
    layers
        .into_iter()
        .map(|(id, name)| {
            let mut h = Sha256::new();
            let mut rows = atoms.query([id]).expect("query");
            while let Some(row) = rows.next().expect("row") {
                h.update(row.get_ref(0).expect("payload").as_blob().expect("blob"));
            }
            (name, hex::encode(h.finalize()))
        })
        .collect()
}

/// Writes a copy of the safetensors file `src` to `dst` with the lowest byte of every element of
/// `tensor` flipped (a small change to every value, as fine-tuning makes). Parses the header
/// itself: 8-byte little-endian header length, JSON header, data.
pub fn write_with_tensor_changed(src: &Path, dst: &Path, tensor: &str, element_bytes: usize) {
    let mut bytes = std::fs::read(src).expect("reads the model");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).expect("header JSON");
    let offsets = &header[tensor]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().expect("start") as usize, offsets[1].as_u64().expect("end") as usize);
    let data = 8 + header_len;
    for i in (data + start..data + end).step_by(element_bytes) {
        bytes[i] ^= 1;
    }
    std::fs::write(dst, bytes).expect("writes the copy");
}
