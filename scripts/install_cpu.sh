#!/usr/bin/env bash
# Install mmssm-lightning on a CPU-only machine.
#  * torch is pinned first: an unpinned torch pulls several GB of CUDA wheels.
#  * torchvision (timm and transformers import it) is pinned to the build made for that torch and
#    installed without its dependencies, so that pip cannot swap torch for a CUDA one; its CUDA-only
#    ops are never used (see mmssm_lightning/_torchvision_compat.py).
#  * a .pth file in site-packages puts that module's import hook in place at interpreter start, so
#    that `import lightning` / `import timm` work before (or without) `import mmssm_lightning`;
#    it is written only where torchvision's _C does not load.
set -euo pipefail
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
python3 -m pip install -q "torch==${TORCH_VERSION}"
python3 -m pip install -q --no-deps "torchvision==${TORCHVISION_VERSION}"
python3 -m pip install -q -e ".[test]"
python3 -c "from mmssm_lightning._torchvision_compat import install_pth; print(install_pth())"
python3 -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"
python3 -c "import lightning, timm, torchvision"
