#!/usr/bin/env bash
# Make the GPU device image run this repo (it has torch, lightning, transformers, timm, triton, nvcc,
# but not hydra-core / omegaconf / antlr4 / mambapy, nor the mamba-ssm / causal-conv1d kernels).
#   source scripts/device_setup.sh          (from the repository root, in the device command)
# * .whl/*.whl (carried wheels: see experiments/benchmarks/README.md) -> $SITE
# * kernels: unpacked from .kern/prebuilt/<pkg>.tar.xz when carried (the build's pieces, debug
#   symbols stripped, xz: 60 MB for both, under a call's 64 MiB), else, with BUILD_KERNELS=1, built
#   from .kern/sdist for sm_90 (scripts/build_mamba_kernels.sh: 256 s + 141 s on an H200)
# then PYTHONPATH=$SITE:<repo> so that `python3 -m mmssm_lightning.train ...` runs.
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
for pkg in causal_conv1d mamba_ssm; do
  if [ -f .kern/prebuilt/$pkg.tar.xz ]; then
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .kern/prebuilt/$pkg.tar.xz "$SITE"
  elif ls .kern/prebuilt/$pkg.tar.part-* >/dev/null 2>&1; then  # build_mamba_kernels.sh's own pieces
    cat .kern/prebuilt/$pkg.tar.part-* | tar xzf - -C "$SITE"
  elif [ -n "${BUILD_KERNELS:-}" ]; then
    bash scripts/build_mamba_kernels.sh .kern/sdist "$SITE" "${OUT:-/tmp/kern}" $pkg
  fi
done
export PYTHONPATH="$SITE:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import torch
from mmssm_lightning.models.ssm import kernels
print(f"device_setup: torch {torch.__version__}, {torch.cuda.device_count()} GPU(s) "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else ''}, mamba kernels: {kernels() is not None}")
PY
