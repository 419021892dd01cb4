import json

import datasets
import pytest
from readers_fixtures import rows_of, write_corrupt_image, write_image

from processing.readers import MalformedRowWarning, RowIssues, load_slake, load_vqa_rad


def vqa_rad_entry(qid, image, question, answer, answer_type="CLOSED", phrase_type="freeform"):
    return {
        "qid": qid, "image_name": image, "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
        "image_organ": "CHEST", "answer": answer, "question_type": "PRES", "question": question,
        "phrase_type": phrase_type, "answer_type": answer_type, "evaluation": "not evaluated",
        "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL", "qid_linked_id": "x",
    }  # fmt: skip


@pytest.fixture
def vqa_rad_root(tmp_path):
    root = tmp_path / "vqa-rad"
    images = root / "VQA_RAD Image Folder"
    write_image(images / "synpic54610.jpg", 10)
    write_image(images / "synpic29265.jpg", 90)
    write_corrupt_image(images / "synpic100176.jpg")
    entries = [
        vqa_rad_entry(0, "synpic54610.jpg", "Is there a pleural effusion?", "Yes"),
        vqa_rad_entry(1, "synpic29265.jpg", "Which side is the effusion on?", "left", "OPEN", "test_freeform"),
        vqa_rad_entry(2, "synpic29265.jpg", "How many ribs are fractured?", 2, "open", "para"),
        vqa_rad_entry(3, "synpic00000.jpg", "Is the heart enlarged?", "No"),  # missing image
        vqa_rad_entry(4, "synpic54610.jpg", "Is this normal?", ""),  # empty answer
        vqa_rad_entry(5, "synpic54610.jpg", "Is the aorta dilated?", "No", "MAYBE"),  # bad answer_type
        vqa_rad_entry(6, "synpic100176.jpg", "Is there a mass?", "No", "CLOSED", "test_para"),  # corrupt image
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries))
    return root


def test_vqa_rad_rows_splits_and_counted_skips(vqa_rad_root):
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning) as caught:
        ds = load_vqa_rad(vqa_rad_root, issues=issues)
    assert ds["qid"] == ["0", "1", "2"]
    assert ds["answer"] == ["Yes", "left", "2"]
    assert ds["answer_type"] == ["CLOSED", "OPEN", "OPEN"]
    assert ds["split"] == ["train", "test", "train"]
    assert ds[0]["question_type"] == "PRES" and ds[0]["image_organ"] == "CHEST"
    assert ds[1]["image"].size == (12, 10)
    assert dict(issues.counts) == {
        "missing image": 1,
        "empty question or answer": 1,
        "answer_type outside {CLOSED, OPEN}": 1,
        "unreadable image": 1,
    }
    assert "entry 5 (qid=5)" in " ".join(str(w.message) for w in caught)
    with pytest.warns(MalformedRowWarning):
        assert load_vqa_rad(vqa_rad_root, split="test")["qid"] == ["1"]
    with pytest.raises(ValueError, match=r"entry 3 \(qid=3\).*missing image"):
        load_vqa_rad(vqa_rad_root, strict=True)


def test_vqa_rad_streaming_gives_the_same_rows(vqa_rad_root):
    with pytest.warns(MalformedRowWarning):
        mapped = load_vqa_rad(vqa_rad_root)
    with pytest.warns(MalformedRowWarning):
        streamed = load_vqa_rad(vqa_rad_root, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    with pytest.warns(MalformedRowWarning, match="synpic100176"):
        assert rows_of(streamed) == rows_of(mapped)


def slake_entry(qid, image, question, answer, language="en", answer_type="CLOSED"):
    return {
        "img_id": int(image.split("/")[0][5:]), "img_name": image, "question": question, "answer": answer,
        "q_lang": language, "location": "Chest", "modality": "X-Ray", "answer_type": answer_type,
        "base_type": "vqa", "content_type": "Position", "triple": ["vhead", "_", "_"], "qid": qid,
    }  # fmt: skip


def test_slake_language_filter_splits_and_skips(tmp_path):
    root = tmp_path / "Slake1.0"
    write_image(root / "imgs/xmlab102/source.jpg", 30)
    write_image(root / "imgs/xmlab7/source.jpg", 200)
    train = [
        slake_entry(0, "xmlab102/source.jpg", "Where is the abnormality?", "Right Lung", answer_type="OPEN"),
        slake_entry(1, "xmlab102/source.jpg", "异常在哪里？", "右肺", language="zh", answer_type="OPEN"),
        slake_entry(2, "xmlab7/source.jpg", "Is the lung healthy?", "No"),
        slake_entry(3, "xmlab9/source.jpg", "Is there effusion?", "Yes"),  # missing image
        slake_entry(4, "xmlab9/source.jpg", "异常？", "是", language="zh"),  # missing image, filtered as zh
    ]
    (root / "train.json").write_text(json.dumps(train, ensure_ascii=False))
    (root / "test.json").write_text(json.dumps([slake_entry(9, "xmlab7/source.jpg", "Is this a CT?", "No")]))
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match=r"train.json entry 3 \(qid=3\)"):
        english = load_slake(root, issues=issues)
    assert english["qid"] == ["0", "2"] and english["language"] == ["en", "en"]
    assert english["answer_type"] == ["OPEN", "CLOSED"] and english["question_type"] == ["Position", "Position"]
    assert english[0]["modality"] == "X-Ray" and english[0]["image_id"] == "102" and english[0]["split"] == "train"
    assert dict(issues.counts) == {"missing image": 1}
    with pytest.warns(MalformedRowWarning):
        chinese = load_slake(root, language="zh")
    assert chinese["answer"] == ["右肺"]
    with pytest.warns(MalformedRowWarning):
        assert len(load_slake(root, language=None)) == 3
    assert load_slake(root, split="test")["split"] == ["test"]
    with pytest.raises(FileNotFoundError, match="validate.json"):
        load_slake(root, split="validate")
