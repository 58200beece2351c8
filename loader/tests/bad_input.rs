//! Acceptance (issue 2, item 6): each crafted bad file returns its specific error, naming the
//! file and the offset (and the tensor or key where there is one), never a panic and never an
//! allocation sized by an unchecked header field (the huge declared lengths below would abort
//! the process if they were allocated). A property test mutates valid files at random.

mod support;

use hartonomous_loader::fuzzing::exercise_model;
use hartonomous_loader::{Error, MemorySource, ModelFile};
use proptest::prelude::*;
use support::gguf::{header, kv_raw, kv_u32, tensor, valid as valid_gguf, with_data};
use support::safetensors::{file as st_file, valid as valid_safetensors};

fn open(label: &str, bytes: Vec<u8>) -> Result<ModelFile, Error> {
    ModelFile::from_source(Box::new(MemorySource::new(format!("crafted/{label}"), bytes)), None)
}

fn le(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

struct Case {
    label: &'static str,
    bytes: Vec<u8>,
    matches: fn(&Error) -> bool,
    /// Substrings the message must contain besides the file name.
    says: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let f32_data = vec![0u8; 128];
    let deep: Vec<u8> = (0..10).flat_map(|_| cat(&[&9u32.to_le_bytes(), &1u64.to_le_bytes()])).collect();
    vec![
        Case { label: "empty", bytes: vec![], matches: |e| matches!(e, Error::UnknownFormat { .. }), says: &["empty", "safetensors and GGUF"] },
        Case {
            label: "pytorch-zip",
            bytes: cat(&[b"PK\x03\x04", &[0; 60]]),
            matches: |e| matches!(e, Error::UnknownFormat { .. }),
            says: &["504b0304", "PyTorch"],
        },
        Case { label: "elf", bytes: cat(&[b"\x7fELF", &[2; 60]]), matches: |e| matches!(e, Error::UnknownFormat { .. }), says: &["7f454c46"] },
        Case {
            label: "gguf-truncated-in-tensor-info",
            // The valid file's metadata ends at 69; tensor `a`'s info puts its type at 98.
            bytes: valid_gguf()[..100].to_vec(),
            matches: |e| matches!(e, Error::Truncated { offset: 98, needed: 4, .. }),
            says: &["offset 98", "type of tensor `a`"],
        },
        Case { label: "gguf-v1", bytes: header(1, 0, 0), matches: |e| matches!(e, Error::UnsupportedVersion { version: 1, .. }), says: &["version 1", "obsolete"] },
        Case {
            label: "gguf-big-endian",
            bytes: cat(&[b"GGUF", &3u32.to_be_bytes(), &[0; 16]]),
            matches: |e| matches!(e, Error::UnsupportedVersion { .. }),
            says: &["big-endian"],
        },
        Case {
            label: "gguf-huge-array",
            // key "tokens" at 24 (8 + 6 bytes), type at 38, element type at 42, length at 46.
            bytes: cat(&[&header(3, 0, 1), &kv_raw("tokens", 9, &cat(&[&8u32.to_le_bytes(), &(1u64 << 60).to_le_bytes()]))]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 46, declared, .. } if *declared == 1 << 60),
            says: &["offset 46", "array `tokens`"],
        },
        Case {
            label: "gguf-huge-string",
            bytes: cat(&[&header(3, 0, 1), &kv_raw("name", 8, &le(&[u64::MAX])), &[0; 8]]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 40, .. }),
            says: &["offset 40", "key `name`"],
        },
        Case {
            label: "gguf-huge-key",
            bytes: cat(&[&header(3, 0, 1), &le(&[u64::MAX]), &[0; 16]]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 24, .. }),
            says: &["offset 24", "metadata key"],
        },
        Case {
            label: "gguf-huge-tensor-count",
            bytes: cat(&[&header(3, 1 << 40, 0), &[0; 8]]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 8, .. }),
            says: &["offset 8", "tensor count"],
        },
        Case {
            label: "gguf-unknown-value-type",
            bytes: cat(&[&header(3, 0, 1), &kv_raw("k", 99, &[0; 8])]),
            matches: |e| matches!(e, Error::UnknownValueType { type_id: 99, offset: 33, .. }),
            says: &["key `k`", "offset 33", "type 99"],
        },
        Case {
            label: "gguf-unknown-tensor-type",
            // name at 24 (8 + 1), n_dims at 33, dim at 37, type at 45.
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[32], 200, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::UnknownDtype { offset: 45, .. }),
            says: &["tensor `t`", "offset 45", "GGUF type id 200", "Q4_K (12)"],
        },
        Case {
            label: "gguf-unsupported-q2k",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[256], 10, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::UnknownDtype { .. }),
            says: &["tensor `t`", "Q2_K (GGUF type id 10)"],
        },
        Case {
            label: "gguf-misaligned",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[4], 0, 4)]), 32, &f32_data),
            matches: |e| matches!(e, Error::MisalignedData { offset: 4, alignment: 32, .. }),
            says: &["tensor `t`", "offset 4", "alignment 32"],
        },
        Case {
            label: "gguf-overlap",
            bytes: with_data(
                cat(&[&header(3, 2, 0), &tensor(b"a", &[16], 0, 0), &tensor(b"b", &[16], 0, 32)]),
                32,
                &f32_data,
            ),
            matches: |e| matches!(e, Error::OverlappingData { .. }),
            says: &["`a`", "`b`", "overlap"],
        },
        Case {
            label: "gguf-data-past-end",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[1024], 0, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::DataOutOfBounds { .. }),
            says: &["tensor `t`", "past the end"],
        },
        Case {
            label: "gguf-shape-overflow",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[1 << 32, 1 << 32, 16], 0, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::ShapeOverflow { offset: 33, .. }),
            says: &["tensor `t`", "offset 33", "more than 2^64 elements or bytes"],
        },
        Case {
            label: "gguf-byte-size-overflow",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[1 << 62], 0, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::ShapeOverflow { .. }),
            says: &["tensor `t`"],
        },
        Case {
            label: "gguf-non-utf8-name",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"\xff\xfe", &[4], 0, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::InvalidUtf8 { offset: 32, .. }),
            says: &["tensor name", "offset 32", "UTF-8"],
        },
        Case {
            label: "gguf-block-misfit",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"q", &[33], 2, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::BlockMisfit { count: 33, block_elements: 32, offset: 33, .. }),
            says: &["tensor `q`", "offset 33", "Q4_0", "innermost dimension is 33"],
        },
        Case {
            label: "gguf-arrays-too-deep",
            bytes: cat(&[&header(3, 0, 1), &kv_raw("deep", 9, &deep), &[0; 64]]),
            matches: |e| matches!(e, Error::MalformedHeader { .. }),
            says: &["key `deep`", "deeper than 8"],
        },
        Case {
            label: "gguf-bad-alignment",
            // key at 24 (8 + 17 bytes), type at 49, value at 53.
            bytes: cat(&[&header(3, 0, 1), &kv_u32("general.alignment", 24)]),
            matches: |e| matches!(e, Error::MalformedHeader { offset: 53, .. }),
            says: &["general.alignment", "power of two", "offset 53"],
        },
        Case {
            label: "gguf-duplicate-tensor",
            bytes: with_data(
                cat(&[&header(3, 2, 0), &tensor(b"a", &[4], 0, 0), &tensor(b"a", &[4], 0, 32)]),
                32,
                &f32_data,
            ),
            matches: |e| matches!(e, Error::Duplicate { what: "tensor", .. }),
            says: &["duplicate tensor `a`"],
        },
        Case {
            label: "gguf-five-dims",
            bytes: with_data(cat(&[&header(3, 1, 0), &tensor(b"t", &[1, 1, 1, 1, 1], 0, 0)]), 32, &f32_data),
            matches: |e| matches!(e, Error::MalformedHeader { offset: 33, .. }),
            says: &["tensor `t`", "5 dimensions"],
        },
        Case {
            label: "gguf-bad-bool",
            bytes: cat(&[&header(3, 0, 1), &kv_raw("flag", 7, &[7]), &[0; 16]]),
            matches: |e| matches!(e, Error::MalformedHeader { .. }),
            says: &["key `flag`", "neither 0 nor 1"],
        },
        Case {
            label: "safetensors-header-past-end",
            bytes: cat(&[&le(&[1000]), br#"{"a":1}"#]),
            matches: |e| matches!(e, Error::Truncated { offset: 8, needed: 1000, .. }),
            says: &["safetensors header", "offset 8"],
        },
        Case {
            label: "safetensors-header-too-large",
            bytes: cat(&[&le(&[200_000_000]), br#"{"a":1}"#]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 0, .. }),
            says: &["header length", "offset 0"],
        },
        Case {
            label: "safetensors-not-json",
            // serde_json stops at the `o` of `nope`: header byte 7, file offset 15.
            bytes: st_file(r#"{"a": nope}"#, &[]),
            matches: |e| matches!(e, Error::MalformedHeader { offset: 15, .. }),
            says: &["offset 15"],
        },
        Case {
            label: "safetensors-non-utf8",
            bytes: {
                let mut b = st_file(r#"{"x":1}"#, &[]);
                b[10] = 0xFF;
                b
            },
            matches: |e| matches!(e, Error::InvalidUtf8 { offset: 10, .. }),
            says: &["offset 10", "UTF-8"],
        },
        Case {
            label: "safetensors-unknown-dtype",
            // Offsets name where the tensor's entry (its value object) starts: 8 + 5.
            bytes: st_file(r#"{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
            matches: |e| matches!(e, Error::UnknownDtype { offset: 13, .. }),
            says: &["tensor `w`", "offset 13", "F12", "BF16"],
        },
        Case {
            label: "safetensors-length-mismatch",
            bytes: st_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]),
            matches: |e| matches!(e, Error::LengthMismatch { declared: 4, expected: 8, offset: 13, .. }),
            says: &["tensor `w`", "offset 13", "4 bytes", "need 8"],
        },
        Case {
            label: "safetensors-overlap",
            bytes: st_file(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                &[0; 24],
            ),
            matches: |e| matches!(e, Error::OverlappingData { .. }),
            says: &["`a`", "`b`", "overlap"],
        },
        Case {
            label: "safetensors-data-past-end",
            bytes: st_file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]),
            matches: |e| matches!(e, Error::DataOutOfBounds { .. }),
            says: &["tensor `a`", "past the end"],
        },
        Case {
            label: "safetensors-shape-overflow",
            bytes: st_file(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,16]}}"#, &[0; 16]),
            matches: |e| matches!(e, Error::ShapeOverflow { .. }),
            says: &["tensor `a`", "more than 2^64 elements or bytes"],
        },
        Case {
            label: "safetensors-duplicate",
            bytes: st_file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0; 8],
            ),
            // The second entry's value starts at file offset 66.
            matches: |e| matches!(e, Error::Duplicate { what: "tensor", offset: 66, .. }),
            says: &["duplicate tensor `a`", "offset 66"],
        },
        Case {
            label: "safetensors-hole",
            bytes: st_file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                &[0; 12],
            ),
            matches: |e| matches!(e, Error::UnindexedData { start: 4, end: 8, .. }),
            says: &["[4, 8)", "no tensor"],
        },
        Case {
            label: "safetensors-trailing-bytes",
            bytes: st_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 9]),
            matches: |e| matches!(e, Error::UnindexedData { start: 4, end: 9, .. }),
            says: &["[4, 9)"],
        },
        Case {
            label: "safetensors-reversed-offsets",
            bytes: st_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, &[0; 8]),
            matches: |e| matches!(e, Error::MalformedHeader { offset: 13, .. }),
            says: &["tensor `a`", "begin <= end"],
        },
        Case {
            label: "gguf-metadata-over-budget",
            // An array of 2^22 + 1 one-byte values: the file really holds them, but parsing them
            // would cost ~64 bytes of memory per file byte. Key at 24, type 35, element type 39,
            // length at 43.
            bytes: cat(&[
                &header(3, 0, 1),
                &kv_raw("big", 9, &cat(&[&0u32.to_le_bytes(), &((1u64 << 22) + 1).to_le_bytes()])),
                &vec![0; (1 << 22) + 1],
            ]),
            matches: |e| matches!(e, Error::DeclaredLengthTooLarge { offset: 43, unit: "elements", .. }),
            says: &["array `big`", "offset 43", "4194305 elements"],
        },
        Case {
            label: "safetensors-rank-65",
            bytes: st_file(&format!(r#"{{"a":{{"dtype":"F32","shape":[{}],"data_offsets":[0,4]}}}}"#, ["1"; 65].join(",")), &[0; 4]),
            matches: |e| matches!(e, Error::MalformedHeader { offset: 13, .. }),
            says: &["tensor `a`", "rank 65"],
        },
        Case {
            label: "safetensors-f4-odd-count",
            bytes: st_file(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, &[0; 2]),
            matches: |e| matches!(e, Error::BlockMisfit { count: 3, block_elements: 2, .. }),
            says: &["tensor `a`", "element count is 3"],
        },
        Case {
            label: "safetensors-tab-after-brace",
            // Detected as safetensors (any JSON whitespace may follow `{`), then judged.
            bytes: st_file("{\t\"a\":1}", &[]),
            matches: |e| matches!(e, Error::MalformedHeader { .. }),
            says: &["tensor `a` must be an object"],
        },
        Case {
            label: "safetensors-bad-metadata",
            bytes: st_file(r#"{"__metadata__":{"n":1}}"#, &[]),
            matches: |e| matches!(e, Error::MalformedHeader { .. }),
            says: &["__metadata__.n", "must be a string"],
        },
    ]
}

#[test]
fn each_crafted_bad_file_returns_its_specific_error() {
    let cases = cases();
    for case in &cases {
        let err = match open(case.label, case.bytes.clone()) {
            Ok(_) => panic!("{}: accepted a bad file", case.label),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!((case.matches)(&err), "{}: wrong error: {err:?}", case.label);
        assert!(message.contains(&format!("crafted/{}", case.label)), "{}: message does not name the file: {message}", case.label);
        for needle in case.says {
            assert!(message.contains(needle), "{}: message lacks {needle:?}: {message}", case.label);
        }
    }
    eprintln!("{} crafted bad files rejected with their specific errors", cases.len());
}

#[test]
fn the_crafted_valid_files_load() {
    let gguf = open("valid.gguf", valid_gguf()).expect("valid GGUF");
    assert_eq!(gguf.tensors().iter().map(|t| (t.name.as_str(), t.shape.clone())).collect::<Vec<_>>(), [("a", vec![2, 4]), ("b", vec![4])]);
    assert_eq!(gguf.description.architecture, "llama");
    let mut v2 = valid_gguf();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = open("valid-v2.gguf", v2).expect("GGUF v2 has the v3 layout for little-endian files");
    assert_eq!(v2.format, hartonomous_loader::Format::Gguf { version: 2 });
    assert_eq!(v2.tensors(), gguf.tensors());
    let st = open("valid.safetensors", valid_safetensors()).expect("valid safetensors");
    assert_eq!(st.parameter_count(), 6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random byte flips, truncations and extensions of valid files never panic: each either
    /// loads (and then atomizes and dequantizes) or returns an error.
    #[test]
    fn mutated_files_never_panic(
        use_gguf in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = if use_gguf { valid_gguf() } else { valid_safetensors() };
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        exercise_model(&bytes);
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("seed folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).expect("seed"))).collect()
}

/// The seeds were written by gguf-py's `GGUFWriter` and the `safetensors` package
/// (`tests/scripts/make_fuzz_seeds.py`): every one must load, so each metadata value type,
/// nested arrays included, is read as an independent writer wrote it.
#[test]
fn fuzz_seeds_written_by_reference_writers_load() {
    use hartonomous_loader::gguf::GgufValue as V;
    for target in ["gguf", "safetensors"] {
        for (name, bytes) in seeds(target) {
            let model = open(&name, bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!matches!(model.format, hartonomous_loader::Format::Safetensors) || target == "safetensors");
            exercise_model(&bytes);
        }
    }
    let (_, bytes) = seeds("gguf").into_iter().find(|(n, _)| n.ends_with("all_kv_types_3_tensors.gguf")).expect("seed");
    let model = open("all_kv_types", bytes).expect("loads");
    let hartonomous_loader::model::Header::Gguf(h) = &model.header else { panic!("GGUF") };
    let expect = [
        ("seed.u8", V::U8(200)),
        ("seed.i8", V::I8(-100)),
        ("seed.u16", V::U16(60000)),
        ("seed.i16", V::I16(-30000)),
        ("seed.u32", V::U32(4_000_000_000)),
        ("seed.i32", V::I32(-2_000_000_000)),
        ("seed.u64", V::U64(18_000_000_000_000_000_000)),
        ("seed.i64", V::I64(-9_000_000_000_000_000_000)),
        ("seed.f32", V::F32(1.5)),
        ("seed.f64", V::F64(-2.25e100)),
        ("seed.bool_true", V::Bool(true)),
        ("seed.bool_false", V::Bool(false)),
        ("seed.string", V::String("h\u{e9}llo, gguf \u{2713}".into())),
        ("seed.arr_i32", V::Array(vec![V::I32(1), V::I32(-2), V::I32(3), V::I32(-4)])),
        ("seed.arr_u64", V::Array(vec![V::U64(1), V::U64(1 << 40)])),
        ("seed.arr_str", V::Array(vec![V::String("a".into()), V::String(String::new()), V::String("bc".into())])),
        (
            "seed.arr_arr",
            V::Array(vec![
                V::Array(vec![V::I32(1), V::I32(2)]),
                V::Array(vec![V::I32(3)]),
                V::Array(vec![V::I32(4), V::I32(5), V::I32(6)]),
            ]),
        ),
        ("general.alignment", V::U32(32)),
    ];
    for (key, value) in expect {
        assert_eq!(h.get(key), Some(&value), "{key}");
    }
    let shapes: Vec<(&str, &str, Vec<u64>)> =
        model.tensors().iter().map(|t| (t.name.as_str(), t.dtype.tag(), t.shape.clone())).collect();
    assert_eq!(shapes, [("t.f32", "F32", vec![4, 8]), ("t.f16", "F16", vec![8]), ("t.q8_0", "Q8_0", vec![2, 32])]);
}

#[test]
fn wkb_seeds_decode() {
    for (name, bytes) in seeds("wkb") {
        hartonomous_loader::geometry::decode_linestring_zm(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (_, layer) = seeds("wkb").into_iter().find(|(n, _)| n.ends_with("layer_8pt.wkb")).expect("layer seed");
    let layer = hartonomous_loader::geometry::decode_layer(&layer).expect("a layer-shaped line");
    assert_eq!(layer.values, [0.5, -2.0, 1.0, 0.0, 0.25, -0.125, 2.0, 1.5]);
    assert_eq!(layer.importance[1], 1.0);
    assert_eq!(layer.version_stamp, Some(3.0));
}
