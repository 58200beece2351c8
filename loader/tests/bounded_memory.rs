//! Issue 2, "streaming, bounded memory": atomizing a model never holds more than a bounded
//! window of it. A 4.5 GiB safetensors file (sparse on disk, so the test costs no disk space)
//! with one tensor whose data runs past the 4 GiB mark is atomized, and the process's peak
//! resident memory must stay far below the file size. This file holds one test so that the
//! process's peak (`VmHWM`) is this test's.

use hartonomous_loader::atom::{atomize, AtomizeOptions};
use hartonomous_loader::ModelFile;

/// Elements of the F32 tensor: 4.5 GiB of data.
const ELEMENTS: u64 = 1_207_959_552;

#[cfg(target_os = "linux")]
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line");
    kib * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn a_4_5_gib_model_atomizes_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.safetensors");
    let bytes = ELEMENTS * 4;
    let header = format!(r#"{{"big":{{"dtype":"F32","shape":[{ELEMENTS}],"data_offsets":[0,{bytes}]}}}}"#);
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(header.as_bytes());
    let file = std::fs::File::create(&path).expect("create");
    std::io::Write::write_all(&mut &file, &head).expect("header");
    // The data is a hole: it reads as zeros without being stored.
    file.set_len(head.len() as u64 + bytes).expect("extend");
    drop(file);

    let before = peak_rss_bytes();
    let model = ModelFile::open(&path).expect("opens");
    let mut seen = 0u64;
    let atomized = atomize(&model, &AtomizeOptions::default(), &mut |atom| {
        seen += atom.bytes.len() as u64;
        Ok(())
    })
    .expect("atomizes");
    assert_eq!(seen, bytes);
    let atoms = &atomized.tensors[0].atoms;
    assert!(atoms.last().expect("atoms").byte_offset > 1 << 32, "offsets past 4 GiB are exercised");
    assert_eq!(atomized.unique_atoms().0, 1, "all-zero atoms of one size share one id");

    let peak = peak_rss_bytes();
    eprintln!("peak RSS {} MiB (before: {} MiB) for a {} MiB file", peak >> 20, before >> 20, (head.len() as u64 + bytes) >> 20);
    // The per-atom list (73,729 refs of ~80 bytes = 6 MiB) grows with the model; the data does not.
    assert!(peak < 96 << 20, "peak RSS {} MiB: atomizing must not hold the file in memory", peak >> 20);
}
