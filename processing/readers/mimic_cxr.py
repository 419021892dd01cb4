"""MIMIC-CXR-JPG (PhysioNet), with the free-text reports of MIMIC-CXR.

Layout under `root` (index files plain `.csv` or gzipped `.csv.gz`):
    mimic-cxr-2.0.0-metadata.csv   dicom_id,subject_id,study_id,...,ViewPosition,...
    mimic-cxr-2.0.0-chexpert.csv   subject_id,study_id,<14 labels>        (optional: labels None)
    mimic-cxr-2.0.0-split.csv      dicom_id,study_id,subject_id,split      (train/validate/test)
    files/p10/p10000032/s50414267/02aa804e-....jpg
Reports (mimic-cxr-reports): `files/p10/p10000032/s50414267.txt` under `reports_root`
(default: `root`, else `root/mimic-cxr-reports`).
Patients (optional, MIMIC-IV's `hosp/patients.csv[.gz]`: subject_id,gender,anchor_age,anchor_year,...): the file
`patients_table`, else `root/patients.csv[.gz]` or `root/hosp/patients.csv[.gz]`; it gives each row `sex` (the
table's gender, "F" / "M") and `age` (anchor_age shifted from anchor_year to the study's year); both None without it.
"""

import os
from pathlib import Path

import datasets

from ..chexpert import CHEXPERT_LABELS
from .chexpert_labels import LABELS_FEATURE, check_uncertainty_policy, parse_label_cells
from .csv_tables import find_table, read_csv_rows
from .dataset_building import build_dataset
from .report_sections import check_sections, report_text
from .row_issues import RowIssues

FRONTAL_VIEWS = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "PA RLD", "AP RLD")
SPLIT_ALIASES = {"train": "train", "validate": "validate", "validation": "validate", "val": "validate", "test": "test"}

_COMMON_COLUMNS = {
    "image": datasets.Image(),
    "report": datasets.Value("string"),
    "labels": LABELS_FEATURE,
    "view": datasets.Value("string"),
    "subject_id": datasets.Value("int64"),
    "study_id": datasets.Value("int64"),
    "dicom_id": datasets.Value("string"),
    "split": datasets.Value("string"),
    "sex": datasets.Value("string"),
    "age": datasets.Value("int32"),
}
MIMIC_IMAGE_FEATURES = datasets.Features(_COMMON_COLUMNS)
MIMIC_STUDY_FEATURES = datasets.Features(
    {**_COMMON_COLUMNS, "image_paths": datasets.Sequence(datasets.Value("string"))}
)


def _view_rank(view: str) -> tuple:
    """Which image stands for a study: PA, then AP, other frontal views, lateral, the rest."""
    if view in FRONTAL_VIEWS:
        return (0, FRONTAL_VIEWS.index(view))
    return (1, 0) if view == "LATERAL" else (2, 0)


def _view_filter(view):
    if view is None:
        return None
    wanted = {v.upper() for v in ([view] if isinstance(view, str) else view)}
    if "FRONTAL" in wanted:
        wanted = (wanted - {"FRONTAL"}) | set(FRONTAL_VIEWS)
    return wanted


class _Reports:
    """Reads each study's report once and remembers the outcome (text, or the skip reason)."""

    def __init__(self, roots, sections):
        self.roots, self.sections, self.cache = roots, sections, {}

    def get(self, subject: str, study: str):
        key = (subject, study)
        if key not in self.cache:
            relative = Path("files", f"p{subject[:2]}", f"p{subject}", f"s{study}.txt")
            path = next((r / relative for r in self.roots if (r / relative).is_file()), None)
            if path is None:
                self.cache[key] = (None, "missing report", str(self.roots[0] / relative))
            else:
                raw = path.read_text(encoding="utf-8", errors="replace")
                text = report_text(raw, self.sections)
                if not raw.strip():
                    self.cache[key] = (None, "empty report", str(path))
                elif text is None:
                    self.cache[key] = (None, f"report lacks {self.sections}", str(path))
                else:
                    self.cache[key] = (text, None, None)
        return self.cache[key]


def _read_labels(root, uncertainty, issues):
    """study_id → labels, or → the error string for a row with a bad label (its images are skipped)."""
    path = find_table(root, "mimic-cxr-2.0.0-chexpert")
    if path is None:
        return {}
    labels = {}
    for where, record in read_csv_rows(path, ["subject_id", "study_id"], issues):
        try:
            labels[record["study_id"].strip()] = parse_label_cells(record, uncertainty)
        except ValueError as error:
            labels[record["study_id"].strip()] = f"{where}: {error}"
    return labels


def _read_splits(root, issues):
    path = find_table(root, "mimic-cxr-2.0.0-split")
    if path is None:
        return None
    return {r["dicom_id"].strip(): r["split"].strip() for _, r in read_csv_rows(path, ["dicom_id", "split"], issues)}


def _read_patients(root, patients_table, issues):
    """subject_id → (gender, anchor_age, anchor_year or None); {} without a patients table."""
    if patients_table is not None:
        path = Path(patients_table)
        if not path.is_file():
            raise FileNotFoundError(f"MIMIC-CXR-JPG: patients_table {path}: no such file")
    else:
        path = find_table(root, "patients") or find_table(root / "hosp", "patients")
        if path is None:
            return {}
    patients = {}
    for _, record in read_csv_rows(path, ["subject_id", "gender", "anchor_age"], issues):
        age, year = record["anchor_age"].strip(), record.get("anchor_year", "").strip()
        patients[record["subject_id"].strip()] = (
            record["gender"].strip() or None, int(age) if age.isdigit() else None, int(year) if year.isdigit() else None
        )
    return patients


def _age_at_study(patient, study_date: str):
    _, anchor_age, anchor_year = patient
    if anchor_age is None or anchor_year is None or not study_date[:4].isdigit():
        return anchor_age
    return anchor_age + int(study_date[:4]) - anchor_year


def load_mimic_cxr(
    root,
    split: str | None = None,
    *,
    view=None,
    per: str = "image",
    sections: str = "findings+impression",
    uncertainty: str = "keep",
    reports_root=None,
    patients_table=None,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read MIMIC-CXR-JPG under `root` into rows of image, report, labels and ids.

    split: None (all) or "train" / "validate" ("validation") / "test" from the split file.
    view: None, or one or a list of ViewPosition values ("PA", "AP", "LATERAL", "LL", ...;
        "frontal" stands for every frontal position).
    per: "image" (a row per image) or "study" (a row per study: `image` is the study's frontal
        image — PA before AP, then the smallest dicom_id — and `image_paths` lists all its images
        that pass the view filter).
    sections: "findings+impression" | "findings" | "impression" | "full" (see report_sections).
    uncertainty: CheXpert policy for -1 labels: "keep", "ones", "zeros", "ignore".
    patients_table: MIMIC-IV's patients.csv[.gz] (default: found under `root`, see the module doc).
    Rows: image, report, labels (14 CheXpert labels → 1/0/-1/None), view, subject_id, study_id,
    dicom_id, split, sex ("F"/"M"), age (at the study) [, image_paths]. Malformed rows are skipped and counted
    (see row_issues).
    """
    root = Path(root)
    if per not in ("image", "study"):
        raise ValueError(f"per must be 'image' or 'study', got {per!r}")
    if split is not None and split not in SPLIT_ALIASES:
        raise ValueError(f"split must be None or one of {sorted(SPLIT_ALIASES)}, got {split!r}")
    check_sections(sections)
    check_uncertainty_policy(uncertainty)
    metadata_path = find_table(root, "mimic-cxr-2.0.0-metadata")
    if metadata_path is None:
        raise FileNotFoundError(f"MIMIC-CXR-JPG: no mimic-cxr-2.0.0-metadata.csv[.gz] in {root}")
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict

    splits = _read_splits(root, issues)
    if split is not None and splits is None:
        raise FileNotFoundError(f"MIMIC-CXR-JPG: split={split!r} needs mimic-cxr-2.0.0-split.csv[.gz] in {root}")
    labels_of = _read_labels(root, uncertainty, issues)
    patients = _read_patients(root, patients_table, issues)
    report_roots = [Path(reports_root)] if reports_root is not None else [root, root / "mimic-cxr-reports"]
    reports = _Reports(report_roots, sections)
    wanted_views = _view_filter(view)
    wanted_split = SPLIT_ALIASES.get(split)

    rows = []
    for where, record in read_csv_rows(metadata_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"], issues):
        dicom, subject, study = record["dicom_id"].strip(), record["subject_id"].strip(), record["study_id"].strip()
        view_position = record["ViewPosition"].strip().upper()
        where = f"{where} (dicom_id={dicom}, study_id={study})"
        if not (subject.isdigit() and study.isdigit() and dicom):
            issues.skip(where, "malformed ids", f"subject_id={subject!r}, study_id={study!r}")
            continue
        image_split = splits.get(dicom, "") if splits is not None else ""
        if wanted_split is not None and image_split != wanted_split:
            continue
        if wanted_views is not None and view_position not in wanted_views:
            continue
        image_path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        if not os.path.isfile(image_path):
            issues.skip(where, "missing image", str(image_path))
            continue
        labels = labels_of.get(study, dict.fromkeys(CHEXPERT_LABELS))
        if isinstance(labels, str):
            issues.skip(where, "label outside {1, 0, -1, blank}", labels)
            continue
        report, reason, detail = reports.get(subject, study)
        if report is None:
            issues.skip(where, reason, detail)
            continue
        row = {
            "image": str(image_path),
            "report": report,
            "labels": labels,
            "view": view_position,
            "subject_id": int(subject),
            "study_id": int(study),
            "dicom_id": dicom,
            "split": image_split,
        }
        patient = patients.get(subject, (None, None, None))
        row["sex"], row["age"] = patient[0], _age_at_study(patient, record.get("StudyDate", "").strip())
        rows.append((where, row))

    features = MIMIC_IMAGE_FEATURES
    if per == "study":
        rows = _one_row_per_study(rows)
        features = MIMIC_STUDY_FEATURES
    return build_dataset(
        rows, features, reader="load_mimic_cxr", issues=issues, streaming=streaming, check_images=check_images
    )


def _one_row_per_study(rows):
    studies = {}
    for where, row in rows:
        studies.setdefault(row["study_id"], []).append((where, row))
    study_rows = []
    for images in studies.values():
        images.sort(key=lambda item: (_view_rank(item[1]["view"]), item[1]["dicom_id"]))
        where, chosen = images[0]
        study_rows.append((where, {**chosen, "image_paths": [row["image"] for _, row in images]}))
    return study_rows


__all__ = ["MIMIC_IMAGE_FEATURES", "MIMIC_STUDY_FEATURES", "load_mimic_cxr"]
