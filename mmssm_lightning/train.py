"""``mmssm-train``: compose a config, train, evaluate on the test split, print the results table.

With no overrides this is the demo (tiny models, generated data, CPU). Every key of ``conf/`` can
be overridden (``trainer.max_steps=50``, ``llm=tiny_pythia``, ``experiment=...``) and ``-m`` sweeps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mmssm_lightning  # noqa: F401  (torchvision compatibility shim before timm/transformers)
from mmssm_lightning.build import build_callbacks, build_datamodule, build_loggers, build_model, world_size
from mmssm_lightning.constants import CONF_DIR
from mmssm_lightning.data.datamodule import accumulation_steps
from mmssm_lightning.eval.report import results_table, write_results
from mmssm_lightning.lit.module import VLMModule, load_weights
from mmssm_lightning.utils import print_config_tree, save_run_info


def run(cfg: DictConfig) -> dict:
    """Train and/or evaluate as ``cfg`` says; returns the results payload (also written to disk)."""
    output_dir = Path(cfg.paths.output_dir)
    print_config_tree(cfg)
    save_run_info(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)

    model = build_model(cfg)
    dm = build_datamodule(cfg, model)
    accumulate = accumulation_steps(dm.global_batch_size, dm.per_device_batch_size, world_size(cfg.trainer))
    module = VLMModule(
        model,
        optimizer=instantiate(cfg.optim.optimizer),
        stage=instantiate(cfg.stage, _convert_="all"),
        loss_normalization=cfg.module.loss_normalization,
        warmup_ratio=cfg.optim.warmup_ratio,
        min_lr_ratio=cfg.optim.min_lr_ratio,
        weight_decay=cfg.optim.weight_decay,
        tasks=dm.tasks,
        max_new_tokens=cfg.module.max_new_tokens,
        val_generate=cfg.module.val_generate,
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.get("init_from"):
        load_weights(module, cfg.init_from)
    loggers = build_loggers(cfg)
    trainer = instantiate(cfg.trainer, _partial_=True, _convert_="all")(
        logger=loggers or False, callbacks=build_callbacks(cfg), accumulate_grad_batches=accumulate
    )
    if cfg.train:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    payload: dict = {}
    if cfg.evaluate and not dm.has_split("test"):
        print(
            "evaluate: data.test is not set, no test split to score (benchmarks: mmssm-eval)", file=sys.stderr
        )
    elif cfg.evaluate:
        ckpt = None if cfg.train else cfg.ckpt_path
        trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
        payload = _report(cfg, dm, module, trainer, output_dir)
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.finish()  # one wandb run per sweep job
    return payload


def _report(cfg: DictConfig, dm, module: VLMModule, trainer: L.Trainer, output_dir: Path) -> dict:
    metrics = {
        k.removeprefix("test/acc/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/acc/")
    }
    baseline = dm.baseline(module.test_acc)
    counts = dm.task_counts()
    payload = {
        "experiment": cfg.experiment_name,
        "stage": cfg.stage.name,
        "global_step": trainer.global_step,
        "test_accuracy": metrics,
        "majority_baseline": baseline,
        "counts": dict(counts),
        "predictions": module.predictions[:50],
    }
    _print_and_save(
        payload,
        output_dir,
        title=f"{cfg.experiment_name}: test accuracy (%) after {trainer.global_step} steps",
    )
    return payload


@rank_zero_only
def _print_and_save(payload: dict, output_dir: Path, title: str) -> None:
    from rich import print as rprint

    rprint(results_table(payload["test_accuracy"], payload["majority_baseline"], payload["counts"], title))
    write_results(output_dir / "results.json", payload)
    rprint(f"results: {output_dir / 'results.json'}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        payload = run(cfg)
    except (ValueError, FileNotFoundError, InstantiationException, OmegaConfBaseException) as e:
        if os.environ.get("MMSSM_DEBUG"):
            raise
        # A config or data mistake: say which key/file, without a page of torch internals.
        print(f"error: {e}\n(set MMSSM_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
    acc = payload.get("test_accuracy", {}).get("mean")
    return acc  # the objective of a Hydra sweeper


if __name__ == "__main__":
    main()
