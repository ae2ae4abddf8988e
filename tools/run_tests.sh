#!/usr/bin/env bash
# The README's test command: set up the environment (idempotent), then run the default pytest suite.
# The system tools the tests use (espeak-ng, sox; piper in the venv) are installed before pytest collects, so a
# first run on a fresh machine skips nothing; NEMO_AURA_REQUIRE_TOOLS=1 then makes a tool that is still missing
# fail its tests instead of skipping them (tests/conftest.py: needs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup_env.sh" test
bash "$root/recipes/aura/local/install_voices.sh" "$root/.venv"
cd "$root"
export NEMO_AURA_REQUIRE_TOOLS=1
exec "$root/.venv/bin/python" -m pytest tests "$@"
