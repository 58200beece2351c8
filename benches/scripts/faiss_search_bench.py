"""The FAISS peer of benches/src/bin/search_bench.rs: exact (flat) top-k search latency over
N x D unit vectors on the CPU, on the same machine and in the same run.

- IndexFlatIP: float32 vectors, exact inner product (= cosine on unit vectors), the usual exact
  baseline;
- IndexScalarQuantizer QT_fp16: the vectors stored as float16, as our f16 index stores them.

The corpus is drawn here (numpy, seeded, L2-normalised), the same shape and distribution as the
Rust side's; a flat scan's time does not depend on the values. Latency is the median of repeated
searches of 1 query and of a batch, until --seconds have passed (at least 3 times each).
Prints one JSON object. faiss-cpu from PyPI (scripts/bench-search.sh installs it).

With --job it is the search peer of `hartonomous bench --compare`: it reads the harness's job
(JSON on stdin: the stored vectors the daemon was queried with, how many vectors it scanned, k,
the concurrency levels, the window), builds an IndexFlatIP over the
same number of vectors (the given ones, then seeded random unit vectors for the rest of what the
daemon scanned: a flat scan's time does not depend on the values), and at each level C searches
batches of C of the queries back to back. The report is the last line of stdout:
{"peer": ..., "levels": [{"concurrency": C, "items_per_second": queries/s}]}.
"""
import argparse
import json
import os
import sys
import time

import faiss
import numpy as np


def median_time(seconds, fn):
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], len(times)


def run_job():
    job = json.load(sys.stdin)
    # The stored vectors the daemon was queried with: the queries, and the corpus's first rows.
    queries = np.asarray(job["vectors"], dtype=np.float32)
    if queries.ndim != 2 or len(queries) == 0:
        sys.exit("error: the job needs `vectors`")
    corpus = queries
    dim, n = corpus.shape[1], max(job["scanned"], len(corpus))
    if n > len(corpus):
        rng = np.random.default_rng(0x5EED)
        extra = rng.uniform(-1.0, 1.0, size=(n - len(corpus), dim)).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        corpus = np.vstack([corpus, extra])
    index = faiss.IndexFlatIP(dim)
    index.add(corpus)
    levels, nxt = [], 0
    for c in job["levels"]:
        def batch():
            nonlocal nxt
            rows = [(nxt + i) % len(queries) for i in range(c)]
            nxt += c
            index.search(queries[rows], job["k"])
        end = time.perf_counter() + job["warmup_seconds"]
        while time.perf_counter() < end:
            batch()
        done, start = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - start < job["seconds"]:
            batch()
            done += c
        qps = done / (time.perf_counter() - start)
        print(f"faiss: batch {c}: {qps:.1f} queries/s", file=sys.stderr)
        levels.append({"concurrency": c, "items_per_second": qps})
    print(json.dumps({"peer": f"faiss-cpu {faiss.__version__} IndexFlatIP, f32, {faiss.omp_get_max_threads()} threads, "
                              f"{n} x {dim}, k={job['k']}, batch = concurrency, in process", "levels": levels}))


def main():
    if "--job" in sys.argv[1:]:
        return run_job()
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    rng = np.random.default_rng(0x5EED)
    x = rng.uniform(-1.0, 1.0, size=(a.rows, a.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = rng.uniform(-1.0, 1.0, size=(a.batch, a.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out = {"peer": "faiss-cpu " + faiss.__version__, "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
           "rows": a.rows, "dim": a.dim, "k": a.k, "batch": a.batch}
    for name, index in [
        ("flat_f32", faiss.IndexFlatIP(a.dim)),
        ("sq_fp16", faiss.IndexScalarQuantizer(a.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)),
    ]:
        t = time.perf_counter()
        if not index.is_trained:
            index.train(x[:10000])
        index.add(x)
        load = time.perf_counter() - t
        # Spot check: a corpus row finds itself first.
        _, ids = index.search(x[a.rows // 2 : a.rows // 2 + 1], a.k)
        assert ids[0][0] == a.rows // 2, ids
        one, reps1 = median_time(a.seconds, lambda: index.search(queries[:1], a.k))
        many, reps = median_time(a.seconds, lambda: index.search(queries, a.k))
        out[name] = {"load_s": load, "one_query_ms": one * 1e3, "one_query_reps": reps1, "batch_ms": many * 1e3, "batch_reps": reps}
        del index
    print(json.dumps(out))


if __name__ == "__main__":
    main()
