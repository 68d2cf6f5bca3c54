# Sourced by the other scripts: make .venv with ringaudio installed (and the given extras).
# Usage: . scripts/env.sh [extras]   e.g.  . scripts/env.sh test,bench
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "ringaudio needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
extras=${1:-}
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

# espeak-ng gives the workers real speech; without it they fall back to the built-in synthetic voice.
if ! command -v espeak-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing espeak-ng ..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null 2>&1 \
            || echo "could not install espeak-ng: the synthetic voice will be used" >&2
    else
        echo "espeak-ng is not installed (sudo apt-get install espeak-ng): the synthetic voice will be used" >&2
    fi
fi
