#!/usr/bin/env bash
# Run the ringaudio server on a fresh machine: installs what it needs (and espeak-ng where it can),
# then serves ws://127.0.0.1:8080/ws, /healthz and /metrics. Arguments go to the server
# (e.g. --port 9000, --workers 2, --host 0.0.0.0 to leave loopback on purpose).
set -euo pipefail
. "$(dirname "$0")/env.sh" "" >&2  # no extras (and not this script's arguments); stdout is the log's alone
exec python -m ringaudio.server --config configs "$@"
