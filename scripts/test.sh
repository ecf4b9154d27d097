#!/usr/bin/env bash
# Set up what the tests need (Debian packages, PyPI packages, the real Envoy), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec "${ENVOI_VENV:-$PWD/.venv}/bin/python" -m pytest "$@"
