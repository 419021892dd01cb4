"""Pretraining run configuration: YAML + command line, batch-size arithmetic, optimizer groups and
the warmup-cosine schedule; the shipped configs parse."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from train.optim import build_optimizer, build_scheduler, parameter_groups
from train.run_config import parse_pretrain_args, resolve_accumulation, resolve_warmup_steps, save_run_config

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


def test_yaml_values_then_command_line_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model_preset": "tiny", "data": ["synthcxr:n=100,size=64,seed=0", "pairs:/x.jsonl"], "learning_rate": 3e-4,
        "output_dir": "runs/a", "gradient_checkpointing": True, "mixed_precision": "bf16",
    }))
    model_args, data_args, train_args = parse_pretrain_args(
        ["--config", str(config), "--learning_rate", "1e-3", "--output_dir", "runs/b"]
    )
    assert train_args.learning_rate == 1e-3 and train_args.output_dir == "runs/b"
    assert data_args.data == ["synthcxr:n=100,size=64,seed=0", "pairs:/x.jsonl"]
    assert model_args.gradient_checkpointing is True and train_args.mixed_precision == "bf16"
    assert train_args.weight_decay == 0.02 and train_args.warmup_ratio == 0.1 and train_args.max_grad_norm == 1.0



def test_gradient_checkpointing_flag_checkpoints_every_tower_without_a_deprecation_warning(recwarn):
    from helpers.tokenizers import synthcxr_tokenizer
    from train.pretrain_setup import build_model

    model_args, _, _ = parse_pretrain_args(["--data", "synthcxr:n=10", "--output_dir", "runs/x",
                                            "--model_preset", "tiny", "--gradient_checkpointing", "true"])
    model = build_model(model_args, synthcxr_tokenizer())
    # transformers 5.24 renamed the property too (the old name warns); 5.10 has only the old one.
    renamed = hasattr(type(model), "is_activation_checkpointing")
    assert model.is_activation_checkpointing if renamed else model.is_gradient_checkpointing
    assert model.medvl.vision_model.gradient_checkpointing  # the timm tower's blocks too, not only the text layers
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)]

def test_saved_run_config_reloads_to_the_same_arguments(tmp_path):
    parsed = parse_pretrain_args(["--data", "synthcxr:n=10", "--output_dir", str(tmp_path), "--seed", "7",
                                  "--model_overrides", "itm_weight=0", "text_config.hidden_dropout_prob=0.1"])
    save_run_config(tmp_path / "run_config.yaml", parsed, {"global_batch_size": 32})
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text())["resolved"] == {"global_batch_size": 32}
    assert parse_pretrain_args(["--config", str(tmp_path / "run_config.yaml")]) == parsed


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rte": 1e-4}, "unknown configuration key"),
        ({"mixed_precision": "fp8"}, "invalid choice"),
        ({"data": []}, "--data"),
    ],
)
def test_bad_configuration_is_named(tmp_path, values, message, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "x", "data": ["synthcxr:n=4"], **values}))
    with pytest.raises((ValueError, SystemExit)) as error:
        parse_pretrain_args(["--config", str(config)])
    assert message in str(error.value) + capsys.readouterr().err


def test_global_batch_arithmetic():
    assert resolve_accumulation(64, 8, None, 2048) == (4, 2048)
    assert resolve_accumulation(64, 8, 4, 2048) == (4, 2048)
    assert resolve_accumulation(32, 2, None, None) == (1, 64)
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_accumulation(48, 8, None, 2048)
    with pytest.raises(ValueError, match="inconsistent batch sizes.*2048.*64 x 8 process"):
        resolve_accumulation(64, 8, 2, 2048)


def test_warmup_is_ten_percent_or_a_step_count():
    assert resolve_warmup_steps(1000, None, 0.1) == 100
    assert resolve_warmup_steps(1000, 25, 0.1) == 25
    with pytest.raises(ValueError, match="warmup_steps"):
        resolve_warmup_steps(10, 11, 0.1)


class TinyTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.logit_scale = nn.Parameter(torch.tensor(2.6))
        self.embed = nn.Embedding(10, 4)


def test_no_weight_decay_on_biases_norms_and_temperature():
    decay, exempt = parameter_groups(TinyTower(), weight_decay=0.02)
    assert decay["weight_decay"] == 0.02 and exempt["weight_decay"] == 0.0
    assert sorted(decay["param_names"]) == ["embed.weight", "proj.weight"]
    assert sorted(exempt["param_names"]) == ["logit_scale", "norm.bias", "norm.weight", "proj.bias"]


def test_medvl_temperature_and_norms_are_exempt():
    from modeling_medvl import MedVLConfig, MedVLForPreTraining

    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny"))
    decay, exempt = parameter_groups(model, 0.02)
    assert any(name.endswith("logit_scale") for name in exempt["param_names"])
    assert all(not name.endswith("logit_scale") and not name.endswith(".bias") for name in decay["param_names"])
    assert all(model.get_parameter(name).ndim >= 2 for name in decay["param_names"])


def test_linear_warmup_then_cosine_to_zero():
    model = TinyTower()
    optimizer = build_optimizer(model, learning_rate=1e-3, weight_decay=0.02)
    scheduler = build_scheduler(optimizer, warmup_steps=10, max_steps=100)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(5e-4) and rates[10] == pytest.approx(1e-3)
    assert rates[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 1e-5


@pytest.mark.parametrize("name, preset, image_size", [
    ("pretrain_tiny_synthcxr", "tiny-convnext", 64),
    ("pretrain_tiny_synthcxr_600", "tiny-convnext", 64),
    ("pretrain_swin384", "swin-base-384", 384),
    ("pretrain_swin512", "swin-base-512", 512),
    ("pretrain_vitl14_336", "vit-l14-336", 336),
])
def test_shipped_configs_parse_and_train_at_their_presets_image_size(name, preset, image_size):
    """Each shipped config names the preset its file name and comment promise, that preset's images are the size
    the name says, and the SynthCXR data it ships with (if any) is drawn at that size, not resized."""
    from modeling_medvl import MedVLConfig

    model_args, _, train_args = parse_pretrain_args(
        ["--config", str(CONFIGS / f"{name}.yaml"), "--data", "synthcxr:n=8", "--output_dir", "x"]
    )
    assert model_args.model_preset == preset
    assert MedVLConfig.from_preset(model_args.model_preset).vision_config.image_size == image_size
    if train_args.global_batch_size:
        assert train_args.global_batch_size % train_args.per_device_batch_size == 0
    for source in yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()).get("data", []):
        if source.startswith("synthcxr:"):
            assert f"size={image_size}" in source.split(":", 1)[1].split(","), source
