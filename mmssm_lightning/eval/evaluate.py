"""``mmssm-eval``: score a checkpoint on benchmarks under one paper's protocol.

    mmssm-eval ckpt_path=<run>/checkpoints/last.ckpt protocol=cobra "run=[vqav2,gqa,pope]"

The model is rebuilt from the run config stored in the checkpoint (towers and LLM at random, then
every weight from the checkpoint; the tokenizer as the run had it), prompts are the run's chat
template around the protocol's user message, and each benchmark is answered in batches: left-padded
greedy generation with per-sample stop at EOS, or first-token likelihood over candidate answers.
Writes ``<output_dir>/results.json`` (metrics + the protocol of every number, each benchmark's
speed and the estimated wall-clock of the protocol's whole suite), ``<benchmark>.predictions.jsonl``,
prints a table and, with ``logger=wandb``, logs a wandb table. Answers come from the inference
engine (``inference.*`` in conf/eval.yaml); images are read in DataLoader workers and prompts of
similar length batched together. Under ``torchrun`` each rank takes a shard of every benchmark and
the answers are gathered, so results.json and the predictions equal one process's.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
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
from mmssm_lightning.constants import CONF_DIR, IMAGE_MARKER, IMAGE_TOKEN_ID
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.transforms import ImageTransform
from mmssm_lightning.eval.benchmarks import Benchmark
from mmssm_lightning.eval.distributed import gather, init_from_env, rank_world
from mmssm_lightning.eval.pipeline import LeftPadCollate, PromptImages, batches, length_sorted, loader
from mmssm_lightning.eval.protocols import BenchmarkProtocol
from mmssm_lightning.eval.sample import EvalSample
from mmssm_lightning.inference import Engine
from mmssm_lightning.inference.speed import BatchTime, measured_seconds, suite_estimate, summarize
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
    """Answers benchmark samples with a model through the inference engine
    (:class:`~mmssm_lightning.inference.engine.Engine`); see the module docstring.

    Args:
        model / prompt_format: the model and the chat template it was trained with.
        batch_size: samples per forward.
        device / dtype: where and in what precision to run (under torchrun ``cuda`` is this rank's GPU).
        backend: the engine's path: ``auto`` (static-state Mamba with CUDA graphs, HF static KV cache
            for transformers) or ``hf`` (HF generate / a plain forward: the path before the engine).
        num_workers / prefetch_factor: DataLoader workers that read and transform the images.
        sort_by_length: batch prompts of similar length together (answers keep the benchmark's order).
        cuda_graph: replay towers and Mamba decode steps from CUDA graphs on a GPU.
    """

    def __init__(
        self,
        model: VisionLanguageModel,
        prompt_format: PromptFormat,
        batch_size: int = 16,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        backend: str = "auto",
        num_workers: int = 0,
        prefetch_factor: int = 2,
        sort_by_length: bool = True,
        cuda_graph: bool = True,
    ) -> None:
        device = init_from_env(device)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.batch_size = batch_size
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.sort_by_length = sort_by_length
        self.builder = SequenceBuilder(model.tokenizer, prompt_format)
        vision = model.vision
        self.transform = ImageTransform(vision.image_size, vision.resize) if vision is not None else None
        self.engine = Engine(self.model, backend=backend, batch_size=batch_size, cuda_graph=cuda_graph)
        tok = model.tokenizer
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _prompt_ids(self, sample: EvalSample, protocol: BenchmarkProtocol) -> torch.Tensor:
        has_image = self.transform is not None and (sample.image is not None or sample.image_b64 is not None)
        text = protocol.format(sample)
        turns = [{"from": "human", "value": f"{IMAGE_MARKER}\n{text}" if has_image else text}]
        return self.builder.encode_prompt(turns, has_image)

    def _to_device(self, batch: dict):
        pixels = batch["pixel_values"]
        if pixels is not None:
            pixels = pixels.to(self.device, self.dtype, non_blocking=True)
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), pixels

    def _inputs(self, samples: Sequence[EvalSample], protocol: BenchmarkProtocol):
        prompts = [self._prompt_ids(s, protocol) for s in samples]
        data = PromptImages(samples, prompts, self.transform)
        return self._to_device(LeftPadCollate(self.pad_token_id)([data[i] for i in range(len(samples))]))

    def _candidate_ids(self, candidates) -> dict[str, list[int]]:
        tok = self.model.tokenizer
        return {
            name: sorted({tok(s, add_special_tokens=False)["input_ids"][0] for s in spellings})
            for name, spellings in candidates.items()
        }

    def _respond(self, input_ids, mask, pixels, protocol: BenchmarkProtocol):
        """(answers, per-sample candidate log-probabilities or None, the batch's timing)."""
        if protocol.scoring == "generate":
            g = self.engine.generate_tokens(input_ids, mask, pixels, protocol.max_new_tokens)
            if protocol.raw_output:  # the harness cuts at ".<EOS>": each answer through its first EOS
                tok = self.model.tokenizer
                answers = [
                    tok.decode(row[:k], skip_special_tokens=False) for row, k in zip(g.tokens, g.lengths)
                ]
            else:
                answers = [t.strip() for t in g.texts]
            return (
                answers,
                None,
                BatchTime(len(answers), g.ttft_s, g.e2e_s, g.tokens.shape[1], sum(g.lengths)),
            )
        scored = self.engine.score(input_ids, mask, pixels)
        cand = self._candidate_ids(protocol.candidates)
        names = list(cand)
        # an answer's probability: the sum over its spellings' first tokens (logsumexp of log-probs)
        scores = torch.stack([torch.logsumexp(scored.logprobs[:, cand[n]], dim=-1) for n in names], dim=-1)
        answers = [names[i] for i in scores.argmax(-1).tolist()]
        per_sample = [dict(zip(names, row)) for row in scores.tolist()]
        return answers, per_sample, BatchTime(len(answers), scored.e2e_s, scored.e2e_s)

    @torch.no_grad()
    def answer(self, samples: Sequence[EvalSample], protocol: BenchmarkProtocol, return_scores: bool = False):
        """Answers for ``samples``; with ``return_scores`` also each sample's candidate -> log-probability
        (likelihood protocols; None for generation)."""
        answers, scores, _ = self._respond(*self._inputs(samples, protocol), protocol)
        return (answers, scores) if return_scores else answers

    @torch.no_grad()
    def run(
        self,
        name: str,
        benchmark: Benchmark,
        protocol: BenchmarkProtocol,
        max_samples: int | None = None,
        output_dir: Path | None = None,
    ) -> dict:
        samples = benchmark.samples()[:max_samples]
        rank, world = rank_world()
        prompts = [self._prompt_ids(s, protocol) for s in samples]
        order = list(range(len(samples)))
        if self.sort_by_length:
            with_image = [p.eq(IMAGE_TOKEN_ID).any().item() for p in prompts]
            order = length_sorted([len(p) for p in prompts], with_image)
        # ranks take every world-th sample of the sorted order: shards of equal size and lengths,
        # the same for every run of the same benchmark and world size
        data = loader(
            PromptImages(samples, prompts, self.transform),
            batches(order[rank::world], self.batch_size),
            self.pad_token_id,
            self.num_workers,
            self.prefetch_factor,
            pin_memory=self.device.type == "cuda",
        )
        answered, times = {}, []
        start = time.perf_counter()
        for batch in tqdm(data, desc=name, disable=rank != 0, unit="batch"):
            answers, scores, timing = self._respond(*self._to_device(batch), protocol)
            for j, i in enumerate(batch["index"]):
                answered[i] = (answers[j], scores[j] if scores is not None else None)
            times.append(timing)
        wall = time.perf_counter() - start
        if world > 1:
            answered = {k: v for part in gather(answered) for k, v in part.items()}
        preds = [answered[i][0] for i in range(len(samples))]
        # every rank scores all answers in the benchmark's order: the numbers equal one process's
        metric = protocol.metric()  # on the CPU: every rank scores all answers itself, no sync
        metric.distributed_available_fn = _single_process
        # metrics that score the candidates' probabilities (AUCs) declare update(..., scores=): the
        # probabilities renormalised over the candidates (Prismatic's return_string_probabilities)
        takes_scores = "scores" in inspect.signature(metric.update).parameters
        for at in range(0, len(samples), self.batch_size):
            chunk = range(at, min(at + self.batch_size, len(samples)))
            cand = [answered[i][1] for i in chunk]
            if takes_scores and cand and cand[0] is not None:
                logp = torch.tensor([list(c.values()) for c in cand], dtype=torch.float64)
                metric.update([preds[i] for i in chunk], samples[at : chunk.stop], scores=logp.softmax(-1))
            else:
                metric.update([preds[i] for i in chunk], samples[at : chunk.stop])
        if output_dir is not None and rank == 0:
            with (output_dir / f"{name}.predictions.jsonl").open("w") as f:
                for s, (pred, scores) in zip(samples, (answered[i] for i in range(len(samples)))):
                    line = {
                        "id": s.id,
                        "prediction": pred,
                        **({"scores": scores} if scores is not None else {}),
                    }
                    f.write(json.dumps(line) + "\n")
        speed = summarize(
            [t for part in gather(times) for t in part],
            max(gather(wall)),
            protocol.scoring,
            self.engine.name,
            self.batch_size,
            world,
        )
        return {
            "n": len(samples),
            "metrics": {k: float(v) for k, v in metric.compute().items()},
            "speed": speed,
        }


def _single_process() -> bool:
    """torchmetrics asks this before syncing states: every rank already holds all answers."""
    return False


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
    evaluator = Evaluator(model, prompt_format, cfg.batch_size, device, dtype, **(cfg.get("inference") or {}))
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
    protocol_entries = OmegaConf.to_container(cfg.protocol.benchmarks, resolve=True)
    report["suite_estimate"] = suite_estimate(
        protocol_entries,
        cfg.get("split_sizes") or {},
        measured_seconds(protocol_entries, report["benchmarks"]),
    )
    if rank0:
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
