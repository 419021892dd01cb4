"""Paths through train/pretrain.py that the exactness tests do not take, each a short in-process run of the tiny
preset on SynthCXR: bf16 autocast inside exact accumulation on CPU, early stopping that stops, --model_name_or_path,
a zero-shot prompt file, several --data sources, and streamed wds: shards resumed mid-run."""

import json
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from helpers import synthcxr_tokenizer
from safetensors.torch import load_file

from modeling_medvl import MedVLConfig, MedVLForPreTraining
from processing.readers import write_webdataset
from processing.synthcxr import generate_synthcxr
from train import pretrain
from train.contrastive_accumulation import REPLAY_TOLERANCE
from train.pretrain_setup import token_ids
from train.zero_shot_eval import load_prompts

STUDIES = 48


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one state per process, mixed precision included: each run here starts from none and leaves
    none behind for other in-process runs."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paths") / "tokenizer"
    synthcxr_tokenizer(STUDIES, vocab_size=400).save_pretrained(folder)
    return folder


def run_argv(output_dir, tokenizer, *arguments):
    """pretrain.py's arguments for SynthCXR at 32 px, batch 8; `arguments` come last, so they override these."""
    return ["--data", f"synthcxr:n={STUDIES},size=32,seed=0", "--tokenizer", str(tokenizer), "--output_dir",
            str(output_dir), "--per_device_batch_size", "8", "--learning_rate", "1e-3", "--warmup_steps", "1",
            "--save_steps", "0", "--eval_steps", "0", "--num_workers", "0", "--max_text_length", "64", "--augment",
            "false", "--report_to", "none", *map(str, arguments)]


def run(output_dir, tokenizer, *arguments):
    return pretrain.main(run_argv(output_dir, tokenizer, *arguments))


def records(output_dir, kind):
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def test_bf16_autocasts_inside_exact_accumulation(tmp_path, tokenizer):
    """Two micro-batches of 4 per step, through the cached-embedding accumulation, in float32 then bf16: the same
    data give losses that differ by bf16 rounding only, the replayed embeddings stay within bf16's tolerance, and
    the weights stay float32."""
    accumulated = ("--per_device_batch_size", "4", "--global_batch_size", "8", "--max_steps", "2")
    run(tmp_path / "fp32", tokenizer, *accumulated)
    AcceleratorState._reset_state(reset_partial_state=True)
    summary = run(tmp_path / "bf16", tokenizer, *accumulated, "--mixed_precision", "bf16")
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert yaml.safe_load((tmp_path / "bf16" / "run_config.yaml").read_text())["resolved"][
        "gradient_accumulation_steps"] == 2
    for full, half in zip(records(tmp_path / "fp32", "train"), records(tmp_path / "bf16", "train"), strict=True):
        assert half["loss"] != full["loss"], "bf16 changed nothing: autocast did not reach the model"
        assert abs(half["loss"] - full["loss"]) < 0.03 * full["loss"]
        assert 0 <= half["replay_error"] <= REPLAY_TOLERANCE["bf16"]
    weights = load_file(tmp_path / "bf16" / "checkpoint-last" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


@pytest.fixture(scope="module")
def unchanging_run(tmp_path_factory, tokenizer):
    """Evaluated after every step with a learning rate too small to move float32 weights: the zero-shot AUC never
    improves on the first evaluation, so patience 2 stops the run at step 3 of 20."""
    AcceleratorState._reset_state(reset_partial_state=True)
    output_dir = tmp_path_factory.mktemp("unchanging")
    summary = run(output_dir, tokenizer, "--learning_rate", "1e-12", "--eval_steps", "1", "--early_stopping_patience",
                  "2", "--max_steps", "20", "--validation_size", "32")
    AcceleratorState._reset_state(reset_partial_state=True)
    return output_dir, summary


def test_early_stopping_patience_0_never_stops(tmp_path, tokenizer):
    """Patience 0 means no early stopping (as in fine-tuning), not a stop at the first evaluation."""
    AcceleratorState._reset_state(reset_partial_state=True)
    summary = run(tmp_path, tokenizer, "--learning_rate", "1e-12", "--eval_steps", "1", "--early_stopping_patience",
                  "0", "--max_steps", "3", "--validation_size", "32")
    AcceleratorState._reset_state(reset_partial_state=True)
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == 3


def test_early_stopping_stops_the_run(unchanging_run):
    output_dir, summary = unchanging_run
    assert summary["stop_reason"] == "early_stopping"
    assert summary["steps"] == 3 and summary["best_step"] == 1
    evaluations = records(output_dir, "eval")
    assert [record["step"] for record in evaluations] == [1, 2, 3]
    assert len({record["zero_shot_auc"] for record in evaluations}) == 1
    assert len(records(output_dir, "train")) == 3
    assert (output_dir / "checkpoint-best").is_dir() and (output_dir / "checkpoint-3").is_dir()
    assert json.loads((output_dir / "train_summary.json").read_text())["stop_reason"] == "early_stopping"


def test_a_prompt_file_replaces_the_labels_it_names(unchanging_run, tmp_path, tokenizer):
    """Cardiomegaly's default phrasings with positive and negative swapped: its score becomes 1 - P(positive), so its
    AUC becomes 1 - AUC, while every other label keeps its default prompts and AUC."""
    positive, negative = load_prompts()["labels"]["Cardiomegaly"]
    prompts = tmp_path / "swapped.yaml"
    prompts.write_text(yaml.safe_dump({"Cardiomegaly": {"positive": list(negative), "negative": list(positive)}}))
    run(tmp_path / "run", tokenizer, "--learning_rate", "1e-12", "--eval_steps", "1", "--max_steps", "1",
        "--validation_size", "32", "--zero_shot_prompts", prompts)
    (swapped,) = records(tmp_path / "run", "eval")
    default = records(unchanging_run[0], "eval")[0]
    assert swapped["zero_shot_prompts_version"] == f"swapped.yaml (on default {default['zero_shot_prompts_version']})"
    per_label, default_per_label = swapped["zero_shot_auc_per_label"], default["zero_shot_auc_per_label"]
    assert per_label.keys() == default_per_label.keys()
    assert per_label.pop("Cardiomegaly") == pytest.approx(1 - default_per_label.pop("Cardiomegaly"), abs=1e-9)
    assert per_label == default_per_label


def test_model_name_or_path_starts_from_the_saved_model(tmp_path, tokenizer):
    """The saved model's own config (projection_dim 32, the preset has 64) and weights are the ones trained."""
    torch.manual_seed(1)
    config = MedVLConfig.from_preset("tiny", projection_dim=32,
                                     text_config=token_ids(synthcxr_tokenizer(STUDIES, vocab_size=400)))
    MedVLForPreTraining(config).save_pretrained(tmp_path / "start")
    summary = run(tmp_path / "run", tokenizer, "--model_name_or_path", tmp_path / "start", "--learning_rate", "1e-12",
                  "--max_steps", "1")
    assert summary["steps"] == 1
    trained = tmp_path / "run" / "checkpoint-last"
    assert MedVLConfig.from_pretrained(trained).projection_dim == 32
    start, end = load_file(tmp_path / "start" / "model.safetensors"), load_file(trained / "model.safetensors")
    assert start.keys() == end.keys()
    for name, tensor in start.items():
        torch.testing.assert_close(end[name], tensor, atol=1e-9, rtol=1e-6, msg=name)
    assert yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())["model_name_or_path"] == \
        str(tmp_path / "start")


def test_several_data_sources_are_trained_on_together(tmp_path, tokenizer):
    """Two SynthCXR sources of 16 and 24 studies: one epoch of batch 8 is 5 steps over the 40 rows."""
    summary = run(tmp_path / "run", tokenizer, "--data", "synthcxr:n=16,size=32,seed=0", "synthcxr:n=24,size=32,seed=1",
                  "--num_epochs", "1")
    resolved = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())["resolved"]
    assert resolved["train_rows"] == 40 and resolved["steps_per_epoch"] == 5
    assert [source["spec"] for source in resolved["data_sources"] if source["role"] == "train"] == [
        "synthcxr:n=16,size=32,seed=0", "synthcxr:n=24,size=32,seed=1"]
    assert summary["steps"] == 5


class Interrupted(Exception):
    pass


def test_streamed_shards_resume_where_they_stopped(tmp_path, tokenizer):
    """wds: data has no length and is resumed by skipping what the stopped run consumed: a run stopped after its
    step-2 checkpoint and resumed from it trains steps 3 and 4 on the same pairs as the uninterrupted run."""
    studies = list(generate_synthcxr(STUDIES, size=32, seed=0))
    pairs = datasets.Dataset.from_dict({"image": [s.image for s in studies], "report": [s.report for s in studies]})
    write_webdataset(pairs.cast_column("image", datasets.Image()), tmp_path / "shards", shard_size=12)
    streamed = ("--data", f"wds:{tmp_path / 'shards'}/*.tar", "--max_steps", "4", "--save_steps", "2",
                "--shuffle_buffer", "16")
    reference = run(tmp_path / "uninterrupted", tokenizer, *streamed)
    assert reference["steps"] == 4

    def stop_after_second_step(step):
        if step == 2:
            raise Interrupted

    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(Interrupted):
        pretrain.main(run_argv(tmp_path / "resumed", tokenizer, *streamed), after_step=stop_after_second_step)
    assert (tmp_path / "resumed" / "checkpoint-2").is_dir()
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = run(tmp_path / "resumed", tokenizer, *streamed, "--resume_from", "latest")
    assert resumed["steps"] == 4 and resumed["steps_this_launch"] == 2
    expected = [(r["step"], r["loss"]) for r in records(tmp_path / "uninterrupted", "train")]
    assert [(r["step"], r["loss"]) for r in records(tmp_path / "resumed", "train")] == expected
