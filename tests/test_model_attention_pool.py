"""Attention pooling of a feature-map tower (vision_config.pooling="attention"): position-aware where the global
average is not, initialised on a fresh model and on one loaded with the pool missing, saved and reloaded."""

import pytest
import torch

from modeling_medvl import MedVLConfig, MedVLModel
from modeling_medvl.vision_medvl import MedVLAttentionPool


def test_pool_tells_a_feature_map_from_its_mirror_image():
    torch.manual_seed(0)
    pool = MedVLAttentionPool(dim=32, num_tokens=4)
    torch.nn.init.normal_(pool.positions, std=32**-0.5)
    tokens = torch.randn(3, 4, 32)  # a 2x2 map, row-major
    mirrored = tokens[:, [1, 0, 3, 2]]
    assert torch.allclose(tokens.mean(dim=1), mirrored.mean(dim=1), atol=1e-6)
    assert (pool(tokens) - pool(mirrored)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="built for 4 tokens, got 9"):
        pool(torch.randn(1, 9, 32))


def test_convnext_tower_pools_with_attention_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = MedVLModel(MedVLConfig.from_preset("tiny-convnext", vision_config={"pooling": "attention"})).eval()
    pool = model.vision_model.attention_pool
    assert pool is not None and pool.positions.shape == (2 * 2 + 1, 320)
    assert 0.03 < float(pool.positions.detach().std()) < 0.08  # initialised (dim ** -0.5), not left at zero
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixel_values).pooler_output
    model.save_pretrained(tmp_path)
    reloaded = MedVLModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_image_features(pixel_values=pixel_values).pooler_output, expected)


def test_missing_pool_weights_are_initialised_on_load(tmp_path):
    MedVLModel(MedVLConfig.from_preset("tiny-convnext")).save_pretrained(tmp_path)
    config = MedVLConfig.from_pretrained(tmp_path)
    config.vision_config.pooling = "attention"
    model = MedVLModel.from_pretrained(tmp_path, config=config)
    assert torch.isfinite(model.vision_model.attention_pool.positions).all()
    assert float(model.vision_model.attention_pool.positions.detach().std()) > 0.03


def test_attention_pooling_needs_a_feature_map():
    with pytest.raises(ValueError, match="pooling='backbone'"):
        MedVLModel(MedVLConfig.from_preset("tiny", vision_config={"pooling": "attention"}))
    with pytest.raises(ValueError, match="pooling must be"):
        MedVLConfig.from_preset("tiny", vision_config={"pooling": "max"})
