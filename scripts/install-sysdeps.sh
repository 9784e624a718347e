#!/usr/bin/env bash
# Installs the system packages vicmae needs when they are missing:
#   pkg-config, OpenCV and libturbojpeg headers (to build ffcv 1.0.2 from source),
#   libwebp (decoded from the loader's compiled code through ctypes).
set -euo pipefail

need=()
pkg-config --exists opencv4 2>/dev/null || pkg-config --exists opencv 2>/dev/null || need+=(libopencv-dev)
pkg-config --exists libturbojpeg 2>/dev/null || need+=(libturbojpeg0-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
ldconfig -p 2>/dev/null | grep -q 'libwebp\.so' || need+=(libwebp-dev)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "error: missing system packages and no apt-get here. Install the equivalents of:"
    echo "  pkg-config, OpenCV development files (opencv4.pc), libturbojpeg development files, libwebp"
    echo "  (conda: conda install -c conda-forge pkg-config opencv libjpeg-turbo libwebp)"
    exit 2
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
