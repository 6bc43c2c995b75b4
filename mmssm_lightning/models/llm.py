"""The language backbone: any Hugging Face causal LM (Mamba, GPT-NeoX/Pythia, Llama/Vicuna).

``pretrained: true`` loads through ``AutoModelForCausalLM.from_pretrained`` (the hub or a local
folder); ``pretrained: false`` builds the same class from the ``config`` embedded in the llm
yaml, with random weights — the tiny test models and the real-shape benchmarks take this path.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CausalLM(nn.Module):
    """A Hugging Face causal LM and its tokenizer.

    Args:
        name_or_path: hub id or local folder of the weights (used when ``pretrained``).
        tokenizer: the tokenizer (see :mod:`mmssm_lightning.models.tokenizer`).
        pretrained: load weights (``from_pretrained``) or build from ``config`` at random.
        config: ``model_type`` plus the HF config fields; required when not ``pretrained``.
        dtype: weight dtype at load; keep ``float32`` under bf16-mixed (Mamba's A_log/D want fp32).
        gradient_checkpointing: recompute each block in backward (HF's own implementation).
        mixer: ``hf`` (HF's Mamba mixer, ``mamba_ssm``'s fused training path) or ``fused`` (HF's
            blocks with our mixer forward: :mod:`~mmssm_lightning.models.hf_mamba`); Mamba only.
        scan_backend: the ``fused`` mixer's selective scan: ``auto`` | ``triton`` | ``cuda`` | ``torch``.
    """

    def __init__(
        self,
        name_or_path: str,
        tokenizer: PreTrainedTokenizerBase,
        pretrained: bool = False,
        config: Mapping | None = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        mixer: str = "hf",
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"llm.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if mixer not in ("hf", "fused"):
            raise ValueError(f"llm.mixer must be 'hf' or 'fused', got {mixer!r}")
        if pretrained:
            self.model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=_DTYPES[dtype]
            )
        else:
            if not config or "model_type" not in config:
                raise ValueError(
                    f"llm.config needs a model_type (and the shape) to build '{name_or_path}' without weights"
                )
            fields = dict(config)
            hf_config = AutoConfig.for_model(fields.pop("model_type"), **fields)
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=_DTYPES[dtype])
        if mixer == "fused":
            from mmssm_lightning.models.hf_mamba import use_fused_mixers

            if not use_fused_mixers(self.model, scan_backend):
                raise ValueError(f"llm.mixer: fused needs a Mamba model; '{name_or_path}' has no MambaBlock")
        self.name_or_path = name_or_path
        self.tokenizer = tokenizer
        vocab = self.model.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ValueError(
                f"llm: tokenizer has {len(tokenizer)} tokens but '{name_or_path}' embeds only {vocab}; "
                "raise llm.config.vocab_size or use the model's own tokenizer"
            )
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @torch.no_grad()
    def add_tokens(self, tokens: list[str], init_seed: int = 0) -> list[int]:
        """Add ``tokens`` as special tokens and grow the embeddings (and an untied LM head) to hold
        them. New input rows are drawn from N(mean, std) of the existing rows, per dimension, with
        their own generator: ``init_seed`` picks one of the initialisations (Pythia-VL vs
        Mamba-VL §5.3.2 trains with three)."""
        added = self.tokenizer.add_tokens(tokens, special_tokens=True)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        old = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > old:
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        if added:
            emb = self.model.get_input_embeddings().weight
            ref = emb[: min(old, min(ids))].float()
            g = torch.Generator().manual_seed(init_seed)
            rows = torch.randn(len(ids), emb.shape[1], generator=g) * ref.std(0) + ref.mean(0)
            emb[ids] = rows.to(emb.dtype).to(emb.device)
            head = self.model.get_output_embeddings()
            if head is not None and head.weight.data_ptr() != emb.data_ptr():
                head.weight[ids] = 0.0  # untied head: new tokens start with neutral logits
        return ids

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        where: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, V); given ``where`` (B, L) bool, only at those positions: (N, V).

        Training passes the positions that predict a target: a VLM sample is mostly image tokens,
        whose logits (B x L x V in float32, HF's choice) would cost the LM head's FLOPs and GBs for
        nothing (729 of Cobra's 985 positions). The backbone and head are called as HF's
        ``*ForCausalLM.forward`` calls them for the three families we build (no logit scaling)."""
        if where is None:
            return self.model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
            ).logits
        hidden = self.model.base_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
        )[0]
        head = self.model.get_output_embeddings()
        return head(hidden[where].to(head.weight.dtype))
