#!/usr/bin/env bash
# Idempotent environment set-up used by both README commands.
# Creates .venv if missing and installs nemo-aura (editable) with torch pinned by constraints.txt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${NEMO_AURA_VENV:-$root/.venv}
extras=${1:-test}
stamp=$venv/.nemo_aura_installed
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha1sum | cut -d' ' -f1) $extras"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  python3 -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] environment up to date ($venv)"
  exit 0
fi
# pipefail keeps pip's exit status; the filter only drops pip's noise about local index folders.
pip() { "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
echo "[setup] installing torch (CPU build) and nemo-aura[$extras] into $venv"
pip install -q -c "$root/constraints.txt" "torch==2.13.0"
pip install -q -c "$root/constraints.txt" -e "$root[$extras]"
"$venv/bin/python" -c "import torch, nemo, peft, lhotse; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
  || { echo "[setup] install check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done"
