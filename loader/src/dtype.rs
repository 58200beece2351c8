//! Element types of stored tensors: the safetensors dtypes and the GGUF tensor types, with their
//! block geometry. A scalar type is a block of one element; a GGUF quantized type is a block of
//! 32 or 256 elements stored as scales plus packed integers (layouts in `dequant.rs`); sub-byte
//! safetensors floats pack 2 (F4) or 4 (F6) elements per block.
//!
//! Specs: safetensors <https://github.com/huggingface/safetensors#format>, GGUF
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (`ggml_type` ids in `ggml.h`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stored element type of a tensor. Its [`DType::tag`] is the encoding tag hashed into every
/// atom id, so it must never change for an existing variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum DType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    F8E4M3,
    F8E5M2,
    F8E8M0,
    F6E2M3,
    F6E3M2,
    F4,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// The safetensors dtype names this loader parses, for error messages.
pub const SAFETENSORS_DTYPES: &str =
    "BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4";

/// The GGUF tensor types this loader loads, for error messages.
pub const GGUF_TYPES: &str =
    "F32 (0), F16 (1), Q4_0 (2), Q4_1 (3), Q5_0 (6), Q5_1 (7), Q8_0 (8), Q4_K (12), Q5_K (13), Q6_K (14), I8 (24), I16 (25), I32 (26), I64 (27), F64 (28), BF16 (30)";

const ALL: [DType; 27] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::U32,
    DType::I32,
    DType::U64,
    DType::I64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
    DType::F8E4M3,
    DType::F8E5M2,
    DType::F8E8M0,
    DType::F6E2M3,
    DType::F6E3M2,
    DType::F4,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

impl DType {
    /// The canonical name: the safetensors spelling for safetensors types, the `ggml_type`
    /// spelling for GGUF block types. Hashed into atom ids as the encoding tag.
    pub const fn tag(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::U16 => "U16",
            DType::I16 => "I16",
            DType::U32 => "U32",
            DType::I32 => "I32",
            DType::U64 => "U64",
            DType::I64 => "I64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E8M0 => "F8_E8M0",
            DType::F6E2M3 => "F6_E2M3",
            DType::F6E3M2 => "F6_E3M2",
            DType::F4 => "F4",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
        }
    }

    /// Parses a name as written by [`DType::tag`].
    pub fn from_tag(tag: &str) -> Option<DType> {
        ALL.into_iter().find(|d| d.tag() == tag)
    }

    /// Parses a safetensors header dtype (the names safetensors' `Dtype` serialises to).
    pub fn from_safetensors(name: &str) -> Option<DType> {
        Self::from_tag(name).filter(|d| !d.is_gguf_block())
    }

    /// Maps a GGUF `ggml_type` id to a loadable dtype. `Err` carries the ggml name of types that
    /// exist but are not loaded here (so the error can say "Q2_K"), or `None` for unknown ids.
    pub fn from_gguf(type_id: u32) -> Result<DType, Option<&'static str>> {
        Ok(match type_id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            12 => DType::Q4K,
            13 => DType::Q5K,
            14 => DType::Q6K,
            24 => DType::I8,
            25 => DType::I16,
            26 => DType::I32,
            27 => DType::I64,
            28 => DType::F64,
            30 => DType::BF16,
            other => return Err(ggml_type_name(other)),
        })
    }

    /// Elements per storage block.
    pub const fn block_elements(self) -> u64 {
        match self {
            DType::F4 => 2,
            DType::F6E2M3 | DType::F6E3M2 => 4,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Bytes per storage block.
    pub const fn block_bytes(self) -> u64 {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::F8E4M3 | DType::F8E5M2 | DType::F8E8M0 | DType::F4 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F6E2M3 | DType::F6E3M2 => 3,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// True for the GGUF block-quantized types.
    pub const fn is_gguf_block(self) -> bool {
        matches!(
            self,
            DType::Q4_0
                | DType::Q4_1
                | DType::Q5_0
                | DType::Q5_1
                | DType::Q8_0
                | DType::Q4K
                | DType::Q5K
                | DType::Q6K
        )
    }

    /// True for integer and boolean types: data such as `position_ids`, not weights.
    pub const fn is_integer(self) -> bool {
        matches!(
            self,
            DType::Bool
                | DType::U8
                | DType::I8
                | DType::U16
                | DType::I16
                | DType::U32
                | DType::I32
                | DType::U64
                | DType::I64
        )
    }

    /// Bytes taken by `elements` elements, or `None` if they do not fill whole blocks or the
    /// size overflows.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        if elements % self.block_elements() != 0 {
            return None;
        }
        (elements / self.block_elements()).checked_mul(self.block_bytes())
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl From<DType> for &'static str {
    fn from(d: DType) -> Self {
        d.tag()
    }
}

impl TryFrom<String> for DType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DType::from_tag(&s).ok_or_else(|| format!("unknown dtype `{s}`"))
    }
}

/// Names of `ggml_type` ids this loader does not load, so errors can name them.
fn ggml_type_name(type_id: u32) -> Option<&'static str> {
    Some(match type_id {
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_are_unique() {
        for d in ALL {
            assert_eq!(DType::from_tag(d.tag()), Some(d));
            assert_eq!(ALL.iter().filter(|e| e.tag() == d.tag()).count(), 1, "{d}");
        }
    }

    #[test]
    fn block_geometry_matches_ggml() {
        // (elements, bytes) from ggml's `type_traits` table (GGML_QUANT_SIZES in gguf-py).
        let expected = [
            (DType::Q4_0, 32, 18),
            (DType::Q4_1, 32, 20),
            (DType::Q5_0, 32, 22),
            (DType::Q5_1, 32, 24),
            (DType::Q8_0, 32, 34),
            (DType::Q4K, 256, 144),
            (DType::Q5K, 256, 176),
            (DType::Q6K, 256, 210),
        ];
        for (d, elements, bytes) in expected {
            assert_eq!((d.block_elements(), d.block_bytes()), (elements, bytes), "{d}");
        }
        assert_eq!(DType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(DType::Q4_1.bytes_for(33), None);
        assert_eq!(DType::F32.bytes_for(u64::MAX), None);
    }

    #[test]
    fn gguf_ids_name_unsupported_types() {
        assert_eq!(DType::from_gguf(3), Ok(DType::Q4_1));
        assert_eq!(DType::from_gguf(10), Err(Some("Q2_K")));
        assert_eq!(DType::from_gguf(1000), Err(None));
        assert_eq!(DType::from_safetensors("Q4_1"), None);
        assert_eq!(DType::from_safetensors("BF16"), Some(DType::BF16));
    }
}
