"""SynthCXR reports, labels and question-answer pairs agree with each other and with the
drawn findings; generation is deterministic in (seed, index)."""

import re

import pytest

from processing.chexpert import CHEXPERT_LABELS
from processing.synthcxr import FINDING_KINDS, generate_synthcxr
from processing.synthcxr.anatomy import LOBE_NAMES

# What a sentence must contain to speak of an observation (checked on the report text alone).
MENTIONS = {
    "Cardiomegaly": r"cardiomegaly|heart|cardiac silhouette|cardiomediastinal",
    "Pleural Effusion": r"effusion|costophrenic",
    "Pneumothorax": r"pneumothorax|\bPTX\b",
    "Consolidation": r"consolidation|pneumonia|lungs are (?:well expanded and )?clear",
    "Lung Lesion": r"nodul",
    "Atelectasis": r"atelectasis",
    "Edema": r"edema",
    "Support Devices": r"tube|catheter|IJ line|subclavian line|pacemaker|\bETT\b|\bNGT\b|devices",
}
NEGATION = r"\bno\b|normal|\bsharp\b|\bclear\b"
UNCERTAIN = r"possibl[ey]|cannot be excluded|\bmay (?:represent|reflect)\b|borderline"
KIND_LABEL = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "nodule": "Lung Lesion",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    "support_device": "Support Devices",
}


def _sentences(report):
    body = re.sub(r"\b\d+\. ", "", report.replace("FINDINGS:", "").replace("IMPRESSION:", ""))
    return [s.strip() for s in re.split(r"(?<=[.;])\s+", body) if s.strip()]


def _side_words(side):
    return {"left": r"\bleft\b|\bL\b", "right": r"\bright\b|\bR\b", "bilateral": r"(?i:bilateral|bibasilar|both)"}[side]


@pytest.fixture(scope="module")
def studies():
    return list(generate_synthcxr(400, size=16, seed=11))


def test_mix_covers_every_kind_and_normal_studies_are_common(studies):
    kinds = {f.kind for s in studies for f in s.findings}
    assert kinds == set(FINDING_KINDS)
    normal = sum(s.is_normal for s in studies) / len(studies)
    assert 0.3 < normal < 0.6
    assert {s.view for s in studies} == {"PA", "AP"}
    assert all(s.labels.keys() == set(CHEXPERT_LABELS) for s in studies)


def test_labels_agree_with_report_text(studies):
    for study in studies:
        sentences = _sentences(study.report)
        for label, pattern in MENTIONS.items():
            mentioning = [s for s in sentences if re.search(pattern, s, re.IGNORECASE)]
            value = study.labels[label]
            where = f"study {study.index} {label}={value}: {study.report!r}"
            if value == 1:
                assert any(
                    not re.search(NEGATION, s, re.I) and not re.search(UNCERTAIN, s, re.I) for s in mentioning
                ), where
            elif value == -1:
                assert any(re.search(UNCERTAIN, s, re.I) for s in mentioning), where
                assert not any(not re.search(NEGATION + "|" + UNCERTAIN, s, re.I) for s in mentioning), where
            elif value == 0:
                assert mentioning and all(re.search(NEGATION, s, re.I) for s in mentioning), where
            elif label != "Cardiomegaly" and label != "Consolidation":
                # Unmentioned. (Heart and consolidation words also occur in other observations' sentences.)
                assert not mentioning, where
        assert (study.labels["No Finding"] == 1) == study.is_normal


def test_labels_agree_with_drawn_findings_and_sides_are_reported(studies):
    for study in studies:
        sentences = _sentences(study.report)
        for finding in study.findings:
            label = KIND_LABEL[finding.kind]
            assert study.labels[label] == (-1 if finding.uncertain else 1), (study.index, finding)
            if finding.kind == "support_device":
                continue
            mentioning = [s for s in sentences if re.search(MENTIONS[label], s, re.I)]
            if finding.location in LOBE_NAMES:
                lobe = f"{finding.location}|{LOBE_NAMES[finding.location]}"
                assert any(re.search(lobe, s) for s in mentioning), (study.index, finding, study.report)
            elif finding.side and finding.kind != "edema":  # edema is bilateral by nature
                assert any(re.search(_side_words(finding.side), s) for s in mentioning), (
                    study.index,
                    finding,
                    study.report,
                )
                opposite = {"left": "right", "right": "left"}.get(finding.side)
                if opposite and not any(f.kind == finding.kind and f.side != finding.side for f in study.findings):
                    assert not any(re.search(rf"\b{opposite}\b", s) for s in mentioning), (study.index, study.report)
        absent = {KIND_LABEL[k] for k in FINDING_KINDS} - {KIND_LABEL[f.kind] for f in study.findings}
        for label in absent:
            assert study.labels[label] in (0, None), (study.index, label, study.report)


def test_questions_agree_with_findings(studies):
    answer_types = set()
    for study in studies:
        certain = [f for f in study.findings if not f.uncertain]
        for qa in study.qa:
            answer_types.add(qa["answer_type"])
            assert (qa["answer"] in ("yes", "no")) == (qa["answer_type"] == "CLOSED"), qa
            side_question = re.fullmatch(r"Is there a (left|right) (pleural effusion|pneumothorax)\?", qa["question"])
            if side_question:
                side, name = side_question.groups()
                kind = name.replace(" ", "_")
                present = any(f.kind == kind and side in f.sides for f in certain)
                assert qa["answer"] == ("yes" if present else "no"), (study.index, qa, study.findings)
            which_side = re.fullmatch(r"Which side is the (pleural effusion|pneumothorax) on\?", qa["question"])
            if which_side:
                (finding,) = [f for f in certain if f.kind == which_side.group(1).replace(" ", "_")]
                assert qa["answer"] == finding.side
            where = re.fullmatch(r"Where is the (nodule|consolidation)\?", qa["question"])
            if where:
                (finding,) = [f for f in certain if f.kind == where.group(1)]
                assert qa["answer"] == LOBE_NAMES[finding.location]
            if qa["question"] in ("Is this chest x-ray normal?", "Is this a normal study?"):
                assert qa["answer"] == ("yes" if study.is_normal else "no")
            if qa["question_type"] == "PLANE":
                assert qa["answer"] == study.view
    assert answer_types == {"CLOSED", "OPEN"}
    closed = [qa["answer"] for s in studies for qa in s.qa if qa["answer_type"] == "CLOSED"]
    assert 0.3 < closed.count("yes") / len(closed) < 0.7, "closed answers are balanced"


def test_uncertain_findings_are_hedged_and_subtle():
    studies = list(
        generate_synthcxr(
            60, size=16, seed=3, uncertain_rate=1.0, mix={"cardiomegaly": 1, "pleural_effusion": 1}, max_findings=1
        )
    )
    for study in studies:
        (finding,) = study.findings
        assert finding.uncertain and study.labels[KIND_LABEL[finding.kind]] == -1
        assert re.search(UNCERTAIN, study.report, re.I)
        if finding.kind == "cardiomegaly":
            assert 0.5 < finding.ctr < 0.55, "a borderline heart"
        else:
            assert finding.severity == "small"
        words = ("heart", "cardio") if finding.kind == "cardiomegaly" else ("effusion", "fluid", "abnormal")
        assert not any(
            word in qa["question"] for qa in study.qa for word in words
        ), "hedged findings are not asked about"


def _signature(study):
    return (study.image.tobytes(), study.report, study.labels, study.findings, study.qa, study.view, study.dicom_id)


def test_same_seed_same_bytes_and_different_seeds_differ():
    first = [_signature(s) for s in generate_synthcxr(6, size=48, seed=4)]
    again = [_signature(s) for s in generate_synthcxr(6, size=48, seed=4)]
    other = [_signature(s) for s in generate_synthcxr(6, size=48, seed=5)]
    assert first == again
    assert all(a[0] != b[0] for a, b in zip(first, other))
    assert sum(a[1] != b[1] for a, b in zip(first, other)) >= 3


def test_study_depends_only_on_seed_and_index():
    whole = [_signature(s) for s in generate_synthcxr(8, size=32, seed=9)]
    assert [_signature(s) for s in generate_synthcxr(3, size=32, seed=9, start=5)] == whole[5:]
    assert [_signature(s) for s in generate_synthcxr(2, size=32, seed=9)] == whole[:2]
    assert [_signature(s) for s in generate_synthcxr(8, size=32, seed=9, num_workers=2)] == whole


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": -1}, "n must"),
        ({"n": 1, "seed": -3}, "seed must"),
        ({"n": 1, "size": 8}, "size must"),
        ({"n": 1, "mix": {"flu": 1.0}}, "unknown kinds"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(generate_synthcxr(**kwargs))


def test_text_and_findings_do_not_depend_on_image_size():
    small = [(s.report, s.labels, s.findings, s.qa) for s in generate_synthcxr(5, size=16, seed=2)]
    large = [(s.report, s.labels, s.findings, s.qa) for s in generate_synthcxr(5, size=96, seed=2)]
    assert small == large
