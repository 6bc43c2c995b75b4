"""Prompt formats and the tokenisation of conversations into ids + labels.

Templates: ``zephyr`` (Cobra: ``<|user|>\\n{msg}<|endoftext|>\\n<|assistant|>\\n``, Cobra §4.1 /
mamba-2.8b-zephyr), ``plain`` (Pythia-VL / Mamba-VL: instruction, newline, answer), ``vicuna``
(LLaVA v1 style). Image positions: ``first`` (Cobra, LLaVA: image embeddings before all text),
``placeholder`` (at the ``<image>`` marker of the LLaVA json), ``after_instruction`` (the
"task-aware" encoding of Pythia-VL vs Mamba-VL §5.3.1: "placing the task instruction before the
image"; the prompt, e.g. the question, stays after it, App. A.2's "<Task Instruction> <Prompt>
<Response>" with the image moved between instruction and prompt).

The task instruction (Pythia-VL Table 6) is a record's ``instruction`` field when it has one (joined
to the first message by ``instruction_sep``); otherwise the first message's text up to the first
``instruction_sep`` (Table 6's instructions are one line, so "Answer the question using a single
word or phrase\nQuestion: ..." splits after the instruction). A one-line message is all instruction:
with ``after_instruction`` the whole message is then read before the image (the demo's questions,
which carry no separate instruction).

A conversation is cut into segments that are tokenised one by one and concatenated. Training
and generation share that code, so the prompt ids a model is trained on and the ids it is given at
generation time are identical by construction (BPE merges never straddle a segment boundary).
Only the answers (and the EOS closing them) are supervised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from mmssm_lightning.constants import IGNORE_INDEX, IMAGE_MARKER, IMAGE_TOKEN_ID

ImagePosition = Literal["first", "placeholder", "after_instruction"]
_MARKER_RE = re.compile(r"\n?<image>\n?")


@dataclass(frozen=True)
class Segment:
    text: str | None  # None marks the image
    supervised: bool = False


@dataclass
class PromptFormat:
    """A chat template plus where the image goes. ``{eos}`` is replaced by the tokenizer's EOS.

    Args:
        name: template name, recorded with results.
        system: text before the first turn.
        user_prefix / user_suffix: wrap each user message; the suffix carries the assistant cue
            and ends a generation prompt. ``{eos}`` may appear in any field.
        answer_suffix: appended to each answer and supervised with it (EOS teaches stopping).
        turn_sep: unsupervised text between a answer and the next user turn.
        add_bos: prepend the tokenizer's BOS (Llama/Vicuna); GPT-NeoX tokenizers have none.
        image_position: ``first`` | ``placeholder`` | ``after_instruction``.
        instruction_sep: joins a record's ``instruction`` to its first message, and ends the
            instruction inside a first message that has no separate one (see the module docstring).
    """

    name: str
    system: str = ""
    user_prefix: str = ""
    user_suffix: str = "\n"
    answer_suffix: str = "{eos}"
    turn_sep: str = ""
    add_bos: bool = False
    image_position: ImagePosition = "first"
    instruction_sep: str = "\n"

    def __post_init__(self) -> None:
        if self.image_position not in ("first", "placeholder", "after_instruction"):
            raise ValueError(
                "prompt.image_position must be first | placeholder | after_instruction, "
                f"got {self.image_position!r}"
            )
        if not self.instruction_sep:
            raise ValueError("prompt.instruction_sep must be a non-empty string (e.g. a newline)")

    def segments(
        self, turns: Sequence[dict], has_image: bool, eos: str, instruction: str | None = None
    ) -> list[Segment]:
        """Cut a conversation (LLaVA turns ``{"from", "value"}``, human first) into segments;
        ``instruction`` is the record's task instruction, read before its first message."""
        fill = lambda text: text.replace("{eos}", eos)  # noqa: E731
        prefix, suffix = fill(self.user_prefix), fill(self.user_suffix)
        segs: list[Segment] = []
        if has_image and self.image_position == "first":
            segs.append(Segment(None))
        if self.system:
            segs.append(Segment(fill(self.system)))
        for i in range(0, len(turns), 2):
            msg = turns[i]["value"]
            if i > 0:
                segs.append(Segment(fill(self.turn_sep)))
            if i == 0 and has_image:
                segs.extend(self._user_with_image(msg, prefix, suffix, instruction))
            else:
                text = _MARKER_RE.sub("", msg)
                if i == 0 and instruction is not None:
                    text = self._join(instruction, text)
                segs.append(Segment(prefix + text + suffix))
            if i + 1 < len(turns):
                segs.append(Segment(turns[i + 1]["value"] + fill(self.answer_suffix), supervised=True))
        return _merge(segs)

    def _join(self, instruction: str, msg: str) -> str:
        return instruction + self.instruction_sep + msg if msg else instruction

    def _user_with_image(self, msg: str, prefix: str, suffix: str, instruction: str | None) -> list[Segment]:
        if self.image_position == "placeholder":
            if IMAGE_MARKER not in msg:
                raise ValueError(
                    f"prompt.image_position=placeholder but the first message has no {IMAGE_MARKER}"
                )
            if instruction is not None:
                msg = self._join(instruction, msg)
            before, after = msg.split(IMAGE_MARKER, 1)
            return [
                Segment(prefix + before),
                Segment(None),
                Segment(after.replace(IMAGE_MARKER, "") + suffix),
            ]
        text = _MARKER_RE.sub("", msg)
        if self.image_position == "after_instruction":
            # The instruction, the image, then the prompt (Pythia-VL §5.3.1, App. A.2).
            if instruction is not None:
                head, rest = instruction, (self.instruction_sep + text if text else "")
            elif self.instruction_sep in text:
                head, tail = text.split(self.instruction_sep, 1)
                rest = self.instruction_sep + tail
            else:
                head, rest = text, ""
            return [Segment(prefix + head), Segment(None), Segment(rest + suffix)]
        if instruction is not None:
            text = self._join(instruction, text)
        return [Segment(prefix + text + suffix)]


def _merge(segs: list[Segment]) -> list[Segment]:
    """Join neighbouring unsupervised text so it is tokenised as one string; drop empty text."""
    out: list[Segment] = []
    for s in segs:
        if s.text == "":
            continue
        if (
            out
            and s.text is not None
            and not s.supervised
            and out[-1].text is not None
            and not out[-1].supervised
        ):
            out[-1] = Segment(out[-1].text + s.text)
        else:
            out.append(s)
    return out


@dataclass
class Encoded:
    input_ids: torch.Tensor  # (L,) with IMAGE_TOKEN_ID where the image goes
    labels: torch.Tensor  # (L,) IGNORE_INDEX outside answers


class SequenceBuilder:
    """Turns conversations into token ids and labels with a tokenizer and a :class:`PromptFormat`."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, max_length: int | None = None
    ):
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has no eos_token; prompt templates need one to end answers")
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_length = max_length

    def _tokenize(self, segs: list[Segment]) -> Encoded:
        ids: list[int] = []
        labels: list[int] = []
        if self.prompt.add_bos and self.tokenizer.bos_token_id is not None:
            ids.append(self.tokenizer.bos_token_id)
            labels.append(IGNORE_INDEX)
        for s in segs:
            if s.text is None:
                piece = [IMAGE_TOKEN_ID]
            else:
                piece = self.tokenizer(s.text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if s.supervised else [IGNORE_INDEX] * len(piece))
        if self.max_length is not None and len(ids) > self.max_length:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))

    def encode(self, turns: Sequence[dict], has_image: bool, instruction: str | None = None) -> Encoded:
        """Training sequence: every turn, answers supervised."""
        return self._tokenize(self.prompt.segments(turns, has_image, self.tokenizer.eos_token, instruction))

    def supervises(self, turns: Sequence[dict], has_image: bool, instruction: str | None = None) -> bool:
        """Whether at least one answer token survives ``max_length`` as a loss target.

        Only the first answer can matter, and only the tokens before it can push it out. Those are
        bounded without tokenising: a token covers at least one byte of its text, and a tokenizer
        adds at most one token per call (SentencePiece's dummy prefix) -- so most records of a real
        mix are settled by a byte count and only long first prompts are tokenised.
        """
        if self.max_length is None:
            return True
        segs = self.prompt.segments(turns[:2], has_image, self.tokenizer.eos_token, instruction)
        first = next((i for i, s in enumerate(segs) if s.supervised), None)
        if first is None:
            return False
        before = segs[:first]
        bound = int(self.prompt.add_bos) + sum(
            1 if s.text is None else len(s.text.encode()) + 1 for s in before
        )
        if before and bound < self.max_length:
            return True  # the first answer token sits at 1 <= position <= bound < max_length
        labels = self._tokenize(segs).labels
        return bool((labels[1:] != IGNORE_INDEX).any())  # position 0 is never a target

    def encode_prompt(
        self, turns: Sequence[dict], has_image: bool, instruction: str | None = None
    ) -> torch.Tensor:
        """Generation prompt: every turn up to the last user message, ending with the assistant cue."""
        if len(turns) % 2 == 0:
            turns = turns[:-1]
        segs = self.prompt.segments(turns, has_image, self.tokenizer.eos_token, instruction)
        return self._tokenize(segs).input_ids
