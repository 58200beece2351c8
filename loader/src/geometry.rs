//! A layer's weights as ISO WKB `LINESTRING ZM` geometry, and back.
//!
//! Point i of a tensor's line is (X = i, the flat row-major element index; Y = the dequantized
//! value; Z = importance = |w| / max|w| over the tensor, 0 for an all-zero tensor; M = the model
//! version stamp). Every value is an f64, so f32, f16, bf16 and dequantized GGUF values (which
//! are f32) are kept exactly.
//!
//! Encoding (OGC 06-103r4 / ISO 13249-3 WKB, the bytes SQL Server's `AsBinaryZM()` returns and
//! `STGeomFromWKB` accepts): byte order (1 = little-endian), u32 type 3002 (LineString ZM),
//! u32 point count, then per point x, y, z, m as f64. Each point costs 32 bytes, 8 times an f32
//! weight and 50 times a Q4 one, so geometry is produced only for tensors up to
//! [`DEFAULT_MAX_POINTS`] elements unless configured otherwise.

use crate::dequant::{can_dequantize, dequantize};
use crate::error::{Error, Result};
use crate::model::{ModelFile, TensorInfo};

/// WKB geometry type of `LINESTRING ZM` (ISO numbering: 2 + 3000).
pub const WKB_LINESTRING_ZM: u32 = 3002;
/// WKB geometry type of `POINT ZM`.
pub const WKB_POINT_ZM: u32 = 3001;
/// WKB geometry type of `POINT Z` (ISO numbering: 1 + 1000), the form of an atom's
/// [`SpatialSignature`](crate::atom::SpatialSignature).
pub const WKB_POINT_Z: u32 = 1001;
/// Bytes of a WKB `POINT Z`: byte order, type, x, y, z.
pub const POINT_Z_BYTES: usize = 29;
/// Bytes before the first point: byte order, type, count.
pub const HEADER_BYTES: usize = 9;
/// Bytes per point.
pub const POINT_BYTES: usize = 32;

/// Default largest tensor turned into geometry: 2^20 points = 32 MiB of WKB. This covers every
/// matrix inside the transformer blocks of the models we serve (MiniLM's 1536×384 FFN = 589,824
/// points; SmolLM2's 1536×576 = 884,736) while leaving out embedding tables (MiniLM 11.7 M
/// points = 375 MB, SmolLM2 28.3 M = 906 MB), which are paged from atoms.
pub const DEFAULT_MAX_POINTS: u64 = 1 << 20;

/// One vertex of a `LINESTRING ZM`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointZm {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub m: f64,
}

/// Options for [`tensor_geometry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeometryOptions {
    /// Tensors with more elements than this get no geometry.
    pub max_points: u64,
    /// The M coordinate of every point: which version of the model the line belongs to.
    pub version_stamp: f64,
}

impl Default for GeometryOptions {
    fn default() -> Self {
        Self {
            max_points: DEFAULT_MAX_POINTS,
            version_stamp: 1.0,
        }
    }
}

/// Encodes points as little-endian WKB `LINESTRING ZM`. WKB counts points in a u32, so more
/// than 2^32 - 1 points is an error.
pub fn encode_linestring_zm(points: &[PointZm]) -> Result<Vec<u8>> {
    let count = u32::try_from(points.len()).map_err(|_| {
        Error::InvalidOption(format!("{} points do not fit in one WKB LINESTRING (at most 2^32 - 1)", points.len()))
    })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + POINT_BYTES * points.len());
    write_header(&mut out, count);
    for p in points {
        write_point(&mut out, p);
    }
    Ok(out)
}

fn write_header(out: &mut Vec<u8>, count: u32) {
    out.push(1);
    out.extend_from_slice(&WKB_LINESTRING_ZM.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

fn write_point(out: &mut Vec<u8>, p: &PointZm) {
    for v in [p.x, p.y, p.z, p.m] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Encodes (x, y, z) as little-endian WKB `POINT Z`.
pub fn encode_point_z(x: f64, y: f64, z: f64) -> [u8; POINT_Z_BYTES] {
    let mut out = [0u8; POINT_Z_BYTES];
    out[0] = 1;
    out[1..5].copy_from_slice(&WKB_POINT_Z.to_le_bytes());
    for (i, v) in [x, y, z].into_iter().enumerate() {
        out[5 + 8 * i..13 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a little- or big-endian WKB `POINT Z` to (x, y, z).
pub fn decode_point_z(wkb: &[u8]) -> Result<(f64, f64, f64)> {
    if wkb.len() != POINT_Z_BYTES {
        return Err(Error::Wkb {
            offset: 0,
            reason: format!("{} bytes is not the {POINT_Z_BYTES} bytes of a WKB POINT Z", wkb.len()),
        });
    }
    let little = match wkb[0] {
        0 => false,
        1 => true,
        b => return Err(Error::Wkb { offset: 0, reason: format!("byte order marker {b} is neither 0 nor 1") }),
    };
    let kind: [u8; 4] = wkb[1..5].try_into().expect("4 bytes");
    let kind = if little { u32::from_le_bytes(kind) } else { u32::from_be_bytes(kind) };
    if kind != WKB_POINT_Z {
        return Err(Error::Wkb { offset: 1, reason: format!("geometry type {kind} is not POINT Z ({WKB_POINT_Z})") });
    }
    let f = |i: usize| {
        let b: [u8; 8] = wkb[5 + 8 * i..13 + 8 * i].try_into().expect("8 bytes");
        if little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) }
    };
    Ok((f(0), f(1), f(2)))
}

/// Decodes WKB `LINESTRING ZM` in either byte order. Checks the type and that the declared
/// point count matches the bytes present before allocating.
pub fn decode_linestring_zm(wkb: &[u8]) -> Result<Vec<PointZm>> {
    let bad = |offset: usize, reason: String| Error::Wkb {
        offset: offset as u64,
        reason,
    };
    if wkb.len() < HEADER_BYTES {
        return Err(bad(
            0,
            format!("{} bytes is shorter than the {HEADER_BYTES}-byte LINESTRING header", wkb.len()),
        ));
    }
    let little = match wkb[0] {
        0 => false,
        1 => true,
        b => return Err(bad(0, format!("byte order marker {b} is neither 0 (big) nor 1 (little endian)"))),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = wkb[at..at + 4].try_into().expect("4 bytes");
        if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    let kind = u32_at(1);
    if kind != WKB_LINESTRING_ZM {
        let hint = match kind {
            2 => " (a 2-D LINESTRING: Z and M were dropped; select AsBinaryZM(), not STAsBinary())",
            1002 | 2002 => " (a LINESTRING Z or M: select AsBinaryZM() to keep both)",
            WKB_POINT_ZM => " (a POINT ZM)",
            _ => "",
        };
        return Err(bad(1, format!("geometry type {kind} is not LINESTRING ZM ({WKB_LINESTRING_ZM}){hint}")));
    }
    let count = u32_at(5) as usize;
    let body = wkb.len() - HEADER_BYTES;
    if count.checked_mul(POINT_BYTES) != Some(body) {
        return Err(bad(
            5,
            format!("declares {count} points ({} bytes) but {body} bytes follow the header", count as u128 * POINT_BYTES as u128),
        ));
    }
    let f64_at = |at: usize| {
        let b: [u8; 8] = wkb[at..at + 8].try_into().expect("8 bytes");
        if little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) }
    };
    Ok((0..count)
        .map(|i| {
            let at = HEADER_BYTES + i * POINT_BYTES;
            PointZm {
                x: f64_at(at),
                y: f64_at(at + 8),
                z: f64_at(at + 16),
                m: f64_at(at + 24),
            }
        })
        .collect())
}

/// A layer decoded from its geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerValues {
    /// Values in flat element order.
    pub values: Vec<f64>,
    /// |w| / max|w| per element.
    pub importance: Vec<f64>,
    /// The M coordinate shared by all points (`None` for an empty line).
    pub version_stamp: Option<f64>,
}

/// Decodes a layer's geometry back to its values and importance, checking that the points are
/// the elements 0, 1, 2, … in order and share one version stamp.
pub fn decode_layer(wkb: &[u8]) -> Result<LayerValues> {
    let points = decode_linestring_zm(wkb)?;
    let version_stamp = points.first().map(|p| p.m);
    let mut values = Vec::with_capacity(points.len());
    let mut importance = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let at = (HEADER_BYTES + i * POINT_BYTES) as u64;
        if p.x != i as f64 {
            return Err(Error::Wkb {
                offset: at,
                reason: format!("point {i} has X = {}, expected the element index {i}", p.x),
            });
        }
        if Some(p.m.to_bits()) != version_stamp.map(f64::to_bits) {
            return Err(Error::Wkb {
                offset: at + 24,
                reason: format!("point {i} has M = {}, but the line's version stamp is {:?}", p.m, version_stamp),
            });
        }
        values.push(p.y);
        importance.push(p.z);
    }
    Ok(LayerValues {
        values,
        importance,
        version_stamp,
    })
}

/// Bytes read per step while streaming a tensor into geometry.
const STREAM_BYTES: u64 = 1 << 20;

/// The `LINESTRING ZM` of `tensor`, or `None` when it has more elements than
/// `options.max_points` or a dtype that cannot be dequantized. Reads the tensor twice in
/// bounded chunks (once for max |w|, once to write the points).
pub fn tensor_geometry(model: &ModelFile, tensor: &TensorInfo, options: &GeometryOptions) -> Result<Option<Vec<u8>>> {
    let elements = tensor.element_count();
    if elements > options.max_points || elements > u64::from(u32::MAX) || !can_dequantize(tensor.dtype) {
        return Ok(None);
    }
    let mut max_abs = 0.0f64;
    stream_values(model, tensor, |_, values| {
        for &v in values {
            max_abs = max_abs.max(f64::from(v).abs());
        }
    })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + POINT_BYTES * elements as usize);
    write_header(&mut out, elements as u32);
    stream_values(model, tensor, |first, values| {
        for (i, &v) in values.iter().enumerate() {
            let y = f64::from(v);
            let z = if max_abs > 0.0 { y.abs() / max_abs } else { 0.0 };
            let point = PointZm {
                x: (first + i as u64) as f64,
                y,
                z,
                m: options.version_stamp,
            };
            write_point(&mut out, &point);
        }
    })?;
    Ok(Some(out))
}

/// Calls `f(first element index, values)` over the tensor in chunks of whole blocks.
fn stream_values(model: &ModelFile, tensor: &TensorInfo, mut f: impl FnMut(u64, &[f32])) -> Result<()> {
    let (bb, be) = (tensor.dtype.block_bytes(), tensor.dtype.block_elements());
    let chunk = (STREAM_BYTES / bb).max(1) * bb;
    let (mut bytes, mut values) = (Vec::new(), Vec::new());
    let mut offset = 0;
    while offset < tensor.byte_len {
        let len = chunk.min(tensor.byte_len - offset);
        bytes.resize(len as usize, 0);
        model.read_tensor_bytes(tensor, offset, &mut bytes)?;
        values.resize((len / bb * be) as usize, 0.0);
        dequantize(tensor.dtype, &bytes, &mut values)?;
        f(offset / bb * be, &values);
        offset += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_wrong_type_and_lying_counts() {
        assert!(decode_linestring_zm(&[1, 0xBA]).is_err());
        let mut two_d = encode_linestring_zm(&[]).unwrap();
        two_d[1..5].copy_from_slice(&2u32.to_le_bytes());
        let e = decode_linestring_zm(&two_d).unwrap_err().to_string();
        assert!(e.contains("AsBinaryZM"), "{e}");
        let mut lying = encode_linestring_zm(&[PointZm { x: 0.0, y: 0.0, z: 0.0, m: 0.0 }]).unwrap();
        lying[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_linestring_zm(&lying).is_err());
    }

    #[test]
    fn point_z_round_trips_and_rejects_other_types() {
        let wkb = encode_point_z(0.5, -2.0, 3.25);
        // Independent: ISO WKB of POINT Z (0.5 -2 3.25), little-endian, type 1001 = e9 03 00 00.
        assert_eq!(&wkb[..5], &[1, 0xe9, 0x03, 0, 0]);
        assert_eq!(decode_point_z(&wkb).unwrap(), (0.5, -2.0, 3.25));
        let mut wrong = wkb;
        wrong[1..5].copy_from_slice(&WKB_POINT_ZM.to_le_bytes());
        assert!(decode_point_z(&wrong).is_err());
        assert!(decode_point_z(&wkb[..28]).is_err());
    }

    #[test]
    fn decode_layer_checks_indices_and_stamp() {
        let p = |x, m| PointZm { x, y: 1.0, z: 1.0, m };
        let line = |points: &[PointZm]| encode_linestring_zm(points).unwrap();
        assert!(decode_layer(&line(&[p(0.0, 2.0), p(1.0, 2.0)])).is_ok());
        assert!(decode_layer(&line(&[p(0.0, 2.0), p(2.0, 2.0)])).is_err());
        assert!(decode_layer(&line(&[p(0.0, 2.0), p(1.0, 3.0)])).is_err());
    }
}
