#!/usr/bin/env bash
# Install mmssm-lightning on a CPU-only machine.
#  * torch is pinned first: an unpinned torch pulls several GB of CUDA wheels.
#  * torchvision (timm and transformers import it) is pinned to the build made for that torch and
#    installed without its dependencies, so that pip cannot swap torch for a CUDA one; its CUDA-only
#    ops are never used (see mmssm_lightning/_torchvision_compat.py).
set -euo pipefail
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
python3 -m pip install -q "torch==${TORCH_VERSION}"
python3 -m pip install -q --no-deps "torchvision==${TORCHVISION_VERSION}"
python3 -m pip install -q -e ".[test]"
python3 -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"
