"""The project's readers for the real layouts ingest SynthCXR's output with its reports,
labels, views, splits, images and question-answer pairs intact."""

import numpy as np
import pytest

from processing.readers import load_mimic_cxr, load_openi, load_vqa_rad
from processing.synthcxr import generate_synthcxr, write_synthcxr

N, SIZE, SEED = 16, 64, 3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcxr")
    write_synthcxr(out, N, size=SIZE, seed=SEED, progress=False)
    return out, list(generate_synthcxr(N, size=SIZE, seed=SEED))


def _pixels(image):
    return np.asarray(image, dtype=np.float32)


def test_load_mimic_cxr_reads_reports_labels_and_images(written):
    out, studies = written
    rows = load_mimic_cxr(out / "mimic-cxr-jpg")
    assert len(rows) == N
    by_study = {row["study_id"]: row for row in rows}
    for study in studies:
        row = by_study[study.study_id]
        assert row["report"] == study.report
        assert row["labels"] == study.labels
        assert (row["view"], row["split"], row["dicom_id"], row["subject_id"]) == (
            study.view,
            study.split,
            study.dicom_id,
            study.subject_id,
        )
        assert np.abs(_pixels(row["image"]) - _pixels(study.image)).mean() < 2.0, "JPEG quality 95"
    train = load_mimic_cxr(out / "mimic-cxr-jpg", split="train")
    assert len(train) == sum(s.split == "train" for s in studies)
    impressions = load_mimic_cxr(out / "mimic-cxr-jpg", sections="impression")
    assert sorted(impressions["report"]) == sorted(s.impression_text for s in studies)


def test_load_mimic_cxr_reads_gzipped_tables(tmp_path):
    write_synthcxr(tmp_path, 4, size=32, seed=SEED, layouts=("mimic-cxr-jpg",), gzip_tables=True, progress=False)
    rows = load_mimic_cxr(tmp_path / "mimic-cxr-jpg")
    assert [r["labels"] for r in rows] == [s.labels for s in generate_synthcxr(4, size=32, seed=SEED)]


def test_load_openi_reads_reports_and_lossless_images(written):
    out, studies = written
    rows = load_openi(out / "openi")
    assert len(rows) == N
    for row, study in zip(rows, studies):
        assert row["report"] == study.report
        assert np.array_equal(_pixels(row["image"]), _pixels(study.image))
        pathology = [f for f in study.findings if f.kind != "support_device"]
        assert (row["mesh_major"] == ["normal"]) == (not pathology)
        for finding in (f for f in pathology if f.side):
            assert any(finding.side in term.split("/") for term in row["mesh_major"]), (row["mesh_major"], finding)


def test_load_vqa_rad_reads_question_answer_pairs(written):
    out, studies = written
    rows = load_vqa_rad(out / "vqa-rad")
    expected = [(qa["question"], qa["answer"], qa["answer_type"], qa["question_type"]) for s in studies for qa in s.qa]
    assert [(r["question"], r["answer"], r["answer_type"], r["question_type"]) for r in rows] == expected
    test_questions = sum(len(s.qa) for s in studies if s.split == "test")
    assert len(load_vqa_rad(out / "vqa-rad", split="test")) == test_questions
