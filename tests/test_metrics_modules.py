"""The `evaluate` metric modules in train/metrics/: each loads by path offline, agrees with the library it
wraps called directly on the same data, and rejects bad input with an error that names the problem."""

import ast
import os
import random
import sys
import time
import warnings

import evaluate
import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from rouge_score import rouge_scorer, tokenizers
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from processing.synthcxr.findings import sample_findings
from processing.synthcxr.reports import write_report
from train.metrics import METRIC_NAMES, load_metric, metric_path
from train.zero_shot_eval import retrieval_recall

THIRD_PARTY_ROOTS = {"datasets", "evaluate", "numpy", "sklearn", "rouge_score", "pycocoevalcap", "scipy"}
STANDARD_LIBRARY_ROOTS = {"math", "re", "warnings"}
PROJECT_MODULES = {"train.metrics.bootstrap"}  # the shared resampling, imported from the installed project


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_module_loads_by_path_offline_as_a_documented_metric(name):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    metric = load_metric(name)
    assert isinstance(metric, evaluate.Metric) and metric.name == name
    assert metric.info.description.strip() and metric.info.citation.strip() and metric.info.features
    # evaluate copies the file into its cache, away from the project: only installed packages resolve there.
    imports = [node for node in ast.walk(ast.parse((metric_path(name) / f"{name}.py").read_text()))
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = {alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in imports if isinstance(node, ast.ImportFrom) and not node.level}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in imports)
    roots = {module.split(".")[0] for module in modules - PROJECT_MODULES}
    assert roots <= THIRD_PARTY_ROOTS | STANDARD_LIBRARY_ROOTS, roots


def test_unknown_metric_name_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'medvl_bleu'"):
        load_metric("medvl_bleu")


# --- medvl_auroc -------------------------------------------------------------------------------------------


def auroc_data(rows=48, seed=0):
    """Three informative labels with unknown entries (-100 and NaN) and a fourth with one class only."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(rows, 4)).astype(float)
    scores = targets + rng.normal(scale=0.8, size=targets.shape)
    targets[rng.random(rows) < 0.2, 0] = -100
    targets[rng.random(rows) < 0.2, 1] = np.nan
    targets[:, 3] = 1.0
    return scores, targets, ["Edema", "Effusion", "Atelectasis", "Support Devices"]


def test_auroc_equals_sklearn_per_label_on_known_entries_and_macro_over_two_class_labels():
    scores, targets, names = auroc_data()
    result = load_metric("medvl_auroc").compute(
        predictions=scores.tolist(), references=targets.tolist(), label_names=names, bootstrap_samples=0
    )
    expected = {}
    for column, name in enumerate(names[:3]):
        known = (targets[:, column] == 0) | (targets[:, column] == 1)
        expected[name] = roc_auc_score(targets[known, column], scores[known, column])
    assert result["auroc_per_label"] == pytest.approx(expected)
    assert result["auroc_macro"] == pytest.approx(np.mean(list(expected.values())))
    assert result["labels_in_macro"] == names[:3] and result["labels_without_both_classes"] == ["Support Devices"]

    subset = load_metric("medvl_auroc").compute(
        predictions=scores.tolist(), references=targets.tolist(), label_names=names,
        macro_labels=["Edema", "Effusion"], bootstrap_samples=0,
    )
    assert subset["auroc_macro"] == pytest.approx((expected["Edema"] + expected["Effusion"]) / 2)


def test_auroc_on_one_binary_column_equals_sklearn():
    scores, targets, _ = auroc_data()
    column = targets[:, 2]
    result = load_metric("medvl_auroc").compute(predictions=scores[:, 2], references=column, bootstrap_samples=0)
    assert result["auroc_per_label"] == {"label_0": pytest.approx(roc_auc_score(column, scores[:, 2]))}


def test_auroc_bootstrap_interval_contains_the_estimate_and_follows_the_seed():
    scores, targets, names = auroc_data()
    arguments = dict(
        predictions=scores.tolist(), references=targets.tolist(), label_names=names, bootstrap_samples=60
    )
    first = load_metric("medvl_auroc").compute(seed=3, **arguments)
    again = load_metric("medvl_auroc").compute(seed=3, **arguments)
    other = load_metric("medvl_auroc").compute(seed=4, **arguments)
    low, high = first["auroc_macro_ci"]
    assert low <= first["auroc_macro"] <= high and low < high
    for name, (low, high) in first["auroc_per_label_ci"].items():
        assert low <= first["auroc_per_label"][name] <= high
    assert "Support Devices" not in first["auroc_per_label_ci"]
    assert again == first and other["auroc_macro_ci"] != first["auroc_macro_ci"]


def test_auroc_skips_and_counts_resamples_that_lack_a_class():
    # One positive among eight rows: about 1 - (7/8)**8 = 66% of resamples contain it.
    result = load_metric("medvl_auroc").compute(
        predictions=[0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], references=[1, 0, 0, 0, 0, 0, 0, 0],
        bootstrap_samples=50, seed=0,
    )
    assert 5 < result["bootstrap_skipped"]["label_0"] < 30
    assert result["bootstrap_skipped_macro"] == result["bootstrap_skipped"]["label_0"]


def test_auroc_warns_on_an_inverted_column_only():
    scores, targets, names = auroc_data(rows=80)
    scores[:, 1] = -scores[:, 1]
    with pytest.warns(UserWarning, match="swapped label column") as caught:
        load_metric("medvl_auroc").compute(
            predictions=scores.tolist(), references=targets.tolist(), label_names=names, bootstrap_samples=40
        )
    message = next(str(warning.message) for warning in caught if "swapped" in str(warning.message))
    assert "Effusion" in message and "Edema" not in message and "Atelectasis" not in message

    scores[:, 1] = -scores[:, 1]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*swapped label column")
        load_metric("medvl_auroc").compute(
            predictions=scores.tolist(), references=targets.tolist(), label_names=names, bootstrap_samples=40
        )


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (dict(predictions=[], references=[]), "empty predictions"),
        (dict(predictions=[0.2, 0.7, 0.4], references=[0, 1]),
         r"Mismatch in the number of predictions \(3\) and references \(2\)"),
        (dict(predictions=[[0.2, 0.7]], references=[[0, 1, 1]]), r"predictions \(1, 2\) and references \(1, 3\)"),
        (dict(predictions=[[0.2, 0.7]], references=[[0, 1]], label_names=["Edema"]), "1 label_names"),
        (dict(predictions=[[0.2, 0.7]], references=[[0, 1]], label_names=["Edema", "Effusion"],
              macro_labels=["Edema", "Edma"]), r"unknown label name\(s\) \['Edma'\]"),
        (dict(predictions=[0.2, 0.7, 0.4], references=[0, 1, -1]), r"non-binary targets \[-1.0\] for label 'label_0'"),
        (dict(predictions=[0.2, float("nan")], references=[0, 1]), "NaN or infinite scores"),
    ],
)
def test_auroc_rejects_bad_input_by_name(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        load_metric("medvl_auroc").compute(bootstrap_samples=0, **arguments)


# --- medvl_classification ----------------------------------------------------------------------------------


def test_classification_multi_class_equals_sklearn_with_majority_baseline():
    rng = np.random.default_rng(1)
    references = rng.choice(3, size=40, p=[0.6, 0.3, 0.1])
    predictions = np.where(rng.random(40) < 0.7, references, rng.integers(0, 3, 40))
    result = load_metric("medvl_classification").compute(predictions=predictions, references=references)
    assert result == pytest.approx({
        "accuracy": accuracy_score(references, predictions),
        "f1_macro": f1_score(references, predictions, average="macro", zero_division=0),
        "f1_micro": f1_score(references, predictions, average="micro", zero_division=0),
        "majority_baseline_accuracy": np.bincount(references).max() / 40,
    })


def test_classification_multi_label_thresholds_scores_and_equals_sklearn():
    rng = np.random.default_rng(2)
    references = (rng.random((30, 4)) < 0.3).astype(int)
    references[:12] = 0  # the most common row: no finding
    scores = np.clip(references * 0.6 + rng.random((30, 4)) * 0.5, 0, 1)
    thresholded = (scores >= 0.5).astype(int)
    result = load_metric("medvl_classification").compute(predictions=scores.tolist(), references=references.tolist())
    assert result == pytest.approx({
        "accuracy": accuracy_score(references, thresholded),
        "f1_macro": f1_score(references, thresholded, average="macro", zero_division=0),
        "f1_micro": f1_score(references, thresholded, average="micro", zero_division=0),
        "majority_baseline_accuracy": accuracy_score(references, np.zeros_like(references)),
    })
    strict = load_metric("medvl_classification").compute(
        predictions=scores.tolist(), references=references.tolist(), threshold=0.9
    )
    expected_strict = f1_score(references, (scores >= 0.9).astype(int), average="micro", zero_division=0)
    assert strict["f1_micro"] == pytest.approx(expected_strict) and strict["f1_micro"] != result["f1_micro"]


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (dict(predictions=[], references=[]), "empty predictions"),
        (dict(predictions=[1, 0, 1], references=[1, 0]),
         r"Mismatch in the number of predictions \(3\) and references \(2\)"),
        (dict(predictions=[0.7, 0.2], references=[1, 0]), "whole class ids"),
        (dict(predictions=[[1, 0]], references=[[1, 2]]), r"non-binary multi-label references \[2.0\]"),
        (dict(predictions=[[1, 0]], references=[[1, 0, 1]]), r"predictions \(1, 2\) and references \(1, 3\)"),
    ],
)
def test_classification_rejects_bad_input_by_name(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        load_metric("medvl_classification").compute(**arguments)


# --- medvl_report_generation -------------------------------------------------------------------------------

PREDICTED_REPORTS = [
    "No acute cardiopulmonary process.",
    "Small LEFT pleural effusion; no pneumothorax.",
    "Heart size is enlarged. Lungs are clear.",
    "Right upper lobe opacity, concerning for pneumonia.",
    "No pneumothorax.",
    "Stable cardiomegaly without edema.",
]
REFERENCE_REPORTS = [
    "No acute cardiopulmonary process.",
    ["Small left pleural effusion. No pneumothorax.", "Left pleural effusion, small."],
    "The heart is enlarged. The lungs are clear.",
    "Opacity in the right upper lobe, likely pneumonia.",
    "No pneumothorax or effusion.",
    "Cardiomegaly is stable. No pulmonary edema.",
]


def test_report_generation_equals_pycocoevalcap_and_rouge_score():
    result = load_metric("medvl_report_generation").compute(
        predictions=PREDICTED_REPORTS, references=REFERENCE_REPORTS, bootstrap_samples=0
    )
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
    assert " ".join(tokenizer.tokenize(PREDICTED_REPORTS[1])) == "small left pleural effusion no pneumothorax"
    references = [[report] if isinstance(report, str) else report for report in REFERENCE_REPORTS]
    hypotheses = {row: [" ".join(tokenizer.tokenize(report))] for row, report in enumerate(PREDICTED_REPORTS)}
    gold = {row: [" ".join(tokenizer.tokenize(report)) for report in reports]
            for row, reports in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gold, hypotheses, verbose=0)
    cider, _ = Cider().compute_score(gold, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge_l = np.mean([scorer.score_multi(reports, report)["rougeL"].fmeasure
                       for report, reports in zip(PREDICTED_REPORTS, references)])
    assert result == pytest.approx({
        "bleu_1": bleu[0], "bleu_2": bleu[1], "bleu_3": bleu[2], "bleu_4": bleu[3], "cider": cider, "rouge_l": rouge_l,
    })
    assert 0 < result["bleu_4"] < result["bleu_1"] < 1 and result["cider"] > 0
    with_intervals = load_metric("medvl_report_generation").compute(
        predictions=PREDICTED_REPORTS, references=REFERENCE_REPORTS, bootstrap_samples=20
    )
    assert {name: with_intervals[name] for name in result} == result


def test_report_generation_takes_a_string_or_a_list_as_reference():
    metric = load_metric("medvl_report_generation")
    references = ["no acute process", "left effusion", "clear lungs"]
    as_strings = metric.compute(predictions=PREDICTED_REPORTS[:3], references=references, bootstrap_samples=20)
    as_lists = metric.compute(predictions=PREDICTED_REPORTS[:3], references=[[report] for report in references],
                              bootstrap_samples=20)
    assert as_strings == as_lists and as_strings["rouge_l"] > 0


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (dict(predictions=[], references=[]), "empty predictions"),
        (dict(predictions=["no effusion"], references=["no effusion", "edema"]),
         r"Mismatch in the number of predictions \(1\) and references \(2\)"),
        (dict(predictions=["no effusion", "edema"], references=[["no effusion"], []]),
         r"no reference report for studies \[1\]"),
        (dict(predictions=["no effusion"], references=["no effusion"], bootstrap_samples=-1),
         "medvl_report_generation: bootstrap_samples must be a whole number >= 0, got -1"),
        (dict(predictions=["no effusion"], references=["no effusion"], bootstrap_samples=2.5),
         "bootstrap_samples must be a whole number >= 0, got 2.5"),
    ],
)
def test_report_generation_rejects_bad_input_by_name(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        load_metric("medvl_report_generation").compute(**arguments)


def synthcxr_reports(count, seed):
    """`count` SynthCXR findings-and-impression reports, drawn as the generator writes them."""
    reports = []
    for index in range(count):
        findings, impression, _ = write_report(sample_findings(np.random.default_rng([seed, index])), "PA",
                                               random.Random(f"{seed}:{index}"))
        reports.append(f"{findings} {impression}")
    return reports


def report_generation_module():
    metric = load_metric("medvl_report_generation")
    return sys.modules[type(metric).__module__]


@pytest.mark.parametrize("draw", [None, 0, 1])
def test_report_generation_resamples_score_as_pycocoevalcap_on_the_resampled_corpus(draw):
    """Each resample's BLEU and CIDEr-D (document frequencies of the resample) equal pycocoevalcap's on a corpus that
    holds each study as often as it was drawn; None: the whole corpus once."""
    module = report_generation_module()
    hypotheses = [module.tokenize(report) for report in synthcxr_reports(60, seed=1)]
    gold = [[module.tokenize(report)] for report in synthcxr_reports(60, seed=2)]
    gold[3].append(module.tokenize(REFERENCE_REPORTS[1][0]))  # a study with two references
    rows = np.arange(60) if draw is None else np.random.default_rng(draw).integers(0, 60, 60)
    corpus = {key: gold[row] for key, row in enumerate(rows)}, {key: [hypotheses[row]] for key, row in enumerate(rows)}
    weights = np.bincount(rows, minlength=60)[None]
    assert module.cider_resampled(hypotheses, gold, weights)[0] == pytest.approx(Cider().compute_score(*corpus)[0])
    assert module.bleu_resampled(hypotheses, gold, weights)[0] == pytest.approx(
        Bleu(4).compute_score(*corpus, verbose=0)[0])


def test_report_generation_intervals_contain_the_estimate_narrow_with_more_studies_and_follow_the_seed():
    predicted, references = synthcxr_reports(240, seed=1), synthcxr_reports(240, seed=2)
    metric = load_metric("medvl_report_generation")
    few = metric.compute(predictions=predicted[:30], references=references[:30], bootstrap_samples=200, seed=5)
    many = metric.compute(predictions=predicted, references=references, bootstrap_samples=200, seed=5)
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l"):
        for result in (few, many):
            low, high = result[f"{name}_ci"]
            assert low <= result[name] <= high and low < high, (name, result)
        assert np.diff(many[f"{name}_ci"]) < np.diff(few[f"{name}_ci"]), name
    assert metric.compute(predictions=predicted[:30], references=references[:30], bootstrap_samples=200,
                          seed=5) == few
    other = metric.compute(predictions=predicted[:30], references=references[:30], bootstrap_samples=200, seed=6)
    assert other["cider_ci"] != few["cider_ci"] and other["cider"] == few["cider"]


def test_report_generation_intervals_of_300_reports_take_seconds():
    """Rescoring each resample with pycocoevalcap would take about 0.3 s per resample for each of BLEU and CIDEr."""
    predicted, references = synthcxr_reports(300, seed=1), synthcxr_reports(300, seed=2)
    metric = load_metric("medvl_report_generation")
    started = time.perf_counter()
    metric.compute(predictions=predicted, references=references, bootstrap_samples=0)
    point = time.perf_counter() - started
    started = time.perf_counter()
    metric.compute(predictions=predicted, references=references, bootstrap_samples=200)
    assert time.perf_counter() - started - point < 10


@pytest.mark.parametrize("studies", [1, 5])
def test_report_generation_on_one_report_gives_single_value_intervals(studies):
    """One study, or studies that all repeat it: every resample is the same corpus. CIDEr is 0 (every n-gram is in
    every reference: IDF 0), a number, not NaN."""
    result = load_metric("medvl_report_generation").compute(
        predictions=["Small left pleural effusion."] * studies, references=["small left pleural effusion"] * studies,
        bootstrap_samples=50,
    )
    assert result["cider"] == 0 and result["cider_ci"] == (0, 0)
    for name in ("bleu_1", "bleu_4", "rouge_l"):
        assert result[name] == pytest.approx(1) and result[f"{name}_ci"] == pytest.approx((1, 1))
    assert not any(np.isnan(value).any() for value in result.values())


# --- medvl_vqa ---------------------------------------------------------------------------------------------


def test_vqa_normalises_answers_and_splits_closed_from_open():
    result = load_metric("medvl_vqa").compute(
        predictions=["Yes.", "The Left-Lung", "no", "right  lung", "an effusion"],
        references=["yes", "left lung", "yes", "left lung", "Effusion!"],
        answer_types=["CLOSED", "open", "CLOSED", "OPEN", "OPEN"], bootstrap_samples=0,
    )
    assert result == {
        "accuracy": pytest.approx(3 / 5), "closed_accuracy": 0.5, "open_accuracy": pytest.approx(2 / 3),
        "num_closed": 2, "num_open": 3, "out_of_vocabulary": 0,
    }


def test_vqa_counts_an_answer_outside_the_vocabulary_as_wrong():
    arguments = dict(predictions=["yes", "pleural effusion", "no"], references=["yes", "pleural effusion", "yes"],
                     answer_types=["CLOSED", "OPEN", "CLOSED"])
    assert load_metric("medvl_vqa").compute(**arguments)["accuracy"] == pytest.approx(2 / 3)
    result = load_metric("medvl_vqa").compute(answer_vocabulary=["Yes", "no", "the pneumothorax"], **arguments)
    assert result["out_of_vocabulary"] == 1 and result["num_open"] == 1 and result["open_accuracy"] == 0.0
    assert result["accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (dict(predictions=[], references=[], answer_types=[]), "empty predictions"),
        (dict(predictions=["yes"], references=["yes", "no"], answer_types=["CLOSED", "CLOSED"]),
         r"Mismatch in the number of predictions \(1\) and references \(2\)"),
        (dict(predictions=["yes"], references=["yes"], answer_types=["YES/NO"]),
         r"unknown answer type\(s\) \['YES/NO'\]"),
        (dict(predictions=["yes"], references=["yes"], answer_types=["CLOSED"], bootstrap_samples=-5),
         "medvl_vqa: bootstrap_samples must be a whole number >= 0, got -5"),
    ],
)
def test_vqa_rejects_bad_input_by_name(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        load_metric("medvl_vqa").compute(**arguments)


def vqa_answers(questions, seed):
    """Half closed questions answered right with probability 0.8, half open with 0.5."""
    rng = np.random.default_rng(seed)
    types = ["CLOSED", "OPEN"] * (questions // 2)
    right = rng.random(questions) < np.where(np.array(types) == "CLOSED", 0.8, 0.5)
    references = [f"answer {index}" for index in range(questions)]
    predictions = [reference if ok else "wrong" for reference, ok in zip(references, right)]
    return dict(predictions=predictions, references=references, answer_types=types)


def test_vqa_intervals_contain_the_estimate_narrow_with_more_questions_and_follow_the_seed():
    metric = load_metric("medvl_vqa")
    few = metric.compute(**vqa_answers(40, seed=0), bootstrap_samples=300, seed=1)
    many = metric.compute(**vqa_answers(800, seed=0), bootstrap_samples=300, seed=1)
    for name in ("accuracy", "closed_accuracy", "open_accuracy"):
        for result in (few, many):
            low, high = result[f"{name}_ci"]
            assert low <= result[name] <= high and low < high, (name, result)
        assert np.diff(many[f"{name}_ci"]) < np.diff(few[f"{name}_ci"]) / 2, name
    assert few["bootstrap_skipped"] == {"closed_accuracy": 0, "open_accuracy": 0}
    assert metric.compute(**vqa_answers(40, seed=0), bootstrap_samples=300, seed=1) == few
    assert metric.compute(**vqa_answers(40, seed=0), bootstrap_samples=300, seed=2)["accuracy_ci"] != few["accuracy_ci"]


def test_vqa_intervals_of_a_lone_question_and_of_a_missing_kind():
    """One question: its accuracy as a single-value interval. No open question: NaN open accuracy and interval, every
    resample counted as skipped for it; a rare kind: the resamples without it counted."""
    one = load_metric("medvl_vqa").compute(predictions=["yes"], references=["Yes"], answer_types=["CLOSED"],
                                           bootstrap_samples=30)
    assert one["accuracy_ci"] == (1.0, 1.0) and one["closed_accuracy_ci"] == (1.0, 1.0)
    assert np.isnan(one["open_accuracy"]) and np.isnan(one["open_accuracy_ci"]).all()
    assert one["bootstrap_skipped"] == {"closed_accuracy": 0, "open_accuracy": 30}
    rare = load_metric("medvl_vqa").compute(predictions=["yes"] * 10, references=["yes"] * 9 + ["left"],
                                            answer_types=["CLOSED"] * 9 + ["OPEN"], bootstrap_samples=200)
    # P(a resample of 10 lacks the open question) = 0.9 ** 10, about 35%.
    assert 40 < rare["bootstrap_skipped"]["open_accuracy"] < 110 and rare["open_accuracy_ci"] == (0.0, 0.0)


# --- medvl_retrieval ---------------------------------------------------------------------------------------


def test_retrieval_recall_both_ways_with_identical_reports_as_hits():
    # Image 0 ranks report 1 first; image 1 ranks report 2 first, then its own; report 2 retrieves image 1 first.
    similarity = [[0.5, 0.9, 0.1], [0.1, 0.6, 0.8], [0.0, 0.2, 0.7]]
    plain = load_metric("medvl_retrieval").compute(similarity=similarity, ks=[1, 2, 5])
    assert plain["image_to_text_recall@1"] == pytest.approx(1 / 3) and plain["image_to_text_recall@2"] == 1.0
    assert plain["text_to_image_recall@1"] == pytest.approx(1 / 3) and plain["text_to_image_recall@2"] == 1.0
    assert plain["chance_recall@1"] == pytest.approx(1 / 3) and plain["image_to_text_recall@5"] == 1.0
    # Reports 1 and 2 are the same text: image 1's first pick is now a hit, and so is report 2's.
    grouped = load_metric("medvl_retrieval").compute(
        similarity=similarity, group_ids=["normal", "effusion", "effusion"], ks=[1]
    )
    assert grouped["image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert grouped["text_to_image_recall@1"] == pytest.approx(2 / 3)
    assert grouped["chance_recall@1"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)


def unit_rows(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_retrieval_from_embeddings_matches_the_similarity_matrix_and_zero_shot_eval():
    rng = np.random.default_rng(5)
    images, texts = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    reports = [f"report {row % 12}" for row in range(30)]
    images, texts = unit_rows(images), unit_rows(texts)
    from_embeddings = load_metric("medvl_retrieval").compute(image_embeds=images, text_embeds=texts, group_ids=reports)
    from_matrix = load_metric("medvl_retrieval").compute(similarity=images @ texts.T, group_ids=reports)
    assert from_embeddings == pytest.approx(from_matrix)
    # zero_shot_eval's image-to-text recall is the module's implementation, reports as group ids.
    zero_shot = retrieval_recall(images, texts, reports)
    for k in (1, 5, 10):
        assert zero_shot[f"recall@{k}"] == pytest.approx(from_matrix[f"image_to_text_recall@{k}"])
        assert zero_shot[f"chance_recall@{k}"] == pytest.approx(from_matrix[f"chance_recall@{k}"])
    assert from_matrix["image_to_text_recall@10"] != from_matrix["text_to_image_recall@10"]


def test_retrieval_accumulates_batches_of_similarity_rows():
    metric = load_metric("medvl_retrieval")
    similarity = np.eye(4)[[1, 0, 2, 3]]
    metric.add_batch(similarity=similarity[:2], group_ids=[0, 1])
    metric.add_batch(similarity=similarity[2:], group_ids=[2, 3])
    assert metric.compute(ks=[1])["image_to_text_recall@1"] == 0.5


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (dict(similarity=np.zeros((0, 0))), r"non-empty square .* got shape \(0, 0\)"),
        (dict(similarity=np.ones((3, 2))), r"square \(N images, N reports\) matrix .* got shape \(3, 2\)"),
        (dict(similarity=np.ones(3)), r"similarity must be 2-D, got shape \(3,\)"),
        (dict(similarity=np.eye(3), group_ids=[0, 1]),
         r"Mismatch in the number of similarity \(3\) and group_ids \(2\)"),
        (dict(image_embeds=np.ones((3, 4)), text_embeds=np.ones((3, 5))), "differ in embedding size"),
        (dict(similarity=np.eye(3), image_embeds=np.eye(3), text_embeds=np.eye(3)),
         "or both `image_embeds` and `text_embeds`"),
        (dict(similarity=np.eye(3), ks=[0, 5]), "ks must be positive whole numbers"),
    ],
)
def test_retrieval_rejects_bad_input_by_name(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        load_metric("medvl_retrieval").compute(**arguments)
