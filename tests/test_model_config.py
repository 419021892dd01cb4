"""MedVLConfig: presets, validation at config time, documentation of every field, serialisation."""

import dataclasses

import pytest
import torch
from transformers import initialization as init

from helpers import text_batch, tiny_config

from modeling_medvl import MedVLConfig, MedVLForPreTraining, MedVLTextConfig, MedVLVisionConfig

PRESETS = ("tiny", "swin-base-384", "swin-base-512", "vit-l14-336")


def test_tiny_preset_matches_the_cpu_sizes():
    config = MedVLConfig.from_preset("tiny")
    assert config.model_type == "medvl"
    assert config.vision_config.image_size == 64
    assert config.vision_config.backbone_kwargs == {"embed_dim": 128, "depth": 3, "num_heads": 4, "patch_size": 8}
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (128, 2)
    assert config.text_config.vocab_size == 1000
    assert config.text_config.max_position_embeddings == 256


def test_clip_style_preset_has_a_causal_49408_token_text_tower_without_mlm():
    config = MedVLConfig.from_preset("vit-l14-336")
    assert config.text_config.is_causal and config.text_config.vocab_size == 49408
    assert config.mlm_weight == 0.0
    assert config.vision_config.image_size == 336
    swin = MedVLConfig.from_preset("swin-base-512")
    assert not swin.text_config.is_causal and swin.mlm_weight > 0 and swin.vision_config.image_size == 512


@pytest.mark.parametrize("preset", PRESETS[1:])
def test_paper_presets_build_and_run_at_their_image_size(preset):
    # On the meta device: full-size towers, shapes checked, no memory or compute spent.
    config = MedVLConfig.from_preset(preset)
    size = config.vision_config.image_size
    with torch.device("meta"), init.meta_device_safe_creation_ops():
        model = MedVLForPreTraining(config)
        output = model(
            pixel_values=torch.empty(2, 3, size, size),
            input_ids=torch.zeros(2, 16, dtype=torch.long),
            attention_mask=torch.ones(2, 16, dtype=torch.long),
            loss_terms=("itc",),
        )
    assert output.image_embeds.shape == (2, config.projection_dim)
    assert output.logits_per_image.shape == (2, 2)


def test_overrides_merge_into_the_preset():
    config = MedVLConfig.from_preset("tiny", fusion_type="merged", text_config={"num_hidden_layers": 3})
    assert config.fusion_type == "merged"
    assert config.text_config.num_hidden_layers == 3
    assert config.text_config.hidden_size == 128  # untouched preset field


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fusion_type": "late"}, "fusion_type"),
        ({"text_config": {"num_attention_heads": 3}}, "multiple of"),
        ({"text_config": {"max_position_embeddings": 512}}, "max_position_embeddings"),
        ({"text_config": {"is_causal": True}}, "bidirectional"),
        ({"fusion_type": "none"}, "itm_weight"),
        ({"mlm_probability": 0.0}, "mlm_probability"),
        ({"itc_weight": -1.0}, "itc_weight"),
        ({"num_fusion_layers": 0}, "num_fusion_layers"),
        ({"text_config": {"mask_token_id": 5000}}, "outside the vocabulary"),
        ({"vision_config": {"backbone_kwargs": {"img_size": 32}}}, "backbone_kwargs"),
        ({"vision_config": {"image_size": 0}}, "image_size"),
        ({"text_config": {"pooling": "max"}}, "pooling must be one of"),
        ({"text_config": {"is_causal": True, "pooling": "cls"}}, "only the last token"),
    ],
)
def test_invalid_combinations_raise_value_error_at_config_time(overrides, message):
    with pytest.raises(ValueError, match=message):
        MedVLConfig.from_preset("tiny", **overrides)


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="swin-base-384"):
        MedVLConfig.from_preset("swin-huge")


def test_ablation_settings_are_valid_together():
    """The ablation's cells: fusion_type="none" (with itm_weight=0, as ablate.py sets it) builds no fusion layers and
    trains on ITC and MLM alone; "merged" on the CLIP-style preset (causal text, no MLM) trains on ITC and ITM."""
    torch.manual_seed(0)
    pixel_values, input_ids, attention_mask = text_batch(batch=4, lengths=(10, 6, 8, 7))
    inputs = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
              "return_loss": True}
    unfused = MedVLForPreTraining(tiny_config(fusion_type="none", itm_weight=0.0))
    assert unfused.medvl.fusion is None
    output = unfused(**inputs)
    assert set(output.loss_terms) == {"itc", "mlm"}
    torch.testing.assert_close(output.loss, output.loss_terms["itc"] + output.loss_terms["mlm"])

    clip_style = MedVLConfig.from_preset("vit-l14-336", fusion_type="merged")
    assert clip_style.fusion_type == "merged" and clip_style.text_config.is_causal and clip_style.mlm_weight == 0
    # The same settings at the tiny size, run.
    text = {key: getattr(clip_style.text_config, key) for key in ("is_causal", "pooling")}
    merged = MedVLForPreTraining(tiny_config(fusion_type="merged", mlm_weight=0.0, text_config=text))
    assert merged.medvl.fusion.fusion_type == "merged" and merged.config.text_config.is_causal
    output = merged(**inputs)
    assert set(output.loss_terms) == {"itc", "itm"} and torch.isfinite(output.loss)


@pytest.mark.parametrize("config_class", [MedVLConfig, MedVLVisionConfig, MedVLTextConfig])
def test_every_field_is_documented(config_class):
    own_fields = {field.name for field in dataclasses.fields(config_class)} - {
        field.name for field in dataclasses.fields(MedVLConfig.__mro__[1])
    }
    undocumented = [name for name in own_fields if f"{name} (" not in config_class.__doc__]
    assert own_fields and not undocumented


def test_save_and_load_round_trip(tmp_path):
    config = MedVLConfig.from_preset("tiny", fusion_type="merged", num_labels=14)
    config.save_pretrained(tmp_path)
    loaded = MedVLConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.text_config, MedVLTextConfig)
    assert isinstance(loaded.vision_config, MedVLVisionConfig)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_labels == 14 and loaded.fusion_type == "merged"


def test_padding_is_never_the_token_a_causal_tower_pools_at():
    """The padding row of the embedding table is zero and never trained: were it also EOS, every pooled EOS
    embedding of the CLIP-style preset would be zero."""
    text = MedVLConfig.from_preset("vit-l14-336").text_config
    assert text.pad_token_id not in (text.eos_token_id, text.bos_token_id)
    torch.manual_seed(0)
    small = MedVLConfig.from_preset(
        "tiny", mlm_weight=0.0, text_config={"is_causal": True, "pad_token_id": text.pad_token_id % 1000}
    )
    model = MedVLForPreTraining(small).medvl
    eos = small.text_config.eos_token_id
    assert model.text_model.embeddings.word_embeddings.weight[eos].abs().sum() > 0
    with pytest.raises(ValueError, match="pad_token_id=2 is also the start or end token"):
        MedVLTextConfig(vocab_size=10, pad_token_id=2, bos_token_id=1, eos_token_id=2, mask_token_id=3)


def test_saved_config_holds_no_path_of_the_saving_machine(tmp_path):
    weights = tmp_path / "timm_weights.safetensors"
    config = MedVLConfig.from_preset("tiny")
    from safetensors.torch import save_file

    from modeling_medvl.vision_medvl import build_backbone

    save_file(build_backbone(config.vision_config).state_dict(), str(weights))
    seeded = MedVLConfig.from_preset("tiny", vision_config={"weights_path": str(weights)})
    model = MedVLForPreTraining(seeded)
    model.save_pretrained(tmp_path / "saved")
    saved = (tmp_path / "saved" / "config.json").read_text()
    assert str(tmp_path) not in saved and "weights_path" not in saved.replace('"weights_path": null', "")
    reloaded = MedVLForPreTraining.from_pretrained(tmp_path / "saved")
    assert reloaded.config.vision_config.weights_path is None
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
