//! safetensors header parsing with per-tensor checks: every dtype of the format, shapes whose
//! element count must not overflow, byte ranges that must match the shape, lie inside the file,
//! not overlap and (as the spec requires) leave no unindexed bytes.
//!
//! Spec: <https://github.com/huggingface/safetensors#format>: u64 LE header length N, N bytes of
//! UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`,
//! then the data, offsets relative to its start. The header is parsed here rather than with the
//! `safetensors` crate so that each failure can name the tensor and the absolute file offset, and
//! so that tensor data is never mapped or read while parsing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::gguf::checked_elements;
use crate::model::TensorInfo;
use crate::source::{ByteSource, HeaderCursor};
use crate::DType;

/// Largest header accepted (the `safetensors` crate's own limit): a header is JSON for at most
/// a few hundred thousand tensors; anything bigger is a corrupt length.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Highest tensor rank accepted (PyTorch's own limit is 64); the rank is hashed as one byte.
pub const MAX_RANK: usize = 64;

/// A parsed safetensors header.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// The `__metadata__` map, if present.
    pub metadata: BTreeMap<String, String>,
    /// Tensors in data order, offsets absolute.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section (8 + header length).
    pub data_offset: u64,
}

/// True when the first bytes look like a safetensors file: an 8-byte header length followed by
/// the start of a JSON object (`{"` or `{}`). The length itself is not judged here, so that a
/// corrupt one gets the specific error from [`parse`] rather than "unknown format".
pub fn looks_like(first: &[u8]) -> bool {
    first.len() >= 10 && first[8] == b'{' && matches!(first[9], b'"' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses the header of a safetensors file.
pub fn parse(source: &dyn ByteSource) -> Result<SafetensorsHeader> {
    let path = || source.path().to_path_buf();
    let mut c = HeaderCursor::new(source, 0);
    let header_len = c.u64(|| "safetensors header length".into())?;
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::DeclaredLengthTooLarge {
            path: path(),
            what: "safetensors header length".into(),
            offset: 0,
            declared: header_len,
            unit: "bytes",
            limit: MAX_HEADER_BYTES.min(c.remaining()),
        });
    }
    let header = c.take(header_len, || "safetensors header".into())?;
    let data_offset = 8 + header_len;
    let text = std::str::from_utf8(&header).map_err(|e| Error::InvalidUtf8 {
        path: path(),
        what: "safetensors header".into(),
        offset: 8 + e.valid_up_to() as u64,
    })?;

    let entries = parse_entries(text).map_err(|e| Error::MalformedHeader {
        path: path(),
        // The header is usually one line; serde_json reports 1-based line/column.
        offset: if e.line() == 1 { 8 + e.column().saturating_sub(1) as u64 } else { 8 },
        reason: format!("{e}"),
    })?;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    let mut names = HashSet::new();
    for (name, raw) in entries {
        // Where the entry's value starts in the file: the raw JSON borrows from `text`.
        let value_at = 8 + (raw.get().as_ptr() as usize - text.as_ptr() as usize) as u64;
        let at = || value_at;
        if !names.insert(name.clone()) {
            return Err(Error::Duplicate {
                path: path(),
                what: "tensor",
                name,
                offset: value_at,
            });
        }
        let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|e| Error::MalformedHeader {
            path: path(),
            offset: value_at,
            reason: format!("entry `{name}`: {e}"),
        })?;
        let bad = |reason: String| Error::MalformedHeader {
            path: path(),
            offset: at(),
            reason,
        };
        if name == "__metadata__" {
            let map = value
                .as_object()
                .ok_or_else(|| bad("`__metadata__` must be an object of strings".into()))?;
            for (k, v) in map {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("`__metadata__.{k}` must be a string, found {v}")))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let obj = value
            .as_object()
            .ok_or_else(|| bad(format!("tensor `{name}` must be an object, found {value}")))?;
        let dtype_name = obj
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("tensor `{name}` has no string `dtype`")))?;
        let dtype = DType::from_safetensors(dtype_name).ok_or_else(|| Error::UnknownDtype {
            path: path(),
            tensor: name.clone(),
            offset: at(),
            dtype: dtype_name.to_string(),
            supported: crate::dtype::SAFETENSORS_DTYPES,
        })?;
        let shape = obj
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|dims| dims.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| bad(format!("tensor `{name}` needs `shape`, an array of non-negative integers")))?;
        if shape.len() > MAX_RANK {
            return Err(bad(format!("tensor `{name}` has rank {}, more than {MAX_RANK}", shape.len())));
        }
        let (begin, end) = match obj.get("data_offsets").and_then(|v| v.as_array()).map(Vec::as_slice) {
            Some([b, e]) => match (b.as_u64(), e.as_u64()) {
                (Some(b), Some(e)) if b <= e => (b, e),
                _ => return Err(bad(format!("tensor `{name}`: `data_offsets` must be [begin, end] with begin <= end"))),
            },
            _ => return Err(bad(format!("tensor `{name}` needs `data_offsets`, an array [begin, end]"))),
        };
        let overflow = || Error::ShapeOverflow {
            path: path(),
            tensor: name.clone(),
            offset: at(),
            shape: shape.clone(),
        };
        let elements = checked_elements(&shape).ok_or_else(overflow)?;
        let expected = dtype.bytes_for(elements).ok_or_else(|| {
            if elements % dtype.block_elements() != 0 {
                Error::BlockMisfit {
                    path: path(),
                    tensor: name.clone(),
                    offset: at(),
                    dtype,
                    block_elements: dtype.block_elements(),
                    counted: "element count",
                    count: elements,
                }
            } else {
                overflow()
            }
        })?;
        if end - begin != expected {
            return Err(Error::LengthMismatch {
                path: path(),
                tensor: name,
                offset: at(),
                dtype,
                shape,
                declared: end - begin,
                expected,
            });
        }
        let (abs_start, abs_end) = (data_offset.checked_add(begin), data_offset.checked_add(end));
        match (abs_start, abs_end) {
            (Some(s), Some(e)) if e <= source.len() => tensors.push(TensorInfo {
                name,
                dtype,
                shape,
                offset: s,
                byte_len: e - s,
            }),
            _ => {
                return Err(Error::DataOutOfBounds {
                    path: path(),
                    tensor: name,
                    start: data_offset.saturating_add(begin),
                    end: data_offset.saturating_add(end),
                    file_len: source.len(),
                })
            }
        }
    }

    tensors.sort_by_key(|t| (t.offset, t.byte_len));
    crate::model::check_no_overlap(source.path(), &tensors)?;
    // The spec requires the data to be fully indexed: no holes between tensors or after the last.
    let mut covered = data_offset;
    for t in tensors.iter().filter(|t| t.byte_len > 0) {
        if t.offset > covered {
            return Err(Error::UnindexedData {
                path: path(),
                start: covered - data_offset,
                end: t.offset - data_offset,
            });
        }
        covered = t.offset + t.byte_len;
    }
    if covered < source.len() {
        return Err(Error::UnindexedData {
            path: path(),
            start: covered - data_offset,
            end: source.len() - data_offset,
        });
    }

    Ok(SafetensorsHeader {
        metadata,
        tensors,
        data_offset,
    })
}

/// Parses the top-level JSON object into its entries in order, keeping duplicates (which
/// `serde_json::Map` would silently collapse) so that they can be reported, and each value as
/// raw JSON borrowed from `text`, so that errors can give its exact offset.
fn parse_entries(text: &str) -> std::result::Result<Vec<(String, &RawValue)>, serde_json::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = (&mut de).deserialize_map(Entries)?;
    // The header may be padded with trailing spaces to align the data section.
    de.end()?;
    Ok(entries)
}
