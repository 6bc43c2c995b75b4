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
    # Task-aware (Pythia-VL §5.3.1): a one-line message is all instruction, read before the image.
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


def _around_image(ids: torch.Tensor) -> tuple[str, str]:
    """The text before and after the one image token."""
    at = ids.tolist().index(IMAGE_TOKEN_ID)
    return TOK.decode(ids[:at]), TOK.decode(ids[at + 1 :])


VQA_INSTRUCTION = "Answer the question using a single word or phrase"  # Table 6, VQA
PACKED_VQA = [  # Table 7's VQA example
    {"from": "human", "value": "<image>\nQuestion: Are all the items in the bowl fruits?\nAnswer:"},
    {"from": "gpt", "value": "Yes"},
    {"from": "human", "value": "Question: What is the light green item?\nAnswer:"},
    {"from": "gpt", "value": "Apple"},
]


def test_task_aware_encoding_moves_only_the_instruction():
    """Pythia-VL §5.3.1: "We investigate the impact of task-aware visual encoding by placing the task
    instruction before the image during the instruction-tuning stage"; App. A.2: "The full sequence
    given to the model has the following format: ##p11, ... pNN## <Task Instruction> <Prompt>
    <Response>". Task-aware: instruction, image, then the prompt (question) and response."""
    plain = {
        pos: SequenceBuilder(TOK, load_prompt("plain", image_position=pos))
        for pos in ("first", "after_instruction")
    }
    enc = plain["after_instruction"].encode(PACKED_VQA, True, instruction=VQA_INSTRUCTION)
    before, after = _around_image(enc.input_ids)
    assert before == VQA_INSTRUCTION
    assert after == (
        "\nQuestion: Are all the items in the bowl fruits?\nAnswer:\nYes<|endoftext|>"
        "\nQuestion: What is the light green item?\nAnswer:\nApple<|endoftext|>"
    )
    agnostic = plain["first"].encode(PACKED_VQA, True, instruction=VQA_INSTRUCTION)
    assert agnostic.input_ids[0] == IMAGE_TOKEN_ID
    assert TOK.decode(agnostic.input_ids[1:]) == before + after  # the same text, the image moved
    # Only the answers are supervised, wherever the image sits.
    for e in (enc, agnostic):
        assert TOK.decode(e.labels[e.labels != IGNORE_INDEX]) == "Yes<|endoftext|>Apple<|endoftext|>"


@pytest.mark.parametrize("position", ["first", "placeholder", "after_instruction"])
@pytest.mark.parametrize("template", ["plain", "zephyr"])
def test_instruction_field_equals_the_instruction_as_first_line(position, template):
    """A record's ``instruction`` is read exactly as a first line of its first message would be, so
    eval prompts in Table 6/7's "instruction, newline, prompt" form split where training records do."""
    b = SequenceBuilder(TOK, load_prompt(template, image_position=position))
    inline = [{**PACKED_VQA[0], "value": f"<image>\n{VQA_INSTRUCTION}\n" + PACKED_VQA[0]["value"][8:]}]
    inline += PACKED_VQA[1:]
    if position == "placeholder":  # the marker is where the image goes: before the instruction
        inline[0] = {**inline[0], "value": inline[0]["value"][8:] + "\n<image>"}
        fielded = [{**PACKED_VQA[0], "value": PACKED_VQA[0]["value"][8:] + "\n<image>"}, *PACKED_VQA[1:]]
    else:
        fielded = PACKED_VQA
    a = b.encode(inline, True)
    f = b.encode(fielded, True, instruction=VQA_INSTRUCTION)
    assert a.input_ids.tolist() == f.input_ids.tolist() and a.labels.tolist() == f.labels.tolist()
    assert torch.equal(b.encode_prompt(inline, True), b.encode_prompt(fielded, True, VQA_INSTRUCTION))


def test_task_aware_eval_prompts_split_after_the_instruction():
    """Pythia-VL Table 6 instructions, as the ``pythia_vl`` protocol writes them: the image lands
    after the instruction; a caption prompt (instruction only) puts it after the whole prompt."""
    b = SequenceBuilder(TOK, load_prompt("plain", image_position="after_instruction"))
    protocol = OmegaConf.load(f"{CONF_DIR}/protocol/pythia_vl.yaml").benchmarks
    suffix = b.prompt.user_suffix.format(eos=TOK.eos_token)
    for name, fill in (("vqav2", "What is the light green item?"), ("refcoco_testA", "Dog's eye is black")):
        text = protocol[name].prompt.format(question=fill)
        instruction, rest = text.split("\n", 1)
        before, after = _around_image(b.encode_prompt([{"from": "human", "value": text}], True))
        assert (before, after) == (instruction, f"\n{rest}{suffix}"), name
        assert fill in after  # the question stays after the image
    caption = protocol.coco_captions.prompt
    before, after = _around_image(b.encode_prompt([{"from": "human", "value": caption}], True))
    assert (before, after) == (caption.split("\n", 1)[0].rstrip(), caption[len(before) :] + suffix)


def test_demo_question_is_its_own_instruction():
    """The demo's shapes questions carry no separate instruction: the whole one-line question is
    read before the image (as before instruction and prompt were told apart)."""
    b = SequenceBuilder(TOK, load_prompt("zephyr", image_position="after_instruction"))
    before, after = _around_image(b.encode_prompt(CONV[:1], True))
    assert (before, after) == ("<|user|>\nWhat color is the circle?", "<|endoftext|>\n<|assistant|>\n")


def test_empty_instruction_sep_names_the_key():
    with pytest.raises(ValueError, match="prompt.instruction_sep"):
        PromptFormat(name="x", instruction_sep="")


@pytest.mark.parametrize("llm", ["mamba", "pythia"])
def test_task_aware_experiments_move_the_instruction_only_when_instruction_tuning(tmp_path, llm):
    """Pythia-VL §5.3.1: "placing the task instruction before the image during the instruction-tuning
    stage": the caption pre-training (align) keeps the image first."""
    from tests.conftest import compose_cfg

    exp = f"experiment=pythia_vs_mamba/{llm}_1.4b_task_aware"
    positions = {
        stage: compose_cfg(tmp_path, [exp, f"stage={stage}"], small_data=False).prompt.image_position
        for stage in ("align", "finetune")
    }
    assert positions == {"align": "first", "finetune": "after_instruction"}
