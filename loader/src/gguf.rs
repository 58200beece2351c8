//! GGUF v2/v3 header parsing: metadata of every value type (arrays nested to a bounded depth),
//! tensor infos, the alignment key and the data section offset, with every declared length and
//! offset checked against the file before it is used.
//!
//! Spec: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Layout (little-endian):
//! magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, metadata key/values, tensor
//! infos (name, u32 n_dims, u64 dims innermost first, u32 ggml_type, u64 offset relative to the
//! data section), padding to `general.alignment` (default 32), then tensor data. Version 1 used
//! 32-bit counts and is not supported.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::TensorInfo;
use crate::source::{ByteSource, HeaderCursor};
use crate::DType;

/// The GGUF file magic, `GGUF` as bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays of arrays deeper than this are rejected (real files use depth 1; bounded recursion
/// keeps a crafted file from exhausting the stack).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Most metadata values (array elements included) a file may hold. The largest real vocabularies
/// (~262k tokens, with scores, types and merges) need about 1.3 million; a parsed value takes
/// ~64 bytes with its JSON copy, so this caps metadata memory near 256 MiB whatever a crafted
/// file declares (a file byte per `u8` element would otherwise cost 64 bytes of memory).
pub const MAX_METADATA_VALUES: u64 = 1 << 22;
/// Most bytes of metadata strings (keys, tokens, merges, chat template) a file may hold.
pub const MAX_METADATA_STRING_BYTES: u64 = 256 << 20;

/// What is left of the metadata limits while parsing.
struct Budget {
    values: u64,
    string_bytes: u64,
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON for storage beside the model; every GGUF value has an exact JSON form
    /// (f32 widens to f64 exactly; non-finite floats become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let float = |v: f64| {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(v.to_string()))
        };
        match self {
            GgufValue::U8(v) => (*v).into(),
            GgufValue::I8(v) => (*v).into(),
            GgufValue::U16(v) => (*v).into(),
            GgufValue::I16(v) => (*v).into(),
            GgufValue::U32(v) => (*v).into(),
            GgufValue::I32(v) => (*v).into(),
            GgufValue::U64(v) => (*v).into(),
            GgufValue::I64(v) => (*v).into(),
            GgufValue::F32(v) => float(f64::from(*v)),
            GgufValue::F64(v) => float(*v),
            GgufValue::Bool(v) => (*v).into(),
            GgufValue::String(s) => s.clone().into(),
            GgufValue::Array(items) => items.iter().map(GgufValue::to_json).collect(),
        }
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensors in file order, offsets made absolute and checked.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Minimal encoded size of a value of each type id, for bounding declared array lengths.
fn min_value_bytes(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // u64 length, empty string
        9 => 12, // u32 type + u64 length, empty array
        _ => return None,
    })
}

/// Parses the header of a GGUF file whose first four bytes are [`MAGIC`].
pub fn parse(source: &dyn ByteSource) -> Result<GgufHeader> {
    let mut c = HeaderCursor::new(source, 0);
    let magic = c.array::<4>(|| "GGUF magic".into())?;
    if magic != MAGIC {
        return Err(Error::MalformedHeader {
            path: c.path(),
            offset: 0,
            reason: format!("magic {magic:02x?} is not `GGUF`"),
        });
    }
    let version = c.u32(|| "GGUF version".into())?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::UnsupportedVersion {
                path: c.path(),
                version: v,
                hint: "; this looks like a big-endian GGUF, convert it to little-endian",
            })
        }
        1 => {
            return Err(Error::UnsupportedVersion {
                path: c.path(),
                version,
                hint: "; version 1 is obsolete, re-convert the model with a current llama.cpp",
            })
        }
        _ => {
            return Err(Error::UnsupportedVersion {
                path: c.path(),
                version,
                hint: "",
            })
        }
    }
    let count_at = c.pos();
    let tensor_count = c.u64(|| "tensor count".into())?;
    let kv_count = c.u64(|| "metadata count".into())?;
    // A key/value takes at least 13 bytes (empty key, type, one-byte value); a tensor info 24.
    c.check_declared(kv_count, 13, "metadata entries", || "metadata count".into(), count_at + 8)?;
    c.check_declared(tensor_count, 24, "tensor infos", || "tensor count".into(), count_at)?;

    let mut metadata = Vec::with_capacity(capped(kv_count));
    let mut keys = HashSet::new();
    let mut budget = Budget {
        values: MAX_METADATA_VALUES,
        string_bytes: MAX_METADATA_STRING_BYTES,
    };
    let mut alignment_at = 0;
    for _ in 0..kv_count {
        let key_at = c.pos();
        let key = read_string(&mut c, &mut budget, || "metadata key".into())?;
        if !keys.insert(key.clone()) {
            return Err(Error::Duplicate {
                path: c.path(),
                what: "metadata key",
                name: key,
                offset: key_at,
            });
        }
        let type_at = c.pos();
        let type_id = c.u32(|| format!("value type of key `{key}`"))?;
        if key == "general.alignment" {
            alignment_at = type_at + 4;
        }
        let value = read_value(&mut c, &mut budget, &key, type_id, type_at, 0)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, other)) => {
            return Err(Error::MalformedHeader {
                path: c.path(),
                offset: alignment_at,
                reason: format!(
                    "`general.alignment` must be a u32 power of two, found {}",
                    other.to_json()
                ),
            })
        }
    };

    let mut tensors = Vec::with_capacity(capped(tensor_count));
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let info_at = c.pos();
        let name = read_string(&mut c, &mut budget, || "tensor name".into())?;
        if !names.insert(name.clone()) {
            return Err(Error::Duplicate {
                path: c.path(),
                what: "tensor",
                name,
                offset: info_at,
            });
        }
        let dims_at = c.pos();
        let n_dims = c.u32(|| format!("dimension count of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(Error::MalformedHeader {
                path: c.path(),
                offset: dims_at,
                reason: format!("tensor `{name}` has {n_dims} dimensions; ggml allows at most {MAX_DIMS}"),
            });
        }
        let mut ggml_dims = Vec::with_capacity(capped(u64::from(n_dims)));
        for i in 0..n_dims {
            ggml_dims.push(c.u64(|| format!("dimension {i} of tensor `{name}`"))?);
        }
        let type_at = c.pos();
        let type_id = c.u32(|| format!("type of tensor `{name}`"))?;
        let dtype = DType::from_gguf(type_id).map_err(|known| Error::UnknownDtype {
            path: c.path(),
            tensor: name.clone(),
            offset: type_at,
            dtype: match known {
                Some(ggml) => format!("{ggml} (GGUF type id {type_id})"),
                None => format!("GGUF type id {type_id}"),
            },
            supported: crate::dtype::GGUF_TYPES,
        })?;
        let relative = c.u64(|| format!("data offset of tensor `{name}`"))?;
        // GGUF lists dimensions innermost first; we keep shapes row-major (outermost first),
        // as safetensors and PyTorch do, so `[out, in]` reads the same from either format.
        let shape: Vec<u64> = ggml_dims.iter().rev().copied().collect();
        let elements = checked_elements(&shape).ok_or_else(|| Error::ShapeOverflow {
            path: c.path(),
            tensor: name.clone(),
            offset: dims_at,
            shape: shape.clone(),
        })?;
        let row_len = ggml_dims.first().copied().unwrap_or(1);
        if row_len % dtype.block_elements() != 0 {
            return Err(Error::BlockMisfit {
                path: c.path(),
                tensor: name,
                offset: dims_at,
                dtype,
                block_elements: dtype.block_elements(),
                counted: "innermost dimension",
                count: row_len,
            });
        }
        let byte_len = dtype.bytes_for(elements).ok_or_else(|| Error::ShapeOverflow {
            path: c.path(),
            tensor: name.clone(),
            offset: dims_at,
            shape: shape.clone(),
        })?;
        if relative % alignment != 0 {
            return Err(Error::MisalignedData {
                path: c.path(),
                tensor: name,
                offset: relative,
                alignment,
            });
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            offset: relative,
            byte_len,
        });
    }

    let data_offset = c.pos().div_ceil(alignment) * alignment;
    for t in &mut tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.byte_len));
        match (start, end) {
            (Some(start), Some(end)) if end <= source.len() => t.offset = start,
            _ => {
                return Err(Error::DataOutOfBounds {
                    path: c.path(),
                    tensor: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset.saturating_add(t.offset).saturating_add(t.byte_len),
                    file_len: source.len(),
                })
            }
        }
    }
    crate::model::check_no_overlap(source.path(), &tensors)?;

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Initial capacity for a declared count: declared counts are checked against the bytes left in
/// the file, but a large file still allows huge counts, so memory grows only with what is parsed.
fn capped(declared: u64) -> usize {
    declared.min(4096) as usize
}

pub(crate) fn checked_elements(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

fn read_string(c: &mut HeaderCursor<'_>, budget: &mut Budget, what: impl Fn() -> String) -> Result<String> {
    let at = c.pos();
    let len = c.u64(|| format!("length of {}", what()))?;
    c.check_declared(len, 1, "bytes", || format!("length of {}", what()), at)?;
    if len > budget.string_bytes {
        return Err(Error::DeclaredLengthTooLarge {
            path: c.path(),
            what: format!("length of {}", what()),
            offset: at,
            declared: len,
            unit: "bytes",
            limit: budget.string_bytes,
        });
    }
    budget.string_bytes -= len;
    let bytes = c.take(len, &what)?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 {
        path: c.path(),
        what: what(),
        offset: at + 8,
    })
}

fn read_value(
    c: &mut HeaderCursor<'_>,
    budget: &mut Budget,
    key: &str,
    type_id: u32,
    type_at: u64,
    depth: usize,
) -> Result<GgufValue> {
    let what = || format!("value of key `{key}`");
    if budget.values == 0 {
        return Err(Error::DeclaredLengthTooLarge {
            path: c.path(),
            what: format!("metadata (at key `{key}`)"),
            offset: c.pos(),
            declared: MAX_METADATA_VALUES + 1,
            unit: "values",
            limit: MAX_METADATA_VALUES,
        });
    }
    budget.values -= 1;
    Ok(match type_id {
        0 => GgufValue::U8(c.u8(what)?),
        1 => GgufValue::I8(c.u8(what)? as i8),
        2 => GgufValue::U16(c.u16(what)?),
        3 => GgufValue::I16(c.u16(what)? as i16),
        4 => GgufValue::U32(c.u32(what)?),
        5 => GgufValue::I32(c.u32(what)? as i32),
        6 => GgufValue::F32(f32::from_bits(c.u32(what)?)),
        7 => {
            let at = c.pos();
            match c.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(Error::MalformedHeader {
                        path: c.path(),
                        offset: at,
                        reason: format!("bool value {b} of key `{key}` is neither 0 nor 1"),
                    })
                }
            }
        }
        8 => GgufValue::String(read_string(c, budget, what)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::MalformedHeader {
                    path: c.path(),
                    offset: type_at,
                    reason: format!("key `{key}` nests arrays deeper than {MAX_ARRAY_DEPTH}"),
                });
            }
            let elem_at = c.pos();
            let elem_type = c.u32(|| format!("element type of array `{key}`"))?;
            let min = min_value_bytes(elem_type).ok_or_else(|| Error::UnknownValueType {
                path: c.path(),
                key: key.to_string(),
                offset: elem_at,
                type_id: elem_type,
            })?;
            let len_at = c.pos();
            let len = c.u64(|| format!("length of array `{key}`"))?;
            c.check_declared(len, min, "elements", || format!("array `{key}`"), len_at)?;
            if len > budget.values {
                return Err(Error::DeclaredLengthTooLarge {
                    path: c.path(),
                    what: format!("array `{key}`"),
                    offset: len_at,
                    declared: len,
                    unit: "elements",
                    limit: budget.values,
                });
            }
            let mut items = Vec::with_capacity(capped(len));
            for _ in 0..len {
                items.push(read_value(c, budget, key, elem_type, elem_at, depth + 1)?);
            }
            GgufValue::Array(items)
        }
        10 => GgufValue::U64(c.u64(what)?),
        11 => GgufValue::I64(c.u64(what)? as i64),
        12 => GgufValue::F64(f64::from_bits(c.u64(what)?)),
        other => {
            return Err(Error::UnknownValueType {
                path: c.path(),
                key: key.to_string(),
                offset: type_at,
                type_id: other,
            })
        }
    })
}
