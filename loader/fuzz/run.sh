#!/usr/bin/env bash
# Runs every fuzz target of the loader for SECONDS each (default 600), one after another, from the
# checked-in seeds (seeds/TARGET) into a scratch corpus (corpus/TARGET, git-ignored).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# the nightly flags cargo-fuzz passes. Crashes land in artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in gguf safetensors wkb; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
