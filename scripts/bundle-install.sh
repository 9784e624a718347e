#!/usr/bin/env bash
# Offline install of a vicmae bundle (made by `make bundle`; this file is its install.sh).
#
#   bash install.sh [TARGET]                 # default TARGET: <bundle>/site
#   PYTHON=/opt/venv/bin/python3 bash install.sh /scratch/vicmae
#   source TARGET/env.sh                     # then: vicmae, vicmae-data, python -m ...
#
# Installs the bundle's wheels with `pip --no-index --no-deps --target TARGET` (nothing on
# the node is replaced or upgraded: its torch, numba, numpy and OpenCV stay), unpacks the
# shared libraries into TARGET/lib, and writes TARGET/env.sh, which puts TARGET on
# PYTHONPATH, TARGET/lib on LD_LIBRARY_PATH and TARGET/bin on PATH. Needs no network.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
target=${1:-$here/site}

die() { echo "install.sh: error: $*" >&2; exit 2; }

"$python" -c 'pass' 2>/dev/null || die "no Python at '$python' (set PYTHON=/path/to/python3.12)"
ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$ver" = "3.12" ] || die "this bundle holds wheels for CPython 3.12; $python is $ver (set PYTHON=...)"

# What the node must already have (the bundle deliberately does not carry these).
missing=$("$python" - <<'PY'
import importlib.util

need = {
    "torch": "torch", "numba": "numba", "numpy": "numpy", "cv2": "opencv-python-headless",
    "timm": "timm", "torchvision": "torchvision", "PIL": "pillow", "typer": "typer",
    "rich": "rich", "yaml": "pyyaml", "tensorboard": "tensorboard",
    # ffcv 1.0.2 imports distutils, which Python 3.12 only has through setuptools.
    "setuptools": "setuptools",
}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PY
)
[ -z "$missing" ] || die "$python lacks: $missing (install them, or use the Python that has them)"

mkdir -p "$target"
target=$(cd "$target" && pwd)
"$python" -m pip install --quiet --no-index --no-deps --upgrade --disable-pip-version-check \
    --target "$target" "$here"/wheels/*.whl
mkdir -p "$target/lib"
# Python's tarfile rather than tar -J: a minimal image may have no xz binary.
"$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
    "$here/libs.tar.xz" "$target/lib"

cat >"$target/env.sh" <<EOF
# vicmae bundle: source this file to use the installed bundle.
export PYTHONPATH="$target\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$target/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$target/bin:\$PATH"
export VICMAE_BUNDLE_DATA="$here/data"
EOF

# Import what the loader and the trainer load, with the new environment.
# shellcheck disable=SC1091
(
    source "$target/env.sh"
    "$python" - <<'PY'
import ffcv.libffcv  # noqa: F401  ffcv's extension: links OpenCV and libturbojpeg
import vicmae.jobs.pretrain  # noqa: F401
from vicmae_data import make_loader  # noqa: F401  the loader, which opens libwebp

# Where each native library came from: the bundle's lib/ or the node.
libs = sorted({
    line.split()[-1] for line in open("/proc/self/maps")
    if any(k in line for k in ("libwebp", "libopencv", "libturbojpeg", "_libffcv"))
})
print("install.sh: loaded " + ", ".join(libs))
PY
) || die "the installed bundle does not import (see above)"
echo "install.sh: installed into $target; now: source $target/env.sh"
