#!/usr/bin/env bash
# Set up everything, then run the demo proxy (examples/demo.yaml): it serves with no other server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ENVOI_VENV:-$PWD/.venv}/bin/envoi" -c examples/demo.yaml "$@"
