"""`--torch_compile true` in pretraining: the compiled model trains to the same losses as the eager one, and its
checkpoints are the plain model's (no `_orig_mod.` keys), reloadable with `from_pretrained` and resumable.

Compiled with dynamo's `aot_eager` backend: it traces the step as inductor would (graph breaks, the wrapper that
`accelerate.prepare` and the checkpointing see) without needing a C++ compiler, which a clean CI machine may lack."""

import functools
import json

import pytest
import torch
from safetensors import safe_open

from modeling_medvl import MedVLForPreTraining
from train.pretrain import PretrainingRun
from train.run_config import parse_pretrain_args

ARGUMENTS = [
    "--data", "synthcxr:n=32,size=32,seed=0", "--per_device_batch_size", "8", "--max_steps", "3", "--eval_steps", "0",
    "--save_steps", "2", "--num_workers", "0", "--report_to", "none", "--max_text_length", "48",
    "--tokenizer_vocab_size", "300", "--learning_rate", "1e-3", "--warmup_steps", "0",
]


def _losses(folder):
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if record["kind"] == "train"}


@pytest.mark.slow
def test_compiled_pretraining_matches_eager_and_saves_the_plain_model(tmp_path, monkeypatch):
    PretrainingRun(*parse_pretrain_args(ARGUMENTS + ["--output_dir", str(tmp_path / "eager")])).train()
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled_dir = tmp_path / "compiled"
    run = PretrainingRun(*parse_pretrain_args(ARGUMENTS + ["--output_dir", str(compiled_dir), "--torch_compile", "true"]))
    assert hasattr(run.accelerator.unwrap_model(run.model), "_orig_mod")  # the step really runs compiled
    run.train()

    eager, compiled = _losses(tmp_path / "eager"), _losses(compiled_dir)
    assert eager.keys() == compiled.keys() == {1, 2, 3}
    assert all(compiled[step] == pytest.approx(eager[step], abs=1e-4) for step in eager), (eager, compiled)
    with safe_open(str(compiled_dir / "checkpoint-2" / "model.safetensors"), "pt") as weights:
        assert not [key for key in weights.keys() if "_orig_mod" in key]
    reloaded = MedVLForPreTraining.from_pretrained(compiled_dir / "checkpoint-2")
    assert reloaded.config.fusion_type == run.unwrapped.config.fusion_type

    torch._dynamo.reset()
    resumed_dir = compiled_dir  # resume in place, as a requeued job does
    PretrainingRun(*parse_pretrain_args(
        ARGUMENTS + ["--output_dir", str(resumed_dir), "--torch_compile", "true", "--resume_from",
                     str(compiled_dir / "checkpoint-2")]
    )).train()
    assert _losses(resumed_dir)[3] == pytest.approx(compiled[3], abs=1e-5)
    torch._dynamo.reset()  # no compiled graphs left for the worker's next tests
