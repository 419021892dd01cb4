"""The exported model card: it parses back through `ModelCard.load`, its model-index holds exactly the evaluation
JSON's metrics (with data set, split and interval), it says "not evaluated" without one, its training details come
from the run's files, and its usage snippet runs against the exported folder in a fresh process. The zero-shot folder
also carries task models in subfolders (report generator with its evaluation, classifier, VQA): the card lists them,
the model-index holds the report metrics under `report_generation (report_generation/)`, and their snippets run."""

import os
import re
import subprocess
import sys

import pytest
from export_testing import (classification_eval, report_generation_eval, synthcxr_png, write_lora_classification_run,
                            write_pretraining_run, write_report_generation_run, write_vqa_run)
from huggingface_hub import ModelCard

from hub_cards.card import card_problems
from hub_cards.export import export_folder
from train.cli_export import load_checkpoint


def export(checkpoint, out, eval_results=None, tasks=None, task_evals=None):
    model, adapter_dir, processor = load_checkpoint(checkpoint, "merge")
    task_models = {task: load_checkpoint(path, "merge")[::2] for task, path in (tasks or {}).items()}
    return export_folder(model, processor, out, eval_results=eval_results, run_dir=checkpoint.parent,
                         repo_id=f"org/{out.name}", adapter_dir=adapter_dir, task_models=task_models,
                         task_evals=task_evals)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    classifier, _, _ = write_lora_classification_run(root)
    pretrained = write_pretraining_run(root)
    export(classifier, root / "hub" / "classifier", classification_eval())
    tasks = {"report_generation": write_report_generation_run(root)[0], "vqa": write_vqa_run(root)[0],
             "classification": classifier}
    export(pretrained, root / "hub" / "zero-shot", tasks=tasks,
           task_evals={"report_generation": report_generation_eval()})
    return root / "hub" / "classifier", root / "hub" / "zero-shot"


def test_model_index_holds_exactly_the_evaluation_metrics(folders):
    card = ModelCard.load(folders[0] / "README.md")
    results = classification_eval()
    expected = {("auroc macro", results["auroc_macro"], tuple(results["auroc_macro_ci"]))}
    expected |= {(f"auroc: {label}", value, tuple(results["auroc_per_label_ci"][label]))
                 for label, value in results["auroc_per_label"].items()}
    entries = card.data.eval_results
    found = {(e.metric_name, e.metric_value, tuple(e.metric_args["confidence_interval_95"])) for e in entries}
    assert found == expected  # the majority baseline is not the model's result
    for entry in entries:
        assert (entry.dataset_type, entry.dataset_split, entry.task_type) == \
            ("synthcxr", "validation", "image-classification")
        assert entry.dataset_name == "SynthCXR (n=200,size=64,seed=1)"
        assert entry.metric_type == "roc_auc" and entry.metric_args["bootstrap_samples"] == 200
    assert card.data.pipeline_tag == "image-classification" and card.data.license == "apache-2.0"
    assert "medical" in card.data.tags and card.data.metrics == ["roc_auc"]
    assert "| auroc macro | 0.8125 | 0.750 – 0.870 |" in card.text
    assert "| majority | auroc macro | 0.5000 |" in card.text
    assert card_problems(folders[0], results) == []
    assert card_problems(folders[0], {**results, "auroc_macro": 0.9})  # a different number is caught


def test_a_card_without_evaluation_says_so_and_reports_the_run(folders):
    card = ModelCard.load(folders[1] / "README.md")
    assert "**Not evaluated.** No evaluation results were given for this folder" in card.text
    assert {entry.task_name for entry in card.data.eval_results} == {"report_generation (report_generation/)"}
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.datasets == ["synthcxr"]
    for row in ("| Global batch | 128 |", "| Processes (devices) | 2 |", "| Optimiser steps | 300 |",
                "| Training time (s) | 559.0 |", "| Learning rate | 0.0005 |", "| transformers |"):
        assert row in card.text
    assert "not a medical device" in card.text.lower() and "## Out-of-scope use" in card.text
    assert "No subgroup evaluation" in card.text and "de-identif" in card.text.lower()
    assert card_problems(folders[1]) == []


def test_the_card_lists_each_task_model_with_its_evaluation(folders):
    card = ModelCard.load(folders[1] / "README.md")
    for row in ("| report_generation | `report_generation/` | `AutoModelForImageTextToText` |",
                "| classification | `classification/` | `AutoModelForImageClassification` |",
                "| vqa | `vqa/` | `AutoModelForVisualQuestionAnswering` |", "| cider | 0.4120 | no interval |",
                "**Not evaluated.** No evaluation results were given for the vqa model"):
        assert row in card.text
    results = report_generation_eval()
    entries = {e.metric_name: e for e in card.data.eval_results}
    assert {name: e.metric_value for name, e in entries.items()} == \
        {name.replace("_", " "): results[name] for name in ("cider", "rouge_l", "bleu_1", "bleu_2", "bleu_3", "bleu_4")}
    assert {(e.task_type, e.dataset_name, e.dataset_split) for e in entries.values()} == \
        {("image-to-text", "SynthCXR (n=100,size=64,seed=1)", "validation")}
    assert "cider" in card.data.metrics
    assert card_problems(folders[1], None, {"report_generation": results, "vqa": None, "classification": None}) == []
    assert card_problems(folders[1], None, {"report_generation": {**results, "cider": 0.5}})


SNIPPET_RUNNER = """
import sys
for source in sys.argv[1:]:
    exec(compile(open(source).read(), source, "exec"), {})
"""


@pytest.mark.slow
def test_the_usage_snippets_run_against_the_exported_folders(folders, tmp_path):
    image = synthcxr_png(tmp_path / "cxr.png")
    sources = []
    for folder in folders:
        text = ModelCard.load(folder / "README.md").text
        snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
        snippet = re.sub(r'^REPO = ".*"$', f"REPO = {str(folder)!r}", snippet, flags=re.M)
        snippet = re.sub(r'^IMAGE = ".*"', f"IMAGE = {str(image)!r}", snippet, flags=re.M)
        sources.append(tmp_path / f"{folder.name}.py")
        sources[-1].write_text(snippet)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-I", "-c", SNIPPET_RUNNER, *map(str, sources)], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'Cardiomegaly':" in completed.stdout  # the classifier's labels
    assert "'label': 'cardiomegaly'" in completed.stdout  # the zero-shot pipeline's scores
    assert "is there a pleural effusion? " in completed.stdout  # the VQA model's answer, from vqa/
    assert completed.stdout.count("'Cardiomegaly':") == 2  # the root classifier and classification/
