"""Medical VQA sets: VQA-RAD and SLAKE, question-answer pairs about images.

VQA-RAD under `root`:
    VQA_RAD Dataset Public.json   [{qid, image_name, image_organ, question, answer, answer_type
                                    (CLOSED/OPEN), question_type, phrase_type, ...}]
    VQA_RAD Image Folder/synpic54610.jpg
  It ships no split file: the test questions are those whose phrase_type starts with "test"
  ("test_freeform", "test_para"), the others train.
SLAKE (Slake1.0) under `root`:
    train.json, validate.json, test.json   [{qid, img_id, img_name ("xmlab0/source.jpg"), question,
                                             answer, q_lang (en/zh), answer_type, content_type,
                                             modality, location, ...}]
    imgs/xmlab0/source.jpg
"""

import json
import os
from pathlib import Path

import datasets

from .dataset_building import build_dataset
from .row_issues import RowIssues

ANSWER_TYPES = ("CLOSED", "OPEN")
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
SLAKE_SPLIT_FILES = {
    "train": "train.json",
    "validate": "validate.json",
    "validation": "validate.json",
    "test": "test.json",
}

_QA_COLUMNS = {
    "image": datasets.Image(),
    "question": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "answer_type": datasets.Value("string"),
    "question_type": datasets.Value("string"),
    "qid": datasets.Value("string"),
    "split": datasets.Value("string"),
}
VQA_RAD_FEATURES = datasets.Features(
    {**_QA_COLUMNS, "image_organ": datasets.Value("string"), "phrase_type": datasets.Value("string")}
)
SLAKE_FEATURES = datasets.Features(
    {
        **_QA_COLUMNS,
        "language": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "location": datasets.Value("string"),
        "image_id": datasets.Value("string"),
    }
)


def _cell(entry: dict, key: str) -> str:
    value = entry.get(key)
    return "" if value is None else str(value).strip()


def _load_entries(json_path: Path) -> list:
    entries = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a JSON list of questions, got {type(entries).__name__}")
    return entries


def _qa_row(entry, where, image_path, split, issues):
    """The shared columns of one question, or None (skipped and counted) if it is malformed."""
    if not isinstance(entry, dict):
        issues.skip(where, "malformed entry", f"expected an object, got {type(entry).__name__}")
        return None
    if not os.path.isfile(image_path):
        issues.skip(where, "missing image", str(image_path))
        return None
    question, answer = _cell(entry, "question"), _cell(entry, "answer")
    if not question or not answer:
        issues.skip(where, "empty question or answer", f"question={question!r}, answer={answer!r}")
        return None
    answer_type = _cell(entry, "answer_type").upper()
    if answer_type not in ANSWER_TYPES:
        issues.skip(where, "answer_type outside {CLOSED, OPEN}", repr(entry.get("answer_type")))
        return None
    return {
        "image": str(image_path),
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "qid": _cell(entry, "qid"),
        "split": split,
    }


def load_vqa_rad(
    root,
    split: str | None = None,
    *,
    images_dir=None,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read VQA-RAD's public JSON. split: None (all), "train" or "test" (from phrase_type).

    Rows: image, question, answer, answer_type (CLOSED/OPEN), question_type, qid, split,
    image_organ, phrase_type. Malformed rows are skipped and counted (see row_issues).
    """
    root = Path(root)
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    json_path = root / VQA_RAD_JSON
    if not json_path.is_file():
        raise FileNotFoundError(f"VQA-RAD: no {json_path}")
    images_dir = Path(images_dir) if images_dir else root / VQA_RAD_IMAGES
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict

    rows = []
    for index, entry in enumerate(_load_entries(json_path)):
        where = f"{json_path.name} entry {index} (qid={entry.get('qid') if isinstance(entry, dict) else '?'})"
        phrase_type = _cell(entry, "phrase_type") if isinstance(entry, dict) else ""
        entry_split = "test" if phrase_type.startswith("test") else "train"
        if split is not None and entry_split != split:
            continue
        image_name = _cell(entry, "image_name") if isinstance(entry, dict) else ""
        row = _qa_row(entry, where, images_dir / image_name if image_name else images_dir, entry_split, issues)
        if row is not None:
            row.update(
                question_type=_cell(entry, "question_type"),
                image_organ=_cell(entry, "image_organ"),
                phrase_type=phrase_type,
            )
            rows.append((where, row))
    return build_dataset(
        rows, VQA_RAD_FEATURES, reader="load_vqa_rad", issues=issues, streaming=streaming, check_images=check_images
    )


def load_slake(
    root,
    split: str = "train",
    *,
    language: str | None = "en",
    images_dir=None,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read SLAKE's `train.json` / `validate.json` / `test.json`. language: "en", "zh" or None (both).

    Rows: image, question, answer, answer_type (CLOSED/OPEN), question_type (SLAKE's
    content_type), qid, split, language, modality, location, image_id. Malformed rows are skipped
    and counted (see row_issues).
    """
    root = Path(root)
    if split not in SLAKE_SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SLAKE_SPLIT_FILES)}, got {split!r}")
    json_path = root / SLAKE_SPLIT_FILES[split]
    if not json_path.is_file():
        raise FileNotFoundError(f"SLAKE: no {json_path}")
    images_dir = Path(images_dir) if images_dir else root / "imgs"
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict

    rows = []
    for index, entry in enumerate(_load_entries(json_path)):
        where = f"{json_path.name} entry {index} (qid={entry.get('qid') if isinstance(entry, dict) else '?'})"
        entry_language = _cell(entry, "q_lang") if isinstance(entry, dict) else ""
        if language is not None and isinstance(entry, dict) and entry_language != language:
            continue
        image_name = _cell(entry, "img_name") if isinstance(entry, dict) else ""
        split_name = Path(SLAKE_SPLIT_FILES[split]).stem
        row = _qa_row(entry, where, images_dir / image_name if image_name else images_dir, split_name, issues)
        if row is not None:
            row.update(
                question_type=_cell(entry, "content_type"),
                language=entry_language,
                modality=_cell(entry, "modality"),
                location=_cell(entry, "location"),
                image_id=_cell(entry, "img_id"),
            )
            rows.append((where, row))
    return build_dataset(
        rows, SLAKE_FEATURES, reader="load_slake", issues=issues, streaming=streaming, check_images=check_images
    )


__all__ = ["SLAKE_FEATURES", "VQA_RAD_FEATURES", "load_slake", "load_vqa_rad"]
