"""Safety and bias evaluation pieces: expected calibration error against a hand computation, subgroup splits whose
counts add up, the largest subgroup gap, and SynthCXR's patient metadata through the MIMIC-CXR reader."""

import numpy as np
import pytest

from processing import load_mimic_cxr
from processing.synthcxr import generate_synthcxr, patient_metadata, write_synthcxr
from train.clinical_eval import (
    age_band,
    calibration,
    confusion_matrices,
    largest_gap,
    subgroup_assignments,
    subgroup_metrics,
)

LABELS = ["Edema", "Pleural Effusion"]


def test_ece_equals_a_hand_computation():
    probabilities = [[0.1, 0.8], [0.4, 0.3], [0.6, 0.95], [0.9, 0.2]]
    targets = [[0, 1], [1, -100], [1, 1], [1, 0]]
    result = calibration(probabilities, targets, LABELS, n_bins=2)
    # Known entries: bin [0, 0.5) holds 0.1, 0.4, 0.2 (outcomes 0, 1, 0): |1/3 - 0.7/3| = 0.1, weight 3/7;
    # bin [0.5, 1] holds 0.6, 0.9, 0.8, 0.95 (all positive): |1 - 0.8125| = 0.1875, weight 4/7.
    assert result["entries"] == 7
    assert result["ece"] == pytest.approx(3 / 7 * 0.1 + 4 / 7 * 0.1875)
    assert [b["count"] for b in result["bins"]] == [3, 4]
    assert result["bins"][1]["mean_probability"] == pytest.approx(0.8125)
    # Edema alone: (0.1, 0) and (0.4, 1) in the low bin -> |0.5 - 0.25| x 2/4; (0.6, 1), (0.9, 1) -> |1 - 0.75| x 2/4.
    assert result["ece_per_label"]["Edema"] == pytest.approx(0.25)
    assert calibration([[1.0], [0.0]], [[1], [0]], ["Edema"], n_bins=10)["ece"] == pytest.approx(0.0)


def test_calibration_rejects_scores_that_are_not_probabilities():
    with pytest.raises(ValueError, match="probabilities in"):
        calibration([[2.3], [-1.0]], [[1], [0]], ["Edema"])
    with pytest.raises(ValueError, match="whole number"):
        calibration([[0.3]], [[1]], ["Edema"], n_bins=0)


def test_confusion_matrix_counts_known_entries_at_the_threshold():
    result = confusion_matrices([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.3, 0.9]], [[1, 0], [0, -100], [0, 0], [1, 1]],
                                LABELS)
    assert result["per_label"]["Edema"] == {"tp": 1, "fn": 1, "fp": 1, "tn": 1, "sensitivity": 0.5, "specificity": 0.5}
    assert result["per_label"]["Pleural Effusion"]["tn"] == 2 and result["per_label"]["Pleural Effusion"]["tp"] == 1


def test_age_bands_and_sex_names():
    assert [age_band(a) for a in (5, 18, 39, 40, 79, 91, None)] == ["<18", "18-39", "18-39", "40-59", "60-79", "80+",
                                                                   None]
    groups = subgroup_assignments({"sex": ["F", "Male", "Unknown", None], "age": [30, 65, None, 85],
                                   "view": ["PA", "AP", "PA", ""], "report": ["x"] * 4})
    assert groups == {"sex": ["female", "male", None, None], "age_band": ["18-39", "60-79", None, "80+"],
                      "view": ["PA", "AP", "PA", None]}


def _two_group_data(n=120, seed=0):
    """Group 'a' perfectly ranked, group 'b' random scores; sex and age unrelated to the scores."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, (n, 2)).astype(float)
    site = np.array(["a"] * (n // 2) + ["b"] * (n - n // 2))
    scores = np.where(site[:, None] == "a", targets + rng.normal(0, 0.1, (n, 2)), rng.normal(0, 1, (n, 2)))
    metadata = {"site": site.tolist(), "sex": rng.choice(["F", "M", None], n).tolist(),
                "age": rng.integers(20, 90, n).tolist()}
    return scores, 1 / (1 + np.exp(-scores)), targets, metadata


def test_subgroup_counts_add_up_and_the_largest_gap_is_flagged():
    scores, probabilities, targets, metadata = _two_group_data()
    assignments = subgroup_assignments(metadata)
    subgroups = subgroup_metrics(scores, probabilities, targets, LABELS, assignments, bootstrap_samples=50,
                                 min_group_size=10)
    for attribute, record in subgroups.items():
        counts = sum(group["count"] for group in record["groups"].values())
        assert counts + record["missing"] == len(scores), attribute
        for group in record["groups"].values():
            assert group["positives"]["Edema"] <= group["count"]
    assert subgroups["sex"]["missing"] == sum(value is None for value in metadata["sex"]) > 0
    assert set(subgroups["age_band"]["groups"]) <= {"18-39", "40-59", "60-79", "80+"}
    gap = largest_gap(subgroups)
    assert gap["attribute"] == "site" and gap["best"] == "a" and gap["worst"] == "b"
    assert gap["best_value"] > 0.95 and gap["gap"] > 0.3 and gap["intervals_overlap"] is False
    assert subgroups["site"]["compared_labels"] == LABELS


def test_small_groups_are_reported_but_not_compared():
    scores, probabilities, targets, metadata = _two_group_data(n=40)
    metadata["site"][-3:] = ["c"] * 3
    subgroups = subgroup_metrics(scores, probabilities, targets, LABELS, subgroup_assignments(metadata),
                                 bootstrap_samples=0, min_group_size=10)
    assert subgroups["site"]["groups"]["c"]["count"] == 3
    assert subgroups["site"]["compared_groups"] == ["a", "b"]
    with pytest.raises(ValueError, match="subgroup 'site': 3 values for 40 studies"):
        subgroup_metrics(scores, probabilities, targets, LABELS, {"site": ["a", "b", "c"]})


def test_synthcxr_patients_are_deterministic_and_read_by_the_mimic_reader(tmp_path):
    studies = list(generate_synthcxr(8, size=32, seed=11))
    assert [(s.sex, s.age) for s in studies] == [patient_metadata(11, i) for i in range(8)]
    assert {s.sex for s in studies} <= {"F", "M"} and all(18 <= s.age <= 91 for s in studies)
    assert [patient_metadata(12, i) for i in range(8)] != [patient_metadata(11, i) for i in range(8)]
    write_synthcxr(tmp_path, 8, size=32, seed=11, layouts=("mimic-cxr-jpg",), progress=False, gzip_tables=True)
    assert (tmp_path / "mimic-cxr-jpg" / "patients.csv.gz").is_file()
    rows = load_mimic_cxr(tmp_path / "mimic-cxr-jpg")
    columns = rows.select_columns(["subject_id", "sex", "age"])
    by_subject = {row["subject_id"]: (row["sex"], row["age"]) for row in columns}
    assert by_subject == {s.subject_id: (s.sex, s.age) for s in studies}
    with pytest.raises(FileNotFoundError, match="patients_table"):
        load_mimic_cxr(tmp_path / "mimic-cxr-jpg", patients_table=tmp_path / "nope.csv")
