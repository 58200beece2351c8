#!/usr/bin/env python3
"""Make reference dequantization fixtures for the GGML block formats.

What it makes
-------------
tests/fixtures/dequant/<TYPE>.blocks   raw stored bytes (16 blocks; 256 elements
                                       for the plain float types F32/F16/BF16)
tests/fixtures/dequant/<TYPE>.f32      the reference dequantized values, little-endian
                                       float32, as produced by
                                       gguf.quants.dequantize(raw_uint8, GGMLQuantizationType.<TYPE>)
tests/fixtures/dequant/manifest.json   block geometry, type ids, file hashes, versions, seed

Types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.

The quantized payload bytes (qs / qh / packed scales) are uniformly random.  The
f16 scale fields (d, m, dmin) are finite values drawn from N(0, 0.02) (d) and
N(0, 0.05) (m / dmin), except for these deliberate special blocks:
  block 0: d = 0                        (m / dmin stay random)
  block 1: d < 0                        (negative scale)
  block 2: d = 2**-20 (f16 subnormal),  m / dmin = -2**-24 (smallest f16 subnormal, negative)
  block 3: every byte 0xFF, then d = m = dmin = 65504 (max finite f16)
The plain float types contain random normal values plus specials at the start:
+0, -0, the smallest subnormal, the largest subnormal, the largest finite value,
the lowest finite value, a tiny negative (-smallest subnormal).  No NaN / Inf.

How to re-run (from the repository root; needs gguf==0.19.0, numpy):
    python3 tests/scripts/make_dequant_fixtures.py
Output is deterministic (fixed seed): re-running gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES
import importlib.metadata

SEED = 20240611
N_BLOCKS = 16
N_PLAIN = 256  # elements generated for F32 / F16 / BF16

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "dequant"
GENERATED_BY = "tests/scripts/make_dequant_fixtures.py"

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]

# Expected block geometry (elements per block, bytes per block) and the byte
# offsets of the f16 scale fields inside a block: (offset_of_d, [offsets of m/dmin]).
LAYOUT = {
    "F32":  (1, 4, None, []),
    "F16":  (1, 2, None, []),
    "BF16": (1, 2, None, []),
    "Q8_0": (32, 34, 0, []),         # f16 d, 32 x int8
    "Q4_0": (32, 18, 0, []),         # f16 d, 16 qs
    "Q4_1": (32, 20, 0, [2]),        # f16 d, f16 m, 16 qs
    "Q5_0": (32, 22, 0, []),         # f16 d, 4 qh, 16 qs
    "Q5_1": (32, 24, 0, [2]),        # f16 d, f16 m, 4 qh, 16 qs
    "Q4_K": (256, 144, 0, [2]),      # f16 d, f16 dmin, 12 scales, 128 qs
    "Q5_K": (256, 176, 0, [2]),      # f16 d, f16 dmin, 12 scales, 32 qh, 128 qs
    "Q6_K": (256, 210, 208, []),     # 128 ql, 64 qh, 16 int8 scales, f16 d (at the end)
}

SPECIAL_BLOCKS = {
    "0": "d = 0 (m/dmin random)",
    "1": "d negative",
    "2": "d = 2**-20 (f16 subnormal), m/dmin = -2**-24 (negative smallest f16 subnormal)",
    "3": "all bytes 0xFF, then d = m = dmin = 65504 (max finite f16)",
}


def f16_bytes(x: float) -> np.ndarray:
    b = np.array([x], dtype="<f2")
    assert np.isfinite(b).all()
    return b.view(np.uint8)


def make_quant_blocks(name: str, rng: np.random.Generator) -> np.ndarray:
    block_elems, block_bytes, d_off, min_offs = LAYOUT[name]
    blocks = rng.integers(0, 256, size=(N_BLOCKS, block_bytes), dtype=np.uint8)
    d = rng.normal(0.0, 0.02, size=N_BLOCKS)
    mins = rng.normal(0.0, 0.05, size=(N_BLOCKS, max(len(min_offs), 1)))
    d[1] = -abs(d[1]) if d[1] != 0 else -0.01
    for i in range(N_BLOCKS):
        blocks[i, d_off:d_off + 2] = f16_bytes(float(d[i]))
        for j, off in enumerate(min_offs):
            blocks[i, off:off + 2] = f16_bytes(float(mins[i, j]))
    # block 0: zero scale
    blocks[0, d_off:d_off + 2] = f16_bytes(0.0)
    # block 1: negative scale (already negative; make sure after f16 rounding)
    assert np.frombuffer(blocks[1, d_off:d_off + 2].tobytes(), dtype="<f2")[0] < 0
    # block 2: subnormal scale(s)
    blocks[2, d_off:d_off + 2] = f16_bytes(2.0 ** -20)
    for off in min_offs:
        blocks[2, off:off + 2] = f16_bytes(-(2.0 ** -24))
    # block 3: max scale, all quant bits set
    blocks[3, :] = 0xFF
    blocks[3, d_off:d_off + 2] = f16_bytes(65504.0)
    for off in min_offs:
        blocks[3, off:off + 2] = f16_bytes(65504.0)
    return blocks.reshape(-1)


def make_plain(name: str, rng: np.random.Generator) -> np.ndarray:
    vals = rng.normal(0.0, 1.0, size=N_PLAIN)
    if name == "F32":
        bits = vals.astype("<f4").view("<u4").copy()
        specials = [0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x80000001]
        dt = "<u4"
    elif name == "F16":
        bits = vals.astype("<f2").view("<u2").copy()
        specials = [0x0000, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x8001]
        dt = "<u2"
    elif name == "BF16":
        # truncate float32 bit patterns to their top 16 bits
        bits = (vals.astype("<f4").view("<u4") >> 16).astype("<u2")
        specials = [0x0000, 0x8000, 0x0001, 0x007F, 0x7F7F, 0xFF7F, 0x8001]
        dt = "<u2"
    else:
        raise AssertionError(name)
    bits[: len(specials)] = np.array(specials, dtype=dt)
    return bits.view(np.uint8).copy()


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "generated_by": GENERATED_BY,
        "description": "Raw GGML blocks and their reference dequantization by "
                       "gguf.quants.dequantize(data: np.ndarray[uint8], qtype) -> np.ndarray[float32]. "
                       "<TYPE>.blocks = raw stored bytes; <TYPE>.f32 = little-endian float32 values.",
        "gguf_version": importlib.metadata.version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "special_blocks": SPECIAL_BLOCKS,
        "plain_float_specials": "F32/F16/BF16 elements 0..6 are +0, -0, smallest subnormal, "
                                "largest subnormal, largest finite, lowest finite, -smallest subnormal; "
                                "the rest are N(0,1) (BF16: float32 truncated to the top 16 bits)",
        "types": {},
    }
    for name in TYPES:
        qt = QT[name]
        block_elems, block_bytes, _, _ = LAYOUT[name]
        assert GGML_QUANT_SIZES[qt] == (block_elems, block_bytes), (name, GGML_QUANT_SIZES[qt])
        # independent RNG stream per type so that adding types does not change others
        rng = np.random.default_rng([SEED, int(qt)])
        if block_elems == 1:
            raw = make_plain(name, rng)
            n_blocks = N_PLAIN
        else:
            raw = make_quant_blocks(name, rng)
            n_blocks = N_BLOCKS
        assert raw.dtype == np.uint8 and raw.ndim == 1
        assert raw.size == n_blocks * block_bytes

        out = gguf.quants.dequantize(raw, qt)
        out = np.ascontiguousarray(out, dtype=np.float32).reshape(-1)
        n_values = n_blocks * block_elems
        assert out.size == n_values, (name, out.size, n_values)
        assert np.isfinite(out).all(), name

        blocks_bytes = raw.tobytes()
        values_bytes = out.astype("<f4").tobytes()
        (OUT_DIR / f"{name}.blocks").write_bytes(blocks_bytes)
        (OUT_DIR / f"{name}.f32").write_bytes(values_bytes)
        manifest["types"][name] = {
            "type_id": int(qt),
            "block_elements": block_elems,
            "block_bytes": block_bytes,
            "n_blocks": n_blocks,
            "n_values": n_values,
            "files": {"blocks": f"{name}.blocks", "values": f"{name}.f32"},
            "sha256": {"blocks": sha256(blocks_bytes), "values": sha256(values_bytes)},
        }
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(TYPES)} types to {OUT_DIR}")


if __name__ == "__main__":
    main()
