"""mmssm-lightning: Mamba vision-language models, composed with Hydra, trained with Lightning."""

from mmssm_lightning._torchvision_compat import install_import_hook as _install_torchvision_hook

# Before anything imports timm or transformers (both import torchvision). This file also runs at
# interpreter start where the CPU installer wrote its .pth file: keep it free of heavy imports.
_install_torchvision_hook()

from mmssm_lightning.resolvers import register as _register_resolvers  # noqa: E402

_register_resolvers()

__version__ = "0.1.0"
