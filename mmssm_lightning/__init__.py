"""mmssm-lightning: Mamba vision-language models, composed with Hydra, trained with Lightning."""

from mmssm_lightning._torchvision_compat import ensure_importable as _ensure_torchvision

# Must run before anything imports timm or transformers (both import torchvision).
_ensure_torchvision()

from mmssm_lightning.resolvers import register as _register_resolvers  # noqa: E402

_register_resolvers()

__version__ = "0.1.0"
