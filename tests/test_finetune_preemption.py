"""Preemption of fine-tuning (issue 16): a classification run sent SIGTERM during a step finishes that step, writes
its checkpoint, records why it stopped in train_summary.json and exits with status 0 before the final evaluation;
`--resume_from latest` then continues to the uninterrupted run's losses and weights, passing over a checkpoint
killed during its save. The signal lands while tests/scripts/finetune_paused_for_signal.py holds the run at the end
of a known step, in a separate process, as a scheduler's would. Measured on CPU: the resumed run's losses and
weights are bit-identical to the uninterrupted run's (the tolerances leave room for other hardware)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from train.finetune import main
from train.finetune_preemption import Preempted, PreemptionCallback

REPO = Path(__file__).resolve().parents[1]
PAUSED = Path(__file__).resolve().parent / "scripts" / "finetune_paused_for_signal.py"

# 64 training studies in batches of 16: 4 steps an epoch, so step 5 is inside the second epoch.
MAX_STEPS, SIGNAL_AT = 6, 5


def arguments(output_dir, cache):
    return ["--output_dir", str(output_dir), "--cache_dir", str(cache), "--data", "synthcxr:n=64,size=64,seed=1",
            "--labels", "Cardiomegaly", "Pleural Effusion",  # two ROC plots at the end instead of up to 14
            "--validation_size", "32", "--per_device_train_batch_size", "16", "--max_steps", str(MAX_STEPS),
            "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "3", "--save_steps", "3",
            "--save_total_limit", "3", "--learning_rate", "1e-3", "--logging_steps", "1", "--bootstrap_samples", "0",
            "--evaluate_initial_model", "false", "--report_to", "none", "--disable_tqdm", "true"]


def step_losses(checkpoint):
    history = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["log_history"]
    return [(record["step"], record["loss"]) for record in history if "loss" in record]


@pytest.mark.slow
def test_sigterm_saves_stops_and_resumes_exactly(tmp_path):
    cache = tmp_path / "cache"
    reference = tmp_path / "uninterrupted"
    main(arguments(reference, cache))  # also generates the data set the other runs read from the cache

    run, gate = tmp_path / "preempted", tmp_path / "gate"
    gate.mkdir()
    command = [sys.executable, str(PAUSED), str(SIGNAL_AT), str(gate), *arguments(run, cache), "--resume_from", "auto"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (gate / "paused-0").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.kill(int((gate / "paused-0").read_text()), signal.SIGTERM)
    (gate / "go").touch()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and f"step {SIGNAL_AT}: SIGTERM received" in stderr, stderr[-3000:]

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stop_reason"] == "preempted:SIGTERM" and summary["global_step"] == SIGNAL_AT
    checkpoint = run / f"checkpoint-{SIGNAL_AT}"
    assert summary["checkpoint"] == str(checkpoint)
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == SIGNAL_AT
    assert not (run / "eval_results.json").exists() and not (run / "checkpoint-best").exists()  # no final evaluation

    # A checkpoint killed during its save (Trainer writes the weights first, trainer_state.json last).
    (run / f"checkpoint-{MAX_STEPS}").mkdir()
    (run / f"checkpoint-{MAX_STEPS}" / "model.safetensors").write_bytes(b"\0" * 100)
    main(arguments(run, cache) + ["--resume_from", "latest"])

    final = f"checkpoint-{MAX_STEPS}"
    expected, got = step_losses(reference / final), step_losses(run / final)
    assert [step for step, _ in got] == list(range(1, MAX_STEPS + 1))
    assert len({round(loss, 6) for _, loss in expected}) == MAX_STEPS  # the curve moves
    for (step, loss), (_, reference_loss) in zip(got, expected):
        assert loss == pytest.approx(reference_loss, rel=1e-6), f"step {step}"
    weights, reference_weights = load_file(str(run / final / "model.safetensors")), load_file(
        str(reference / final / "model.safetensors"))
    assert sorted(weights) == sorted(reference_weights)
    assert all(torch.allclose(weights[key], reference_weights[key], atol=1e-6) for key in weights)
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == MAX_STEPS
    assert json.loads((run / "eval_results.json").read_text())["auroc_macro"] == pytest.approx(
        json.loads((reference / "eval_results.json").read_text())["auroc_macro"])


def stepped(callback, args, step, epoch, due):
    """One step end as the Trainer runs it: the preemption check, then the end of the epoch with `due` (what the
    default flow scheduled there) set on the control."""
    state, control = TrainerState(global_step=step, max_steps=10, epoch=epoch), TrainerControl()
    callback.on_step_end(args, state, control)
    if control.should_save:
        callback.on_save(args, state, control)
    control.should_evaluate = control.should_save = due
    callback.on_epoch_end(args, state, control)
    return state, control


def test_sigusr1_mid_epoch_and_at_an_epoch_end(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", save_total_limit=1)
    previous = signal.getsignal(signal.SIGUSR1)
    quiet = PreemptionCallback("train_summary.json")
    quiet.on_train_begin(args, TrainerState(), TrainerControl())
    _, control = stepped(quiet, args, 2, 0.5, due=True)
    assert not control.should_training_stop and control.should_evaluate  # no signal: the default flow is kept
    quiet.on_train_end(args, TrainerState(), control)
    assert signal.getsignal(signal.SIGUSR1) == previous

    # Mid-epoch: the step's checkpoint is written at once; the epoch-end evaluation and save are not the run's.
    callback = PreemptionCallback("train_summary.json")
    callback.on_train_begin(args, TrainerState(), TrainerControl())
    os.kill(os.getpid(), signal.SIGUSR1)
    state, control = stepped(callback, args, 2, 0.5, due=True)
    assert control.should_training_stop and callback.saved_step == 2
    assert not control.should_evaluate and not control.should_save
    assert args.save_total_limit == 2  # Trainer's end of run keeps the preemption checkpoint
    with pytest.raises(Preempted) as stopped:
        callback.on_train_end(args, state, control)
    assert stopped.value.code == 0 and stopped.value.stop_reason == "preempted:SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == previous
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["stop_reason"] == "preempted:SIGUSR1" and summary["global_step"] == 2

    # At an epoch's end the evaluation due there runs, then the checkpoint is written again with it.
    callback = PreemptionCallback("train_summary.json")
    callback.on_train_begin(args, TrainerState(), TrainerControl())
    os.kill(os.getpid(), signal.SIGUSR1)
    state, control = stepped(callback, args, 4, 1.0, due=True)
    assert control.should_evaluate and control.should_save
    with pytest.raises(Preempted):
        callback.on_train_end(args, state, control)
    assert signal.getsignal(signal.SIGUSR1) == previous
