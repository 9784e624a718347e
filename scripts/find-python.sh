#!/usr/bin/env bash
# The Python `make install` builds .venv with, printed as a path on stdout:
#   find-python.sh            the newest supported python3.X on PATH, else python3 if supported
#   find-python.sh PYTHON     PYTHON itself (a name on PATH or a path), if it is supported
# Supported: what pyproject.toml's requires-python allows (">=3.11,<3.14"). Anything else
# ends with one line on stderr naming what was found and what to install, and status 2.
set -euo pipefail
SUPPORTED=(3.13 3.12 3.11)  # newest first: the first one found is used

version_of() {  # "3.12" for an interpreter that runs, nothing otherwise
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
is_supported() {
    local v
    for v in "${SUPPORTED[@]}"; do [ "$1" = "$v" ] && return 0; done
    return 1
}
fail() { echo "error: $*" >&2; exit 2; }

if [ -n "${1:-}" ]; then
    path=$(command -v "$1") || fail "$1 not found; give PYTHON a Python ${SUPPORTED[*]} path"
    v=$(version_of "$path")
    [ -n "$v" ] || fail "$1 does not run as a Python interpreter"
    is_supported "$v" || fail "$1 is Python $v; vicmae supports Python ${SUPPORTED[*]}"
    echo "$path"
    exit 0
fi
for v in "${SUPPORTED[@]}"; do
    if path=$(command -v "python$v") && [ "$(version_of "$path")" = "$v" ]; then
        echo "$path"
        exit 0
    fi
done
if path=$(command -v python3); then
    v=$(version_of "$path")
    if is_supported "$v"; then
        echo "$path"
        exit 0
    fi
    fail "python3 is Python ${v:-?} and no python3.13, python3.12 or python3.11 is on PATH;" \
        "install one of them, or run make PYTHON=/path/to/python3.12"
fi
fail "no python3.13, python3.12, python3.11 or python3 on PATH; install one of them," \
    "or run make PYTHON=/path/to/python3.12"
