"""Pretraining's start-of-run checks and its fp16 step: DeepSpeed and FSDP launches are refused, the Accelerate launch
configs load, the shipped recipes' eval, save and warmup fall inside their runs, and a gradient overflow under fp16
is skipped by the scaler, the run going on."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.commands.config.config_args import load_config_from_file

from train import pretrain
from train.optim import schedule_warnings
from train.pretrain import PretrainingRun
from train.run_config import parse_pretrain_args, resolve_warmup_steps
from train.user_errors import UserError

CONFIGS = Path(pretrain.__file__).resolve().parent / "configs"
# The images the large recipes name (no `data:` in them): MIMIC-CXR-JPG's frontal train split (about 200k) up to
# all of it (377,110).
MIMIC_ROWS = (200_000, 377_110)


def tiny_arguments(output_dir, *extra):
    return [
        "--data", "synthcxr:n=32,size=32,seed=0", "--output_dir", str(output_dir), "--per_device_batch_size", "8",
        "--max_steps", "4", "--eval_steps", "0", "--save_steps", "0", "--num_workers", "0", "--report_to", "none",
        "--max_text_length", "64", "--tokenizer_vocab_size", "300", "--learning_rate", "1e-3", "--warmup_steps", "0",
        *extra,
    ]


@pytest.mark.parametrize("variable, name", [("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")])
def test_deepspeed_and_fsdp_launches_are_refused_at_start(tmp_path, monkeypatch, variable, name):
    monkeypatch.setenv(variable, "true")  # what `accelerate launch` sets for such a config
    with pytest.raises(UserError, match=f"{name} is not supported by pretrain.py.*accelerate_1node_8gpu_ddp.yaml"):
        PretrainingRun(*parse_pretrain_args(tiny_arguments(tmp_path)))
    assert not (tmp_path / "data_cache").exists()  # refused before any work


@pytest.mark.parametrize("name, kind, machines, processes", [
    ("accelerate_1node_8gpu_ddp", "MULTI_GPU", 1, 8),
    ("accelerate_1node_8gpu_fsdp", "FSDP", 1, 8),
    ("accelerate_2node_8gpu_ddp", "MULTI_GPU", 2, 16),
])
def test_accelerate_launch_configs_load(name, kind, machines, processes):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert (config.distributed_type.name, config.num_machines, config.num_processes) == (kind, machines, processes)
    if kind == "FSDP":  # wraps per block through the model's _no_split_modules
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert "fsdp_transformer_layer_cls_to_wrap" not in config.fsdp_config


def test_schedule_warnings_name_the_numbers():
    # pretrain_vitl14_336.yaml as it was: 377,110 rows / 65,536 = 5 steps per epoch x 30 epochs.
    warnings = schedule_warnings(max_steps=150, warmup_steps=15, eval_steps=500, save_steps=500, evaluating=True,
                                 early_stopping_patience=5)
    text = "\n".join(warnings)
    assert "eval_steps 500" in text and "save_steps 500" in text and "150 steps" in text
    assert "early_stopping_patience 5" in text
    assert schedule_warnings(300, 300, 0, 0, False, None) and not schedule_warnings(300, 30, 100, 100, True, 3)


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("pretrain_*.yaml")), ids=lambda path: path.stem)
def test_shipped_recipes_evaluate_save_and_warm_up_inside_their_runs(recipe):
    config = yaml.safe_load(recipe.read_text())
    if "data" in config:  # SynthCXR recipes: fixed step counts
        row_counts = (None,)
    else:
        row_counts = MIMIC_ROWS
    for rows in row_counts:
        if rows is None:
            max_steps = config["max_steps"]
        else:
            max_steps = rows // config["global_batch_size"] * config["num_epochs"]
        warmup = resolve_warmup_steps(max_steps, config.get("warmup_steps"), config.get("warmup_ratio", 0.0))
        warnings = schedule_warnings(max_steps, warmup, config["eval_steps"], config["save_steps"], True,
                                     config.get("early_stopping_patience"))
        assert not warnings, (recipe.name, rows, warnings)


class CpuFp16Accelerator(Accelerator):
    """fp16 as on a GPU: accelerate installs no GradScaler on CPU, so this one installs torch's CPU scaler."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        self.native_amp = True


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state and refuses another mixed precision once an fp32 run made it."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_fp16_gradient_overflow_is_skipped_by_the_scaler_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                             fresh_accelerator_state):
    monkeypatch.setattr(pretrain, "Accelerator", CpuFp16Accelerator)
    run = PretrainingRun(*parse_pretrain_args(tiny_arguments(tmp_path, "--mixed_precision", "fp16")))
    assert run.accelerator.scaler is not None
    clean_step, calls = run.step_fn, []

    def overflowing_step(model, micro_batches):
        losses = clean_step(model, micro_batches)
        calls.append(1)
        if len(calls) == 2:  # the second step's gradients overflow, as fp16 ones do
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        return losses

    run.step_fn = overflowing_step
    scales, snapshots = [], {}

    def after_step(step):
        scales.append(run.accelerator.scaler.get_scale())
        snapshots[step] = {name: p.detach().clone() for name, p in run.unwrapped.named_parameters()}

    run.after_step = after_step
    summary = run.train()
    assert summary["steps"] == 4 and summary["skipped_steps"] == 1 and summary["stop_reason"] == "max_steps"
    assert scales[1] == scales[0] / 2  # the scaler saw the overflow and backed off
    assert all(torch.equal(snapshots[2][name], value) for name, value in snapshots[1].items())  # step 2: no update
    assert any(not torch.equal(snapshots[3][name], value) for name, value in snapshots[2].items())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [record["skipped"] for record in records] == [False, True, False, False]
    assert math.isinf(records[1]["grad_norm"])
    assert all(record["replay_error"] is None for record in records)  # one micro-batch per step: nothing replayed


def test_each_step_logs_its_replay_error(tmp_path):
    run = PretrainingRun(*parse_pretrain_args(
        tiny_arguments(tmp_path, "--gradient_accumulation_steps", "2", "--max_steps", "2")
    ))
    run.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0 <= record["replay_error"] < 1e-6 for record in records)  # CPU fp32: exact


def test_fp16_scaler_state_is_saved_and_restored_on_resume(tmp_path, monkeypatch, fresh_accelerator_state):
    """The scale a run backed off to (an overflow at step 2) travels in checkpoint-2: the resumed run goes on at that
    scale, not at the initial one, as the uninterrupted run does."""
    monkeypatch.setattr(pretrain, "Accelerator", CpuFp16Accelerator)
    arguments = tiny_arguments(tmp_path, "--mixed_precision", "fp16", "--save_steps", "2")
    run = PretrainingRun(*parse_pretrain_args(arguments))
    clean_step, calls = run.step_fn, []

    def overflowing_step(model, micro_batches):
        losses = clean_step(model, micro_batches)
        calls.append(1)
        if len(calls) == 2:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        return losses

    run.step_fn = overflowing_step
    uninterrupted = {}
    run.after_step = lambda step: uninterrupted.__setitem__(step, run.accelerator.scaler.get_scale())
    run.train()
    assert uninterrupted[2] == uninterrupted[1] / 2 == 2.0**11

    AcceleratorState._reset_state(reset_partial_state=True)
    resumed_run = PretrainingRun(*parse_pretrain_args(arguments + ["--resume_from", str(tmp_path / "checkpoint-2")]))
    resumed = {}
    resumed_run.after_step = lambda step: resumed.__setitem__(step, resumed_run.accelerator.scaler.get_scale())
    resumed_run.train()
    assert resumed == {3: uninterrupted[3], 4: uninterrupted[4]}
