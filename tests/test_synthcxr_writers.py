"""SynthCXR written in the MIMIC-CXR-JPG, Open-I and VQA-RAD layouts: names, columns, bytes."""

import csv
import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ElementTree

import pytest

from processing.chexpert import CHEXPERT_LABELS
from processing.synthcxr import generate_synthcxr, write_synthcxr

N, SIZE, SEED = 12, 48, 7


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcxr")
    write_synthcxr(out, N, size=SIZE, seed=SEED, progress=False)
    return out


def _tree_digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _csv(path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.reader(handle))


def test_mimic_layout_names_and_columns(written):
    root = written / "mimic-cxr-jpg"
    metadata, labels, split = (_csv(root / f"mimic-cxr-2.0.0-{name}.csv") for name in ("metadata", "chexpert", "split"))
    assert metadata[0] == [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
        "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning",
    ]
    assert labels[0] == ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
    assert split[0] == ["dicom_id", "study_id", "subject_id", "split"]
    assert len(metadata) == len(labels) == len(split) == N + 1
    for dicom_id, subject, study, *_ in metadata[1:]:
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", dicom_id)
        assert re.fullmatch(r"1\d{7}", subject) and re.fullmatch(r"5\d{7}", study)
        assert (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg").is_file()
        report = (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").read_text()
        assert "FINAL REPORT" in report and "\n FINDINGS:\n" in report and "\n IMPRESSION:\n" in report
    cells = {cell for row in labels[1:] for cell in row[2:]}
    assert cells <= {"1.0", "0.0", "-1.0", ""} and {"1.0", "0.0", ""} <= cells
    assert {row[3] for row in split[1:]} <= {"train", "validate", "test"}
    assert {row[4] for row in metadata[1:]} <= {"PA", "AP"}


def test_openi_layout(written):
    root = written / "openi"
    xml_files = sorted((root / "ecgen-radiology").glob("*.xml"))
    assert [p.name for p in xml_files] == sorted(f"{i}.xml" for i in range(1, N + 1))
    for path in xml_files:
        tree = ElementTree.parse(path).getroot()
        labels = {a.get("Label"): a.text for a in tree.iter("AbstractText")}
        assert {"FINDINGS", "IMPRESSION"} <= labels.keys() and labels["FINDINGS"]
        (image,) = tree.iter("parentImage")
        assert (root / "NLMCXR_png" / f"{image.get('id')}.png").is_file()
        assert [m.text for m in tree.iter("major")]


def test_vqa_rad_layout(written):
    root = written / "vqa-rad"
    entries = json.loads((root / "VQA_RAD Dataset Public.json").read_text())
    studies = list(generate_synthcxr(N, size=SIZE, seed=SEED))
    assert len(entries) == sum(len(s.qa) for s in studies)
    for entry in entries:
        assert {
            "qid",
            "image_name",
            "image_organ",
            "question",
            "answer",
            "answer_type",
            "question_type",
            "phrase_type",
        } <= entry.keys()
        assert entry["answer_type"] in ("CLOSED", "OPEN") and entry["image_organ"] == "CHEST"
        assert (root / "VQA_RAD Image Folder" / entry["image_name"]).is_file()
    assert len({e["qid"] for e in entries}) == len(entries)


def test_ground_truth_lists_findings_with_side_and_location(written):
    records = [json.loads(line) for line in (written / "synthcxr.jsonl").read_text().splitlines()]
    studies = list(generate_synthcxr(N, size=SIZE, seed=SEED))
    assert [r["study_id"] for r in records] == [s.study_id for s in studies]
    assert [r["findings"] for r in records] == [[f.as_dict() for f in s.findings] for s in studies]


def test_same_arguments_same_bytes_and_gzip_tables(written, tmp_path):
    write_synthcxr(tmp_path / "again", N, size=SIZE, seed=SEED, progress=False)
    assert _tree_digest(tmp_path / "again") == _tree_digest(written)
    write_synthcxr(
        tmp_path / "gz", 3, size=SIZE, seed=SEED, layouts=("mimic-cxr-jpg",), gzip_tables=True, progress=False
    )
    write_synthcxr(
        tmp_path / "gz2", 3, size=SIZE, seed=SEED, layouts=("mimic-cxr-jpg",), gzip_tables=True, progress=False
    )
    assert _tree_digest(tmp_path / "gz") == _tree_digest(tmp_path / "gz2")
    gz_metadata = _csv(tmp_path / "gz" / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert gz_metadata == _csv(written / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv")[:4]
    assert not (tmp_path / "gz" / "openi").exists()


def test_unknown_layout_is_named(tmp_path):
    with pytest.raises(ValueError, match="chexpert-small"):
        write_synthcxr(tmp_path, 1, size=32, layouts=("chexpert-small",))
