# Sourced by the other scripts: make .venv with ringaudio installed (and the given extras).
# Usage: . scripts/env.sh [extras]   e.g.  . scripts/env.sh test,bench
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "ringaudio needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
# serve.sh and test.sh started together on a fresh clone must not both build .venv: the install is
# serialised on a lock file (flock, from util-linux); the second one waits, then finds it done
exec 9>".venv.lock"
command -v flock >/dev/null 2>&1 && flock 9
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
extras=${1:-}
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] || [ ringaudio/kernels/_ring.c -nt "$stamp" ] || [ ringaudio/kernels/_dsp.c -nt "$stamp" ] || [ ringaudio/kernels/buffers.h -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

# espeak-ng gives the workers real speech (without it they fall back to the built-in synthetic
# voice); libportaudio2 lets `python -m ringaudio.say` play through the sound card; libopus0 lets
# sessions ask for Opus.
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
{ ldconfig -p 2>/dev/null | grep -q libportaudio; } || missing="$missing libportaudio2"
{ ldconfig -p 2>/dev/null | grep -q libopus.so; } || missing="$missing libopus0"
# the benchmarks' real packet loss (bench/netns.py) drops packets with nftables in a namespace of their own
case ",$extras," in *,bench,*) command -v nft >/dev/null 2>&1 || missing="$missing nftables" ;; esac
# the browser player's tests drive Debian's chromium (Playwright cannot download a browser here)
case ",$extras," in *,test,*) command -v chromium >/dev/null 2>&1 || missing="$missing chromium" ;; esac
# ... and the shipped alert rules are checked and unit-tested with promtool (Debian's prometheus)
case ",$extras," in *,test,*) command -v promtool >/dev/null 2>&1 || missing="$missing prometheus" ;; esac
# ... and the shipped HAProxy configuration is run in front of two servers
case ",$extras," in *,test,*) command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy" ;; esac
# ... and the README's jq recipes for the JSON log are run against a real server's log
case ",$extras," in *,test,*) command -v jq >/dev/null 2>&1 || missing="$missing jq" ;; esac
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing$missing ..." >&2
        # shellcheck disable=SC2086
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
            || echo "could not install$missing: the synthetic voice / WAV output will be used" >&2
    else
        echo "not installed:$missing (sudo apt-get install$missing): synthetic voice / WAV output only" >&2
    fi
fi
exec 9>&-
