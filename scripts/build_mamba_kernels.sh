#!/usr/bin/env bash
# Build causal-conv1d and/or mamba-ssm from their sdists for ONE GPU arch (their setup.py compiles
# ~8 archs, far longer than a device call), into a --target folder, and pack the result so that
# later calls carry it instead of building again.
#   scripts/build_mamba_kernels.sh SDIST_DIR TARGET_DIR PACK_DIR [packages...] (default: both)
#   env: ARCH=90 (H100/H200), MAX_JOBS=16
# Writes PACK_DIR/<pkg>.tar.part-* (gzip, 15 MiB pieces: a device call returns files of at most 16 MiB;
# recompressed with xz -9 they carry as .kern/prebuilt/<pkg>.tar.xz, 60 MB for both)
# and PACK_DIR/<pkg>.build.json (seconds, arch, versions).
set -euo pipefail
src=${1:?sdist folder}; target=${2:?target folder}; pack=${3:?pack folder}; shift 3
pkgs=${*:-causal_conv1d mamba_ssm}
arch=${ARCH:-90}
export MAX_JOBS=${MAX_JOBS:-16} CAUSAL_CONV1D_FORCE_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
work=$(mktemp -d); mkdir -p "$target" "$pack"
for pkg in $pkgs; do
  tar xzf "$src"/${pkg}-*.tar.gz -C "$work"
  d=$(ls -d "$work"/${pkg}-*/)
  python3 - "$d/setup.py" "$arch" <<'PY'
import sys
p, arch = sys.argv[1], sys.argv[2]
s = open(p).read()
marker = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
assert marker in s, "setup.py layout changed: look for the cc_flag block"
s = s.replace(marker, f"    if not HIP_BUILD:\n        cc_flag = ['-gencode', 'arch=compute_{arch},code=sm_{arch}']\n" + marker, 1)
open(p, "w").write(s)
PY
  t=$(date +%s)
  before=$(ls "$target")
  (cd "$d" && python3 -m pip install --no-build-isolation --no-deps --no-index --target "$target" . >"$work/$pkg.log" 2>&1) \
    || { tail -40 "$work/$pkg.log"; exit 1; }
  secs=$(( $(date +%s) - t ))
  new=$(comm -13 <(echo "$before" | sort) <(ls "$target" | sort) | tr '\n' ' ')
  (cd "$target" && strip --strip-debug *.so 2>/dev/null || true)  # -g line info: a quarter of the size
  (cd "$target" && tar cf - $new) | gzip -1 | split -b 15m - "$pack/$pkg.tar.part-"
  python3 - "$pack/$pkg.build.json" "$pkg" "$secs" "$arch" "$new" <<'PY'
import json, sys, torch, platform
out, pkg, secs, arch, files = sys.argv[1:]
json.dump({"package": pkg, "build_seconds": int(secs), "arch": f"sm_{arch}", "files": files.split(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}, open(out, "w"), indent=2)
PY
  echo "$pkg built for sm_$arch in $secs s -> $(ls "$pack"/$pkg.tar.part-* | wc -l) piece(s)"
done
