"""FSDP pretraining: the wrap policy's block classes, the settings pretrain.py checks, and a real 2-process FSDP run.

accelerate's transformer-based auto-wrap looks up each name of the model's `_no_split_modules` among the model's
module classes: MedVLLayer and the timm backbone's own block class must both be found, or the vision tower would be
one unit.

The 2-process run: accelerate refuses FSDP on the CPU (its launcher asks for a GPU), but torch's FSDP runs there with
gloo, so tests/scripts/pretrain_fsdp_on_cpu.py launches train/pretrain.py with accelerate's state switched to the FSDP
of train/configs/accelerate_1node_8gpu_fsdp.yaml (`accelerator.prepare` then wraps the model as on GPUs). The sharded
run repeats the DDP run's losses and evaluations, its checkpoint holds the full model and optimizer state (gathered
from both ranks' shards), and sharded runs resumed from its checkpoint and from the DDP run's repeat the uninterrupted
ones. Not covered on CPU ranks: sync_module_states (torch broadcasts only GPU modules) and mixed precision.
"""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.dataclasses import get_module_class_from_name
from safetensors.torch import load_file
from transformers import AutoModel

from helpers import free_port, launch_two_processes, synthcxr_tokenizer
from modeling_medvl import MedVLConfig, MedVLForPreTraining
from train import checkpointing as ckpt
from train.optim import build_optimizer
from train.pretrain import PretrainingRun, check_fsdp_settings
from train.run_config import parse_pretrain_args
from train.user_errors import UserError

REPO = Path(__file__).resolve().parent.parent
PRETRAIN = REPO / "train" / "pretrain.py"
FSDP_ON_CPU = Path(__file__).resolve().parent / "scripts" / "pretrain_fsdp_on_cpu.py"
FSDP_CONFIG = REPO / "train" / "configs" / "accelerate_1node_8gpu_fsdp.yaml"
MAX_STEPS, SAVE_STEPS = 4, 2


def fsdp_on_cpu():
    """tests/scripts/pretrain_fsdp_on_cpu.py as a module (its launch environment)."""
    spec = importlib.util.spec_from_file_location("pretrain_fsdp_on_cpu", FSDP_ON_CPU)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset, vision_block", [("tiny", "Block"), ("tiny-convnext", "ConvNeXtBlock")])
def test_no_split_modules_name_classes_the_fsdp_wrap_policy_finds(preset, vision_block):
    model = MedVLForPreTraining(MedVLConfig.from_preset(preset))
    assert set(model._no_split_modules) == {"MedVLLayer", vision_block}
    classes = {name: get_module_class_from_name(model, name) for name in model._no_split_modules}
    assert all(classes.values()), classes
    tower_blocks = model.medvl.vision_model.blocks
    assert tower_blocks and all(isinstance(block, classes[vision_block]) for block in tower_blocks)


def test_torch_fsdp_wraps_the_model():
    # FSDP refuses 0-d parameters; the temperature is one element. One gloo rank, in a child process so that this
    # one's state stays untouched.
    script = textwrap.dedent(f"""
        import torch
        import torch.distributed as dist
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from modeling_medvl import MedVLConfig, MedVLForPreTraining
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        model = MedVLForPreTraining(MedVLConfig.from_preset("tiny"))
        FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
        print("wrapped", tuple(model.medvl.logit_scale.shape))
        dist.destroy_process_group()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and "wrapped" in result.stdout, result.stdout + result.stderr[-3000:]


def test_the_fsdp_config_has_the_settings_pretrain_checks(monkeypatch):
    config = load_config_from_file(str(FSDP_CONFIG))
    settings = config.fsdp_config
    assert (config.distributed_type.name, settings["fsdp_sharding_strategy"], settings["fsdp_state_dict_type"],
            settings["fsdp_auto_wrap_policy"]) == ("FSDP", "FULL_SHARD", "FULL_STATE_DICT", "TRANSFORMER_BASED_WRAP")
    assert "fsdp_transformer_layer_cls_to_wrap" not in settings  # the model's _no_split_modules choose the blocks
    for name, value in fsdp_on_cpu().launch_environment(FSDP_CONFIG).items():
        monkeypatch.setenv(name, value)
    check_fsdp_settings(FullyShardedDataParallelPlugin(), torch_compile=False)


@pytest.mark.parametrize("change, message", [
    ({"use_orig_params": False}, "fsdp_use_orig_params: true"),
    ({"fsdp_version": 2}, "fsdp_version: 1"),
    ({"torch_compile": True}, "--torch_compile is not supported with FSDP"),
])
def test_unsupported_fsdp_settings_are_refused(change, message):
    plugin = type("Plugin", (), {"use_orig_params": True, "fsdp_version": 1})()
    torch_compile = change.pop("torch_compile", False)
    for name, value in change.items():
        setattr(plugin, name, value)
    with pytest.raises(UserError, match=message):
        check_fsdp_settings(plugin, torch_compile)


def test_fsdp_launch_on_cpu_ranks_is_refused(tmp_path, monkeypatch):
    # accelerate keeps CPU ranks on DDP whatever the launch asked for: say so rather than run unsharded.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    arguments = ["--data", "synthcxr:n=8,size=32,seed=0", "--output_dir", str(tmp_path), "--report_to", "none"]
    with pytest.raises(UserError, match=r"FSDP is not supported by pretrain.py on cpu ranks.*DDP"):
        PretrainingRun(*parse_pretrain_args(arguments))
    assert not (tmp_path / "data_cache").exists()  # refused before any work


def run_arguments(output_dir, tokenizer_dir):
    # 64 rows / global batch 32: 2 steps per epoch, so the resumed run starts an epoch; dropout and ITM's sampled
    # negatives make the curve depend on the restored RNG state too; evaluation runs on both ranks.
    return [
        "--data", "synthcxr:n=64,size=32,seed=0", "--tokenizer", tokenizer_dir, "--output_dir", output_dir,
        "--per_device_batch_size", 8, "--gradient_accumulation_steps", 2, "--max_steps", MAX_STEPS,
        "--save_steps", SAVE_STEPS, "--eval_steps", 2, "--validation_size", 16, "--num_workers", 0,
        "--max_text_length", 64, "--learning_rate", 1e-3, "--warmup_steps", 1,
        "--model_overrides", "text_config.hidden_dropout_prob=0.1", "--report_to", "none",
    ]


def launch(script, *arguments):
    result = launch_two_processes(script, *arguments, timeout=600)
    assert result.returncode == 0, f"launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def records(output_dir, kind):
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    synthcxr_tokenizer(64, vocab_size=400).save_pretrained(root / "tokenizer")
    launch(PRETRAIN, *run_arguments(root / "ddp", root / "tokenizer"))
    launch(FSDP_ON_CPU, FSDP_CONFIG, *run_arguments(root / "fsdp", root / "tokenizer"))
    launch(FSDP_ON_CPU, FSDP_CONFIG, *run_arguments(root / "resumed", root / "tokenizer"),
           "--resume_from", root / "fsdp" / f"checkpoint-{SAVE_STEPS}")
    launch(FSDP_ON_CPU, FSDP_CONFIG, *run_arguments(root / "ddp_resumed", root / "tokenizer"),
           "--resume_from", root / "ddp" / f"checkpoint-{SAVE_STEPS}")
    return root


@pytest.mark.slow
def test_sharded_run_repeats_the_ddp_run(runs):
    ddp, fsdp = records(runs / "ddp", "train"), records(runs / "fsdp", "train")
    assert [r["step"] for r in fsdp] == list(range(1, MAX_STEPS + 1))
    assert len({round(r["loss"], 5) for r in ddp}) == MAX_STEPS  # the curve moves
    for sharded, reference in zip(fsdp, ddp):
        assert sharded["loss"] == pytest.approx(reference["loss"], rel=1e-5), sharded["step"]
        assert sharded["terms"] == pytest.approx(reference["terms"], rel=1e-5), sharded["step"]
        assert sharded["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4), sharded["step"]
        assert sharded["logit_scale"] == pytest.approx(reference["logit_scale"], rel=1e-5), sharded["step"]
    evaluations = records(runs / "fsdp", "eval")
    assert [r["step"] for r in evaluations] == [2, 4]  # every rank evaluated with the full weights
    for sharded, reference in zip(evaluations, records(runs / "ddp", "eval")):
        assert sharded["recall@5"] == pytest.approx(reference["recall@5"], abs=1e-6)


@pytest.mark.slow
def test_sharded_checkpoint_holds_the_full_trained_model(runs):
    sharded, reference = runs / "fsdp" / f"checkpoint-{MAX_STEPS}", runs / "ddp" / f"checkpoint-{MAX_STEPS}"
    weights, reference_weights = load_file(sharded / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    assert weights["medvl.logit_scale"].shape == ()  # the checkpoint layout of the temperature
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    model = MedVLForPreTraining.from_pretrained(sharded)
    loaded = {name: tensor for name, tensor in model.state_dict().items()}
    assert all(torch.equal(loaded[name].reshape(tensor.shape), tensor) for name, tensor in weights.items())
    remote = AutoModel.from_pretrained(sharded, trust_remote_code=True)
    assert all(torch.equal(tensor, loaded[f"medvl.{name}"]) for name, tensor in remote.state_dict().items())
    # The optimizer state is gathered in full: Adam's moments have every parameter's whole shape.
    optimizer = torch.load(sharded / ckpt.OPTIMIZER_STATE, weights_only=False)
    parameters = dict(model.named_parameters())
    assert optimizer["state"].keys() == {name for name, p in parameters.items() if p.requires_grad}
    assert all(state["exp_avg"].shape == parameters[name].shape for name, state in optimizer["state"].items())
    best = MedVLForPreTraining.from_pretrained(runs / "fsdp" / ckpt.BEST_FOLDER)
    assert best.medvl.logit_scale.shape == (1,)


@pytest.mark.slow
@pytest.mark.parametrize("uninterrupted, resumed, tolerance", [
    ("fsdp", "resumed", 1e-6),
    ("ddp", "ddp_resumed", 1e-5),  # a DDP checkpoint (its optimizer state keyed by position) resumed sharded
])
def test_resumed_sharded_run_repeats_the_uninterrupted_one(runs, uninterrupted, resumed, tolerance):
    reference, steps = records(runs / uninterrupted, "train"), records(runs / resumed, "train")
    assert [r["step"] for r in steps] == list(range(SAVE_STEPS + 1, MAX_STEPS + 1))
    for step, expected in zip(steps, reference[SAVE_STEPS:]):  # the second one needs the restored Adam moments
        assert step["loss"] == pytest.approx(expected["loss"], rel=tolerance), step["step"]
        assert step["grad_norm"] == pytest.approx(expected["grad_norm"], rel=10 * tolerance), step["step"]
    final = load_file(runs / resumed / f"checkpoint-{MAX_STEPS}" / "model.safetensors")
    expected = load_file(runs / uninterrupted / f"checkpoint-{MAX_STEPS}" / "model.safetensors")
    for name, tensor in final.items():
        torch.testing.assert_close(tensor, expected[name], rtol=10 * tolerance, atol=tolerance, msg=name)


def test_optimizer_state_converts_between_positions_and_names():
    torch.manual_seed(0)
    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny"))
    optimizer = build_optimizer(model, 1e-3, 0.02)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    by_name = ckpt.optimizer_state_by_name(optimizer.state_dict())
    parameters = dict(model.named_parameters())
    assert by_name["state"].keys() == parameters.keys()
    assert all(torch.equal(state["exp_avg"], optimizer.state[parameters[name]]["exp_avg"])
               for name, state in by_name["state"].items())
    assert ckpt.optimizer_state_by_name(by_name) is by_name
    fresh = build_optimizer(model, 1e-3, 0.02)
    fresh.load_state_dict(ckpt.optimizer_state_by_position(by_name))
    assert all(torch.equal(fresh.state[p]["exp_avg_sq"], optimizer.state[p]["exp_avg_sq"]) for p in optimizer.state)
