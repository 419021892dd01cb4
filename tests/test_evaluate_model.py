"""train/evaluate_model.py: bad input named clearly, the label-order check on a swapped column, and whole runs of a
tiny classifier and a tiny pretraining checkpoint (zero-shot) on generated SynthCXR with patient metadata, of a tiny
report generator, and of a short VQA run's generator and classifier, with bootstrap intervals."""

import json
import types
import warnings

import datasets
import numpy as np
import pytest
import torch

from modeling_medvl import MedVLConfig, MedVLForConditionalGeneration, MedVLForImageClassification, MedVLForPreTraining
from processing import write_synthcxr
from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer
from train.clinical_eval import LabelOrderWarning, check_predictions, evaluate_auroc
from train.evaluate_generation import generation_task, load_vqa_split
from train.evaluate_model import evaluate_predictions, main
from train.finetune import main as finetune
from train.finetune_generation import generate_report_texts, report_scores
from train.finetune_model import build_image_processor, label_config, load_processor
from train.finetune_report_data import normalized_reports
from train.finetune_vqa_open import OPEN_FOLDER
from train.metrics import load_metric
from train.pretrain_setup import build_processor, token_ids

LABELS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
DATA = "synthcxr:n=48,size=64,seed=3"
FAST = ["--bootstrap_samples", "20", "--subgroup_bootstrap_samples", "10", "--min_group_size", "5",
        "--batch_size", "24"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "checkpoint-best"
    config = MedVLConfig.from_preset("tiny-convnext", **label_config(LABELS))
    MedVLForImageClassification(config).save_pretrained(str(folder))
    build_image_processor(64).save_pretrained(str(folder))
    return folder


def test_bad_predictions_are_named():
    with pytest.raises(ValueError, match="empty prediction list"):
        check_predictions([], [], LABELS)
    with pytest.raises(ValueError, match="mismatched lengths: 3 predictions but 2 targets"):
        check_predictions(np.zeros((3, 3)), np.zeros((2, 3)), LABELS)
    with pytest.raises(ValueError, match=r"shape \(2, 2\), not one column per label"):
        check_predictions(np.zeros((2, 2)), np.zeros((2, 2)), LABELS)
    with pytest.raises(ValueError, match="empty prediction list"):
        evaluate_auroc([], [], LABELS)


def test_unknown_label_and_missing_model_are_named_before_any_data_is_made(classifier, tmp_path):
    out = tmp_path / "eval.json"
    with pytest.raises(ValueError, match=r"unknown label name\(s\) \['Flu'\]: the model's classification head has"):
        main(["--model", str(classifier), "--data", DATA, "--labels", "Cardiomegaly", "Flu", "--out", str(out)])
    config = tmp_path / "eval.yaml"  # --config YAML, like the training scripts; the command line wins
    config.write_text(f"model: {classifier}\ndata: {DATA}\nlabels: [Flu]\n")
    with pytest.raises(ValueError, match=r"\['Flu'\]"):
        main(["--config", str(config), "--out", str(out)])
    with pytest.raises(ValueError, match=r"\['Pneumonia'\]"):
        main(["--config", str(config), "--labels", "Pneumonia", "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        main(["--model", str(tmp_path), "--data", DATA, "--out", str(out)])
    with pytest.raises(ValueError, match="--data: give a labelled source"):
        main(["--model", str(classifier)])
    assert not (tmp_path / "data_cache").exists()


def _separable(n=120, seed=0):
    """Logits that rank three labels well; the second and third labels' targets are complements."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, 2, n), rng.integers(0, 2, n)
    targets = np.stack([first, second, 1 - second], axis=1).astype(float)
    return 3 * (targets - 0.5) + rng.normal(0, 1, targets.shape), targets


def test_a_swapped_label_column_warns_naming_the_labels(tmp_path):
    logits, targets = _separable()
    args = types.SimpleNamespace(bootstrap_samples=50, subgroup_bootstrap_samples=0, seed=0, threshold=0.5,
                                 calibration_bins=10, min_group_size=20)
    swapped = targets[:, [0, 2, 1]]  # the data's Pleural Effusion and Pneumothorax columns exchanged
    with pytest.warns(LabelOrderWarning, match=r"\['Pleural Effusion', 'Pneumothorax'\]") as caught:
        results = evaluate_predictions(logits, swapped, LABELS, {}, args, tmp_path)
    assert len(caught) == 1 and "Cardiomegaly" not in str(caught[0].message)
    assert results["label_order_check"]["ok"] is False
    assert set(results["label_order_check"]["labels_below_chance"]) == {"Pleural Effusion", "Pneumothorax"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelOrderWarning)
        assert evaluate_predictions(logits, targets, LABELS, {}, args, tmp_path)["label_order_check"]["ok"] is True


def test_classifier_run_writes_every_number_and_figure(classifier, tmp_path, capsys):
    out = tmp_path / "eval.json"
    results = main(["--model", str(classifier), "--data", DATA, "--split", "test", "--out", str(out), *FAST])
    saved = json.loads(out.read_text())
    assert saved["mode"] == "classification" and saved["label_names"] == LABELS and saved["num_studies"] == 48
    assert set(saved["auroc_per_label_ci"]) == set(saved["auroc_per_label"])
    assert 0 <= saved["calibration"]["ece"] <= 1 and len(saved["calibration"]["bins"]) == 10
    assert set(saved["subgroups"]) == {"sex", "age_band", "view"} and saved["subgroup_attributes_absent"] == ["site"]
    studies = list(generate_synthcxr(48, size=64, seed=3))
    assert saved["subgroups"]["sex"]["groups"]["female"]["count"] == sum(s.sex == "F" for s in studies)
    for record in saved["subgroups"].values():
        assert sum(group["count"] for group in record["groups"].values()) + record["missing"] == 48
    assert saved["largest_subgroup_gap"] == results["largest_subgroup_gap"]
    for path in [*saved["figures"]["roc_curves"], saved["figures"]["confusion_matrix"], saved["figures"]["reliability"],
                 saved["figures"]["subgroups"]]:
        assert path.endswith(".png") and (tmp_path / "eval_figures").exists() and open(path, "rb").read(4) == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "classification macro AUC" in printed and "largest subgroup gap" in printed


def test_a_seed_the_model_was_trained_on_is_refused(classifier, tmp_path):
    (classifier.parent / "run_config.yaml").write_text("data: synthcxr:n=400,size=64,seed=3\n")
    try:
        with pytest.raises(ValueError, match="seed 3 generated the model's training data"):
            main(["--model", str(classifier), "--data", DATA, "--out", str(tmp_path / "eval.json")])
    finally:
        (classifier.parent / "run_config.yaml").unlink()


@pytest.mark.filterwarnings("ignore::train.clinical_eval.LabelOrderWarning")  # an untrained model ranks at random
def test_zero_shot_run_of_a_pretraining_checkpoint(tmp_path):
    reports = [study.report for study in generate_synthcxr(60, size=16, seed=1)]
    tokenizer = train_clinical_tokenizer(reports, vocab_size=300, style="bert", max_length=64)
    config = MedVLConfig.from_preset("tiny-convnext", text_config=token_ids(tokenizer))
    folder = tmp_path / "pretrained"
    MedVLForPreTraining(config).save_pretrained(str(folder))
    build_processor(tokenizer, 64).save_pretrained(str(folder))
    out = tmp_path / "zs.json"
    results = main(["--model", str(folder), "--data", DATA, "--labels", "Cardiomegaly", "Pleural Effusion",
                    "--out", str(out), *FAST])
    assert results["mode"] == "zero_shot" and results["zero_shot_prompts_version"] == "4"
    assert results["label_names"] == ["Cardiomegaly", "Pleural Effusion"]
    assert set(results["auroc_per_label"]) <= {"Cardiomegaly", "Pleural Effusion"}
    assert json.loads(out.read_text())["num_studies"] == 48


def save_generator(folder, texts):
    """An untrained tiny report decoder with a tokenizer trained on `texts` and its processor."""
    tokenizer = train_clinical_tokenizer(texts, vocab_size=300, style="bert", max_length=64)
    config = MedVLConfig.from_preset("tiny-convnext", text_config=token_ids(tokenizer))
    torch.manual_seed(0)
    MedVLForConditionalGeneration(config).save_pretrained(str(folder))
    build_processor(tokenizer, 64).save_pretrained(str(folder))
    return folder


def assert_intervals_hold_the_scores(results, names):
    for name in names:
        low, high = results[f"{name}_ci"]
        assert low <= results[name] <= high, (name, results)


def test_report_generation_run_writes_scores_with_intervals_and_examples(tmp_path, capsys):
    studies = list(generate_synthcxr(60, size=16, seed=1))
    folder = save_generator(tmp_path / "rg" / "checkpoint-best", [study.report for study in studies])
    out = tmp_path / "rg_eval.json"
    main(["--model", str(folder), "--data", DATA, "--split", "test", "--out", str(out), "--max_new_tokens", "12",
          "--html_examples", "3", *FAST])
    scores = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l")
    saved = json.loads(out.read_text())
    assert saved["mode"] == "report_generation" and saved["num_studies"] == 48 and saved["bootstrap_samples"] == 20
    assert_intervals_hold_the_scores(saved, scores)
    # The scores are the metric module's on the model's greedy reports against the normalised references.
    processor = load_processor(folder, 64)
    dataset = list(generate_synthcxr(48, size=64, seed=3))
    generated = generate_report_texts(MedVLForConditionalGeneration.from_pretrained(str(folder)), processor,
                                      [study.image for study in dataset], 12, 24)
    expected = report_scores(generated, normalized_reports(processor, [study.report for study in dataset]), 20, 0)
    assert {name: saved[name] for name in scores} == pytest.approx({name: expected[name] for name in scores})
    assert saved["cider_ci"] == pytest.approx(list(expected["cider_ci"]))
    assert open(saved["figures"]["examples"]).read().count("<img") == 3
    printed = capsys.readouterr().out
    assert "report_generation CIDEr" in printed and "95% CI" in printed and str(out) in printed


def test_a_vqa_generator_is_recognised_and_reports_are_refused_for_a_classifier(classifier, tmp_path):
    assert generation_task(tmp_path / "run" / OPEN_FOLDER / "checkpoint-best", "auto") == "vqa"
    assert generation_task(tmp_path / "run" / "checkpoint-best", "auto") == "report_generation"
    assert generation_task(tmp_path / "run" / "checkpoint-best", "vqa") == "vqa"
    with pytest.raises(ValueError, match="--task vqa: for a generating model"):
        main(["--model", str(classifier), "--data", DATA, "--task", "vqa", "--out", str(tmp_path / "eval.json")])
    with pytest.raises(ValueError, match=r"use --split test"):
        load_vqa_split("vqa-rad:/nowhere", "valid", tmp_path)


def test_a_vqa_run_evaluated_as_in_fine_tuning_by_its_generator_and_by_its_classifier(tmp_path, capsys):
    """A short VQA fine-tuning run, then evaluated on the run's validation set. Its generator alone: the open
    questions' generated answers, and so their accuracy, are those of the run's own evaluation; closed questions are
    answered too and every question is scored. Its classifier: closed answers classified, open ones generated by the
    run's generator, every accuracy that of the run's final evaluation."""
    run = tmp_path / "vqa"
    finetune(["--task", "vqa", "--data", "synthcxr:n=12,size=64,seed=3", "--validation_size", "6", "--max_steps",
              "4", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3", "--bootstrap_samples", "0",
              "--no_evaluate_initial_model", "--output_dir", str(run), "--cache_dir", str(tmp_path / "cache"),
              "--report_to", "none", "--disable_tqdm", "true"])
    trained = json.loads((run / "eval_results.json").read_text())
    out = tmp_path / "eval_open.json"
    results = main(["--model", str(run / OPEN_FOLDER / "checkpoint-best"), "--data", trained["validation_data"],
                    "--split", "valid", "--out", str(out), "--cache_dir", str(tmp_path / "cache"), *FAST])
    saved = json.loads(out.read_text())
    assert saved["mode"] == "vqa" and saved["num_questions"] == len(saved["answers"]) == trained["num_questions"]
    assert saved["num_open"] == trained["num_open"] > 0 and saved["num_closed"] == trained["num_closed"] > 0
    assert saved["open_accuracy"] == pytest.approx(trained["open_accuracy"])
    empty = sum(not row["answer"] for row in saved["answers"] if row["answer_type"] == "OPEN")
    assert empty == trained["generated_open_answers"]["empty"]
    assert_intervals_hold_the_scores(saved, ("accuracy", "closed_accuracy", "open_accuracy"))
    assert results["open_accuracy_ci"] == tuple(saved["open_accuracy_ci"])
    rows = saved["answers"]
    rescored = load_metric("medvl_vqa").compute(
        predictions=[row["answer"] for row in rows], references=[row["reference"] for row in rows],
        answer_types=[row["answer_type"] for row in rows], bootstrap_samples=20)
    assert rescored["accuracy"] == saved["accuracy"]
    assert list(rescored["closed_accuracy_ci"]) == saved["closed_accuracy_ci"]
    assert "vqa accuracy" in capsys.readouterr().out

    combined = main(["--model", str(run / "checkpoint-best"), "--data", trained["validation_data"], "--split",
                     "valid", "--out", str(tmp_path / "eval_vqa.json"), "--cache_dir", str(tmp_path / "cache"), *FAST])
    assert combined["mode"] == "vqa" and combined["answered"]["closed"] == "classified"
    assert combined["answered"]["open"].startswith("generated")
    for name in ("accuracy", "closed_accuracy", "open_accuracy"):
        assert combined[name] == pytest.approx(trained[name]), name
    assert combined["reference_answers_outside_vocabulary"] == trained["validation_answers_outside_vocabulary"]
    assert [row["answer"] for row in combined["answers"] if row["answer_type"] == "OPEN"] == \
        [row["answer"] for row in saved["answers"] if row["answer_type"] == "OPEN"]


def test_vqa_evaluation_splits_of_vqa_rad_and_of_a_saved_set(tmp_path):
    """VQA-RAD: its test questions only; a saved DatasetDict: the split asked for; missing columns named."""
    studies = list(generate_synthcxr(12, size=32, seed=14))
    write_synthcxr(tmp_path / "synth", 12, size=32, seed=14, layouts=("vqa-rad",), progress=False)
    test = load_vqa_split(f"vqa-rad:{tmp_path / 'synth' / 'vqa-rad'}", "test", tmp_path)
    assert test.column_names == ["image", "question", "answer", "answer_type"]
    assert sorted(test["question"]) == sorted(qa["question"] for s in studies if s.split == "test" for qa in s.qa)
    rows = {"image": [studies[0].image], "question": ["Is there an effusion?"], "answer": ["no"],
            "answer_type": ["CLOSED"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict(dict(rows, answer=["yes"]))}).save_to_disk(tmp_path / "qa")
    assert load_vqa_split(f"saved:{tmp_path / 'qa'}", "test", tmp_path)["answer"] == ["yes"]
    with pytest.raises(ValueError, match=r"no validation / valid / validate split"):
        load_vqa_split(f"saved:{tmp_path / 'qa'}", "valid", tmp_path)
    datasets.Dataset.from_dict({"image": rows["image"], "question": rows["question"]}).save_to_disk(tmp_path / "bare")
    with pytest.raises(ValueError, match=r"has no \['answer', 'answer_type'\] column"):
        load_vqa_split(f"saved:{tmp_path / 'bare'}", "test", tmp_path)
