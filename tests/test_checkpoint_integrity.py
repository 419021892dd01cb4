"""Checkpoint integrity (issue 16): a checkpoint damaged after it was written (a weights file cut short) is refused when
named and skipped with a warning by `--resume_from latest`, which resumes exactly from the one before; resuming a
checkpoint of another model config, tokenizer, data set or global batch stops before any step with a message that
names the difference; before the first step the run warns, with the numbers, when the checkpoints it keeps may not fit
on the output disk. Single-process, in-process runs of train/pretrain.py."""

import json
import logging
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from modeling_medvl import MedVLForPreTraining
from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer
from train import checkpointing as ckpt
from train import pretrain
from train.user_errors import UserError

DATA = "synthcxr:n=48,size=32,seed=0"
DiskUsage = namedtuple("DiskUsage", "total used free")


def arguments(output_dir, tokenizer, *extra):
    return ["--data", DATA, "--tokenizer", str(tokenizer), "--output_dir", str(output_dir),
            "--per_device_batch_size", "8", "--max_steps", "4", "--save_steps", "2", "--eval_steps", "0",
            "--num_workers", "0", "--max_text_length", "64", "--learning_rate", "1e-3", "--warmup_steps", "1",
            "--model_overrides", "text_config.hidden_dropout_prob=0.1", "--report_to", "none", *extra]


def replaced(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def train_losses(output_dir):
    records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


class Recorded(logging.Handler):
    def __init__(self, name):
        super().__init__(logging.WARNING)
        self.messages, self.logger = [], logging.getLogger(name)

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self.messages

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder with checkpoint-2 and checkpoint-4, tokenizer, warnings logged) of a run on a 1 kB 'disk'."""
    root = tmp_path_factory.mktemp("integrity")
    reports = [s.report for s in generate_synthcxr(48, size=16, seed=0)]
    for name, vocab in (("tokenizer", 400), ("other_tokenizer", 300)):
        train_clinical_tokenizer(reports, vocab_size=vocab).save_pretrained(root / name)
    disk_usage = shutil.disk_usage
    with pytest.MonkeyPatch.context() as patch, Recorded("medvl.pretrain") as warnings:
        patch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**12, 10**12 - 1000, 1000)
                      if Path(path) == root / "run" else disk_usage(path))
        pretrain.main(arguments(root / "run", root / "tokenizer"))
    return root / "run", root / "tokenizer", warnings


def test_latest_skips_a_truncated_checkpoint_and_resumes_exactly_from_the_one_before(run, tmp_path):
    original, tokenizer, _ = run
    folder = tmp_path / "run"
    shutil.copytree(original, folder, symlinks=True)
    weights = folder / "checkpoint-4" / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)

    with pytest.raises(UserError, match=rf"model.safetensors has {size // 2:,} bytes, {size:,} were written"):
        pretrain.main(arguments(folder, tokenizer, "--resume_from", str(folder / "checkpoint-last")))
    with Recorded("medvl.checkpointing") as warnings:
        summary = pretrain.main(arguments(folder, tokenizer, "--resume_from", "latest"))
    assert any("skipping" in w and "checkpoint-4" in w and "model.safetensors" in w for w in warnings), warnings
    assert summary["steps"] == 4 and summary["steps_this_launch"] == 2  # from checkpoint-2
    expected, got = train_losses(original), train_losses(folder)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"
    assert ckpt.checkpoint_problem(folder / "checkpoint-4") is None  # rewritten by the resumed run


def test_every_checkpoint_damaged_stops_instead_of_starting_afresh(tmp_path):
    accelerator = Accelerator(cpu=True)

    def write(folder):
        for name in ckpt.REQUIRED_FILES:
            (folder / name).write_text("{}")
        torch.save({"w": torch.zeros(64)}, folder / "model.safetensors")

    for step in (1, 2):
        ckpt.save_checkpoint(accelerator, tmp_path, step, write, keep=2)
    sizes = json.loads((tmp_path / "checkpoint-2" / ckpt.MANIFEST).read_text())
    assert set(sizes) >= {"model.safetensors", "rng_state_0.pt", *ckpt.REQUIRED_FILES}
    (tmp_path / "checkpoint-2" / "rng_state_0.pt").unlink()
    assert ckpt.resolve_resume("latest", tmp_path) == (tmp_path / "checkpoint-1").resolve()
    (tmp_path / "checkpoint-1" / "model.safetensors").write_bytes(b"")
    for value in ("latest", "auto"):
        with pytest.raises(UserError, match="checkpoint-2: rng_state_0.pt is missing; checkpoint-1: model.safetensors"):
            ckpt.resolve_resume(value, tmp_path)


@pytest.mark.parametrize("flag, value, message", [
    ("--model_overrides", "text_config.hidden_dropout_prob=0.2", "another model config (checkpoint -> this run: "
                                                                 "text_config.hidden_dropout_prob: 0.1 -> 0.2)"),
    ("--tokenizer", "other_tokenizer", "text_config.vocab_size: 400 -> 300"),
    ("--data", "synthcxr:n=48,size=32,seed=1", "trained on --data synthcxr:n=48,size=32,seed=0, this run reads "
                                               "synthcxr:n=48,size=32,seed=1"),
    ("--per_device_batch_size", "4", "global batch 8, this run has 4"),
])
def test_a_mismatched_checkpoint_is_refused_before_any_step(run, flag, value, message):
    folder, tokenizer, _ = run
    if flag == "--tokenizer":
        value = str(tokenizer.parent / value)
    steps = sorted(train_losses(folder))
    with pytest.raises(UserError, match="--resume_from .*checkpoint-4") as refused:
        pretrain.main(replaced(arguments(folder, tokenizer, "--resume_from", "latest"), flag, value))
    assert message in str(refused.value)
    assert sorted(train_losses(folder)) == steps


def test_a_disk_too_small_for_the_kept_checkpoints_is_warned_with_numbers(run):
    folder, _, warnings = run
    [warning] = [w for w in warnings if "may not fit" in w]
    size = ckpt.estimated_checkpoint_bytes(MedVLForPreTraining.from_pretrained(folder / "checkpoint-4"))
    written = sum(path.stat().st_size for path in (folder / "checkpoint-4").iterdir())
    assert 0.8 < size / written < 1.2, (size, written)  # the estimate is close to what a checkpoint takes
    # 4 steps saved every 2: checkpoint-2 and checkpoint-4 (--save_total_limit 3); no checkpoint-best (no evaluation)
    assert f"2 step checkpoints of about {ckpt.readable_size(size)} (--save_total_limit 3" in warning
    assert f"need about {ckpt.readable_size(2 * size)}, and 0.0 MB is free" in warning
    assert ckpt.disk_space_warning(folder, size, saves=2, keep=3) is None  # this machine's disk has room
