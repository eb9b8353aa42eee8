#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Puts emuv's NVML library (built by cargo as libnvidia_ml.so) where programs look for NVIDIA's:
# DIR/libnvidia-ml.so.1 and the development link DIR/libnvidia-ml.so. Point LD_LIBRARY_PATH at
# DIR, or give /usr/local/lib/emuv and add it to ld.so.conf.d (docs/gpu-tools.md).
#
#   scripts/install-nvml.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
dir=${1:?usage: install-nvml.sh DIR}
lib=$top/target/release/libnvidia_ml.so
[ -f "$lib" ] || { echo "install-nvml: $lib not built (cargo build --release -p emuv-nvml)" >&2; exit 1; }
mkdir -p "$dir"
install -m 0755 "$lib" "$dir/libnvidia-ml.so.1"
ln -sf libnvidia-ml.so.1 "$dir/libnvidia-ml.so"
