"""Bad data stops the run before training with one line naming the file (and record, line, byte
or config key) at fault; runs that would train nothing fail instead of exiting 0."""

import json
import os

import pytest
from PIL import Image

from mmssm_lightning.constants import IGNORE_INDEX
from mmssm_lightning.data.datamodule import VLMDataModule
from mmssm_lightning.data.errors import (
    DataValidationError,
    ImageCheckError,
    NothingSupervisedError,
    NoTrainingBatchesError,
)
from mmssm_lightning.data.image_check import check_images
from mmssm_lightning.data.llava import load_records
from mmssm_lightning.data.prompting import PromptFormat, SequenceBuilder
from mmssm_lightning.data.synthetic import corpus
from mmssm_lightning.data.transforms import ImageTransform
from mmssm_lightning.models.tokenizer import synthetic_bpe_tokenizer
from mmssm_lightning.train import run
from tests.conftest import compose_cfg

TOK = synthetic_bpe_tokenizer(1024, corpus=corpus())
ZEPHYR = PromptFormat("zephyr", user_prefix="<|user|>\n", user_suffix="{eos}\n<|assistant|>\n")


def _record(i, question="What color is the circle?", image="img.png"):
    rec = {"id": i, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "red"}]}
    return {**rec, "image": image} if image else rec


def _write(tmp_path, records, name="train.json"):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "img.png")
    (tmp_path / name).write_text(json.dumps(records))
    return tmp_path / name


def _dm(tmp_path, train="train.json", **kw):
    return VLMDataModule(
        str(tmp_path), train, None, TOK, ZEPHYR, ImageTransform(16), per_device_batch_size=4, **kw
    )


def test_non_utf8_json_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"id": "caf' + "é".encode("latin-1") + b'"}]')
    with pytest.raises(DataValidationError, match=r"latin1.json is not UTF-8 text: byte 0xe9 at offset 12 "):
        load_records(path, tmp_path)
    # a UTF-8 byte-order mark is fine, and counts in the offset
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([_record(0, image=None)]).encode())
    assert len(load_records(path, tmp_path)) == 1
    path.write_bytes(b"\xef\xbb\xbf[\xff]")
    with pytest.raises(DataValidationError, match="byte 0xff at offset 4 "):
        load_records(path, tmp_path)


def test_bad_jsonl_line_is_named_by_its_line_number(tmp_path):
    good = json.dumps(_record(0, image=None))
    path = tmp_path / "d.jsonl"
    path.write_text(f"{good}\n\n{good}\n{{'id': 3}}\n{good}\n")
    with pytest.raises(DataValidationError, match=r"d.jsonl line 4 is not valid JSON: .* \(column 2\)$"):
        load_records(path, tmp_path)


def test_missing_key_names_file_and_record(tmp_path):
    path = _write(tmp_path, [_record(0), {"id": 1, "image": "img.png"}])
    with pytest.raises(
        DataValidationError, match="train.json record 1: 'conversations' must be a non-empty list"
    ):
        load_records(path, tmp_path)


def test_empty_train_list_is_a_config_error(tmp_path):
    _write(tmp_path, [_record(0)])
    with pytest.raises(ValueError, match=r"^data.train is an empty list: name at least one file$"):
        _dm(tmp_path, train=[]).setup("fit")


@pytest.mark.parametrize("n", [0, 3])
def test_fewer_records_than_a_batch_is_no_training_batches(tmp_path, n):
    _write(tmp_path, [_record(i) for i in range(n)])
    dm = _dm(tmp_path)
    dm.setup("fit")
    with pytest.raises(NoTrainingBatchesError, match=rf"^No training batches: .*train.json\) has {n} record"):
        dm.train_dataloader()
    _write(tmp_path, [_record(i) for i in range(4)])
    assert len(_dm(tmp_path).train_dataloader()) == 1


def _bad_images(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(tmp_path / "ok.jpg", quality=90)
    jpg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")


@pytest.mark.parametrize("bad", ["truncated.png", "truncated.jpg", "garbage.png", "missing.png"])
def test_corrupt_truncated_or_missing_image_is_found_before_training(tmp_path, bad):
    _bad_images(tmp_path)
    records = [_record(i, image=img) for i, img in enumerate(["ok.png", "ok.jpg", "ok.png", bad, bad])]
    path = _write(tmp_path, records)
    # Image.open alone accepts the truncated files: only decoding finds them
    if bad.startswith("truncated"):
        Image.open(tmp_path / bad).close()
    with pytest.raises(ImageCheckError, match=rf"^{path} record 3: image file {tmp_path / bad} "):
        load_records(path, tmp_path)
    assert len(load_records(path, tmp_path, check_images=False)) == 5


def test_image_check_caches_what_passed_by_path_size_and_mtime(tmp_path):
    _bad_images(tmp_path)
    cache = tmp_path / "cache"
    uses = [("ok.png", "a record 0"), ("ok.jpg", "a record 1"), ("ok.png", "a record 2")]
    assert check_images(uses, tmp_path, cache) == 2  # decoded
    assert check_images(uses, tmp_path, cache) == 0  # all from the cache
    os.utime(tmp_path / "ok.jpg", ns=(1, 1))
    assert check_images(uses, tmp_path, cache) == 1  # its mtime changed
    (tmp_path / "ok.png").write_bytes((tmp_path / "truncated.png").read_bytes())  # replaced by a bad file
    with pytest.raises(ImageCheckError, match=r"^a record 0: image file .*ok.png cannot be decoded"):
        check_images(uses, tmp_path, cache)
    with pytest.raises(ImageCheckError, match="; 1 more bad image"):
        check_images([*uses, ("garbage.png", "a record 3")], tmp_path, None)


def _exact_supervises(builder, turns, has_image):
    labels = builder._tokenize(builder.prompt.segments(turns[:2], has_image, TOK.eos_token)).labels
    return bool((labels[1:] != IGNORE_INDEX).any())


@pytest.mark.parametrize("position", ["first", "after_instruction"])
def test_supervises_agrees_with_the_truncated_labels_at_every_max_length(position):
    prompt = PromptFormat("zephyr", "", "<|user|>\n", "{eos}\n<|assistant|>\n", image_position=position)
    turns = _record(0, question="<image>\nIs the red circle left or right of the blue square?")[
        "conversations"
    ]
    full = SequenceBuilder(TOK, prompt).encode(turns, True)
    first_target = int((full.labels != IGNORE_INDEX).nonzero()[0])
    answers = [SequenceBuilder(TOK, prompt, m).supervises(turns, True) for m in range(1, 40)]
    assert answers == [_exact_supervises(SequenceBuilder(TOK, prompt, m), turns, True) for m in range(1, 40)]
    assert answers == [m > first_target for m in range(1, 40)]


def test_max_length_that_cuts_every_answer_is_an_error_and_some_a_warning(tmp_path, capsys):
    long_q = "How many shapes are there? " * 8
    _write(tmp_path, [_record(0, long_q), _record(1), _record(2, long_q), _record(3), _record(4)])
    dm = _dm(tmp_path, max_length=20)
    dm.setup("fit")
    assert [r["id"] for r in dm.dataset("train").records] == [1, 3, 4]
    assert capsys.readouterr().err.strip() == (
        f"warning: data.max_length=20 truncates every answer of 2 of 5 records of {tmp_path / 'train.json'}; "
        "they are left out of training"
    )
    with pytest.raises(
        NothingSupervisedError, match=r"^data.max_length=5 truncates every answer of .*train.json"
    ):
        _dm(tmp_path, max_length=5).setup("fit")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, error",
    [
        (["data.per_device_batch_size=128", "data.global_batch_size=128"], NoTrainingBatchesError),
        (["data.max_length=4"], NothingSupervisedError),
    ],
)
def test_a_run_that_would_train_nothing_fails(tmp_path, overrides, error):
    cfg = compose_cfg(
        tmp_path, ["trainer.max_steps=2", "evaluate=false", "callbacks.checkpoint=null", *overrides]
    )
    with pytest.raises(error):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
