//! Fuzzes the WKB LINESTRING ZM decoder, and checks that whatever decodes re-encodes to the
//! same bytes (for little-endian input) and decodes again to the same points.
#![no_main]

use hartonomous_loader::geometry::{decode_layer, decode_linestring_zm, encode_linestring_zm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_layer(data);
    if let Ok(points) = decode_linestring_zm(data) {
        let again = encode_linestring_zm(&points).expect("decoded points fit in a u32 count");
        if data[0] == 1 {
            assert_eq!(again, data, "little-endian WKB must re-encode byte for byte");
        }
        let back = decode_linestring_zm(&again).expect("our own encoding decodes");
        assert_eq!(back.len(), points.len());
        for (a, b) in back.iter().zip(&points) {
            assert_eq!(
                [a.x, a.y, a.z, a.m].map(f64::to_bits),
                [b.x, b.y, b.z, b.m].map(f64::to_bits)
            );
        }
    }
});
