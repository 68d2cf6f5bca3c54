#!/usr/bin/env bash
# Run ringaudio on a fresh machine: installs what it needs, then starts it.
# Until the WebSocket server lands this runs the ring demo (a writer process and a reader, live stats).
set -euo pipefail
. "$(dirname "$0")/env.sh"
exec python -m ringaudio.ring "$@"
