"""Evaluation protocols: how one paper asks and scores one benchmark (prompt, generated text or
first-token likelihood over candidate answers, answer parsing and normalisation), as config in
``conf/protocol/<name>.yaml``. Results record the protocol that produced them, since the same
checkpoint scores differently under, e.g., LLaVA's and Prismatic's VQA prompts or POPE by text vs
by likelihood."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from torchmetrics import Metric

from mmssm_lightning.eval.sample import EvalSample

Scoring = Literal["generate", "likelihood"]


@dataclass
class BenchmarkProtocol:
    """Args:
    prompt: the user message; ``{question}``, ``{options}``, ``{context}`` are filled from the sample.
    metric: ``() -> Metric`` (a Hydra ``_partial_``) building the benchmark's metric.
    scoring: ``generate`` (greedy text) or ``likelihood`` (the candidate whose first token is likeliest).
    candidates: for likelihood: answer -> spellings whose first tokens count for it (probabilities summed).
    max_new_tokens: generation length.
    option_format / option_sep: how ``{options}`` lists the choices.
    context_format: how a present ``context`` (hint, OCR tokens) enters ``{context}``; null: never shown.
    question_remove: text cut out of the question first (LLaVA's MME prompt drops the benchmark's own
        " Please answer yes or no.").
    raw_output: score the decoded output as is: special tokens kept up to the first EOS, no stripping
        (harnesses that cut the answer at ".<EOS>", e.g. Pythia-VL's).
    """

    prompt: str
    metric: Callable[[], Metric]
    scoring: Scoring = "generate"
    candidates: Mapping[str, list[str]] | None = None
    max_new_tokens: int = 16
    option_format: str = "{letter}. {text}"
    option_sep: str = "\n"
    context_format: str | None = "{context}\n"
    description: str = ""
    question_remove: str | None = None
    raw_output: bool = False

    def __post_init__(self) -> None:
        if self.scoring not in ("generate", "likelihood"):
            raise ValueError(f"protocol scoring must be generate | likelihood, got {self.scoring!r}")
        if self.scoring == "likelihood" and not self.candidates:
            raise ValueError("protocol scoring=likelihood needs candidates (answer -> spellings)")

    def format(self, sample: EvalSample) -> str:
        options = self.option_sep.join(
            self.option_format.format(letter=k, text=v) for k, v in (sample.choices or {}).items()
        )
        context = (
            self.context_format.format(context=sample.context)
            if self.context_format and sample.context
            else ""
        )
        return self.prompt.format(question=self.question(sample), options=options, context=context)

    def question(self, sample: EvalSample) -> str:
        q = sample.question
        return q.replace(self.question_remove, "") if self.question_remove else q
