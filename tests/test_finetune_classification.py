"""Classification fine-tuning (train/finetune.py) on SynthCXR: learning, LoRA, --init, bad input, resume.

The learning runs: 400 studies at 64 px, the tiny-convnext preset from scratch, no augmentation, batch 16, validated
on 200 fresh studies (seed 100003), all 14 CheXpert labels (11 have both classes there and enter the macro AUC).
Measured on 2 busy cores, training seeds 0 / 1 (validation macro AUC of the best checkpoint):
- full fine-tuning, lr 1e-3, 4 epochs (100 steps, the test's run): 0.682 / 0.663 (5 epochs: 0.690 / 0.693);
- LoRA r=8 on the vision blocks' mlp.fc1/fc2 (4.3% of the parameters), lr 3e-3, 3 epochs (75 steps, the test's
  run): 0.661 / 0.653 (5 epochs: 0.678 / 0.678);
- the untrained model: 0.532 / 0.472; the majority-class predictor: 0.500 (a constant score ranks nothing).
The thresholds sit 0.06 under the lowest measured AUC, and the gain over the untrained model asked for (0.08) is
under half the smallest measured gain (0.15 full, 0.13 LoRA). One run takes 30-45 s here.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from helpers import synthcxr_tokenizer
from readers_fixtures import write_image
from safetensors.torch import load_file, save_file
from transformers import HfArgumentParser

from modeling_medvl import MedVLConfig, MedVLForPreTraining, MedVLModel
from processing import generate_synthcxr
from processing.chexpert import CHEXPERT_LABELS
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from train.data_loading import synthcxr_cache_folder
from train.finetune import main
from train.finetune_args import (
    ARGUMENT_CLASSES,
    FinetuneDataArguments,
    FinetuneModelArguments,
    parse_finetune_args,
)
from train.finetune_data import ClassificationCollator, label_targets, load_classification_splits
from train.finetune_eval import auroc, probabilities
from train.finetune_model import build_classifier, load_processor
from train.lora_presets import load_finetuned_model
from train.pretrain_setup import build_processor, token_ids

REPO = Path(__file__).resolve().parent.parent
DATA = "synthcxr:n=400,size=64,seed=0"
VALIDATION = 200
LEARNING = ["--data", DATA, "--validation_size", str(VALIDATION), "--augment", "false",
            "--per_device_train_batch_size", "16", "--bootstrap_samples", "20", "--seed", "0"]
FULL_EPOCHS, FULL_MIN_AUC = "4", 0.60
LORA_EPOCHS, LORA_MIN_AUC = "3", 0.59
MIN_GAIN_OVER_UNTRAINED = 0.08


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("finetune_data")


def finetune(output_dir, cache_dir, *arguments):
    return main(["--output_dir", str(output_dir), "--cache_dir", str(cache_dir), "--report_to", "none",
                 "--disable_tqdm", "true", *arguments])


def validation_set(cache_dir):
    return datasets.load_from_disk(str(synthcxr_cache_folder(cache_dir, {"n": VALIDATION, "size": 64, "seed": 100003})))


def scores_of(model, processor, dataset, label_names):
    batch = ClassificationCollator(processor, label_names)(list(dataset))
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    return logits, batch["labels"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache):
    output = tmp_path_factory.mktemp("full") / "run"
    results = finetune(output, cache, *LEARNING, "--learning_rate", "1e-3", "--num_train_epochs", FULL_EPOCHS)
    return output, results


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache):
    output = tmp_path_factory.mktemp("lora") / "run"
    results = finetune(output, cache, *LEARNING, "--learning_rate", "3e-3", "--num_train_epochs", LORA_EPOCHS,
                       "--lora", "r=8,alpha=16,dropout=0.05")
    return output, results


@pytest.mark.slow
def test_full_finetuning_beats_majority_and_untrained(full_run):
    _, results = full_run
    untrained = results["baselines"]["initial_model"]["auroc_macro"]
    assert results["baselines"]["majority"]["auroc_macro"] == pytest.approx(0.5)
    assert results["auroc_macro"] >= FULL_MIN_AUC, results["auroc_per_label"]
    assert results["auroc_macro"] >= untrained + MIN_GAIN_OVER_UNTRAINED, (results["auroc_macro"], untrained)
    assert results["trainable_parameters"]["share"] == 1.0


@pytest.mark.slow
def test_run_folder_holds_results_plots_and_a_reloadable_best_model(full_run, cache):
    output, results = full_run
    saved = json.loads((output / "eval_results.json").read_text())
    assert saved["auroc_macro"] == pytest.approx(results["auroc_macro"])
    low, high = saved["auroc_macro_ci"]
    assert low <= saved["auroc_macro"] <= high and high - low > 0
    assert len(saved["labels_in_macro"]) >= 8
    assert sorted(saved["roc_curves"]) == sorted(
        f"roc_curves/roc_{name.lower().replace(' ', '_')}.png" for name in saved["labels_in_macro"]
    )
    assert all((output / path).stat().st_size > 1000 for path in saved["roc_curves"])
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["best_metric"] == pytest.approx(saved["auroc_macro"])
    # The saved run config reads back into the same arguments.
    first = parse_finetune_args(["--config", str(output / "run_config.yaml")])
    assert first[0].model_preset == "tiny-convnext" and first[1].data == DATA and first[2].learning_rate == 1e-3
    # The best model, reloaded, scores the validation split as the run did.
    model = load_finetuned_model(output / "checkpoint-best")
    processor = MedVLImageProcessor.from_pretrained(str(output / "checkpoint-best"))
    logits, targets = scores_of(model, processor, validation_set(cache), saved["label_names"])
    again = auroc(probabilities(logits.numpy()), targets.numpy(), saved["label_names"])
    assert again["auroc_macro"] == pytest.approx(saved["auroc_macro"], abs=1e-6)


@pytest.mark.slow
def test_lora_trains_a_small_adapter_that_merges_exactly(lora_run, full_run, cache):
    output, results = lora_run
    share = results["trainable_parameters"]["share"]
    assert 0 < share < 0.10
    assert json.loads((output / "train_summary.json").read_text())["trainable_parameters"]["share"] == share
    assert results["auroc_macro"] >= LORA_MIN_AUC
    assert results["auroc_macro"] >= results["baselines"]["initial_model"]["auroc_macro"] + MIN_GAIN_OVER_UNTRAINED
    best = output / "checkpoint-best"
    adapter = best / "adapter_model.safetensors"
    assert not (best / "model.safetensors").exists()
    assert adapter.stat().st_size < 0.10 * (full_run[0] / "checkpoint-best" / "model.safetensors").stat().st_size
    weights = load_file(str(adapter))
    assert any("classifier" in key for key in weights)  # the head, trained in full, travels with the adapter
    assert max(w.abs().max().item() for key, w in weights.items() if "lora_B" in key) > 0  # adapters did train

    model = load_finetuned_model(best)
    processor = MedVLImageProcessor.from_pretrained(str(best))
    logits, targets = scores_of(model, processor, validation_set(cache), results["label_names"])
    again = auroc(probabilities(logits.numpy()), targets.numpy(), results["label_names"])
    assert again["auroc_macro"] == pytest.approx(results["auroc_macro"], abs=1e-6)
    merged = model.merge_and_unload()
    merged_logits, _ = scores_of(merged, processor, validation_set(cache).select(range(32)), results["label_names"])
    torch.testing.assert_close(merged_logits, logits[:32], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory):
    """A tiny MedVLForPreTraining (tiny-convnext) with its processor, vision weights moved off their fresh values."""
    folder = tmp_path_factory.mktemp("pretrained") / "checkpoint-best"
    tokenizer = synthcxr_tokenizer(64, vocab_size=400)
    config = MedVLConfig.from_preset("tiny-convnext", text_config=token_ids(tokenizer))
    model = MedVLForPreTraining(config)
    with torch.no_grad():
        for parameter in model.medvl.vision_model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(folder)
    processor = build_processor(tokenizer, 64)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.mark.parametrize("saved_class", ["pretraining", "base model"])
def test_init_loads_the_vision_tower_exactly(pretraining_checkpoint, tmp_path, saved_class):
    folder, pretrained, saved_processor = pretraining_checkpoint
    if saved_class == "base model":  # MedVLModel keeps its tower at vision_model.*, without the medvl. prefix
        base = MedVLModel(pretrained.config)
        base.load_state_dict(pretrained.medvl.state_dict())
        folder = tmp_path / "base"
        base.save_pretrained(folder)
        load_processor(pretraining_checkpoint[0], 64).save_pretrained(folder)
    labels = ["Cardiomegaly", "Pleural Effusion"]
    model, processor = build_classifier(FinetuneModelArguments(init=str(folder)), labels)
    expected = pretrained.medvl.vision_model.state_dict()
    loaded = model.vision_model.state_dict()
    assert sorted(loaded) == sorted(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    assert isinstance(processor, MedVLProcessor) and processor.image_processor.size["height"] == 64
    assert processor.tokenizer.get_vocab() == saved_processor.tokenizer.get_vocab()
    assert processor.to_dict()["normalizer"] == saved_processor.to_dict()["normalizer"]
    assert model.config.id2label == {0: "Cardiomegaly", 1: "Pleural Effusion"}
    assert model.config.problem_type == "multi_label_classification" and model.classifier.out_features == 2


def test_init_without_the_vision_tower_is_refused(pretraining_checkpoint, tmp_path):
    folder = pretraining_checkpoint[0]
    broken = tmp_path / "broken"
    MedVLForPreTraining.from_pretrained(folder).save_pretrained(broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".vision_model." not in k}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="vision-tower tensor"):
        build_classifier(FinetuneModelArguments(init=str(broken)), ["Cardiomegaly"])


def test_lora_on_a_pretrained_base_reloads_onto_that_base(pretraining_checkpoint, tmp_path, cache):
    folder, pretrained, _ = pretraining_checkpoint
    output = tmp_path / "run"
    finetune(output, cache, "--data", "synthcxr:n=48,size=64,seed=0", "--validation_size", "48", "--init",
             str(folder), "--lora", "r=4,targets=vision", "--max_steps", "2", "--learning_rate", "1e-3",
             "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "2", "--save_steps", "2",
             "--bootstrap_samples", "0", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
             "--logging_steps", "1")
    # A step's loss is the mean over its micro-batches (about ln 2 for a fresh head), not their sum.
    history = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert 0.5 < history[0]["loss"] < 0.9, history[0]
    adapter_config = json.loads((output / "checkpoint-best" / "adapter_config.json").read_text())
    assert Path(adapter_config["base_model_name_or_path"]) == folder.resolve()
    assert (output / "checkpoint-2" / "config.json").is_file()  # a step checkpoint reloads alone too
    model = load_finetuned_model(output / "checkpoint-best").merge_and_unload()
    expected = pretrained.medvl.vision_model.state_dict()
    tower = model.vision_model.state_dict()
    frozen = [key for key in expected if "mlp.fc" not in key]  # LoRA merged into the blocks' mlp layers only
    assert all(torch.equal(tower[key], expected[key]) for key in frozen)
    assert any(not torch.equal(tower[key], expected[key]) for key in expected if "mlp.fc" in key)


def _saved_rows(path, rows=4):
    """A saved DatasetDict of SynthCXR images and reports, without labels."""
    studies = list(generate_synthcxr(rows, size=16, seed=3))
    data = datasets.Dataset.from_dict({"image": [s.image for s in studies], "report": [s.report for s in studies]})
    datasets.DatasetDict({"train": data, "validation": data}).save_to_disk(path)
    return path


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "synthcxr:n=16,size=32", "--labels", "Cardiomegaly", "Cardiomegally"],
         r"unknown label name\(s\) \['Cardiomegally'\]"),
        (["--data", "saved:{unlabelled}", "--model_preset", "tiny-convnext"], "has no labels"),
        (["--data", "chexpert:{empty}", "--model_preset", "tiny-convnext"], "the training split is empty"),
        (["--data", "openi:/nowhere", "--model_preset", "tiny-convnext"], "fine-tuning reads labelled"),
        (["--data", "synthcxr:n=16,size=32", "--lora", "r=4,targets=text"], "has no text part"),
        (["--data", "synthcxr:n=16,size=32", "--lora", "rank=4"], "unknown key 'rank'"),
        (["--data", "synthcxr:n=16,size=32", "--init", "{missing}"], "not a saved MedVL model folder"),
        (["--data", "chexpert:/data"], r"give --init .* or --model_preset"),
    ],
)
def test_bad_input_is_named(tmp_path, cache, arguments, message):
    paths = {
        "unlabelled": _saved_rows(tmp_path / "unlabelled"),
        "empty": write_chexpert(tmp_path, train_rows=0),
        "missing": tmp_path / "no_such_checkpoint",
    }
    arguments = [item.format(**paths) for item in arguments]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        finetune(tmp_path / "run", cache, *arguments)


def test_the_script_reports_bad_input_by_name(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train" / "finetune.py"), "--data", "synthcxr:n=16,size=32", "--output_dir",
         str(tmp_path / "run"), "--labels", "Pneumonitis"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "unknown label name(s) ['Pneumonitis']" in result.stderr


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path, cache):
    """With augmentation on, so the restored random state must give the same crops too."""
    common = ["--data", "synthcxr:n=64,size=64,seed=1", "--validation_size", "48", "--per_device_train_batch_size",
              "16", "--max_steps", "6", "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "3",
              "--save_steps", "3", "--save_total_limit", "3", "--learning_rate", "1e-3", "--bootstrap_samples", "0"]
    first = tmp_path / "uninterrupted"
    finetune(first, cache, *common)
    resumed = tmp_path / "resumed"
    finetune(resumed, cache, *common, "--resume_from_checkpoint", str(first / "checkpoint-3"))
    expected = load_file(str(first / "checkpoint-6" / "model.safetensors"))
    weights = load_file(str(resumed / "checkpoint-6" / "model.safetensors"))
    assert sorted(weights) == sorted(expected)
    assert all(torch.allclose(weights[key], expected[key], atol=1e-6) for key in expected)
    state = json.loads((resumed / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    start = load_file(str(first / "checkpoint-3" / "model.safetensors"))
    assert any(not torch.equal(weights[key], start[key]) for key in start)  # the resumed run did train


def test_uncertain_and_blank_policies():
    labels = {"Cardiomegaly": 1, "Edema": -1, "Pneumonia": None, "Pneumothorax": 0}
    names = ["Cardiomegaly", "Edema", "Pneumonia", "Pneumothorax"]
    assert label_targets(labels, names, "ones", "zeros") == [1.0, 1.0, 0.0, 0.0]
    assert label_targets(labels, names, "zeros", "zeros") == [1.0, 0.0, 0.0, 0.0]
    assert label_targets(labels, names, "ignore", "ignore") == [1.0, -100.0, -100.0, 0.0]


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_LABELS


def write_chexpert(parent, train_rows=8, valid_rows=4):
    """CheXpert's layout: train.csv / valid.csv beside the image trees; Edema alternates positive, uncertain and
    negative, Cardiomegaly positive on every other study."""
    root = parent / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    for split, count in (("train", train_rows), ("valid", valid_rows)):
        rows = []
        for index in range(count):
            relative = f"{split}/patient{index:05d}/study1/view1_frontal.jpg"
            write_image(root / relative, 30 * index)
            cells = {"Cardiomegaly": "1.0" if index % 2 else "0.0", "Edema": ("1.0", "-1.0", "0.0")[index % 3]}
            rows.append([f"CheXpert-v1.0-small/{relative}", "Female", "60", "Frontal", "AP"]
                        + [cells.get(name, "") for name in CHEXPERT_LABELS])
        with open(root / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([CHEXPERT_HEADER] + rows)
    return root


def test_chexpert_splits_policies_and_a_short_run(tmp_path, cache):
    root = write_chexpert(tmp_path)
    labels = ["Cardiomegaly", "Edema", "Fracture"]
    splits = load_classification_splits(
        FinetuneDataArguments(data=f"chexpert:{root}", uncertain_policy="ignore"), labels, cache
    )
    assert (len(splits.train), len(splits.validation)) == (8, 4)  # train.csv, then valid.csv; never a test split
    assert splits.train_counts["Edema"] == {"positive": 3, "negative": 2, "unknown": 3}
    assert splits.train_counts["Fracture"] == {"positive": 0, "negative": 8, "unknown": 0}  # blank: negative
    results = finetune(tmp_path / "run", cache, "--data", f"chexpert:{root}", "--model_preset", "tiny-convnext",
                       "--labels", *labels, "--uncertain_policy", "ones", "--max_steps", "1", "--eval_strategy",
                       "steps", "--save_strategy", "steps", "--eval_steps", "1", "--save_steps", "1",
                       "--bootstrap_samples", "0", "--no_evaluate_initial_model", "--per_device_train_batch_size", "4")
    assert results["num_studies"] == 4 and results["validation_label_counts"]["Edema"]["unknown"] == 0
    assert results["labels_without_both_classes"] == ["Fracture"]


def test_config_file_and_command_line(tmp_path):
    config = REPO / "train" / "configs" / "finetune_tiny_synthcxr.yaml"
    model_args, data_args, train_args = parse_finetune_args(
        ["--config", str(config), "--output_dir", str(tmp_path), "--learning_rate", "5e-4", "--lora", "r=4"]
    )
    assert train_args.learning_rate == 5e-4  # the command line wins
    assert train_args.num_train_epochs == 5 and data_args.data == "synthcxr:n=2000,size=64,seed=0"
    assert model_args.lora == "r=4" and not data_args.augment
    assert train_args.metric_for_best_model == "auroc_macro" and train_args.load_best_model_at_end
    help_text = HfArgumentParser(ARGUMENT_CLASSES).format_help()  # every help string formats (a bare % would not)
    assert "--lora" in help_text and "--uncertain_policy" in help_text
    with pytest.raises(ValueError, match=r"unknown configuration key\(s\) \['learning_rat'\]"):
        (tmp_path / "typo.yaml").write_text("learning_rat: 0.1\n")
        parse_finetune_args(["--config", str(tmp_path / "typo.yaml"), "--output_dir", str(tmp_path)])
