"""The vision tower keeps timm's contract: a fresh MedVL's backbone is initialised exactly as `timm.create_model`
builds it (ViT with RmsNorm and layer scale, Swin, ConvNeXt), `_no_split_modules` names the backbone's blocks, and
gradient checkpointing runs the backbone's blocks through the checkpoint function with the user's kwargs."""

import pytest
import timm
import torch
import transformers.modeling_utils

from modeling_medvl import MedVLConfig, MedVLForImageClassification, MedVLModel

TOWERS = {
    # RmsNorm weights start at 1 and layer-scale gammas at init_values in timm (not an initialiser of MedVL's own).
    "vit": {"backbone": "vit_tiny_patch16_224", "image_size": 32,
            "backbone_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 8,
                                "init_values": 1e-5, "norm_layer": "rmsnorm"}},
    "swin": {"backbone": "swin_tiny_patch4_window7_224", "image_size": 32,
             "backbone_kwargs": {"embed_dim": 32, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4}},
    "convnext": {"backbone": "convnext_atto", "image_size": 32,
                 "backbone_kwargs": {"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}},
}
BLOCK_CLASSES = {"vit": "Block", "swin": "SwinTransformerBlock", "convnext": "ConvNeXtBlock"}


def timm_reference(vision: dict) -> torch.nn.Module:
    kwargs = {"pretrained": False, "num_classes": 0, "in_chans": 3, **vision["backbone_kwargs"]}
    if vision["backbone"].startswith(("vit", "swin")):
        kwargs["img_size"] = vision["image_size"]
    return timm.create_model(vision["backbone"], **kwargs)


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_fresh_vision_tower_is_initialised_as_timm_builds_it(family):
    vision = TOWERS[family]
    torch.manual_seed(0)
    model = MedVLModel(MedVLConfig.from_preset("tiny", vision_config=vision))
    torch.manual_seed(0)  # the vision tower is built first, from the same random stream
    reference = timm_reference(vision).state_dict()
    tower = model.vision_model.backbone.state_dict()
    assert set(reference) <= set(tower)
    for name, tensor in reference.items():
        assert torch.equal(tower[name], tensor), f"{family}: {name} differs from timm's initialisation"
    # What MedVL's own initialiser used to overwrite, checked explicitly.
    if family == "vit":
        norms = [m.weight for m in model.vision_model.backbone.modules() if type(m).__name__ == "RmsNorm"]
        gammas = [m.gamma for m in model.vision_model.backbone.modules() if type(m).__name__ == "LayerScale"]
        assert norms and all(bool((w == 1).all()) for w in norms)
        # A constant start (1e-5 as asked in current timm; timm 1.0.21 resets it to 1): never a random draw.
        assert gammas and all(bool((g == g.flatten()[0]).all()) for g in gammas)


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_no_split_modules_name_the_backbone_blocks(family):
    model = MedVLForImageClassification(MedVLConfig.from_preset("tiny", vision_config=TOWERS[family], num_labels=2))
    assert set(model._no_split_modules) == {"MedVLLayer", BLOCK_CLASSES[family]}
    assert "MedVLVisionTower" not in model._no_split_modules  # a whole tower cannot be split across devices


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_kwargs_reach_the_vision_blocks(monkeypatch, use_reentrant):
    config = MedVLConfig.from_preset("tiny", vision_config=TOWERS["vit"], num_labels=3)
    torch.manual_seed(0)
    model = MedVLForImageClassification(config).train()
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([0, 2])
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    calls = []
    original = torch.utils.checkpoint.checkpoint

    def recording_checkpoint(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(function, *args, **kwargs)

    # transformers binds torch's checkpoint at import: record it where transformers takes it from.
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", recording_checkpoint)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model(pixel_values=pixel_values.requires_grad_(use_reentrant), labels=labels).loss.backward()
    assert calls == [use_reentrant] * len(model.vision_model.blocks), calls
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, plain[name], msg=name)

    calls.clear()
    with torch.no_grad():
        model(pixel_values=pixel_values)
    assert calls == [], "no checkpointing without gradients"
    model.gradient_checkpointing_disable()
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    assert calls == []
