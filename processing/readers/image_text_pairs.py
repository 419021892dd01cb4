"""Generic image–text pairs from a JSONL or CSV index: one row per line, an image path and a text.

    {"image": "images/0001.png", "text": "No acute cardiopulmonary process."}     (pairs.jsonl)
    image,text                                                                   (pairs.csv)
    images/0001.png,No acute cardiopulmonary process.
Relative image paths are resolved against the index file's folder; absolute paths are kept.
"""

import json
import os
from pathlib import Path

import datasets

from .csv_tables import read_csv_rows
from .dataset_building import build_dataset
from .row_issues import RowIssues

PAIR_FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})


def _read_jsonl(path: Path, issues):
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                issues.skip(where, "unparsable JSON line", str(error))
                continue
            if not isinstance(record, dict):
                issues.skip(where, "malformed entry", f"expected an object, got {type(record).__name__}")
                continue
            yield where, record


def load_image_text_pairs(
    path,
    *,
    image_column: str = "image",
    text_column: str = "text",
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read image–text pairs from a `.jsonl` or `.csv` file; rows: image, text.

    image_column / text_column name the fields in the file. Malformed rows (missing or unreadable
    image, empty text, unparsable line) are skipped and counted (see row_issues).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-text pairs: no {path}")
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict
    if path.suffix.lower() == ".jsonl":
        records = _read_jsonl(path, issues)
    elif path.suffix.lower() == ".csv" or path.name.lower().endswith(".csv.gz"):
        records = read_csv_rows(path, [image_column, text_column], issues)
    else:
        raise ValueError(f"{path}: expected a .jsonl or .csv file")

    rows = []
    for where, record in records:
        image_name = str(record.get(image_column) or "").strip()
        text = str(record.get(text_column) or "").strip()
        if not image_name:
            issues.skip(where, "missing image", f"no {image_column!r} value")
            continue
        image_path = path.parent / image_name
        where = f"{where} ({image_name})"
        if not os.path.isfile(image_path):
            issues.skip(where, "missing image", str(image_path))
            continue
        if not text:
            issues.skip(where, "empty text", f"no {text_column!r} value")
            continue
        rows.append((where, {"image": str(image_path), "text": text}))
    return build_dataset(
        rows, PAIR_FEATURES, reader="load_image_text_pairs", issues=issues,
        streaming=streaming, check_images=check_images,
    )  # fmt: skip


__all__ = ["PAIR_FEATURES", "load_image_text_pairs"]
