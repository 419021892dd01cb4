"""A non-finite loss skips its step (no update), is logged, and too many in a row stop the run."""

import json

import pytest
import torch

from train.pretrain import NonFiniteLossError, PretrainingRun
from train.run_config import parse_pretrain_args


def make_run(output_dir, poisoned_steps, max_consecutive, accumulation=1):
    arguments = [
        "--data", f"synthcxr:n={32 * accumulation},size=32,seed=0", "--output_dir", str(output_dir), "--per_device_batch_size", "8",
        "--gradient_accumulation_steps", str(accumulation), "--max_steps", "4", "--eval_steps", "0",
        "--save_steps", "0", "--num_workers", "0", "--report_to", "none", "--max_text_length", "64",
        "--tokenizer_vocab_size", "300", "--max_consecutive_nonfinite", str(max_consecutive),
        "--learning_rate", "1e-3", "--warmup_steps", "0",
    ]
    run = PretrainingRun(*parse_pretrain_args(arguments))
    clean_collator, calls = run.collator, []

    def poisoning_collator(items):
        batch = clean_collator(items)
        if len(calls) // accumulation in poisoned_steps:  # 0-based step of this micro-batch
            batch["pixel_values"] = torch.full_like(batch["pixel_values"], float("nan"))
        calls.append(len(items))
        return batch

    run.collator = poisoning_collator
    snapshots = {}
    run.after_step = lambda step: snapshots.__setitem__(
        step, {name: p.detach().clone() for name, p in run.unwrapped.named_parameters()}
    )
    return run, snapshots


def test_nonfinite_step_is_skipped_and_logged(tmp_path):
    # Two micro-batches per step: the cached-embedding path; the stop test below takes the single-pass one.
    run, snapshots = make_run(tmp_path, poisoned_steps={1}, max_consecutive=2, accumulation=2)
    summary = run.train()
    assert summary["steps"] == 4 and summary["skipped_steps"] == 1
    for name, value in snapshots[1].items():  # step 2 changed nothing
        assert torch.equal(snapshots[2][name], value), name
    assert any(not torch.equal(snapshots[3][n], v) for n, v in snapshots[2].items())  # step 3 trained again
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [False, True, False, False]
    assert all(p.grad is None for p in run.unwrapped.parameters())


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(tmp_path):
    run, _ = make_run(tmp_path, poisoned_steps={1, 2, 3}, max_consecutive=2)
    with pytest.raises(NonFiniteLossError, match="step 3: 2 non-finite losses in a row"):
        run.train()
