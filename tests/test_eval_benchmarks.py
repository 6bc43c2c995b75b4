"""Benchmark readers on files in the official formats (written here or by the synthetic
generator): samples come out right, and a bad file is an error naming the file and field."""

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from mmssm_lightning.data.synthetic_benchmarks import write_benchmarks
from mmssm_lightning.eval.benchmarks import (
    AI2D,
    GQA,
    MME,
    POPE,
    VSR,
    BenchmarkFormatError,
    COCOCaptions,
    COCOKarpathy,
    MMBench,
    RefCOCO,
    ScienceQAImg,
    TallyQA,
    TextCaps,
    TextVQA,
    VizWiz,
    VQAv2,
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"), n=6)


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_vqav2_pope_mmbench_mme_refcoco_captions_from_the_generator(synth):
    vqa = VQAv2(
        synth / "vqav2/questions.json", synth / "coco/val2014", synth / "vqav2/annotations.json"
    ).samples()
    assert len(vqa) == 12 and len(vqa[0].answers) == 10 and vqa[0].category == "number"
    assert vqa[0].image.name == "COCO_val2014_000000000000.jpg"
    test_dev = VQAv2(synth / "vqav2/questions.json", synth / "coco/val2014").samples()
    assert test_dev[0].answers == []  # no annotations: predictions only
    pope = POPE(
        {
            "random": synth / "pope/coco_pope_random.json",
            "adversarial": synth / "pope/coco_pope_adversarial.json",
        },
        synth / "coco/val2014",
    ).samples()
    assert (
        len(pope) == 12 and {s.category for s in pope} == {"random", "adversarial"} and pope[0].label == "yes"
    )
    mmb = MMBench(synth / "mmbench/dev.tsv").samples()  # 6 questions, each in 4 rotations: one sample a row
    assert len(mmb) == 24 and len({s.id for s in mmb}) == 24
    assert [s.index for s in mmb[:4]] == [0, 1_000_000, 2_000_000, 3_000_000]
    for s in mmb[:4]:  # the answer follows its option through the rotations
        assert s.choices[s.label] == mmb[0].choices[mmb[0].label]
    assert len({tuple(s.choices.values()) for s in mmb[:4]}) == 4
    assert sorted({s.index % 1_000_000 for s in mmb}) == list(range(6))
    assert mmb[0].load_image().size == (64, 64)
    mme = MME(synth / "MME", subtasks=["existence", "color"]).samples()
    assert len(mme) == 24 and mme[0].group == mme[1].group and mme[0].label == "yes"
    ref = RefCOCO(
        synth / "refcoco/refs(unc).p", synth / "refcoco/instances.json", synth / "coco/val2014"
    ).samples()
    assert len(ref) == 6 and all(0 <= v <= 1 for v in ref[0].box) and ref[0].question.startswith("the ")
    caps = COCOCaptions(synth / "captions/captions.json", synth / "coco/val2014").samples()
    assert len(caps) == 6 and len(caps[0].answers) == 2


def test_the_other_readers(tmp_path):
    img = _img(tmp_path / "images/1.jpg")
    gqa = GQA(
        _write(
            tmp_path / "gqa.json",
            {"q1": {"imageId": "1", "question": "what?", "answer": "cat", "types": {"structural": "query"}}},
        ),
        tmp_path / "images",
    ).samples()
    assert gqa[0].answers == ["cat"] and gqa[0].category == "query"
    viz = VizWiz(
        _write(
            tmp_path / "viz.json",
            [{"image": "1.jpg", "question": "q", "answers": [{"answer": "a"}] * 10, "answer_type": "other"}],
        ),
        tmp_path / "images",
    ).samples()
    assert viz[0].answers == ["a"] * 10
    tv = TextVQA(
        _write(
            tmp_path / "tv.json",
            {"data": [{"question_id": 5, "image_id": "1", "question": "q", "answers": ["x"] * 10}]},
        ),
        tmp_path / "images",
        ocr=_write(tmp_path / "ocr.json", {"data": [{"image_id": "1", "ocr_tokens": ["STOP", "5"]}]}),
    ).samples()
    assert tv[0].context == "STOP, 5"
    vsr = VSR(
        _write(
            tmp_path / "vsr.jsonl",
            '{"image": "1.jpg", "caption": "The cat is left of the dog.", "label": 1}\n',
        ),
        tmp_path / "images",
    ).samples()
    assert vsr[0].label == "true"
    tally = TallyQA(
        _write(
            tmp_path / "tally.json",
            [{"image": "1.jpg", "question": "how many?", "answer": 2, "issimple": False}],
        ),
        tmp_path / "images",
    ).samples()
    assert tally[0].label == "2" and tally[0].category == "complex"
    _img(tmp_path / "ai2d/images/1.png")
    _write(
        tmp_path / "ai2d/questions/1.png.json",
        {
            "imageName": "1.png",
            "questions": {
                "Which is a leaf?": {
                    "answerTexts": ["a", "b", "c"],
                    "correctAnswer": 2,
                    "questionId": "1.png-0",
                    "abcLabel": False,
                }
            },
        },
    )
    ai2d = AI2D(tmp_path / "ai2d", test_ids=_write(tmp_path / "ai2d/ids.csv", "1\n")).samples()
    assert ai2d[0].choices == {"A": "a", "B": "b", "C": "c"} and ai2d[0].label == "C"
    assert AI2D(tmp_path / "ai2d", test_ids=_write(tmp_path / "ai2d/none.csv", "7\n")).samples() == []
    _img(tmp_path / "sqa/test/9/image.png")
    sqa = ScienceQAImg(
        _write(
            tmp_path / "problems.json",
            {
                "9": {
                    "question": "q",
                    "choices": ["x", "y"],
                    "answer": 1,
                    "hint": "h",
                    "image": "image.png",
                    "split": "test",
                },
                "10": {
                    "question": "no image",
                    "choices": ["x", "y"],
                    "answer": 0,
                    "hint": "",
                    "image": None,
                    "split": "test",
                },
            },
        ),
        _write(tmp_path / "splits.json", {"test": ["9", "10"]}),
        tmp_path / "sqa",
    ).samples()
    assert len(sqa) == 1 and sqa[0].label == "B" and sqa[0].context == "h"
    _img(tmp_path / "coco/val2014/a.jpg")
    kar = COCOKarpathy(
        _write(
            tmp_path / "kar.json",
            {
                "images": [
                    {
                        "filepath": "val2014",
                        "filename": "a.jpg",
                        "split": "test",
                        "cocoid": 3,
                        "sentences": [{"raw": "A cat."}],
                    }
                ]
            },
        ),
        tmp_path / "coco",
    ).samples()
    assert kar[0].id == "3" and kar[0].answers == ["A cat."]
    tc = TextCaps(
        _write(tmp_path / "tc.json", {"data": [{"image_id": "1", "reference_strs": ["r1", "r2"]}] * 2}),
        tmp_path / "images",
    ).samples()
    assert len(tc) == 1 and tc[0].answers == ["r1", "r2"]
    assert img.exists()


def test_bad_files_name_what_is_wrong(tmp_path, synth):
    with pytest.raises(BenchmarkFormatError, match="VQAv2 questions: .*nope.json does not exist"):
        VQAv2(tmp_path / "nope.json", synth / "coco/val2014").samples()
    q = _write(
        tmp_path / "q.json", {"data_subtype": "val2014", "questions": [{"image_id": 0, "question_id": 1}]}
    )
    with pytest.raises(BenchmarkFormatError, match=r"q.json question 0: missing field 'question'"):
        VQAv2(q, synth / "coco/val2014").samples()
    q = _write(
        tmp_path / "q2.json",
        {"data_subtype": "val2014", "questions": [{"image_id": 999, "question_id": 1, "question": "x"}]},
    )
    with pytest.raises(BenchmarkFormatError, match="image .*COCO_val2014_000000000999.jpg does not exist"):
        VQAv2(q, synth / "coco/val2014").samples()
    with pytest.raises(BenchmarkFormatError, match="has no annotation"):
        VQAv2(
            synth / "vqav2/questions.json",
            synth / "coco/val2014",
            _write(tmp_path / "a.json", {"annotations": []}),
        ).samples()
    bad = _write(
        tmp_path / "pope.json",
        '{"question_id": 1, "image": "COCO_val2014_000000000000.jpg", "text": "q", "label": "maybe"}\n',
    )
    with pytest.raises(BenchmarkFormatError, match="pope.json line 1: label must be yes or no"):
        POPE({"random": bad}, synth / "coco/val2014").samples()
    with pytest.raises(BenchmarkFormatError, match="image folder .* does not exist"):
        GQA(_write(tmp_path / "g.json", {}), tmp_path / "missing").samples()
    with pytest.raises(BenchmarkFormatError, match="MME subtask OCR"):
        MME(synth / "MME", subtasks=["OCR"]).samples()
    with open(tmp_path / "refs.p", "wb") as f:
        pickle.dump([{"ref_id": 1, "ann_id": 5, "image_id": 42, "split": "testA", "sentences": []}], f)
    with pytest.raises(BenchmarkFormatError, match="ref 1: its image or annotation is not in"):
        RefCOCO(tmp_path / "refs.p", synth / "refcoco/instances.json", synth / "coco/val2014").samples()
    tsv = _write(tmp_path / "mmb.tsv", "index\tquestion\tA\tB\tanswer\timage\n0\tq\tx\ty\tC\tZm9v\n")
    with pytest.raises(BenchmarkFormatError, match="row 1: answer 'C' is not one of the options"):
        MMBench(tsv).samples()


def test_mmbench_rows_as_vlmevalkit_reads_them(tmp_path):
    """One sample per row; options whose cell pandas reads as missing are absent; a copy's image may
    be the index of the row holding it; an index twice is an error."""
    img = "iVBORw0KGgo" + "A" * 80
    head = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n"
    rows = [
        "7\tq?\tnan\t cat \tNone\tdog\t\tC\tscene\t" + img,
        "1000007\tq?\tA hint\tdog\t cat \tNone\t\tA\tscene\t7",
    ]
    got = MMBench(_write(tmp_path / "m.tsv", head + "\n".join(rows) + "\n")).samples()
    assert [s.id for s in got] == ["7", "1000007"] and [s.index for s in got] == [7, 1_000_007]
    assert got[0].choices == {"A": " cat ", "C": "dog"} and got[0].context is None
    assert got[1].choices == {"A": "dog", "B": " cat "} and got[1].context == "A hint"
    assert got[1].image_b64 == img
    dup = _write(tmp_path / "d.tsv", head + rows[0] + "\n" + rows[0] + "\n")
    with pytest.raises(BenchmarkFormatError, match="d.tsv row 2: index 7 appears twice"):
        MMBench(dup).samples()


def _py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2's cPickle (protocol 2) writes it: ``str`` values as byte strings."""
    import struct

    def enc(o) -> bytes:
        if o is None:
            return b"N"
        if isinstance(o, bool):
            return b"\x88" if o else b"\x89"
        if isinstance(o, int):
            return b"J" + struct.pack("<i", o)
        if isinstance(o, float):
            return b"G" + struct.pack(">d", o)
        if isinstance(o, str):
            raw = o.encode("latin-1")
            return b"U" + bytes([len(raw)]) + raw
        if isinstance(o, list):
            return b"](" + b"".join(enc(x) for x in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        raise TypeError(type(o))

    return b"\x80\x02" + enc(obj) + b"."


def test_refcoco_reads_the_refer_toolkits_python2_pickles(tmp_path):
    refs = [
        {"ref_id": 1, "ann_id": 5, "image_id": 42, "split": "testA", "category_id": 1,
         "sentences": [{"sent_id": 10, "sent": "man in caf\xe9 chair", "tokens": ["man"]},
                       {"sent_id": 11, "sent": "left guy"}]},
        {"ref_id": 2, "ann_id": 5, "image_id": 42, "split": "testB",
         "sentences": [{"sent_id": 12, "sent": "x"}]},
    ]  # fmt: skip
    data = _py2_pickle(refs)
    assert data[:2] == b"\x80\x02" and b"U\x11man in caf\xe9 chair" in data  # a byte string, latin-1
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # Python 3's default (ASCII) cannot read Python 2's byte strings
    (tmp_path / "refs(unc).p").write_bytes(data)
    _img(tmp_path / "images/COCO_train2014_000000000042.jpg")
    inst = _write(
        tmp_path / "instances.json",
        {
            "images": [
                {"id": 42, "width": 640, "height": 480, "file_name": "COCO_train2014_000000000042.jpg"}
            ],
            "annotations": [{"id": 5, "image_id": 42, "bbox": [64.0, 48.0, 320.0, 240.0]}],
        },
    )
    got = RefCOCO(tmp_path / "refs(unc).p", inst, tmp_path / "images", split="testA").samples()
    assert [s.question for s in got] == ["man in café chair", "left guy"] and [s.id for s in got] == [
        "1/10",
        "1/11",
    ]
    assert got[0].box == pytest.approx((0.1, 0.1, 0.6, 0.6)) and got[0].image_size == (640, 480)
