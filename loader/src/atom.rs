//! Atomization: a tensor's stored bytes (quantized blocks stay quantized) cut at block
//! boundaries into content-addressed TensorAtoms, the tensor root over its ordered atoms, and the
//! model's weights root over its tensors, the fingerprint that lineage records.
//!
//! The hashes are defined byte for byte so that any implementation, T-SQL's `HASHBYTES` included,
//! can recompute them (all integers little-endian):
//!
//! - atom id      = SHA-256( tag ‖ 0x00 ‖ bytes ), `tag` the ASCII [`DType::tag`], e.g. `Q4_1`;
//! - tensor root  = SHA-256( "T" ‖ 0x00 ‖ tag ‖ 0x00 ‖ u8 rank ‖ u64 dims (row-major) ‖ atom ids in
//!   order ): name-free, so identical tensors under different names share a root;
//! - weights root = SHA-256( "W" ‖ 0x00 ‖ for each tensor sorted by name bytes:
//!   u32 name length ‖ name ‖ tensor root ).
//!
//! Ids and roots are relative to the atom size: atoms are cut every
//! `max(1, ⌊target / block bytes⌋) × block bytes` from the tensor's start, with the target
//! [`DEFAULT_ATOM_BYTES`] store-wide, so a tensor's root is a function of its bytes alone within
//! one store. A store that changed its target would re-atomize, not mix sizes.
//!
//! Atoms are fixed-size cuts from the start of the tensor: fine-tuning changes values in place
//! and never shifts bytes, so an edit changes exactly the atoms that hold changed elements, and
//! content-defined chunking would gain nothing. The size trade-off is measured in ARCHITECTURE.md.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dequant::{can_dequantize, dequantize};
use crate::error::{Error, Result};
use crate::model::{ModelFile, TensorInfo};
use crate::DType;

/// Default target size of an atom in bytes (see ARCHITECTURE.md, "Atom size", for the
/// measurements behind it). Each dtype rounds it down to whole blocks.
pub const DEFAULT_ATOM_BYTES: u64 = 64 * 1024;

/// A SHA-256 digest: an atom id, a tensor root or a weights root. Shown and serialised as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash256(pub [u8; 32]);

impl Hash256 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_hex())
    }
}

impl Serialize for Hash256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Hash256::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// The id of an atom holding `bytes` stored as `dtype`.
pub fn atom_id(dtype: DType, bytes: &[u8]) -> Hash256 {
    let mut h = Sha256::new();
    h.update(dtype.tag().as_bytes());
    h.update([0u8]);
    h.update(bytes);
    Hash256(h.finalize().into())
}

/// The root of a tensor of `dtype` and `shape` made of `atoms` in order.
pub fn tensor_root<'a>(dtype: DType, shape: &[u64], atoms: impl IntoIterator<Item = &'a Hash256>) -> Hash256 {
    let mut h = Sha256::new();
    h.update(b"T\0");
    h.update(dtype.tag().as_bytes());
    h.update([0u8, shape.len() as u8]);
    for d in shape {
        h.update(d.to_le_bytes());
    }
    for a in atoms {
        h.update(a.0);
    }
    Hash256(h.finalize().into())
}

/// The weights root over `(tensor name, tensor root)` pairs, in any order.
pub fn weights_root<'a>(tensors: impl IntoIterator<Item = (&'a str, Hash256)>) -> Hash256 {
    let mut pairs: Vec<(&str, Hash256)> = tensors.into_iter().collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    h.update(b"W\0");
    for (name, root) in pairs {
        h.update((name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(root.0);
    }
    Hash256(h.finalize().into())
}

/// A point summarising an atom's values, so the store can find similar weights across models
/// with a spatial index: (mean, standard deviation, max |w|) of the dequantized values,
/// population statistics accumulated in f64.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpatialSignature {
    pub mean: f64,
    pub std_dev: f64,
    pub max_abs: f64,
}

impl SpatialSignature {
    /// One pass in eight independent lanes (so it vectorizes), accumulating sum, sum of squares
    /// and max |w| in f64. Variance as E[w²] - mean² loses digits only when |mean| dwarfs the
    /// spread, which weights (mean near 0) do not do, and a signature is a search key anyway.
    pub fn of(values: &[f32]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        const LANES: usize = 8;
        let (mut sum, mut sq, mut max_abs) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for l in 0..LANES {
                let v = f64::from(chunk[l]);
                sum[l] += v;
                sq[l] += v * v;
                max_abs[l] = if v.abs() > max_abs[l] { v.abs() } else { max_abs[l] };
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            let v = f64::from(v);
            sum[l] += v;
            sq[l] += v * v;
            max_abs[l] = if v.abs() > max_abs[l] { v.abs() } else { max_abs[l] };
        }
        let n = values.len() as f64;
        let mean = sum.iter().sum::<f64>() / n;
        let var = (sq.iter().sum::<f64>() / n - mean * mean).max(0.0);
        Some(Self {
            mean,
            std_dev: var.sqrt(),
            max_abs: max_abs.iter().fold(0.0, |m, &v| if v > m { v } else { m }),
        })
    }
}

/// How tensors are cut into atoms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomizeOptions {
    /// Target atom size in bytes; rounded down to whole blocks of each dtype (at least one).
    pub atom_bytes: u64,
}

impl Default for AtomizeOptions {
    fn default() -> Self {
        Self {
            atom_bytes: DEFAULT_ATOM_BYTES,
        }
    }
}

impl AtomizeOptions {
    pub fn new(atom_bytes: u64) -> Result<Self> {
        if atom_bytes == 0 || atom_bytes > u32::MAX as u64 {
            return Err(Error::InvalidOption(format!(
                "atom size {atom_bytes} must be between 1 byte and 4 GiB"
            )));
        }
        Ok(Self { atom_bytes })
    }

    /// Bytes per atom for `dtype`: the target rounded down to whole blocks, at least one block.
    pub fn atom_len(&self, dtype: DType) -> u64 {
        (self.atom_bytes / dtype.block_bytes()).max(1) * dtype.block_bytes()
    }
}

/// An atom as it is produced, with its bytes (valid only during the sink call).
#[derive(Debug)]
pub struct Atom<'a> {
    pub id: Hash256,
    pub dtype: DType,
    /// Where the atom starts within its tensor's data.
    pub byte_offset: u64,
    pub bytes: &'a [u8],
    pub signature: Option<SpatialSignature>,
}

/// An atom's place in a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomRef {
    pub id: Hash256,
    pub byte_offset: u64,
    pub byte_len: u64,
    pub signature: Option<SpatialSignature>,
}

/// A tensor cut into atoms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomizedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub byte_len: u64,
    pub atoms: Vec<AtomRef>,
    pub root: Hash256,
}

/// A whole model cut into atoms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomizedModel {
    pub tensors: Vec<AtomizedTensor>,
    pub weights_root: Hash256,
}

impl AtomizedModel {
    /// Atoms over all tensors, repeats included.
    pub fn atom_count(&self) -> usize {
        self.tensors.iter().map(|t| t.atoms.len()).sum()
    }

    /// Distinct atoms and their total bytes: what storing this model alone costs.
    pub fn unique_atoms(&self) -> (usize, u64) {
        let mut seen: HashMap<Hash256, u64> = HashMap::new();
        for a in self.tensors.iter().flat_map(|t| &t.atoms) {
            seen.insert(a.id, a.byte_len);
        }
        (seen.len(), seen.values().sum())
    }
}

/// Reads `tensor` atom by atom, hands each to `sink`, and returns the tensor's atom list and
/// root. Memory use is one atom's bytes and values, whatever the tensor's size.
pub fn atomize_tensor(
    model: &ModelFile,
    tensor: &TensorInfo,
    options: &AtomizeOptions,
    sink: &mut dyn FnMut(&Atom<'_>) -> Result<()>,
) -> Result<AtomizedTensor> {
    let atom_len = options.atom_len(tensor.dtype);
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    let mut atoms = Vec::with_capacity(tensor.byte_len.div_ceil(atom_len) as usize);
    let mut offset = 0;
    while offset < tensor.byte_len {
        let len = atom_len.min(tensor.byte_len - offset);
        bytes.resize(len as usize, 0);
        model.read_tensor_bytes(tensor, offset, &mut bytes)?;
        let signature = if can_dequantize(tensor.dtype) {
            values.resize((len / tensor.dtype.block_bytes() * tensor.dtype.block_elements()) as usize, 0.0);
            dequantize(tensor.dtype, &bytes, &mut values)?;
            SpatialSignature::of(&values)
        } else {
            None
        };
        let atom = Atom {
            id: atom_id(tensor.dtype, &bytes),
            dtype: tensor.dtype,
            byte_offset: offset,
            bytes: &bytes,
            signature,
        };
        sink(&atom)?;
        atoms.push(AtomRef {
            id: atom.id,
            byte_offset: offset,
            byte_len: len,
            signature,
        });
        offset += len;
    }
    let root = tensor_root(tensor.dtype, &tensor.shape, atoms.iter().map(|a| &a.id));
    Ok(AtomizedTensor {
        name: tensor.name.clone(),
        dtype: tensor.dtype,
        shape: tensor.shape.clone(),
        byte_len: tensor.byte_len,
        atoms,
        root,
    })
}

/// Atomizes every tensor of `model` in file order. `sink` receives every atom, repeats
/// included (deduplication is the store's job), and is where callers count progress.
pub fn atomize(
    model: &ModelFile,
    options: &AtomizeOptions,
    sink: &mut dyn FnMut(&Atom<'_>) -> Result<()>,
) -> Result<AtomizedModel> {
    let mut tensors = Vec::with_capacity(model.tensors().len());
    for tensor in model.tensors() {
        tensors.push(atomize_tensor(model, tensor, options, sink)?);
    }
    let weights_root = weights_root(tensors.iter().map(|t| (t.name.as_str(), t.root)));
    Ok(AtomizedModel {
        tensors,
        weights_root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_id_is_sha256_of_tag_nul_bytes() {
        // Independent: `printf 'F32\0\x00\x00\x80\x3f' | sha256sum`.
        let id = atom_id(DType::F32, &1.0f32.to_le_bytes());
        let mut h = Sha256::new();
        h.update(b"F32\x00\x00\x00\x80\x3f");
        assert_eq!(id.0, <[u8; 32]>::from(h.finalize()));
        assert_ne!(id, atom_id(DType::I32, &1.0f32.to_le_bytes()), "the tag must matter");
    }

    #[test]
    fn weights_root_ignores_order_but_not_names() {
        let (a, b) = (atom_id(DType::F32, b"aaaa"), atom_id(DType::F32, b"bbbb"));
        assert_eq!(weights_root([("x", a), ("y", b)]), weights_root([("y", b), ("x", a)]));
        assert_ne!(weights_root([("x", a), ("y", b)]), weights_root([("x", b), ("y", a)]));
    }

    #[test]
    fn tensor_root_depends_on_shape_and_dtype() {
        let a = [atom_id(DType::F32, b"abcdabcd")];
        assert_ne!(tensor_root(DType::F32, &[2], &a), tensor_root(DType::F32, &[1, 2], &a));
        assert_ne!(tensor_root(DType::F32, &[2], &a), tensor_root(DType::I32, &[2], &a));
    }

    #[test]
    fn atom_len_rounds_to_blocks() {
        let o = AtomizeOptions::new(1010).unwrap();
        assert_eq!(o.atom_len(DType::Q4_1), 1000);
        assert_eq!(o.atom_len(DType::Q6K), 840);
        assert_eq!(AtomizeOptions::new(10).unwrap().atom_len(DType::Q6K), 210);
        assert!(AtomizeOptions::new(0).is_err());
    }

    #[test]
    fn signature_is_population_statistics() {
        let s = SpatialSignature::of(&[1.0, -3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.mean, 1.0);
        // Squared deviations 0, 16, 1, 9: population variance 26 / 4.
        assert_eq!(s.std_dev, 6.5f64.sqrt());
        assert_eq!(s.max_abs, 4.0);
        // Longer than the lanes, with the extreme in the remainder: 0..=20, max |w| = 20 at the end.
        let values: Vec<f32> = (0..=20).map(|i| if i == 20 { -20.0 } else { i as f32 }).collect();
        let s = SpatialSignature::of(&values).unwrap();
        let mean = (0..20).map(f64::from).sum::<f64>() / 21.0 - 20.0 / 21.0;
        let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / 21.0;
        assert!((s.mean - mean).abs() < 1e-12 && (s.std_dev - var.sqrt()).abs() < 1e-12, "{s:?}");
        assert_eq!(s.max_abs, 20.0);
        assert_eq!(SpatialSignature::of(&[]), None);
    }
}
