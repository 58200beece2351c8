#!/usr/bin/env python3
"""Make the small seed corpus for the loader fuzz targets.

What it makes
-------------
loader/fuzz/seeds/gguf/         tiny valid GGUF v3 files written with gguf.GGUFWriter
    all_kv_types_3_tensors.gguf   metadata of every value type (u8, i8, u16, i16, u32,
                                  i32, u64, i64, f32, f64, bool, string, array of ints,
                                  array of strings, array of arrays), general.alignment=32,
                                  tensors: F32 [4,8], F16 [8], Q8_0 [2,32] (2 raw blocks)
                                  (shapes row-major)
    no_tensors.gguf               v3 header + a few KVs, zero tensors
    one_f32_tensor.gguf           default alignment, one F32 [3] tensor
loader/fuzz/seeds/safetensors/  tiny files written with safetensors.numpy.save
    f32_i64_f16.safetensors       F32 [2,3], I64 [4], F16 [2,2]; metadata {"format":"pt"}
    scalar_and_empty.safetensors  F32 [] (scalar), F32 [0,4] (empty); metadata {"format":"pt"}
    no_tensors.safetensors        zero tensors; metadata {"format":"pt"}
loader/fuzz/seeds/wkb/          ISO WKB LINESTRING ZM (type 3002), float64 x,y,z,m
    linestring_zm_le_0pt.wkb      little-endian, 0 points
    linestring_zm_le_2pt.wkb      little-endian, 2 points
    linestring_zm_le_16pt.wkb     little-endian, 16 points
    linestring_zm_be_2pt.wkb      big-endian (byte order 0x00), 2 points
    layer_8pt.wkb                 a layer's line: X = element index, Z = importance, M = 3
loader/fuzz/seeds/README.md     says where these come from

Every file is under 4 KiB.

How to re-run (from the repository root; needs gguf==0.19.0, numpy, safetensors):
    python3 tests/scripts/make_fuzz_seeds.py
Output is deterministic (fixed seed, no timestamps): re-running gives
byte-identical files.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, GGUFReader, GGMLQuantizationType as QT, GGUFValueType as VT
import safetensors.numpy
import importlib.metadata

SEED = 1234
GENERATED_BY = "tests/scripts/make_fuzz_seeds.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDS = REPO_ROOT / "loader" / "fuzz" / "seeds"
MAX_SIZE = 4096
GGUF_VERSION = importlib.metadata.version("gguf")


def write_seed(rel: str, data: bytes) -> None:
    assert len(data) < MAX_SIZE, (rel, len(data))
    p = SEEDS / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    print(f"{rel}: {len(data)} bytes")


def gguf_bytes(fill) -> bytes:
    """Build a GGUF file with GGUFWriter in a temp dir and return its bytes."""
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "seed.gguf"
        w = GGUFWriter(path, arch="fuzzseed")
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        data = path.read_bytes()
        GGUFReader(path)  # sanity: the reference reader accepts it
    assert data[:4] == b"GGUF" and struct.unpack("<I", data[4:8])[0] == 3
    return data


def make_gguf(rng: np.random.Generator) -> None:
    def all_kv(w: GGUFWriter) -> None:
        w.add_custom_alignment(32)  # general.alignment (u32)
        w.add_uint8("seed.u8", 200)
        w.add_int8("seed.i8", -100)
        w.add_uint16("seed.u16", 60000)
        w.add_int16("seed.i16", -30000)
        w.add_uint32("seed.u32", 4_000_000_000)
        w.add_int32("seed.i32", -2_000_000_000)
        w.add_uint64("seed.u64", 18_000_000_000_000_000_000)
        w.add_int64("seed.i64", -9_000_000_000_000_000_000)
        w.add_float32("seed.f32", 1.5)
        w.add_float64("seed.f64", -2.25e100)
        w.add_bool("seed.bool_true", True)
        w.add_bool("seed.bool_false", False)
        w.add_string("seed.string", "h\u00e9llo, gguf \u2713")
        w.add_array("seed.arr_i32", [1, -2, 3, -4])
        w.add_key_value("seed.arr_u64", [1, 2**40], VT.ARRAY, sub_type=VT.UINT64)
        w.add_array("seed.arr_str", ["a", "", "bc"])
        w.add_array("seed.arr_arr", [[1, 2], [3], [4, 5, 6]])  # array of arrays of i32
        w.add_tensor("t.f32", rng.normal(size=(4, 8)).astype(np.float32))
        w.add_tensor("t.f16", rng.normal(size=(8,)).astype(np.float16))
        q8 = rng.integers(0, 256, size=(2, 34), dtype=np.uint8)
        q8[:, 0:2] = np.array([0.01, -0.02], dtype="<f2").view(np.uint8).reshape(2, 2)
        w.add_tensor("t.q8_0", q8, raw_dtype=QT.Q8_0)  # byte shape (2,34) -> [2,32]

    def no_tensors(w: GGUFWriter) -> None:
        w.add_string("general.name", "empty")
        w.add_uint32("seed.count", 0)

    def one_f32(w: GGUFWriter) -> None:
        w.add_tensor("x", np.array([1.0, -0.0, 3.5], dtype=np.float32))

    write_seed("gguf/all_kv_types_3_tensors.gguf", gguf_bytes(all_kv))
    write_seed("gguf/no_tensors.gguf", gguf_bytes(no_tensors))
    write_seed("gguf/one_f32_tensor.gguf", gguf_bytes(one_f32))


def make_safetensors(rng: np.random.Generator) -> None:
    meta = {"format": "pt"}
    write_seed("safetensors/f32_i64_f16.safetensors", safetensors.numpy.save({
        "weight": rng.normal(size=(2, 3)).astype(np.float32),
        "ids": np.array([0, 1, -1, 2**40], dtype=np.int64),
        "half": rng.normal(size=(2, 2)).astype(np.float16),
    }, metadata=meta))
    write_seed("safetensors/scalar_and_empty.safetensors", safetensors.numpy.save({
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }, metadata=meta))
    write_seed("safetensors/no_tensors.safetensors", safetensors.numpy.save({}, metadata=meta))


def wkb_linestring_zm(points: np.ndarray, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    out = bytes([0 if big_endian else 1]) + struct.pack(f"{e}II", 3002, len(points))
    for x, y, z, m in points:
        out += struct.pack(f"{e}dddd", x, y, z, m)
    return out


def make_wkb(rng: np.random.Generator) -> None:
    pts2 = np.array([[1.0, 2.0, 3.0, 0.0], [-4.5, 5.25, -6.0, 1.0]])
    pts16 = np.round(rng.uniform(-180, 180, size=(16, 4)), 6)
    pts16[:, 3] = np.arange(16, dtype=np.float64)  # m = measure, increasing
    write_seed("wkb/linestring_zm_le_0pt.wkb", wkb_linestring_zm(np.zeros((0, 4))))
    write_seed("wkb/linestring_zm_le_2pt.wkb", wkb_linestring_zm(pts2))
    write_seed("wkb/linestring_zm_le_16pt.wkb", wkb_linestring_zm(pts16))
    write_seed("wkb/linestring_zm_be_2pt.wkb", wkb_linestring_zm(pts2, big_endian=True))
    # A layer as the loader writes it: X = element index, Z = |y| / max|y|, M = one version stamp.
    ys = np.array([0.5, -2.0, 1.0, 0.0, 0.25, -0.125, 2.0, 1.5])
    layer = np.stack([np.arange(len(ys)), ys, np.abs(ys) / np.abs(ys).max(), np.full(len(ys), 3.0)], axis=1)
    write_seed("wkb/layer_8pt.wkb", wkb_linestring_zm(layer))


README = f"""# Fuzz seed corpus

These files are generated by `{GENERATED_BY}` (generated_by: {GENERATED_BY}).
Do not edit them by hand; re-run from the repository root instead:

    python3 {GENERATED_BY}

The script is deterministic (fixed seed {SEED}), so re-running gives
byte-identical files. Every seed is under 4 KiB.

- `gguf/`: tiny valid GGUF v3 files written with `gguf.GGUFWriter`
  (gguf-py {GGUF_VERSION}): one with metadata of every value type
  (u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, bool, string, arrays of
  ints / u64 / strings, array of arrays), `general.alignment = 32` and three
  tensors (F32 [4,8], F16 [8], Q8_0 [2,32] from raw blocks; shapes row-major);
  one with zero tensors; one with a single F32 [3] tensor.
- `safetensors/`: written with `safetensors.numpy.save` (metadata
  `{{"format": "pt"}}`): F32 + I64 + F16 tensors; a scalar and an empty
  tensor; zero tensors.
- `wkb/`: ISO WKB `LINESTRING ZM` (geometry type 3002, x/y/z/m float64):
  little-endian with 0, 2 and 16 points, big-endian with 2 points, and
  `layer_8pt.wkb`, a layer's line as the loader writes it (X = element index).
"""


def main() -> None:
    rng = np.random.default_rng(SEED)
    make_gguf(rng)
    make_safetensors(rng)
    make_wkb(rng)
    (SEEDS / "README.md").write_text(README)
    print("README.md written")


if __name__ == "__main__":
    main()
