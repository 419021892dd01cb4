"""MedVLModel.from_open_clip: tiny open_clip models (OpenAI-style towers with QuickGELU; timm trunks with a
BERT-style hf text tower, BiomedCLIP's layout) convert exactly; what MedVL cannot hold fails naming it."""

import json

import pytest
import torch
from safetensors.torch import save_file

from convert_fixtures import CONTEXT, bert_batch, causal_batch, max_diff, save_tiny_bert
from modeling_medvl import MedVLModel

open_clip = pytest.importorskip("open_clip")

ATOL = 1e-5
OPENAI_STYLE = {
    "embed_dim": 24,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 99, "width": 32, "heads": 4, "layers": 2},
}


def save_state(model, path):
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, path)


def assert_same_embeddings(source, converted, input_ids, attention_mask, image_size):
    pixel_values = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        image_features, text_features, logit_scale = source(pixel_values, input_ids)[:3]
        ours = converted(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        diffs = {
            "image": max_diff(ours.image_embeds, torch.nn.functional.normalize(source.encode_image(pixel_values), dim=-1)),
            "text": max_diff(ours.text_embeds, torch.nn.functional.normalize(source.encode_text(input_ids), dim=-1)),
            "logits": max_diff(ours.logits_per_image, logit_scale * image_features @ text_features.t()),
        }
    assert max(diffs.values()) < ATOL, diffs


def biomedclip_style(bert_folder, trunk="vit_tiny_patch16_224", image_size=224):
    return {"embed_dim": 24,
            "vision_cfg": {"timm_model_name": trunk, "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear", "image_size": image_size},
            "text_cfg": {"hf_model_name": str(bert_folder), "hf_tokenizer_name": str(bert_folder),
                         "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                         "context_length": CONTEXT}}


def test_openai_style_model_by_registered_name(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "medvl-test-tiny-quickgelu.json").write_text(json.dumps(OPENAI_STYLE))
    open_clip.add_model_config(tmp_path / "configs")
    source = open_clip.create_model("medvl-test-tiny-quickgelu").eval()
    with torch.no_grad():
        source.logit_scale.fill_(3.3)
    save_state(source, tmp_path / "weights.safetensors")
    model = MedVLModel.from_open_clip(tmp_path / "weights.safetensors", model_name="medvl-test-tiny-quickgelu").eval()
    assert model.config.vision_config.backbone_kwargs["act_layer"] == "quick_gelu"
    assert_same_embeddings(source, model, *causal_batch(), image_size=32)


@pytest.mark.parametrize("trunk,image_size", [("vit_tiny_patch16_224", 224), ("convnext_atto", 64)])
def test_timm_trunk_with_bert_text_tower_from_a_hub_layout_folder(tmp_path, trunk, image_size):
    save_tiny_bert(tmp_path / "bert")
    config = biomedclip_style(tmp_path / "bert", trunk, image_size)
    source = open_clip.CustomTextCLIP(**config).eval()
    folder = tmp_path / "biomedclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    save_state(source, folder / "open_clip_model.safetensors")
    model = MedVLModel.from_open_clip(folder).eval()
    text_config = model.config.text_config
    assert (text_config.pooling, model.config.text_projection_type) == ("cls", "mlp")
    # The tokenizer's special tokens (PubMedBERT's layout) reach the config, so MLM can run.
    assert (text_config.bos_token_id, text_config.eos_token_id, text_config.mask_token_id) == (2, 3, 4)
    assert_same_embeddings(source, model, *bert_batch(), image_size=image_size)


def test_what_medvl_cannot_hold_fails_naming_it(tmp_path):
    path = tmp_path / "weights.safetensors"
    scaled = {**OPENAI_STYLE, "vision_cfg": {**OPENAI_STYLE["vision_cfg"], "ls_init_value": 0.1}}
    save_state(open_clip.CLIP(**scaled), path)
    with pytest.raises(ValueError, match="vision options MedVL cannot hold: {'ls_init_value': 0.1}"):
        MedVLModel.from_open_clip(path, model_config=scaled)

    source = open_clip.CLIP(**OPENAI_STYLE)
    weights = {key: value.contiguous() for key, value in source.state_dict().items()}
    save_file({**weights, "logit_bias": torch.zeros(())}, path)
    with pytest.raises(ValueError, match="SigLIP"):
        MedVLModel.from_open_clip(path, model_config=OPENAI_STYLE)
    del weights["ln_final.weight"]
    save_file(weights, path)
    with pytest.raises(ValueError, match="no 'ln_final.weight'"):
        MedVLModel.from_open_clip(path, model_config=OPENAI_STYLE)
    with pytest.raises(ValueError, match="needs model_name"):
        MedVLModel.from_open_clip(path)
    with pytest.raises(ValueError, match="knows no model 'not-a-model'"):
        MedVLModel.from_open_clip(path, model_name="not-a-model")
    # A config of another architecture or size than the checkpoint.
    with pytest.raises(ValueError, match="no 'visual.head.proj.weight'"):
        MedVLModel.from_open_clip(path, model_config={**OPENAI_STYLE, "vision_cfg": {"timm_model_name": "convnext_atto"}})
    save_state(source, path)
    wider = {**OPENAI_STYLE, "vision_cfg": {**OPENAI_STYLE["vision_cfg"], "width": 128}}
    with pytest.raises(ValueError, match=r"cannot take even after timm's adaptation .*cls_token: \(1, 1, 64\) vs \(1, 1, 128\)"):
        MedVLModel.from_open_clip(path, model_config=wider)
