"""Vision-to-language projectors. Each is built as ``projector(in_dim=..., out_dim=...)`` by
:class:`~mmssm_lightning.models.vlm.VisionLanguageModel` from a Hydra ``_partial_`` config, so the
widths always follow the encoder and LLM chosen."""
