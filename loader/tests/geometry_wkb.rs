//! Acceptance (issue 2, item 4): WKB LINESTRING ZM round-trips exactly (f64 bits, Z and M kept)
//! and matches a byte string checked by hand.

use hartonomous_loader::geometry::{decode_linestring_zm, encode_linestring_zm, PointZm};
use proptest::prelude::*;

#[test]
fn two_point_line_matches_hand_checked_bytes() {
    // LINESTRING ZM (0 1.5 1 2, 1 -0.75 0.5 2), as SQL Server's AsBinaryZM() returns it:
    // byte order 01 (little-endian), type 3002 = 0x00000BBA, 2 points, then x y z m as f64 LE.
    // 1.5 = 0x3FF8000000000000, 1.0 = 0x3FF0..., 2.0 = 0x4000..., -0.75 = 0xBFE8..., 0.5 = 0x3FE0...
    let expected: Vec<u8> = [
        "01", "ba0b0000", "02000000",
        "0000000000000000", "000000000000f83f", "000000000000f03f", "0000000000000040",
        "000000000000f03f", "000000000000e8bf", "000000000000e03f", "0000000000000040",
    ]
    .concat()
    .as_bytes()
    .chunks(2)
    .map(|h| u8::from_str_radix(std::str::from_utf8(h).expect("ascii"), 16).expect("hex"))
    .collect();
    let points = [
        PointZm { x: 0.0, y: 1.5, z: 1.0, m: 2.0 },
        PointZm { x: 1.0, y: -0.75, z: 0.5, m: 2.0 },
    ];
    assert_eq!(encode_linestring_zm(&points).expect("2 points"), expected);
    assert_eq!(decode_linestring_zm(&expected).expect("decodes"), points);
}

#[test]
fn big_endian_wkb_decodes_too() {
    let mut be = vec![0u8];
    be.extend_from_slice(&3002u32.to_be_bytes());
    be.extend_from_slice(&1u32.to_be_bytes());
    for v in [3.0f64, -1.25, 0.75, 9.0] {
        be.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(decode_linestring_zm(&be).expect("decodes"), [PointZm { x: 3.0, y: -1.25, z: 0.75, m: 9.0 }]);
}

proptest! {
    /// Any f64 bit patterns (NaN payloads, infinities, subnormals, -0) survive exactly.
    #[test]
    fn round_trip_keeps_every_bit(raw in proptest::collection::vec(any::<[u64; 4]>(), 0..64)) {
        let points: Vec<PointZm> = raw
            .iter()
            .map(|[x, y, z, m]| PointZm { x: f64::from_bits(*x), y: f64::from_bits(*y), z: f64::from_bits(*z), m: f64::from_bits(*m) })
            .collect();
        let wkb = encode_linestring_zm(&points).expect("under 2^32 points");
        prop_assert_eq!(wkb.len(), 9 + 32 * points.len());
        let back = decode_linestring_zm(&wkb).expect("our encoding decodes");
        let bits = |p: &PointZm| [p.x, p.y, p.z, p.m].map(f64::to_bits);
        prop_assert_eq!(back.iter().map(bits).collect::<Vec<_>>(), points.iter().map(bits).collect::<Vec<_>>());
    }
}
