#!/usr/bin/env bash
# Runs the test suite in .venv. pytest exits 5 when it collects no test: that is a
# failure here (a suite that runs nothing proves nothing), reported as such.
#
# The tests run in parallel, one pytest worker per core up to 4 (pytest-xdist; idle
# workers take tests from busy ones); TEST_WORKERS=0 runs them in this one process, and
# TEST_WORKERS=N on N workers.
set -uo pipefail
workers=${TEST_WORKERS:-auto}
if [ "$workers" = 0 ]; then
    parallel=()
else
    parallel=(-n "$workers" --maxprocesses 4 --dist worksteal)
fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$rc"
