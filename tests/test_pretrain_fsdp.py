"""FSDP and MedVL: the block classes accelerate's TRANSFORMER_BASED_WRAP wraps, and why pretrain.py refuses FSDP.

accelerate's transformer-based auto-wrap looks up each name of the model's `_no_split_modules` among the model's
module classes: MedVLLayer and the timm backbone's own block class must both be found, or the vision tower would be
one unit. pretrain.py refuses FSDP launches: torch's FSDP refuses 0-d parameters, and MedVL's learned temperature
`logit_scale` is one (checked here with a one-process gloo group, so the refusal is revisited when that changes).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate.utils.dataclasses import get_module_class_from_name

from helpers import free_port
from modeling_medvl import MedVLConfig, MedVLForPreTraining
from train.pretrain import PretrainingRun
from train.run_config import parse_pretrain_args
from train.user_errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset, vision_block", [("tiny", "Block"), ("tiny-convnext", "ConvNeXtBlock")])
def test_no_split_modules_name_classes_the_fsdp_wrap_policy_finds(preset, vision_block):
    model = MedVLForPreTraining(MedVLConfig.from_preset(preset))
    assert set(model._no_split_modules) == {"MedVLLayer", vision_block}
    classes = {name: get_module_class_from_name(model, name) for name in model._no_split_modules}
    assert all(classes.values()), classes
    tower_blocks = model.medvl.vision_model.blocks
    assert tower_blocks and all(isinstance(block, classes[vision_block]) for block in tower_blocks)


def test_torch_fsdp_refuses_the_scalar_temperature():
    # FSDP needs a process group: one gloo rank, in a child process so that this one's state stays untouched.
    script = textwrap.dedent(f"""
        import torch
        import torch.distributed as dist
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from modeling_medvl import MedVLConfig, MedVLForPreTraining
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        try:
            model = MedVLForPreTraining(MedVLConfig.from_preset("tiny"))
            FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
        except ValueError as error:
            print(error)
        dist.destroy_process_group()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert "FSDP doesn't support scalar parameters" in result.stdout and "medvl.logit_scale" in result.stdout, (
        result.stdout + result.stderr[-3000:]
    )
    assert MedVLForPreTraining(MedVLConfig.from_preset("tiny")).medvl.logit_scale.dim() == 0


def test_fsdp_refusal_names_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    arguments = ["--data", "synthcxr:n=8,size=32,seed=0", "--output_dir", str(tmp_path), "--report_to", "none"]
    with pytest.raises(UserError, match=r"0-d parameters.*logit_scale.*accelerate_1node_8gpu_ddp\.yaml"):
        PretrainingRun(*parse_pretrain_args(arguments))
