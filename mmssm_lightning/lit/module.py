"""The LightningModule: stage-aware freezing, AdamW/RAdam with linear warm-up + cosine decay,
token- or sample-normalised loss, and generation-based accuracy on validation/test."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from mmssm_lightning.checkpoints import checkpoint_state, shape_mismatches
from mmssm_lightning.eval.metrics import TaskAccuracy
from mmssm_lightning.inference import Engine
from mmssm_lightning.lit.resume import config_changes
from mmssm_lightning.lit.stage import Stage
from mmssm_lightning.models.loss import LossNormalization
from mmssm_lightning.models.vlm import VisionLanguageModel


def warmup_cosine(step: int, total: int, warmup_ratio: float, min_lr_ratio: float) -> float:
    """LR multiplier: linear from 0 over ``warmup_ratio * total`` steps, then cosine to ``min_lr_ratio``."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def load_weights(
    module: L.LightningModule, ckpt_path: str, what: str = "init_from", ckpt: dict | None = None
) -> None:
    """Start from another run's weights, not its optimizer or step (``init_from``: the finetune
    stage of a two-stage recipe starts from the align stage's checkpoint). ``ckpt``: the checkpoint
    already read from ``ckpt_path`` (a multi-GB file is read once)."""
    state = checkpoint_state(ckpt_path, what, ckpt=ckpt)
    check_fits(state, module, ckpt_path, what)
    module.load_state_dict(state, strict=True)


def check_fits(state: dict[str, torch.Tensor], module: torch.nn.Module, ckpt_path: str, what: str) -> None:
    """A one-line error when a checkpoint's weights are not this model's (names or shapes)."""
    problem = shape_mismatches(state, module.state_dict())
    if problem:
        raise ValueError(f"{what}: {ckpt_path} does not fit this model ({problem}): another architecture")


class VLMModule(L.LightningModule):
    """Args:
    model: the VisionLanguageModel.
    optimizer: ``params -> Optimizer`` (a Hydra ``_partial_`` of AdamW/RAdam).
    stage: which parts train.
    loss_normalization: ``token`` | ``sample`` (see :mod:`mmssm_lightning.models.loss`).
    warmup_ratio / min_lr_ratio: the schedule.
    weight_decay: applied to matrices only; biases, norms and 1-D SSM parameters get none.
    tasks / box_tasks: task names for the accuracy metric.
    max_new_tokens: generation length at validation/test.
    val_generate: also generate (and score) on validation, not just compute the loss.
    run_config: the resolved run config as a plain dict, stored in every checkpoint.
    """

    def __init__(
        self,
        model: VisionLanguageModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        stage: Stage,
        loss_normalization: LossNormalization = "token",
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        weight_decay: float = 0.0,
        tasks: Sequence[str] = ("default",),
        box_tasks: Sequence[str] = ("box",),
        max_new_tokens: int = 16,
        val_generate: bool = True,
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.stage = stage
        self.loss_normalization = loss_normalization
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        self.weight_decay = weight_decay
        self.max_new_tokens = max_new_tokens
        self.val_generate = val_generate
        self.run_config = run_config or {}
        stage.apply(model)
        self.val_acc = TaskAccuracy(tasks, box_tasks)
        self.test_acc = TaskAccuracy(tasks, box_tasks)
        self.predictions: list[dict[str, Any]] = []
        self._engine: Engine | None = None

    def _loss(self, batch: dict) -> torch.Tensor:
        return self.model.loss(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            batch["labels"],
            self.loss_normalization,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["answers"]))
        return loss

    def _generate(self, batch: dict) -> list[str]:
        # Built on first use (the model is on its device by then) and dropped at each epoch's end, so
        # its decoder states do not sit in memory through training. No CUDA graphs: the weights
        # keep training, and a graph pool per validation shape would stay allocated.
        if self._engine is None:
            self._engine = Engine(self.model, cuda_graph=False)
        return self._engine.generate(
            batch["prompt_ids"], batch["prompt_mask"], batch["pixel_values"], self.max_new_tokens
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        n = len(batch["answers"])
        self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=n, sync_dist=True)
        if self.val_generate:
            self.val_acc.update(self._generate(batch), batch["answers"], batch["tasks"])

    def on_validation_epoch_end(self) -> None:
        self._engine = None
        if self.val_generate:
            for task, acc in self.val_acc.compute().items():
                self.log(f"val/acc/{task}", acc, prog_bar=task == "mean")
            self.val_acc.reset()

    def on_test_epoch_start(self) -> None:
        self.predictions = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        preds = self._generate(batch)
        self.test_acc.update(preds, batch["answers"], batch["tasks"])
        for i, p, a, t in zip(batch["indices"].tolist(), preds, batch["answers"], batch["tasks"]):
            self.predictions.append({"index": i, "task": t, "answer": a, "prediction": p})

    def on_test_epoch_end(self) -> None:
        self._engine = None
        for task, acc in self.test_acc.compute().items():
            self.log(f"test/acc/{task}", acc)
        self.test_acc.reset()

    def configure_optimizers(self) -> dict:
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = self.optimizer_factory([g for g in groups if g["params"]])
        total = int(self.trainer.estimated_stepping_batches)
        sched = LambdaLR(opt, lambda s: warmup_cosine(s, total, self.warmup_ratio, self.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_config = checkpoint.get("mmssm_config")

    def on_train_start(self) -> None:
        # After Lightning restored the optimizer and scheduler of a resumed run: the optimizer's
        # hyper-parameters and the schedule are this run's (lit/resume.py), not the checkpoint's.
        old = getattr(self, "_resumed_config", None)
        if old is None or not self.trainer.lr_scheduler_configs:
            return
        changes = config_changes(old, self.run_config)
        self.resume_changes = changes
        sched = self.trainer.lr_scheduler_configs[0].scheduler
        opt = sched.optimizer
        before = [g["lr"] for g in opt.param_groups]
        fresh = self.optimizer_factory([torch.nn.Parameter(torch.zeros(1))]).defaults
        for group in opt.param_groups:
            for key, value in fresh.items():
                if key in group and key not in ("params", "weight_decay", "lr"):
                    group[key] = value
            group["weight_decay"] = self.weight_decay if group["weight_decay"] else 0.0
            group["initial_lr"] = fresh["lr"]
        sched.base_lrs = [fresh["lr"]] * len(opt.param_groups)
        step = sched.last_epoch
        for group, fn in zip(opt.param_groups, sched.lr_lambdas):
            group["lr"] = fresh["lr"] * fn(step)
        sched._last_lr = [g["lr"] for g in opt.param_groups]
        if any(c["action"] in ("rederive", "warn") for c in changes) and self.trainer.is_global_zero:
            for c in changes:
                if c["action"] in ("rederive", "warn"):
                    print(
                        f"resume: {c['key']}: {c['checkpoint']!r} -> {c['now']!r} ({c['action']})", flush=True
                    )
            print(
                f"resume: learning rate at step {step}: {before[0]:.3g} under the checkpoint's settings, "
                f"{opt.param_groups[0]['lr']:.3g} under this run's (schedule re-derived over "
                f"{int(self.trainer.estimated_stepping_batches)} steps)",
                flush=True,
            )

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Under FSDP each rank holds a shard: the norm must be taken over all of them, which only
        # the wrapped root module can do (Lightning's own clipping refuses FSDP).
        model = self.trainer.strategy.model
        if (
            gradient_clip_val
            and hasattr(model, "clip_grad_norm_")
            and gradient_clip_algorithm in (None, "norm")
        ):
            model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A plain dict (never a DictConfig) so that the file loads with torch.load(weights_only=True).
        checkpoint["mmssm_config"] = self.run_config
        checkpoint["stage"] = self.stage.name
