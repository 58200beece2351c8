//! Values that travel to SQL Server as text because tiberius has no type for them: geometry as
//! WKT (`geometry::STGeomFromText`; tiberius cannot write or read the CLR UDT), vectors as JSON
//! arrays cast to `VECTOR(1998)` (tiberius has no TDS vector type), and batches of hashes as JSON
//! arrays of hex unpacked by `OPENJSON` (tiberius has no table-valued parameters). FACTS.md, "SQL
//! Server 2025".
//!
//! Numbers are written with Rust's `Display`, which gives the shortest text that reads back to
//! the same value and never uses an exponent, so neither SQL Server's WKT nor its JSON parser
//! meets a form it might read differently.

use std::fmt::Write;

use hartonomous_loader::atom::SpatialSignature;
use hartonomous_loader::geometry::decode_linestring_zm;
use hartonomous_loader::Hash256;

use crate::store::MAX_EMBEDDING_DIMENSION;

/// A WKB `LINESTRING ZM` (as `loader/src/geometry.rs` writes it) as SQL Server WKT:
/// `LINESTRING (x y z m, ...)`. SQL Server's WKT has no `ZM` keyword: four numbers a point are
/// X Y Z M. Refuses values WKT cannot hold (NaN, infinities) and lines of fewer than two points
/// (not a valid LineString).
pub(crate) fn linestring_wkt(wkb: &[u8]) -> Result<String, String> {
    let points = decode_linestring_zm(wkb).map_err(|e| format!("its geometry is not a WKB LINESTRING ZM: {e}"))?;
    if points.len() < 2 {
        return Err(format!("its geometry has {} point(s); a LINESTRING needs at least two", points.len()));
    }
    let mut wkt = String::with_capacity(12 + points.len() * 48);
    wkt.push_str("LINESTRING (");
    for (i, p) in points.iter().enumerate() {
        for v in [p.x, p.y, p.z, p.m] {
            if !v.is_finite() {
                return Err(format!("point {i} of its geometry holds {v}, which WKT cannot write"));
            }
        }
        if i > 0 {
            wkt.push_str(", ");
        }
        write!(wkt, "{} {} {} {}", p.x, p.y, p.z, p.m).expect("writing to a String cannot fail");
    }
    wkt.push(')');
    Ok(wkt)
}

/// An atom's signature as WKT `POINT (mean std max_abs)` (three numbers: X Y Z), or `None` when
/// it has none or holds a value WKT cannot write.
pub(crate) fn signature_wkt(signature: Option<SpatialSignature>) -> Option<String> {
    let s = signature?;
    [s.mean, s.std_dev, s.max_abs]
        .iter()
        .all(|v| v.is_finite())
        .then(|| format!("POINT ({} {} {})", s.mean, s.std_dev, s.max_abs))
}

/// An embedding as the JSON text of exactly [`MAX_EMBEDDING_DIMENSION`] numbers, zero-padded
/// (cosine, dot and L2 are unchanged by trailing zeros), for `CAST(@P AS VECTOR(1998))`.
pub(crate) fn vector_json(vector: &[f32]) -> Result<String, String> {
    if vector.is_empty() || vector.len() > MAX_EMBEDDING_DIMENSION {
        return Err(format!("{} dimensions; 1 to {MAX_EMBEDDING_DIMENSION} are storable", vector.len()));
    }
    let mut json = String::with_capacity(vector.len() * 12 + 2 * MAX_EMBEDDING_DIMENSION);
    json.push('[');
    for (i, v) in vector.iter().enumerate() {
        if !v.is_finite() {
            return Err(format!("element {i} is {v}, which JSON cannot hold"));
        }
        if i > 0 {
            json.push(',');
        }
        write!(json, "{v}").expect("writing to a String cannot fail");
    }
    for _ in vector.len()..MAX_EMBEDDING_DIMENSION {
        json.push_str(",0");
    }
    json.push(']');
    Ok(json)
}

/// A JSON array of the hashes as 64 lowercase hex digits each, for `OPENJSON`.
pub(crate) fn hashes_json(hashes: &[Hash256]) -> String {
    let mut json = String::with_capacity(2 + hashes.len() * 67);
    json.push('[');
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(&h.to_hex());
        json.push('"');
    }
    json.push(']');
    json
}

#[cfg(test)]
mod tests {
    use hartonomous_loader::geometry::{encode_linestring_zm, PointZm};

    use super::*;

    #[test]
    fn linestring_wkt_keeps_z_and_m_exactly() {
        let points = [
            PointZm { x: 0.0, y: -0.5, z: 1.0, m: 3.0 },
            PointZm { x: 1.0, y: 0.1, z: 1e-7, m: 3.0 },
            PointZm { x: 2.0, y: 123456789.125, z: 0.333_333_333_333_333_3, m: 3.0 },
        ];
        let wkb = encode_linestring_zm(&points).unwrap();
        let wkt = linestring_wkt(&wkb).unwrap();
        assert!(wkt.starts_with("LINESTRING (0 -0.5 1 3, 1 0.1 0.0000001 3, "), "{wkt}");
        assert!(!wkt.contains('e') || !wkt.contains("e-"), "no exponents: {wkt}");
        // Read back: four numbers a point, each the same f64.
        let inner = wkt.strip_prefix("LINESTRING (").and_then(|s| s.strip_suffix(')')).unwrap();
        let back: Vec<Vec<f64>> =
            inner.split(", ").map(|p| p.split(' ').map(|v| v.parse().unwrap()).collect()).collect();
        for (p, b) in points.iter().zip(&back) {
            assert_eq!(b, &vec![p.x, p.y, p.z, p.m]);
        }
    }

    #[test]
    fn linestring_wkt_refuses_what_sql_server_would() {
        let one = encode_linestring_zm(&[PointZm { x: 0.0, y: 1.0, z: 1.0, m: 1.0 }]).unwrap();
        assert!(linestring_wkt(&one).unwrap_err().contains("at least two"));
        let nan = encode_linestring_zm(&[PointZm { x: 0.0, y: f64::NAN, z: 1.0, m: 1.0 }; 2]).unwrap();
        assert!(linestring_wkt(&nan).unwrap_err().contains("NaN"));
        assert!(linestring_wkt(&[1, 2, 3]).is_err());
    }

    #[test]
    fn signatures_are_three_number_points() {
        let s = SpatialSignature { mean: 0.25, std_dev: 1.5, max_abs: 3.0 };
        assert_eq!(signature_wkt(Some(s)).as_deref(), Some("POINT (0.25 1.5 3)"));
        assert_eq!(signature_wkt(Some(SpatialSignature { mean: f64::INFINITY, ..s })), None);
        assert_eq!(signature_wkt(None), None);
    }

    #[test]
    fn vectors_are_padded_to_1998_numbers() {
        let json = vector_json(&[0.5, -1.0, 1e-7]).unwrap();
        let values: Vec<f32> = serde_json::from_str(&json).unwrap();
        assert_eq!(values.len(), MAX_EMBEDDING_DIMENSION);
        assert_eq!(&values[..3], &[0.5, -1.0, 1e-7]);
        assert!(values[3..].iter().all(|&v| v == 0.0));
        assert!(json.starts_with("[0.5,-1,0.0000001,0,"), "{}", &json[..30]);
        assert_eq!(serde_json::from_str::<Vec<f32>>(&vector_json(&[1.0; 1998]).unwrap()).unwrap().len(), 1998);
        assert!(vector_json(&[]).is_err());
        assert!(vector_json(&[0.0; 1999]).is_err());
        assert!(vector_json(&[f32::NAN]).is_err());
    }

    #[test]
    fn hashes_are_a_json_array_of_hex() {
        let json = hashes_json(&[Hash256([0xab; 32]), Hash256([1; 32])]);
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec!["ab".repeat(32), "01".repeat(32)]);
        assert_eq!(hashes_json(&[]), "[]");
    }
}
