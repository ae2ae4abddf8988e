#!/usr/bin/env bash
# The README's test command: set up the environment (idempotent), then run the default pytest suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup_env.sh" test
cd "$root"
exec "$root/.venv/bin/python" -m pytest tests "$@"
