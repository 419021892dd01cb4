"""MedVLModel.from_clip: a transformers CLIPModel folder converts exactly (embeddings, logits, temperature); new
fusion layers are logged as new; another architecture, missing weights and a foreign tokenizer fail clearly."""

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from convert_fixtures import causal_batch, max_diff, save_tiny_bert, save_tiny_clip
from modeling_medvl import MedVLConfig, MedVLModel
from modeling_medvl.weight_conversion_medvl import medvl_config_from_hf_clip

ATOL = 1e-5


def test_converted_clip_gives_clip_embeddings_and_logits(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    logger = logging.get_logger("modeling_medvl.weight_conversion_medvl")
    with CaptureLogger(logger) as log:
        model = MedVLModel.from_clip(tmp_path / "clip", fusion_type="cross_attention").eval()
    assert "newly initialised" in log.out and "fusion.layers" in log.out
    assert model.config.text_config.norm_position == "pre" and model.config.text_config.is_causal
    input_ids, attention_mask = causal_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        projected_image = model.get_image_features(pixel_values).pooler_output
        projected_text = model.get_text_features(input_ids, attention_mask).pooler_output
        assert max_diff(projected_image, clip.get_image_features(pixel_values).pooler_output) < ATOL
        assert max_diff(projected_text, clip.get_text_features(input_ids, attention_mask).pooler_output) < ATOL
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        assert max_diff(ours[name], expected[name]) < ATOL, name
    assert ours.logit_scale.item() == pytest.approx(clip.logit_scale.exp().item())


def test_clip_converted_for_larger_images_is_timms_own_resampled_tower(tmp_path):
    """224 -> 336 px in miniature (32 -> 48): the position table is resampled exactly as timm resamples it."""
    save_tiny_clip(tmp_path / "clip", tokenizer_size=None)
    native = MedVLModel.from_clip(tmp_path / "clip")
    save_file(native.vision_model.backbone.state_dict(), tmp_path / "vit.safetensors")
    larger = MedVLModel.from_clip(tmp_path / "clip", vision_config={"image_size": 48}).eval()
    vision = larger.config.vision_config
    reference = timm.create_model(vision.backbone, pretrained=True, num_classes=0, img_size=48,
                                  **vision.backbone_kwargs,
                                  pretrained_cfg_overlay={"file": str(tmp_path / "vit.safetensors")}).eval()
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(pixel_values), pre_logits=True)
        assert max_diff(larger.vision_model(pixel_values).pooler_output, expected) < ATOL
    assert larger.vision_model.backbone.pos_embed.shape[1] == 1 + 6 * 6


def test_the_vit_l14_336_preset_is_openai_clip_vit_l14_336():
    # openai/clip-vit-large-patch14-336's sizes (config only: no weights are built).
    clip = CLIPConfig(
        text_config={"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                       "num_hidden_layers": 24, "patch_size": 14, "image_size": 336},
        projection_dim=768,
    ).to_dict()
    converted = medvl_config_from_hf_clip(clip, fusion_type="cross_attention")
    preset = MedVLConfig.from_preset("vit-l14-336")
    assert converted.vision_config.to_dict() == preset.vision_config.to_dict()
    assert converted.text_config.to_dict() == preset.text_config.to_dict()
    assert converted.projection_dim == preset.projection_dim


def test_bad_sources_fail_naming_what_does_not_fit(tmp_path):
    save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type 'clip'.*'bert'"):
        MedVLModel.from_clip(tmp_path / "bert")

    save_tiny_clip(tmp_path / "clip", tokenizer_size=None)
    weights = load_file(tmp_path / "clip" / "model.safetensors")
    del weights["text_model.final_layer_norm.weight"]
    save_file(weights, tmp_path / "clip" / "model.safetensors")
    with pytest.raises(ValueError, match="no 'text_model.final_layer_norm.weight'"):
        MedVLModel.from_clip(tmp_path / "clip")

    save_tiny_clip(tmp_path / "foreign", tokenizer_size=120)
    with pytest.raises(ValueError, match="tokenizer .* has 120 tokens but the text tower embeds 99"):
        MedVLModel.from_clip(tmp_path / "foreign")

    config = json.loads((tmp_path / "foreign" / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "relu"
    (tmp_path / "foreign" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="activation 'relu'"):
        MedVLModel.from_clip(tmp_path / "foreign")
