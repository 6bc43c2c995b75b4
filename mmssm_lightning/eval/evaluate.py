"""``mmssm-eval``: score a checkpoint on benchmarks under one paper's protocol.

    mmssm-eval ckpt_path=<run>/checkpoints/last.ckpt protocol=cobra "run=[vqav2,gqa,pope]"

The model is rebuilt from the run config stored in the checkpoint (towers and LLM at random, then
every weight from the checkpoint; the tokenizer as the run had it), prompts are the run's chat
template around the protocol's user message, and each benchmark is answered in batches: left-padded
greedy generation with per-sample stop at EOS, or first-token likelihood over candidate answers.
Writes ``<output_dir>/results.json`` (metrics + the protocol of every number),
``<benchmark>.predictions.jsonl``, prints a table and, with ``logger=wandb``, logs a wandb table.
Under ``torchrun`` each rank takes a shard of every benchmark; the metrics sync across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

import mmssm_lightning  # noqa: F401  (torchvision compatibility shim before timm/transformers)
from mmssm_lightning.build import build_model
from mmssm_lightning.constants import CONF_DIR, IMAGE_MARKER
from mmssm_lightning.data.collate import pad_sequences
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.transforms import ImageTransform
from mmssm_lightning.eval.benchmarks import Benchmark
from mmssm_lightning.eval.protocols import BenchmarkProtocol
from mmssm_lightning.eval.sample import EvalSample
from mmssm_lightning.models.vlm import VisionLanguageModel


def load_checkpoint(
    path: str | Path, model_overrides: Sequence[str] = ()
) -> tuple[VisionLanguageModel, PromptFormat, DictConfig]:
    """A model of ours from a Lightning checkpoint file (``weights_only`` load). ``model_overrides``
    ("key=value") change the stored run config before the model is built, for what holds no
    weights: e.g. ``projector.scan.name=forward`` (Q-Mamba Table 4) or the prompt."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"ckpt_path: {p} is a sharded (FSDP) checkpoint folder; consolidate it into one file first: "
            f"python -m lightning.pytorch.utilities.consolidate_checkpoint {p}"
        )
    if not p.is_file():
        raise FileNotFoundError(f"ckpt_path: {p} does not exist")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    if "mmssm_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"ckpt_path: {p} is not an mmssm-lightning checkpoint (no mmssm_config / state_dict); "
            "convert released checkpoints with mmssm_lightning.convert first"
        )
    cfg = OmegaConf.create(ckpt["mmssm_config"])
    if model_overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(model_overrides)))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    # Weights in the checkpoint are not downloaded. Converted checkpoints of released models
    # (mmssm_lightning.convert) hold no frozen tower weights: those come from timm as configured.
    towers_inside = any(k.startswith("vision.") for k in state)
    if cfg.encoder and towers_inside:
        for tower in cfg.encoder.towers.values():
            tower.pretrained = False
    cfg.llm.pretrained = False
    model = build_model(cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(
            f"ckpt_path: {p} does not fit the model its config builds: {str(e).splitlines()[0]}"
        ) from None
    if not towers_inside:
        missing = [k for k in missing if not k.startswith("vision.")]
    if missing or unexpected:
        raise ValueError(
            f"ckpt_path: {p}: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}) weights"
        )
    return model.eval(), instantiate(cfg.prompt), cfg


def _rank_world() -> tuple[int, int]:
    return (
        (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    )


class Evaluator:
    """Answers benchmark samples with a model; see the module docstring.

    Args:
        model / prompt_format: the model and the chat template it was trained with.
        batch_size: samples per forward.
        device / dtype: where and in what precision to run.
    """

    def __init__(
        self,
        model: VisionLanguageModel,
        prompt_format: PromptFormat,
        batch_size: int = 16,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.batch_size = batch_size
        self.builder = SequenceBuilder(model.tokenizer, prompt_format)
        vision = model.vision
        self.transform = ImageTransform(vision.image_size, vision.resize) if vision is not None else None

    def _inputs(self, samples: Sequence[EvalSample], protocol: BenchmarkProtocol):
        ids = []
        pixels = []
        for s in samples:
            image = s.load_image() if self.transform is not None else None
            text = protocol.format(s)
            turns = [{"from": "human", "value": f"{IMAGE_MARKER}\n{text}" if image is not None else text}]
            ids.append(self.builder.encode_prompt(turns, image is not None))
            if image is not None:
                pixels.append(self.transform(image))
        input_ids, mask = pad_sequences(ids, self.model.tokenizer.pad_token_id, "left")
        pixel_values = torch.stack(pixels).to(self.device, self.dtype) if pixels else None
        if pixels and len(pixels) != len(samples):
            raise ValueError("a batch mixes samples with and without images")
        return input_ids.to(self.device), mask.to(self.device), pixel_values

    def _candidate_ids(self, candidates) -> dict[str, list[int]]:
        tok = self.model.tokenizer
        return {
            name: sorted({tok(s, add_special_tokens=False)["input_ids"][0] for s in spellings})
            for name, spellings in candidates.items()
        }

    @torch.no_grad()
    def answer(self, samples: Sequence[EvalSample], protocol: BenchmarkProtocol) -> list[str]:
        input_ids, mask, pixels = self._inputs(samples, protocol)
        if protocol.scoring == "generate":
            texts = self.model.generate(
                input_ids, mask, pixels, protocol.max_new_tokens, keep_special_tokens=protocol.raw_output
            )
            return texts if protocol.raw_output else [t.strip() for t in texts]
        logp = self.model.next_token_logprobs(input_ids, mask, pixels)
        cand = self._candidate_ids(protocol.candidates)
        names = list(cand)
        scores = torch.stack([torch.logsumexp(logp[:, cand[n]], dim=-1) for n in names], dim=-1)
        return [names[i] for i in scores.argmax(-1).tolist()]

    def run(
        self,
        name: str,
        benchmark: Benchmark,
        protocol: BenchmarkProtocol,
        max_samples: int | None = None,
        output_dir: Path | None = None,
    ) -> dict:
        samples = benchmark.samples()[:max_samples]
        rank, world = _rank_world()
        mine = samples[rank::world]
        metric = protocol.metric().to(self.device)
        preds_file = None
        if output_dir is not None:
            suffix = f".rank{rank}" if world > 1 else ""
            preds_file = (output_dir / f"{name}.predictions{suffix}.jsonl").open("w")
        for start in tqdm(range(0, len(mine), self.batch_size), desc=name, disable=rank != 0, unit="batch"):
            batch = mine[start : start + self.batch_size]
            preds = self.answer(batch, protocol)
            metric.update(preds, batch)
            if preds_file is not None:
                for s, p in zip(batch, preds):
                    preds_file.write(json.dumps({"id": s.id, "prediction": p}) + "\n")
        if preds_file is not None:
            preds_file.close()
        return {"n": len(samples), "metrics": {k: float(v) for k, v in metric.compute().items()}}


def protocol_record(name: str, entry: DictConfig, protocol: BenchmarkProtocol | None = None) -> dict:
    """What produced a number: the protocol's name and this benchmark's settings, as plain data (with
    ``protocol``, also the settings its class fills in, e.g. Pythia-VL's raw outputs)."""
    record = OmegaConf.to_container(entry, resolve=True)
    record.pop("_target_", None)
    if protocol is not None:
        for f in dataclasses.fields(protocol):
            if f.name not in record and f.name != "metric":
                record[f.name] = getattr(protocol, f.name)
    return {"protocol": name, **record}


def evaluate(cfg: DictConfig) -> dict:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, cfg.dtype) if device != "cpu" else torch.float32
    model, prompt_format, run_cfg = load_checkpoint(cfg.ckpt_path, cfg.get("model_overrides") or ())
    evaluator = Evaluator(model, prompt_format, cfg.batch_size, device, dtype)
    protocol_name = cfg.protocol.name
    report = {
        "checkpoint": str(cfg.ckpt_path),
        "experiment": run_cfg.get("experiment_name"),
        "protocol": protocol_name,
        "model_overrides": list(cfg.get("model_overrides") or []),
        "device": device,
        "benchmarks": {},
    }
    for name in cfg.run:
        if name not in cfg.protocol.benchmarks:
            raise ValueError(
                f"protocol '{protocol_name}' does not define benchmark '{name}' "
                f"(conf/protocol/{protocol_name}.yaml)"
            )
        if name not in cfg.benchmarks:
            raise ValueError(f"no reader for benchmark '{name}' in conf/benchmarks")
        entry = cfg.protocol.benchmarks[name]
        protocol = instantiate(entry, _convert_="all")
        benchmark = instantiate(cfg.benchmarks[name], _convert_="all")
        result = evaluator.run(name, benchmark, protocol, cfg.max_samples, output_dir)
        result["protocol"] = protocol_record(protocol_name, entry, protocol)
        report["benchmarks"][name] = result
    if _rank_world()[0] == 0:
        (output_dir / "results.json").write_text(json.dumps(report, indent=2))
        _print_table(report)
        if cfg.get("logger") and cfg.logger.get("wandb"):
            _wandb_table(report, cfg.logger.wandb, output_dir)
        print(f"results: {output_dir / 'results.json'}")
    return report


def _rows(report: dict) -> list[list]:
    return [
        [name, metric, value, report["protocol"], r["n"]]
        for name, r in report["benchmarks"].items()
        for metric, value in r["metrics"].items()
    ]


def _print_table(report: dict) -> None:
    from rich import print as rprint
    from rich.table import Table

    table = Table(title=f"{report['experiment']} — protocol {report['protocol']}")
    for col in ("benchmark", "metric", "value", "n"):
        table.add_column(col, justify="left" if col in ("benchmark", "metric") else "right")
    for name, metric, value, _, n in _rows(report):
        table.add_row(name, metric, f"{value:.4f}", str(n))
    rprint(table)


def _wandb_table(report: dict, wandb_cfg: DictConfig, output_dir: Path) -> None:
    import wandb

    run = wandb.init(
        project=wandb_cfg.get("project", "mmssm-lightning"),
        name=wandb_cfg.get("name"),
        dir=str(output_dir),
        mode="offline" if wandb_cfg.get("offline", True) else "online",
        job_type="eval",
        group=report["experiment"],
        config={"checkpoint": report["checkpoint"], "protocol": report["protocol"]},
    )
    run.log(
        {
            "eval/results": wandb.Table(
                columns=["benchmark", "metric", "value", "protocol", "n"], data=_rows(report)
            )
        }
    )
    run.summary.update({f"eval/{b}/{m}": v for b, m, v, _, _ in _rows(report)})
    run.finish()
    wandb.teardown()  # leave no wandb state behind for a later run in the same process


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (ValueError, FileNotFoundError, InstantiationException, OmegaConfBaseException) as e:
        if os.environ.get("MMSSM_DEBUG"):
            raise
        print(f"error: {e}\n(set MMSSM_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
