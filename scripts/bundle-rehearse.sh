#!/usr/bin/env bash
# Rehearse a bundle's offline install on THIS machine, as close to a bare GPU node as a
# machine with those libraries installed can get (needs root, for namespaces):
#   - no network at all (a new network namespace), so pip can only use the bundle;
#   - this machine's copies of every library the bundle ships (OpenCV, libturbojpeg,
#     libwebp and their closure) hidden behind /dev/null (a private mount namespace), so
#     anything that does not come from the bundle fails to load;
#   - a node-like Python 3.12 environment given as NODE_PYTHON (torch, numba, numpy,
#     opencv-python-headless, timm, ... but no ffcv, webp, av or vicmae);
# then the CPU rehearsal of scripts/gpu-check.sh with --bundle: install, loader, a few
# training steps, the loader benchmark and the checks that a CPU can run.
#
#   make bundle-rehearse NODE_PYTHON=/path/to/py312-venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE_DIR:-bundle}
NODE_PYTHON=${NODE_PYTHON:?set NODE_PYTHON to a node-like Python 3.12 (see docs/operations.md)}
RESULTS=${REHEARSAL_RESULTS:-build/bundle-rehearsal}

[ -f "$BUNDLE/libs.tar.xz" ] || { echo "error: no bundle in $BUNDLE (make bundle)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: needs root (unshare)" >&2; exit 2; }
names=$(python3 -c 'import sys, tarfile; print(" ".join(m.name.lstrip("./") for m in tarfile.open(sys.argv[1]) if m.name not in (".", "./")))' "$BUNDLE/libs.tar.xz")
mkdir -p "$RESULTS"

unshare --mount --net --propagation private bash -s "$BUNDLE" "$NODE_PYTHON" "$RESULTS" "$names" <<'INNER'
set -euo pipefail
bundle=$1 python=$2 results=$3 names=$4
hidden=0
for name in $names; do
    for dir in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/local/lib /lib64 /usr/lib64; do
        for f in "$dir/$name" "$dir/$name".*; do
            if [ -e "$f" ] && [ ! -L "$f" ]; then mount --bind /dev/null "$f"; hidden=$((hidden + 1)); fi
        done
        # The versioned file a symlink points to (libfoo.so.6 -> libfoo.so.6.4.0).
        if [ -L "$dir/$name" ]; then
            real=$(readlink -f "$dir/$name")
            if [ -f "$real" ]; then mount --bind /dev/null "$real"; hidden=$((hidden + 1)); fi
        fi
    done
done
echo "[rehearse] no network: $(python3 -c 'import socket
try:
    socket.create_connection(("pypi.org", 443), timeout=3); print("NETWORK REACHABLE")
except OSError as e: print("unreachable (" + type(e).__name__ + ")")')"
echo "[rehearse] hid $hidden system copies of the bundle's libraries"
site=$(mktemp -d "${TMPDIR:-/tmp}/vicmae-rehearse-site.XXXXXX")
rc=0
bash scripts/gpu-check.sh --cpu --bundle "$bundle" --site "$site" --python "$python" \
    --results "$results" || rc=$?
ext=$(ls "$site"/ffcv/_libffcv*.so)
echo "[rehearse] ldd $ext with the bundle's LD_LIBRARY_PATH:"
LD_LIBRARY_PATH="$site/lib" ldd "$ext" | tee "$results/ldd.txt"
outside=$(awk '/=> \//{print $3}' "$results/ldd.txt" | grep -v "^$site/lib/" |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libz)\.so' || true)
if [ -n "$outside" ]; then echo "[rehearse] resolved OUTSIDE the bundle: $outside"; rc=1; fi
rm -rf "$site"
exit $rc
INNER
