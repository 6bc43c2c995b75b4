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
import inspect
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
from mmssm_lightning.checkpoints import read_checkpoint
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
    """A model of ours from a checkpoint: a run's ``model.ckpt``, a Lightning checkpoint file or an
    FSDP sharded checkpoint folder (consolidated in memory). ``model_overrides``
    ("key=value") change the stored run config before the model is built, for what holds no
    weights: e.g. ``projector.scan.name=forward`` (Q-Mamba Table 4) or the prompt."""
    p = Path(path)
    ckpt = read_checkpoint(p, "ckpt_path")
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
        return self.answer_with_scores(samples, protocol)[0]

    @torch.no_grad()
    def answer_with_scores(
        self, samples: Sequence[EvalSample], protocol: BenchmarkProtocol
    ) -> tuple[list[str], torch.Tensor | None]:
        """The answers and, for likelihood scoring, the candidates' first-token probabilities
        renormalised over the candidates ([batch, candidates] in the protocol's order, rows summing
        to 1: Prismatic's ``return_string_probabilities``); None for generation."""
        input_ids, mask, pixels = self._inputs(samples, protocol)
        if protocol.scoring == "generate":
            texts = self.model.generate(
                input_ids, mask, pixels, protocol.max_new_tokens, keep_special_tokens=protocol.raw_output
            )
            return (texts if protocol.raw_output else [t.strip() for t in texts]), None
        logp = self.model.next_token_logprobs(input_ids, mask, pixels)
        cand = self._candidate_ids(protocol.candidates)
        names = list(cand)
        scores = torch.stack([torch.logsumexp(logp[:, cand[n]], dim=-1) for n in names], dim=-1)
        return [names[i] for i in scores.argmax(-1).tolist()], scores.double().softmax(-1)

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
        # metrics that score the candidates' probabilities (AUCs) declare an update(..., scores) argument
        takes_scores = "scores" in inspect.signature(metric.update).parameters
        preds_file = None
        if output_dir is not None:
            suffix = f".rank{rank}" if world > 1 else ""
            preds_file = (output_dir / f"{name}.predictions{suffix}.jsonl").open("w")
        for start in tqdm(range(0, len(mine), self.batch_size), desc=name, disable=rank != 0, unit="batch"):
            batch = mine[start : start + self.batch_size]
            preds, scores = self.answer_with_scores(batch, protocol)
            if scores is not None and takes_scores:
                metric.update(preds, batch, scores=scores)
            else:
                metric.update(preds, batch)
            if preds_file is not None:
                for i, (s, p) in enumerate(zip(batch, preds)):
                    record = {"id": s.id, "prediction": p}
                    if scores is not None:
                        record["scores"] = scores[i].tolist()
                    preds_file.write(json.dumps(record) + "\n")
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


def check_benchmarks(names: Sequence[str], protocol_cfg: DictConfig, benchmarks_cfg: DictConfig) -> None:
    """Every requested benchmark is known to the protocol and has a reader (before any forward)."""
    for name in names:
        if name not in protocol_cfg.benchmarks:
            raise ValueError(
                f"protocol '{protocol_cfg.name}' does not define benchmark '{name}' "
                f"(conf/protocol/{protocol_cfg.name}.yaml)"
            )
        if name not in benchmarks_cfg:
            raise ValueError(f"no reader for benchmark '{name}' in conf/benchmarks")


def _paths(node: object) -> list[str]:
    """The file and folder paths of a reader's config (every string value but ``_target_``)."""
    if isinstance(node, dict):
        return [p for k, v in node.items() if k != "_target_" for p in _paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in _paths(v)]
    return [node] if isinstance(node, str) and ("/" in node or "\\" in node) else []


def missing_files(name: str, protocol_cfg: DictConfig, benchmarks_cfg: DictConfig) -> list[str]:
    """The files of benchmark ``name`` that are not there (empty: it can be scored)."""
    check_benchmarks([name], protocol_cfg, benchmarks_cfg)
    node = OmegaConf.to_container(benchmarks_cfg[name], resolve=True)
    return [p for p in _paths(node) if not Path(p).exists()]


def run_benchmarks(
    evaluator: Evaluator,
    names: Sequence[str],
    protocol_cfg: DictConfig,
    benchmarks_cfg: DictConfig,
    max_samples: int | None,
    output_dir: Path,
    header: dict,
    write: bool = True,
) -> dict:
    """Score ``names`` in order; ``results.json`` is rewritten after each benchmark, so the scores
    of finished benchmarks survive a later failure."""
    report = {**header, "benchmarks": {}}
    for name in names:
        entry = protocol_cfg.benchmarks[name]
        protocol = instantiate(entry, _convert_="all")
        benchmark = instantiate(benchmarks_cfg[name], _convert_="all")
        result = evaluator.run(name, benchmark, protocol, max_samples, output_dir)
        result["protocol"] = protocol_record(protocol_cfg.name, entry, protocol)
        report["benchmarks"][name] = result
        if write:
            (output_dir / "results.json").write_text(json.dumps(report, indent=2))
    return report


def evaluate(cfg: DictConfig) -> dict:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list(cfg.run)
    if not Path(cfg.ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path: {cfg.ckpt_path} does not exist")
    missing = {n: m for n in names if (m := missing_files(n, cfg.protocol, cfg.benchmarks))}
    if missing:
        shown = "; ".join(
            f"{n}: {', '.join(m[:2])}{' ...' if len(m) > 2 else ''}" for n, m in missing.items()
        )
        raise FileNotFoundError(f"benchmark files missing (nothing was scored): {shown}")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, cfg.dtype) if device != "cpu" else torch.float32
    model, prompt_format, run_cfg = load_checkpoint(cfg.ckpt_path, cfg.get("model_overrides") or ())
    evaluator = Evaluator(model, prompt_format, cfg.batch_size, device, dtype)
    header = {
        "checkpoint": str(cfg.ckpt_path),
        "experiment": run_cfg.get("experiment_name"),
        "global_step": run_cfg.get("global_step"),
        "protocol": cfg.protocol.name,
        "model_overrides": list(cfg.get("model_overrides") or []),
        "device": device,
    }
    rank0 = _rank_world()[0] == 0
    report = run_benchmarks(
        evaluator, names, cfg.protocol, cfg.benchmarks, cfg.max_samples, output_dir, header, write=rank0
    )
    if rank0:
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
