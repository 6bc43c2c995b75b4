import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmssm_lightning.constants import CONF_DIR, IGNORE_INDEX, IMAGE_TOKEN_ID
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.synthetic import corpus
from mmssm_lightning.models.tokenizer import synthetic_bpe_tokenizer

TOK = synthetic_bpe_tokenizer(1024, corpus=corpus())
CONV = [
    {"from": "human", "value": "<image>\nWhat color is the circle?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "How many shapes are there?"},
    {"from": "gpt", "value": "2"},
]


def load_prompt(name: str, **kw) -> PromptFormat:
    cfg = OmegaConf.load(f"{CONF_DIR}/prompt/{name}.yaml")
    return instantiate(cfg, **kw)


def decode(ids):
    return TOK.decode([i for i in ids.tolist() if i != IMAGE_TOKEN_ID], skip_special_tokens=False)


def test_zephyr_is_cobras_format_with_image_first():
    b = SequenceBuilder(TOK, load_prompt("zephyr"))
    enc = b.encode(CONV, has_image=True)
    assert enc.input_ids[0].item() == IMAGE_TOKEN_ID
    assert decode(enc.input_ids) == (
        "<|user|>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\nred<|endoftext|>"
        "\n<|user|>\nHow many shapes are there?<|endoftext|>\n<|assistant|>\n2<|endoftext|>"
    )


def test_only_answers_and_their_eos_are_supervised():
    b = SequenceBuilder(TOK, load_prompt("zephyr"))
    enc = b.encode(CONV, has_image=True)
    supervised = enc.labels[enc.labels != IGNORE_INDEX]
    assert TOK.decode(supervised) == "red<|endoftext|>2<|endoftext|>"
    kept = enc.labels != IGNORE_INDEX
    assert torch.equal(enc.labels[kept], enc.input_ids[kept])


@pytest.mark.parametrize("template", ["zephyr", "plain", "vicuna"])
@pytest.mark.parametrize("position", ["first", "placeholder", "after_instruction"])
@pytest.mark.parametrize("turns", [2, 4])
def test_generation_prompt_is_a_prefix_of_the_training_sequence(template, position, turns):
    b = SequenceBuilder(TOK, load_prompt(template, image_position=position))
    conv = CONV[:turns]
    train = b.encode(conv, has_image=True)
    prompt = b.encode_prompt(conv, has_image=True)
    assert torch.equal(train.input_ids[: len(prompt)], prompt)
    # The answer being generated starts right after the prompt, and is supervised there.
    assert train.labels[len(prompt)] != IGNORE_INDEX
    assert train.labels[len(prompt) - 1] == IGNORE_INDEX
    assert (prompt == IMAGE_TOKEN_ID).sum() == 1


def test_image_positions():
    conv = [{"from": "human", "value": "Is there a red circle?\n<image>"}, {"from": "gpt", "value": "yes"}]
    ids = {
        pos: SequenceBuilder(TOK, load_prompt("plain", image_position=pos)).encode_prompt(conv, True).tolist()
        for pos in ("first", "placeholder", "after_instruction")
    }
    text = TOK("Is there a red circle?", add_special_tokens=False)["input_ids"]
    assert ids["first"][0] == IMAGE_TOKEN_ID
    # Task-aware (Pythia-VL §5.3.1): the whole instruction is read before the image.
    assert ids["after_instruction"][: len(text)] == text
    assert ids["after_instruction"][len(text)] == IMAGE_TOKEN_ID
    # At the marker: here the marker ends the message (after its newline).
    assert ids["placeholder"].index(IMAGE_TOKEN_ID) > 0


def test_placeholder_without_marker_is_a_clear_error():
    b = SequenceBuilder(TOK, load_prompt("vicuna"))
    with pytest.raises(ValueError, match="placeholder"):
        b.encode([{"from": "human", "value": "no marker"}, {"from": "gpt", "value": "x"}], has_image=True)


def test_text_only_sample_has_no_image_marker():
    b = SequenceBuilder(TOK, load_prompt("zephyr"))
    enc = b.encode(CONV[2:], has_image=False)
    assert (enc.input_ids == IMAGE_TOKEN_ID).sum() == 0


def test_bad_image_position_names_the_key():
    with pytest.raises(ValueError, match="prompt.image_position"):
        PromptFormat(name="x", image_position="middle")
