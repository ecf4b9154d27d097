#!/usr/bin/env bash
# Set up envoi on a fresh Debian 12 machine with Python 3.11.
#   scripts/setup.sh          runtime: a venv in .venv with the core, every plugin and the example filter
#   scripts/setup.sh --test   also what the tests need: Debian packages, the test requirements, Envoy
# Idempotent: re-running installs only what is missing. ENVOI_VENV overrides the venv path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${ENVOI_VENV:-$ROOT/.venv}
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

say() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Python 3.11 or newer, with venv.
PY=""
for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PY=$(command -v "$cand"); break
    fi
done
if [ -z "$PY" ]; then
    apt_install python3 python3-venv
    PY=$(command -v python3)
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
fi

if [ $WANT_TEST = 1 ]; then
    # Real peers for the end-to-end tests and the benchmarks.
    apt_install curl nghttp2-client nghttp2-server nginx wrk ca-certificates netcat-openbsd chromium
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)

reqs=(-r requirements/core.txt -r requirements/http.txt -r requirements/mongo.txt)
[ $WANT_TEST = 1 ] && reqs+=(-r requirements/test.txt)
say "pip install (pinned requirements)"
"${PIP[@]}" install "${reqs[@]}"
# xds-protos carries an old copy of opentelemetry/proto/* (no ResourceSpans.scope_spans); the
# OTLP tracer needs opentelemetry-proto's, so it goes in last, over xds-protos' files.
OTLP_PIN=$(grep -E '^opentelemetry-proto==' requirements/core.txt)
"$VENV/bin/python" -c 'import sys; from opentelemetry.proto.trace.v1 import trace_pb2 as t
sys.exit("scope_spans" not in t.ResourceSpans.DESCRIPTOR.fields_by_name)' 2>/dev/null \
 || "${PIP[@]}" install --force-reinstall --no-deps "$OTLP_PIN"

say "pip install -e (core, plugins, example filter)"
"${PIP[@]}" install --no-build-isolation -e . -e plugins/http -e plugins/grpc -e plugins/mongo \
    -e plugins/dynamodb -e examples/third_party_filter -e examples/third_party_http_filter 2>/dev/null \
 || "${PIP[@]}" install -e . -e plugins/http -e plugins/grpc -e plugins/mongo \
    -e plugins/dynamodb -e examples/third_party_filter -e examples/third_party_http_filter

"$VENV/bin/envoi" --version >&2
