"""SynthCXR written in the real layouts is read back by the real readers, agreeing with its ground truth."""

import json
import warnings

import pytest

from processing.readers import MalformedRowWarning, load_mimic_cxr, load_openi, load_vqa_rad
from processing.synthcxr import write_synthcxr


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcxr")
    write_synthcxr(out, n=8, size=32, seed=0, gzip_tables=True, progress=False)
    truth = [json.loads(line) for line in (out / "synthcxr.jsonl").read_text().splitlines()]
    return out, {record["study_id"]: record for record in truth}


def test_readers_ingest_every_synthcxr_study(synth_dir):
    out, truth = synth_dir
    with warnings.catch_warnings():
        warnings.simplefilter("error", MalformedRowWarning)
        mimic = load_mimic_cxr(out / "mimic-cxr-jpg")
        openi = load_openi(out / "openi")
        vqa = load_vqa_rad(out / "vqa-rad")
    assert sorted(mimic["study_id"]) == sorted(truth) and len(openi) == len(truth)
    for row in mimic:
        record = truth[row["study_id"]]
        assert row["labels"] == record["labels"] and row["report"] == record["report"]
        assert (row["view"], row["split"], row["dicom_id"]) == (record["view"], record["split"], record["dicom_id"])
        assert row["image"].size == (32, 32)
    total_questions = sum(len(record["qa"]) for record in truth.values())
    assert len(vqa) == total_questions and set(vqa["answer_type"]) <= {"CLOSED", "OPEN"}
    test_questions = sum(len(record["qa"]) for record in truth.values() if record["split"] == "test")
    assert vqa["split"].count("test") == test_questions
