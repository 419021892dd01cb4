"""The laterality probe: the side a report states, and the accuracy of choosing it by similarity."""

import numpy as np
import pytest

from processing.synthcxr import generate_synthcxr
from train.laterality_probe import laterality_probe, stated_side
from train.zero_shot_eval import load_prompts


@pytest.mark.parametrize(
    "report, finding, side",
    [
        ("FINDINGS: Moderate left pleural effusion. No pneumothorax.", "Pleural Effusion", "left"),
        ("There is a small right pneumothorax. No pleural effusion.", "Pneumothorax", "right"),
        ("Small right PTX.", "Pneumothorax", "right"),
        ("Dense opacity in the left lower lobe consistent with consolidation.", "Consolidation", "left"),
        ("Moderate bilateral pleural effusions.", "Pleural Effusion", None),
        ("Left pleural effusion. Right pleural effusion.", "Pleural Effusion", None),
        ("No pleural effusion. The left lung is clear.", "Pleural Effusion", None),
        ("No left pleural effusion.", "Pleural Effusion", None),
        ("Pleural effusion.", "Pleural Effusion", None),
    ],
)
def test_stated_side(report, finding, side):
    assert stated_side(report, finding) == side


def test_synthcxr_reports_state_the_side_of_their_findings():
    kinds = {"pleural_effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax", "consolidation": "Consolidation"}
    checked = 0
    for study in generate_synthcxr(300, size=16, seed=3):
        for finding in study.findings:
            label = kinds.get(finding.kind)
            if label and finding.side in ("left", "right") and study.labels.get(label) == 1:
                same_kind = [f for f in study.findings if f.kind == finding.kind]
                if len(same_kind) == 1:
                    assert stated_side(study.report, label) == finding.side, study.report
                    checked += 1
    assert checked > 30


def test_probe_scores_the_side_with_the_closer_ensemble():
    left, right = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    images = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    reports = ["Small left pleural effusion.", "Small right pleural effusion.", "Small right pleural effusion.",
               "Possible small left pleural effusion."]
    labels = [{"Pleural Effusion": 1}] * 3 + [{"Pleural Effusion": -1}]
    result = laterality_probe(images, left, right, reports, labels, ["Pleural Effusion"])
    assert result["laterality_studies"] == {"Pleural Effusion": 3}
    assert result["laterality_accuracy"] == pytest.approx(2 / 3)


def test_default_prompts_carry_both_sides_of_each_sided_finding():
    prompts = load_prompts()
    assert set(prompts["laterality"]) == {"Pleural Effusion", "Pneumothorax", "Consolidation"}
    for finding, (left, right) in prompts["laterality"].items():
        assert all(stated_side(text, finding) == "left" for text in left), finding
        assert all(stated_side(text, finding) == "right" for text in right), finding
