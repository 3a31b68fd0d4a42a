#!/usr/bin/env bash
# Installs the Debian packages negclip builds against, when they are missing.
# Safe to run again: it does nothing when everything is present.
set -euo pipefail
need=()
for pkg in libopenblas-dev libhdf5-dev libpng-dev libturbojpeg0-dev zlib1g-dev libssl-dev pkg-config python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "bootstrap: installing ${need[*]}" >&2
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "bootstrap: no 'swift' on PATH: install the Swift 6.3 toolchain (swift.org)" >&2; exit 1; }
