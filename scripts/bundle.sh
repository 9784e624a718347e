#!/usr/bin/env bash
# `make bundle`: everything a GPU node WITHOUT network needs to run vicmae's loader and
# trainer, in one folder (default bundle/, < 60 MiB), built here WITH network.
#
# The node is assumed to have CPython 3.12 with PyTorch, numba, numpy, OpenCV-headless,
# timm, Pillow, typer, rich, pyyaml, tensorboard and setuptools installed (a typical CUDA
# image). The bundle brings the rest:
#   wheels/      cp312 wheels installed with --no-deps (nothing replaces the node's torch):
#                ffcv 1.0.2 built here from source, vicmae itself, webp + cffi + pycparser,
#                PyAV (conversion, synth and the PyAV baseline of bench-loader)
#   libs.tar.xz  the shared libraries ffcv links (OpenCV core/imgproc, libturbojpeg and
#                their closure, found with ldd) and libwebp, which the loader calls
#   data/        clips.beton: Kinetics-like clips (340x256, WebP q90) to train and load from
#   install.sh   offline install into a folder + env.sh (PYTHONPATH, LD_LIBRARY_PATH, PATH)
#
#   make bundle                                  # python3.12 found on PATH or under pyenv
#   make bundle BUNDLE_PYTHON=/opt/py312/bin/python3.12 BUNDLE_DIR=/scratch/vicmae-bundle
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BUNDLE_DIR:-bundle}
CLIPS=${BUNDLE_CLIPS:-512}        # clips in data/clips.beton
FRAMES=${BUNDLE_FRAMES:-2}        # frames per clip (the loader decodes 2 per sample)
MAX_MIB=60
FFCV_VERSION=1.0.2
# Wheels downloaded for cp312 (abi3 where the project publishes it).
DOWNLOADS=(av==18.1.0 webp==0.4.0 cffi==2.1.1 pycparser==3.12)
PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64
    manylinux_2_28_x86_64 manylinux_2_34_x86_64)
# Libraries every glibc Linux has: never shipped, so the node's own copies are used.
BASE_LIBS='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libz)\.so'

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "error: $*" >&2; exit 2; }

find_python312() {
    local c
    for c in "${BUNDLE_PYTHON:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            command -v "$c" || echo "$c"
            return 0
        fi
    done
    return 1
}

PY312=$(find_python312 | head -n1) ||
    die "no CPython 3.12 found to build ffcv for the node; pass BUNDLE_PYTHON=/path/to/python3.12"
command -v ldd >/dev/null || die "ldd not found (needed to collect ffcv's shared libraries)"
[ -x .venv/bin/vicmae-data ] || die ".venv is missing: run make install first"

work=$(mktemp -d "${TMPDIR:-/tmp}/vicmae-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/bundle"
mkdir -p "$stage/wheels" "$stage/data" "$work/lib"

step "1/5 wheels for Python 3.12 ($PY312)"
# ffcv from source against this machine's OpenCV and libturbojpeg (make sysdeps).
"$PY312" -m pip wheel --quiet --no-deps --no-binary ffcv "ffcv==$FFCV_VERSION" -w "$stage/wheels"
# The project from a clean copy of its files: setuptools would also pack stale modules
# left in an old build/lib.
mkdir -p "$work/src"
tar -c --exclude=./.venv --exclude=./build --exclude=./demo-out --exclude="./$OUT" --exclude=./.git \
    --exclude='*.beton' --exclude=__pycache__ . | tar -x -C "$work/src"
"$PY312" -m pip wheel --quiet --no-deps "$work/src" -w "$stage/wheels"
plat_args=()
for p in "${PLATFORMS[@]}"; do plat_args+=(--platform "$p"); done
"$PY312" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat_args[@]}" -d "$stage/wheels" "${DOWNLOADS[@]}"
ls -1 "$stage/wheels"

step "2/5 shared libraries (ldd closure of ffcv's extension and libwebp)"
"$PY312" -m zipfile -e "$stage"/wheels/ffcv-*.whl "$work/ffcv"
ext=$(ls "$work"/ffcv/ffcv/_libffcv*.so)
webp=$(ldconfig -p | awk '/libwebp\.so\.7 .*x86-64/ && !p {p = $NF} END {print p}')
[ -n "$webp" ] || die "libwebp.so.7 not found (make sysdeps installs it)"
if ldd "$ext" "$webp" | grep -q 'not found'; then
    ldd "$ext" "$webp" | grep 'not found' >&2
    die "ffcv's extension has unresolved libraries on this machine"
fi
cp -L "$webp" "$work/lib/"
ln -s "$(basename "$webp")" "$work/lib/libwebp.so"  # what ctypes.util.find_library asks ld for
ldd "$ext" "$webp" | awk '/=> \//{print $1, $3}' | sort -u | while read -r name path; do
    if [[ ! "$name" =~ $BASE_LIBS ]]; then
        cp -L "$path" "$work/lib/$name"
    fi
done
# Every library the extension needs resolves in the bundle or is a base library.
LD_LIBRARY_PATH="$work/lib" ldd "$ext" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    if [[ ! "$name" =~ $BASE_LIBS && "$path" != "$work/lib/"* ]]; then
        die "$name resolves outside the bundle ($path)"
    fi
done
du -sh "$work/lib"
ls -1 "$work/lib"
tar -C "$work/lib" -cJf "$stage/libs.tar.xz" .

step "3/5 data: $CLIPS Kinetics-like clips of $FRAMES frames -> data/clips.beton"
.venv/bin/python scripts/bundle_clips.py --out "$work/clips" --count "$CLIPS" --frames "$FRAMES"
.venv/bin/vicmae-data convert folder --root "$work/clips" --out "$work/clips.beton" \
    --short-side 256 --workers 1  # one writer: fewer part-filled 2 MiB pages in the file
cp "$work/clips.beton" "$stage/data/clips.beton"

step "4/5 install.sh and manifest"
cp scripts/bundle-install.sh "$stage/install.sh"
chmod +x "$stage/install.sh"
"$PY312" - "$stage" "$FFCV_VERSION" <<'PY'
import hashlib, json, os, platform, sys, time
stage, ffcv = sys.argv[1], sys.argv[2]
files = {}
for root, _, names in os.walk(stage):
    for n in sorted(names):
        p = os.path.join(root, n)
        rel = os.path.relpath(p, stage)
        files[rel] = {
            "bytes": os.path.getsize(p),
            "sha256": hashlib.sha256(open(p, "rb").read()).hexdigest(),
        }
manifest = {
    "built": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    "build_machine": f"{platform.platform()} (glibc {platform.libc_ver()[1]})",
    "python": "cp312",
    "ffcv": ffcv,
    "needs_on_node": "CPython 3.12, torch, numba, numpy, opencv-python-headless, timm, "
    "pillow, typer, rich, pyyaml, tensorboard, setuptools; glibc >= 2.34",
    "files": files,
}
with open(os.path.join(stage, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
PY

step "5/5 size check and move into place"
bytes=$(du -sb "$stage" | cut -f1)
mib=$((bytes / 1048576))
du -ah "$stage" | sort -k2
if [ "$bytes" -ge $((MAX_MIB * 1048576)) ]; then
    die "bundle is $mib MiB, over the $MAX_MIB MiB budget (fewer BUNDLE_CLIPS?)"
fi
rm -rf "$OUT.tmp"
cp -r "$stage" "$OUT.tmp"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT/ ($mib MiB). On the node: bash $OUT/install.sh TARGET && source TARGET/env.sh"
