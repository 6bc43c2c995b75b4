"""mmssm-lightning: Mamba vision-language models, composed with Hydra, trained with Lightning."""

from mmssm_lightning._torchvision_compat import ensure_importable as _ensure_torchvision

# Must run before anything imports timm or transformers (both import torchvision).
_ensure_torchvision()

__version__ = "0.1.0"
