"""Exact resume: a 2-process pretraining run killed with SIGKILL after its step-4 checkpoint and
resumed from `checkpoint-last` repeats the uninterrupted run's loss curve and final weights; one
sent SIGTERM mid-run under `medvl launch` (launcher and ranks, as SLURM signals a job) finishes
the step on both ranks, checkpoints it, exits with status 0, and `--resume_from latest` repeats
the uninterrupted run's losses."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import launch_two_processes, start_on_a_free_port, synthcxr_tokenizer

from train import checkpointing as ckpt

pytestmark = pytest.mark.slow  # two-process `accelerate launch` runs, killed and resumed
REPO = Path(__file__).resolve().parent.parent
PRETRAIN = REPO / "train" / "pretrain.py"
KILLED = Path(__file__).resolve().parent / "scripts" / "pretrain_killed_mid_run.py"
PAUSED = Path(__file__).resolve().parent / "scripts" / "pretrain_paused_for_signal.py"
MAX_STEPS, SAVE_STEPS, KILL_AT = 6, 2, 5
SIGNAL_AFTER = 2  # the signal lands between steps 2 and 3: step 3 (not a save step) is finished and checkpointed


def launch(script, *arguments, expect_success=True):
    result = launch_two_processes(script, *arguments)
    if expect_success:
        assert result.returncode == 0, f"launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def run_arguments(output_dir, tokenizer_dir):
    # Dropout and ITM's sampled negatives make the curve depend on the restored RNG state too;
    # 96 rows / global batch 32 = 3 steps per epoch, so the run crosses an epoch boundary.
    return [
        "--data", "synthcxr:n=96,size=64,seed=0", "--tokenizer", tokenizer_dir, "--output_dir", output_dir,
        "--per_device_batch_size", 8, "--gradient_accumulation_steps", 2, "--max_steps", MAX_STEPS,
        "--save_steps", SAVE_STEPS, "--save_total_limit", 2, "--eval_steps", 3, "--validation_size", 32,
        "--num_workers", 0, "--max_text_length", 96, "--learning_rate", 1e-3, "--warmup_steps", 2,
        "--model_overrides", "text_config.hidden_dropout_prob=0.1", "--report_to", "none",
    ]


def train_losses(output_dir):
    records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["terms"]) for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    synthcxr_tokenizer(96, vocab_size=500).save_pretrained(root / "tokenizer")
    launch(PRETRAIN, *run_arguments(root / "uninterrupted", root / "tokenizer"))
    killed = launch(KILLED, KILL_AT, *run_arguments(root / "resumed", root / "tokenizer"), expect_success=False)
    assert killed.returncode != 0, "the run meant to be killed finished normally"
    steps_before_resume = [step for step, _, _ in train_losses(root / "resumed")]
    launch(PRETRAIN, *run_arguments(root / "resumed", root / "tokenizer"),
           "--resume_from", root / "resumed" / "checkpoint-last")
    return root, steps_before_resume


def test_killed_run_left_complete_checkpoints_only(runs):
    root, steps_before_resume = runs
    assert steps_before_resume == list(range(1, KILL_AT + 1)), "the kill did not land after step 5"
    leftovers = [p.name for p in (root / "resumed").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_resumed_loss_curve_equals_uninterrupted(runs):
    root, _ = runs
    reference, resumed = train_losses(root / "uninterrupted"), train_losses(root / "resumed")
    assert [step for step, _, _ in resumed] == list(range(1, MAX_STEPS + 1))
    assert len({round(loss, 6) for _, loss, _ in reference}) == MAX_STEPS  # the curve moves
    for (step, loss, terms), (_, ref_loss, ref_terms) in zip(resumed, reference):
        assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-7), f"step {step}"
        for name, value in ref_terms.items():
            assert terms[name] == pytest.approx(value, rel=1e-6, abs=1e-7), f"step {step} {name}"


def test_resumed_final_weights_equal_uninterrupted(runs):
    root, _ = runs
    reference = load_file(root / "uninterrupted" / "checkpoint-last" / "model.safetensors")
    resumed = load_file(root / "resumed" / "checkpoint-last" / "model.safetensors")
    assert set(reference) == set(resumed)
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_rotation_and_pointer(runs):
    root, _ = runs
    run = root / "uninterrupted"
    kept = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-") and p.name[11:].isdigit())
    assert kept == ["checkpoint-4", "checkpoint-6"]
    assert (run / "checkpoint-last").is_symlink() and (run / "checkpoint-last").resolve().name == "checkpoint-6"
    state = json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["step_in_epoch"], state["num_processes"]) == (6, 1, 3, 2)
    assert (run / "checkpoint-best" / "model.safetensors").is_file()
    assert (run / "loss_curve.png").stat().st_size > 0


def test_sigterm_to_a_two_process_launch_checkpoints_and_resumes_exactly(runs):
    root, _ = runs
    run, gate, log = root / "preempted", root / "gate", root / "preempted.log"
    gate.mkdir()
    ranks = [gate / f"paused-{rank}" for rank in (0, 1)]
    launcher, _ = start_on_a_free_port(
        lambda port: [sys.executable, "-m", "train.cli", "launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                      str(port), str(PAUSED), str(SIGNAL_AFTER), str(gate),
                      *map(str, run_arguments(run, root / "tokenizer"))],
        lambda port: all(marker.is_file() for marker in ranks), timeout=300, log=log, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    for pid in [launcher.pid] + [int(marker.read_text()) for marker in ranks]:
        os.kill(pid, signal.SIGTERM)
    (gate / "go").touch()
    assert launcher.wait(timeout=300) == 0, log.read_text()[-6000:]

    output = log.read_text()
    stopped = SIGNAL_AFTER + 1
    assert "Traceback" not in output, output[-6000:]
    assert output.count(f"step {stopped}: SIGTERM received") == 2, output[-6000:]  # each rank, at the same step
    assert "medvl launch: SIGTERM passed on to the training processes" in output
    summary = json.loads((run / "train_summary.json").read_text())
    assert (summary["stop_reason"], summary["steps"], summary["num_processes"]) == ("preempted:SIGTERM", stopped, 2)
    assert (run / "checkpoint-last").resolve().name == f"checkpoint-{stopped}"
    assert ckpt.checkpoint_problem(run / f"checkpoint-{stopped}") is None
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= {p.name for p in (run / f"checkpoint-{stopped}").iterdir()}

    launch(PRETRAIN, *run_arguments(run, root / "tokenizer"), "--resume_from", "latest")
    reference, resumed = train_losses(root / "uninterrupted"), train_losses(run)
    assert [step for step, _, _ in resumed] == list(range(1, MAX_STEPS + 1))
    for (step, loss, _), (_, ref_loss, _) in zip(resumed, reference):
        assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-7), f"step {step}"
