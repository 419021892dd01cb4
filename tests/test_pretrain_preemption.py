"""Preemption (issue 16): a pretraining run sent SIGTERM mid-run finishes its step, saves a complete checkpoint,
records why it stopped and returns normally (exit status 0); `--resume_from latest` then continues to the same losses
as an uninterrupted run, skipping a half-written checkpoint. In one process (the signal is sent from the `after_step`
hook, between steps as a scheduler's would land); the 2-process version is left to tests/test_pretrain_resume.py's
launcher pattern."""

import json
import os
import signal
from pathlib import Path

import pytest

from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer
from train import pretrain
from train.user_errors import UserError

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
    train_clinical_tokenizer([s.report for s in generate_synthcxr(48, size=16, seed=0)],
                             vocab_size=400).save_pretrained(folder)
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
