"""from_pretrained_towers: timm weights adapted by timm's own filter (a ViT's positions resampled, a Swin's relative
position tables resized to new windows) give exactly timm's own adapted model; shapes that cannot be adapted fail
naming them; the log says what was loaded and what is new. LiT: locked towers take no gradient and stay in eval."""

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from convert_fixtures import save_tiny_bert
from modeling_medvl import MedVLConfig, MedVLForPreTraining, MedVLModel

VIT = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 8}
SWIN = {"embed_dim": 16, "depths": (1, 1), "num_heads": (2, 4), "patch_size": 4}
TEXT = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 40, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3, "mask_token_id": 4}


def config_for(backbone, kwargs, image_size, text=None, **fields):
    return MedVLConfig(
        vision_config={"backbone": backbone, "backbone_kwargs": kwargs, "image_size": image_size},
        text_config={**TEXT, **(text or {})}, projection_dim=16, num_fusion_layers=1, num_decoder_layers=1, **fields,
    )


@pytest.mark.parametrize("backbone,small,large", [
    ("vit_tiny_patch16_224", {**VIT}, {**VIT}),
    ("swin_tiny_patch4_window7_224", {**SWIN, "window_size": 4}, {**SWIN, "window_size": 8}),
])
def test_a_checkpoint_at_one_size_loads_into_a_larger_tower_as_timm_adapts_it(tmp_path, backbone, small, large):
    source = timm.create_model(backbone, pretrained=False, num_classes=0, img_size=32, **small)
    save_file(source.state_dict(), tmp_path / "small.safetensors")
    # timm's own route: pretrained=True from the local file, through the same checkpoint filter.
    reference = timm.create_model(backbone, pretrained=True, num_classes=0, img_size=64, **large,
                                  pretrained_cfg_overlay={"file": str(tmp_path / "small.safetensors")}).eval()
    model = MedVLModel.from_pretrained_towers(config_for(backbone, large, 64),
                                              vision_weights=tmp_path / "small.safetensors").eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(pixel_values), pre_logits=True)
        assert (model.vision_model(pixel_values).pooler_output - expected).abs().max() < 1e-5


def test_shapes_that_cannot_be_adapted_fail_naming_them(tmp_path):
    wide = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
                             **{**VIT, "embed_dim": 48})
    save_file(wide.state_dict(), tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"cannot take even after timm's adaptation.*qkv.weight: \(144, 48\) vs \(96, 32\)"):
        MedVLModel.from_pretrained_towers(config_for("vit_tiny_patch16_224", VIT, 32),
                                          vision_weights=tmp_path / "wide.safetensors")


def test_the_log_says_what_was_loaded_and_what_is_new(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, **VIT)
    save_file(source.state_dict(), tmp_path / "vit.safetensors")
    save_tiny_bert(tmp_path / "bert")
    logger = logging.get_logger("modeling_medvl.tower_init_medvl")
    with CaptureLogger(logger) as log:
        MedVLForPreTraining.from_pretrained_towers(config_for("vit_tiny_patch16_224", VIT, 32),
                                                   vision_weights=tmp_path / "vit.safetensors",
                                                   text_model_path=tmp_path / "bert")
    assert "newly initialised" in log.out
    for new in ("medvl.fusion.layers", "medvl.visual_projection", "itm_head"):
        assert new in log.out.split("newly initialised")[1], log.out
    assert "medvl.text_model" not in log.out.split("newly initialised")[1]
    # The folder's tokenizer (PubMedBERT's [CLS] 2, [SEP] 3, [MASK] 4) must be the one the config names.
    with pytest.raises(ValueError, match=r"tokenizer .* does not match text_config .*'bos_token_id': \(2, 5\)"):
        MedVLModel.from_pretrained_towers(config_for("vit_tiny_patch16_224", VIT, 32, text={"bos_token_id": 5}),
                                          text_model_path=tmp_path / "bert")


def test_locked_image_tower_takes_no_gradient_and_stays_in_eval(tmp_path):
    from train.optim import build_optimizer

    model = MedVLForPreTraining(config_for("vit_tiny_patch16_224", VIT, 32, lock_vision_tower=True)).train()
    vision = model.medvl.vision_model
    assert not vision.training and vision.backbone.blocks[0].training is False
    assert not any(p.requires_grad for p in vision.parameters())
    assert not model.medvl.visual_projection.weight.requires_grad
    assert model.medvl.text_model.training and model.medvl.text_projection.weight.requires_grad
    optimised = {id(p) for group in build_optimizer(model, 1e-3, 0.01).param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in vision.parameters())
    input_ids = torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3]])
    model(input_ids=input_ids, pixel_values=torch.randn(2, 3, 32, 32), attention_mask=torch.ones_like(input_ids),
          loss_terms=("itc",)).loss.backward()
    assert all(p.grad is None for p in vision.parameters())
    assert model.medvl.text_model.embeddings.word_embeddings.weight.grad is not None
    # The lock is in the config: a saved and reloaded model is locked too.
    model.save_pretrained(tmp_path / "locked")
    reloaded = MedVLForPreTraining.from_pretrained(tmp_path / "locked").train()
    assert not reloaded.medvl.vision_model.training
    assert not any(p.requires_grad for p in reloaded.medvl.vision_model.parameters())
