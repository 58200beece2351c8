//! Shared by the loader's integration tests: where the models and fixtures are, the numeric
//! comparison helper, and builders for crafted (often deliberately broken) model files.
#![allow(dead_code)] // each test binary uses a different part

/// Models, fixtures and tensor manifests, shared with the other crates' tests.
#[path = "../../../tests/support/models.rs"]
mod models;
#[allow(unused_imports)] // not every test binary uses them
pub use models::*;

/// Asserts `|got - want| <= rel * |want|` element-wise (non-finite values must match exactly),
/// reporting how many elements fail, the worst relative error and where it is.
#[track_caller]
pub fn assert_all_close(got: &[f32], want: &[f32], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = 0;
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let ok = if w.is_finite() { (g - w).abs() <= rel * w.abs() } else { g.to_bits() == w.to_bits() };
        if !ok {
            bad += 1;
            let err = if w == 0.0 { f64::INFINITY } else { (g - w).abs() / w.abs() };
            if err > worst.0 || bad == 1 {
                worst = (err, i);
            }
        }
    }
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements differ by more than {rel:e} relative; worst {:e} at index {} (got {}, want {})",
        want.len(),
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// Little-endian GGUF pieces, for crafting files byte by byte.
pub mod gguf {
    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    /// Header: magic, version, tensor count, metadata count.
    pub fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&tensors.to_le_bytes());
        out.extend_from_slice(&kvs.to_le_bytes());
        out
    }

    /// A key with a u32 value.
    pub fn kv_u32(key: &str, v: u32) -> Vec<u8> {
        let mut out = string(key.as_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
        out
    }

    /// A key of value type `type_id` followed by raw value bytes.
    pub fn kv_raw(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
        let mut out = string(key.as_bytes());
        out.extend_from_slice(&type_id.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// A tensor info: name, dims (ggml order, innermost first), type, relative offset.
    pub fn tensor(name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
        let mut out = string(name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&type_id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out
    }

    /// Pads `file` with zeros to a multiple of `alignment`, then appends `data`.
    pub fn with_data(mut file: Vec<u8>, alignment: usize, data: &[u8]) -> Vec<u8> {
        file.resize(file.len().div_ceil(alignment) * alignment, 0);
        file.extend_from_slice(data);
        file
    }

    /// A valid file: two F32 tensors `a` [2, 4] and `b` [4] at offsets 0 and 32, values 0..12.
    pub fn valid() -> Vec<u8> {
        let mut f = header(3, 2, 1);
        f.extend(kv_raw("general.architecture", 8, &string(b"llama")));
        f.extend(tensor(b"a", &[4, 2], 0, 0));
        f.extend(tensor(b"b", &[4], 0, 32));
        let data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        with_data(f, 32, &data)
    }
}

/// safetensors pieces.
pub mod safetensors {
    /// A file from a header (JSON text, not validated) and data bytes.
    pub fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    /// A valid file: F32 `w` [2, 2] and I64 `ids` [2].
    pub fn valid() -> Vec<u8> {
        let data: Vec<u8> = [1.0f32, -2.0, 3.0, 0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain([7i64, 9].iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        file(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"ids":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}}"#,
            &data,
        )
    }
}
