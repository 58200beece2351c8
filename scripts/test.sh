#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what is missing (a Vulkan driver, the
# test models), then runs every test of the default workspace members. Benchmarks and fuzz
# targets are not built here (see BENCHMARKS.md and loader/fuzz/README.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
ensure_vulkan
ensure_models
cd "$HARTONOMOUS_ROOT"
log "cargo test (models from $HARTONOMOUS_MODELS_DIR)"
cargo test --locked
