"""Values every layer may import (the floor of the package: it imports nothing of ours)."""

from __future__ import annotations

from pathlib import Path

#: label of a position that takes no loss (PyTorch's cross-entropy default, LLaVA's convention)
IGNORE_INDEX = -100
#: LLaVA's convention: a negative id no tokenizer produces marks where image embeddings go
IMAGE_TOKEN_ID = -200
#: where a LLaVA record's text places its image
IMAGE_MARKER = "<image>"
#: the Hydra config tree (`conf/` at the repository root; installs are editable)
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
