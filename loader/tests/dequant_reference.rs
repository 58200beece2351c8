//! Acceptance (issue 2, item 3): dequantization of every listed dtype matches gguf-py's
//! `gguf.quants.dequantize` within 1e-6 relative, on the blocks in `tests/fixtures/dequant/`
//! (made by `tests/scripts/make_dequant_fixtures.py`: random payloads plus zero, negative,
//! subnormal and maximal scales).

mod support;

use hartonomous_loader::dequant::dequantize;
use hartonomous_loader::DType;
use support::{assert_all_close, fixture};

/// Both sides compute in f32 in the same order, so results agree to the bit in practice; 1e-6
/// relative is the bar and leaves room only for a different but valid rounding order.
const REL: f64 = 1e-6;

#[test]
fn every_listed_dtype_matches_gguf_py() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("dequant/manifest.json")).expect("fixture manifest"))
            .expect("manifest is JSON");
    assert_eq!(manifest["generated_by"], "tests/scripts/make_dequant_fixtures.py");
    let listed = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"];
    for tag in listed {
        let entry = &manifest["types"][tag];
        let dtype = DType::from_tag(tag).expect("listed dtype exists");
        assert_eq!(entry["block_bytes"].as_u64(), Some(dtype.block_bytes()), "{tag} block bytes");
        assert_eq!(entry["block_elements"].as_u64(), Some(dtype.block_elements()), "{tag} block elements");
        let blocks = std::fs::read(fixture(&format!("dequant/{tag}.blocks"))).expect("blocks fixture");
        let want: Vec<f32> = std::fs::read(fixture(&format!("dequant/{tag}.f32")))
            .expect("values fixture")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        assert_eq!(want.len() as u64, entry["n_values"].as_u64().expect("n_values"), "{tag}");
        // Poisoned: an element the dequantizer forgets to write fails the comparison.
        let mut got = vec![f32::NAN; want.len()];
        dequantize(dtype, &blocks, &mut got).expect("whole blocks");
        assert_all_close(&got, &want, REL, tag);
    }
}
