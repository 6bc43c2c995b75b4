import hashlib
import json

import pytest
import torch
from PIL import Image

from mmssm_lightning.constants import IGNORE_INDEX
from mmssm_lightning.data.collate import Collator
from mmssm_lightning.data.datamodule import accumulation_steps
from mmssm_lightning.data.llava import DataValidationError, load_records
from mmssm_lightning.data.synthetic import COLORS, SyntheticShapesSpec, generate
from mmssm_lightning.data.transforms import ImageTransform

SPEC = SyntheticShapesSpec(splits={"train": 40, "val": 10}, image_size=64, seed=3)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_synthetic_is_deterministic(tmp_path):
    a, b = generate(tmp_path / "a", SPEC), generate(tmp_path / "b", SPEC)
    assert _digest(a) == _digest(b)
    other = generate(tmp_path / "c", SyntheticShapesSpec(splits={"train": 40, "val": 10}, seed=4))
    assert _digest(a) != _digest(other)


def test_synthetic_answers_match_the_pixels(tmp_path):
    root = generate(tmp_path, SyntheticShapesSpec(splits={"train": 100}, seed=0))
    records = json.loads((root / "train.json").read_text())
    assert {r["task"] for r in records} == {"color", "count", "position", "exists", "box"}
    for r in records:
        assert r["conversations"][0]["value"].startswith("<image>\n")
        img = Image.open(root / r["image"]).convert("RGB")
        assert img.size == (64, 64)
        if r["task"] == "box":
            x0, y0, x1, y1 = (v * 64 for v in r["box"])
            centre = img.getpixel((int((x0 + x1) / 2), int(y0 + (y1 - y0) * 0.75)))
            name = r["conversations"][0]["value"].split("Where is the ")[1].split()[0]
            assert centre == COLORS[name]  # the box holds a pixel of the asked colour
        if r["task"] == "color":
            assert r["conversations"][1]["value"] in COLORS
            colours = {img.getpixel((x, y)) for x in range(64) for y in range(64)}
            assert COLORS[r["conversations"][1]["value"]] in colours


def test_exists_and_position_are_balanced(tmp_path):
    root = generate(tmp_path, SyntheticShapesSpec(splits={"train": 1000}, seed=0))
    records = json.loads((root / "train.json").read_text())
    for task, answers in (("exists", {"yes", "no"}), ("position", {"left", "right"})):
        got = [r["conversations"][1]["value"] for r in records if r["task"] == task]
        assert set(got) == answers
        assert 0.4 < got.count(sorted(answers)[0]) / len(got) < 0.6


def _write(tmp_path, records, name="bad.json"):
    (tmp_path / "img.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "img.png")
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


GOOD = {
    "id": 0,
    "image": "img.png",
    "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": 1}, "record 1: 'conversations' must be a non-empty list"),
        (
            {"id": 1, "conversations": [{"from": "gpt", "value": "a"}]},
            "record 1: conversations\\[0\\].from is 'gpt'",
        ),
        (
            {"id": 1, "conversations": [{"from": "human"}]},
            "record 1: conversations\\[0\\] needs a string 'value'",
        ),
        ({**GOOD, "image": "missing.png"}, "record 1: image file .*missing.png does not exist"),
        ({**GOOD, "instruction": ""}, "record 1: 'instruction' must be a non-empty string"),
        ({**GOOD, "source": 3}, "record 1: 'source' must be a non-empty string"),
    ],
)
def test_bad_record_names_file_and_index(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DataValidationError, match=f"bad.json {message}"):
        load_records(path, tmp_path)


def test_jsonl_and_missing_files(tmp_path):
    path = tmp_path / "d.jsonl"
    _write(tmp_path, [])
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    assert len(load_records(path, tmp_path)) == 2
    with pytest.raises(DataValidationError, match="nope.json does not exist"):
        load_records(tmp_path / "nope.json", tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataValidationError, match="broken.json is not valid JSON"):
        load_records(tmp_path / "broken.json", tmp_path)


def test_collator_pads_train_right_and_prompts_left():
    items = [
        {
            "input_ids": torch.tensor([5, 6, 7]),
            "labels": torch.tensor([-100, 6, 7]),
            "prompt_ids": torch.tensor([5]),
            "pixel_values": torch.ones(3, 2, 2),
            "answer": "a",
            "task": "t",
            "index": 0,
        },
        {
            "input_ids": torch.tensor([8]),
            "labels": torch.tensor([8]),
            "prompt_ids": torch.tensor([8, 9]),
            "pixel_values": None,
            "answer": "b",
            "task": "t",
            "index": 1,
        },
    ]
    b = Collator(pad_token_id=1)(items)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert b["prompt_ids"].tolist() == [[1, 5], [8, 9]] and b["prompt_mask"].tolist() == [[0, 1], [1, 1]]
    assert b["pixel_values"].shape == (2, 3, 2, 2) and b["pixel_values"][1].abs().sum() == 0


def test_transforms():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    naive = ImageTransform(16, "naive")(img)
    box = ImageTransform(16, "letterbox")(img)
    assert naive.shape == box.shape == (3, 16, 16)
    assert torch.allclose(naive[0], torch.ones(16, 16))
    assert box[0, 0, 8] == pytest.approx(127 / 255, abs=0.02)  # padded band above the image
    assert box[0, 8, 8] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="encoder.resize"):
        ImageTransform(16, "crop")


def test_global_batch_arithmetic():
    assert accumulation_steps(128, 16, 4) == 2
    assert accumulation_steps(128, 16, 8) == 1
    with pytest.raises(ValueError, match="data.global_batch_size=128 is not a multiple"):
        accumulation_steps(128, 24, 2)
