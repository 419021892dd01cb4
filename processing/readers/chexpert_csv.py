"""CheXpert (Stanford): `train.csv` / `valid.csv` beside the `train/` and `valid/` image trees.

Layout (e.g. `CheXpert-v1.0-small/`):
    train.csv, valid.csv   Path,Sex,Age,Frontal/Lateral,AP/PA,<14 labels>
    train/patient00001/study1/view1_frontal.jpg
`Path` starts with the data set folder's own name ("CheXpert-v1.0-small/train/..."): it is resolved
against `root` with that first component dropped, so a renamed folder still reads.
"""

import os
from pathlib import Path

import datasets

from .chexpert_labels import LABELS_FEATURE, check_uncertainty_policy, parse_label_cells
from .csv_tables import read_csv_rows
from .dataset_building import build_dataset
from .row_issues import RowIssues

SPLIT_FILES = {"train": "train.csv", "valid": "valid.csv", "validation": "valid.csv", "validate": "valid.csv"}

CHEXPERT_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "labels": LABELS_FEATURE,
        "view": datasets.Value("string"),
        "frontal_lateral": datasets.Value("string"),
        "ap_pa": datasets.Value("string"),
        "sex": datasets.Value("string"),
        "age": datasets.Value("int32"),
        "patient_id": datasets.Value("string"),
        "study_id": datasets.Value("string"),
        "split": datasets.Value("string"),
    }
)


def _view_matches(view_filter, frontal_lateral: str, ap_pa: str) -> bool:
    return view_filter is None or frontal_lateral.upper() in view_filter or ap_pa.upper() in view_filter


def load_chexpert(
    root,
    split: str = "train",
    *,
    view=None,
    uncertainty: str = "keep",
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read CheXpert's `train.csv` or `valid.csv` under `root` (the `CheXpert-v1.0[-small]` folder).

    view: None (all), or one or a list of "frontal", "lateral", "AP", "PA" (case-insensitive).
    uncertainty: "keep" (-1 stays), "ones" (U-Ones), "zeros" (U-Zeros), "ignore" (U-Ignore: None).
    Rows: image, labels, view ("PA"/"AP"/"FRONTAL"/"LATERAL"), frontal_lateral, ap_pa, sex, age,
    patient_id, study_id ("patient00001/study1"), split. Malformed rows: see `row_issues`.
    """
    root = Path(root)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    check_uncertainty_policy(uncertainty)
    view_filter = None if view is None else {v.upper() for v in ([view] if isinstance(view, str) else view)}
    csv_path = root / SPLIT_FILES[split]
    if not csv_path.is_file():
        raise FileNotFoundError(f"CheXpert: no {csv_path}")
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict

    rows = []
    columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
    for where, record in read_csv_rows(csv_path, columns, issues):
        frontal_lateral, ap_pa = record["Frontal/Lateral"].strip(), record["AP/PA"].strip()
        if not _view_matches(view_filter, frontal_lateral, ap_pa):
            continue
        relative = Path(record["Path"].strip())
        image_path = root.joinpath(*relative.parts[1:])
        where = f"{where} ({relative})"
        if not os.path.isfile(image_path):
            issues.skip(where, "missing image", str(image_path))
            continue
        try:
            labels = parse_label_cells(record, uncertainty)
        except ValueError as error:
            issues.skip(where, "label outside {1, 0, -1, blank}", str(error))
            continue
        age = record["Age"].strip()
        patient = relative.parts[-3] if len(relative.parts) >= 3 else ""
        study = relative.parts[-2] if len(relative.parts) >= 2 else ""
        is_lateral = frontal_lateral.lower() == "lateral"
        row = {
            "image": str(image_path),
            "labels": labels,
            "view": "LATERAL" if is_lateral else (ap_pa.upper() or "FRONTAL"),
            "frontal_lateral": frontal_lateral,
            "ap_pa": ap_pa,
            "sex": record["Sex"].strip(),
            "age": int(age) if age.isdigit() else None,
            "patient_id": patient,
            "study_id": f"{patient}/{study}",
            "split": "valid" if SPLIT_FILES[split] == "valid.csv" else "train",
        }
        rows.append((where, row))
    return build_dataset(
        rows,
        CHEXPERT_FEATURES,
        reader="load_chexpert",
        issues=issues,
        streaming=streaming,
        check_images=check_images,
    )


__all__ = ["CHEXPERT_FEATURES", "load_chexpert"]
