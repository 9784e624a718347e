#!/usr/bin/env bash
# Runs the test suite in .venv. pytest exits 5 when it collects no test: that is a
# failure here (a suite that runs nothing proves nothing), reported as such.
set -uo pipefail
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$rc"
