#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then ruff, mypy, the import check
# (no import cycle, no module over 400 lines) and pytest.
# Extra arguments go to pytest (e.g. -k ring). RINGAUDIO_LONG=1 runs the long soak/stress forms.
set -euo pipefail
. "$(dirname "$0")/env.sh" test,bench
ruff check ringaudio tests bench
ruff format --check ringaudio tests bench
mypy ringaudio
python scripts/check_imports.py
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests (exit 5): nothing was selected" >&2
    exit 0
fi
exit "$status"
