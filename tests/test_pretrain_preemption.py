"""Preemption (issue 16): a pretraining run sent SIGTERM mid-run finishes its step, saves a complete checkpoint,
records why it stopped and returns normally (exit status 0); `--resume_from latest` then continues to the same losses
as an uninterrupted run, skipping a half-written checkpoint. In one process (the signal is sent from the `after_step`
hook, between steps as a scheduler's would land); the 2-process run is in tests/test_pretrain_resume.py. `medvl launch`
passes SIGUSR1 (which kills a bare `accelerate launch`) on to its ranks and exits 0."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from train import pretrain
from train.user_errors import UserError

from helpers import start_on_a_free_port, synthcxr_tokenizer

REPO = Path(__file__).resolve().parents[1]
WAIT_FOR_SIGNAL = Path(__file__).resolve().parent / "scripts" / "wait_for_signal.py"

MAX_STEPS, SIGNAL_AFTER = 5, 2


def arguments(output_dir, tokenizer):
    return ["--data", "synthcxr:n=48,size=32,seed=0", "--tokenizer", str(tokenizer), "--output_dir", str(output_dir),
            "--per_device_batch_size", "8", "--max_steps", str(MAX_STEPS), "--save_steps", "0", "--eval_steps", "0",
            "--num_workers", "0", "--max_text_length", "64", "--learning_rate", "1e-3", "--warmup_steps", "1",
            "--model_overrides", "text_config.hidden_dropout_prob=0.1", "--report_to", "none"]


def train_losses(output_dir):
    records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preemption") / "tokenizer"
    synthcxr_tokenizer(48, vocab_size=400).save_pretrained(folder)
    return folder


def test_sigterm_saves_stops_and_resumes_exactly(tmp_path, tokenizer):
    reference = pretrain.main(arguments(tmp_path / "uninterrupted", tokenizer))
    assert reference["steps"] == MAX_STEPS

    run = tmp_path / "preempted"
    with pytest.raises(UserError, match="no complete checkpoint"):
        pretrain.main(arguments(run, tokenizer) + ["--resume_from", "latest"])

    def send_sigterm(step):
        if step == SIGNAL_AFTER:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    summary = pretrain.main(arguments(run, tokenizer), after_step=send_sigterm)
    assert signal.getsignal(signal.SIGTERM) == previous, "the run's handler was not removed"
    stopped = SIGNAL_AFTER + 1  # the step under way when the signal came is finished first
    assert summary["stop_reason"] == "preempted:SIGTERM" and summary["steps"] == stopped
    assert json.loads((run / "train_summary.json").read_text())["stop_reason"] == "preempted:SIGTERM"
    assert (run / f"checkpoint-{stopped}" / "trainer_state.json").is_file()

    # A checkpoint killed during its save: the hidden temporary folder, or a step folder without its trainer state.
    (run / f".checkpoint-{MAX_STEPS}.tmp").mkdir()
    (run / f"checkpoint-{MAX_STEPS + 1}").mkdir()
    resumed = pretrain.main(arguments(run, tokenizer) + ["--resume_from", "latest"])
    assert resumed["steps"] == MAX_STEPS and resumed["steps_this_launch"] == MAX_STEPS - stopped
    expected = train_losses(tmp_path / "uninterrupted")
    got = train_losses(run)
    assert [step for step, _ in got] == list(range(1, MAX_STEPS + 1))
    assert len({round(loss, 6) for _, loss in expected}) == MAX_STEPS  # the curve moves
    for (step, loss), (_, ref) in zip(got, expected):
        assert loss == pytest.approx(ref, rel=1e-6, abs=1e-7), f"step {step}"


@pytest.mark.slow
def test_medvl_launch_passes_sigusr1_on_to_the_ranks_and_exits_0(tmp_path):
    launcher, _ = start_on_a_free_port(
        lambda port: [sys.executable, "-m", "train.cli", "launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                      str(port), str(WAIT_FOR_SIGNAL), str(tmp_path)],
        lambda port: all((tmp_path / f"ready-{rank}").is_file() for rank in (0, 1)), timeout=240,
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    launcher.send_signal(signal.SIGUSR1)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, stderr[-3000:]
    assert [(tmp_path / f"got-{rank}").read_text() for rank in (0, 1)] == ["SIGUSR1", "SIGUSR1"]
    assert "medvl launch: SIGUSR1 passed on to the training processes" in stderr and "Traceback" not in stderr
