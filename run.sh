#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh demo [ARGS]   the main job on a built-in default
#   ./run.sh test [ARGS]   the whole test suite
# Both create .venv/ when missing (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=3 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec .venv/bin/mobilebert-mobile demo "$@" ;;
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh demo|test [ARGS]" >&2; exit 2 ;;
esac
