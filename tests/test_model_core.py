"""MedVLModel and MedVLForPreTraining: outputs, losses, attention backends, padding, bad input, checkpointing,
tower initialisation from local files, the zero-shot pipeline."""

import numpy as np
import pytest
import timm
import torch
from helpers import text_batch, tiny_config
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForMaskedLM, CLIPImageProcessor, PreTrainedTokenizerFast, pipeline

from modeling_medvl import MedVLForPreTraining, MedVLModel, contrastive_loss
from modeling_medvl.losses_medvl import mask_tokens

TINY_VIT = dict(embed_dim=128, depth=3, num_heads=4, patch_size=8, img_size=64)


def test_model_outputs_scaled_similarities_with_clamped_temperature():
    model = MedVLModel(tiny_config()).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) far above the clamp
        output = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                       compute_fusion=True)
    assert output.logit_scale.item() == pytest.approx(100.0)
    assert torch.allclose(output.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    expected = 100.0 * output.image_embeds @ output.text_embeds.t()
    assert torch.allclose(output.logits_per_image, expected, atol=1e-4)
    assert torch.equal(output.logits_per_text, output.logits_per_image.t())
    assert output.fused_hidden_state.shape == (3, 10, 128)
    image_features = model.get_image_features(pixel_values=pixel_values).pooler_output
    assert torch.allclose(torch.nn.functional.normalize(image_features, dim=-1), output.image_embeds, atol=1e-6)


def test_unpaired_batches_score_every_image_against_every_text():
    model = MedVLModel(tiny_config()).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    output = model(input_ids=input_ids, pixel_values=pixel_values[:1], attention_mask=attention_mask)
    assert output.logits_per_image.shape == (1, 3) and output.fused_hidden_state is None
    with pytest.raises(ValueError, match="1 images but input_ids holds 3 texts"):
        model(input_ids=input_ids, pixel_values=pixel_values[:1], attention_mask=attention_mask, return_loss=True)


@pytest.mark.parametrize("fusion_type", ["cross_attention", "merged", "none"])
def test_pretraining_reports_each_term_and_the_weighted_sum(fusion_type):
    itm_weight = 0.0 if fusion_type == "none" else 3.0
    model = MedVLForPreTraining(tiny_config(fusion_type=fusion_type, itc_weight=0.5, mlm_weight=2.0, itm_weight=itm_weight))
    pixel_values, input_ids, attention_mask = text_batch()
    output = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    expected_terms = {"itc", "mlm"} | ({"itm"} if itm_weight else set())
    assert set(output.loss_terms) == expected_terms
    weighted = sum({"itc": 0.5, "mlm": 2.0, "itm": 3.0}[name] * value for name, value in output.loss_terms.items())
    assert torch.allclose(output.loss, weighted)
    assert torch.allclose(
        output.loss_terms["itc"], contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale)
    )
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "every parameter takes part in the full objective"


def test_loss_terms_select_what_is_computed():
    model = MedVLForPreTraining(tiny_config()).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    output = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                   loss_terms=("mlm", "itm"))
    assert set(output.loss_terms) == {"mlm", "itm"}
    assert output.itm_labels[:3].tolist() == [1, 1, 1] and (output.itm_labels[3:] == 0).all()
    with pytest.raises(ValueError, match="Unknown loss term"):
        model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, loss_terms=("clip",))
    no_fusion = MedVLForPreTraining(tiny_config(fusion_type="none", itm_weight=0.0))
    with pytest.raises(ValueError, match="fusion"):
        no_fusion(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, loss_terms=("itm",))


def test_given_mlm_inputs_are_used_and_only_labelled_positions_count():
    model = MedVLForPreTraining(tiny_config()).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    labels = torch.full_like(input_ids, -100)
    labels[0, 3] = input_ids[0, 3]
    masked = input_ids.clone()
    masked[0, 3] = 3
    output = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                   mlm_input_ids=masked, mlm_labels=labels, loss_terms=("mlm",))
    # Logits come back at the masked positions only: row 0's one masked token, the other rows padding.
    assert output.mlm_positions.tolist() == [[3], [0], [0]]
    assert output.mlm_labels.tolist() == [[input_ids[0, 3].item()], [-100], [-100]]
    expected = torch.nn.functional.cross_entropy(output.mlm_logits[0, 0:1], input_ids[0, 3:4])
    assert torch.allclose(output.loss_terms["mlm"], expected, atol=1e-5)


def test_bert_masking_never_touches_special_or_padding_tokens():
    _, input_ids, attention_mask = text_batch()
    masked, labels = mask_tokens(input_ids, attention_mask, 3, 1000, [0, 1, 2, 3], 0.5)
    picked = labels != -100
    assert picked.any(dim=1).all(), "every text with maskable tokens gets at least one prediction"
    assert not picked[attention_mask == 0].any()
    assert not picked[(input_ids == 1) | (input_ids == 2)].any()
    assert torch.equal(masked[~picked], input_ids[~picked])
    assert torch.equal(labels[picked], input_ids[picked])


def test_contrastive_loss_matches_clip_formula_in_one_process():
    image = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    logits = 20.0 * image @ text.t()
    labels = torch.arange(5)
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(contrastive_loss(image, text, torch.tensor(20.0)), expected)
    with pytest.raises(ValueError, match="pairs image and text rows"):
        contrastive_loss(image, text[:4], torch.tensor(20.0))


@pytest.mark.parametrize("fusion_type, causal", [("cross_attention", False), ("merged", False), ("cross_attention", True)])
def test_sdpa_and_eager_attention_agree(fusion_type, causal):
    config = tiny_config(fusion_type=fusion_type, text_config={"is_causal": causal}, mlm_weight=0.0 if causal else 1.0)
    model = MedVLModel(config).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    with torch.no_grad():
        sdpa = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, compute_fusion=True)
        model.set_attn_implementation("eager")
        assert model.config.text_config._attn_implementation == "eager"
        eager = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                      compute_fusion=True)
    real = attention_mask.bool()
    assert torch.allclose(sdpa.fused_hidden_state[real], eager.fused_hidden_state[real], atol=1e-5)
    assert torch.allclose(sdpa.logits_per_image, eager.logits_per_image, atol=1e-5)


@pytest.mark.parametrize("fusion_type, causal", [("cross_attention", False), ("merged", False), ("cross_attention", True)])
def test_batch_and_single_example_outputs_agree(fusion_type, causal):
    config = tiny_config(fusion_type=fusion_type, text_config={"is_causal": causal}, mlm_weight=0.0 if causal else 1.0)
    model = MedVLModel(config).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    with torch.no_grad():
        batch = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, compute_fusion=True)
        for row in range(3):
            real = int(attention_mask[row].sum())
            single = model(input_ids=input_ids[row : row + 1, :real], pixel_values=pixel_values[row : row + 1],
                           compute_fusion=True)
            assert torch.allclose(single.text_embeds[0], batch.text_embeds[row], atol=1e-5)
            assert torch.allclose(single.image_embeds[0], batch.image_embeds[row], atol=1e-5)
            assert torch.allclose(single.fused_hidden_state[0], batch.fused_hidden_state[row, :real], atol=1e-5)


def test_bad_input_names_what_was_expected():
    model = MedVLForPreTraining(tiny_config()).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    with pytest.raises(ValueError, match=r"expected \(batch, 3, 64, 64\)"):
        model(pixel_values=torch.randn(3, 3, 32, 32), input_ids=input_ids, attention_mask=attention_mask)
    with pytest.raises(ValueError, match="max_position_embeddings=256"):
        long_ids = torch.randint(4, 1000, (3, 257))
        model(pixel_values=pixel_values, input_ids=long_ids, attention_mask=torch.ones_like(long_ids))
    with pytest.raises(ValueError, match="3 images but input_ids holds 2 texts"):
        model(pixel_values=pixel_values, input_ids=input_ids[:2], attention_mask=attention_mask[:2])
    with pytest.raises(ValueError, match="pixel_values are required"):
        model(input_ids=input_ids, attention_mask=attention_mask)
    segments = torch.zeros_like(input_ids)
    model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=segments)
    with pytest.raises(ValueError, match="token_type_ids must be all 0"):
        model(pixel_values=pixel_values, input_ids=input_ids, token_type_ids=segments + 1)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = MedVLForPreTraining(tiny_config())
    model.train()
    pixel_values, input_ids, attention_mask = text_batch()
    masked, labels = mask_tokens(input_ids, attention_mask, 3, 1000, [0, 1, 2, 3], 0.3)
    inputs = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                  mlm_input_ids=masked, mlm_labels=labels, loss_terms=("itc", "mlm"))
    model(**inputs).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()  # activation_checkpointing_enable from 5.24 on
    assert model.medvl.vision_model.gradient_checkpointing and model.medvl.text_model.layers[0].gradient_checkpointing
    assert model.medvl.fusion.layers[0].gradient_checkpointing
    model(**inputs).loss.backward()
    for name, grad in reference.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, atol=1e-6), name


def test_towers_initialise_from_local_timm_file_and_bert_checkpoint(tmp_path):
    bert = BertForMaskedLM(BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=256, attn_implementation="eager")).eval()
    bert.save_pretrained(tmp_path / "bert")
    backbone = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **TINY_VIT)
    save_file(backbone.state_dict(), tmp_path / "vit.safetensors")

    model = MedVLForPreTraining.from_pretrained_towers(
        tiny_config(), vision_weights=tmp_path / "vit.safetensors", text_model_path=tmp_path / "bert"
    ).eval()
    _, input_ids, attention_mask = text_batch()
    with torch.no_grad():
        reference = bert.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        ours = model.medvl.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        real = attention_mask.bool()
        assert torch.allclose(ours[real], reference[real], atol=1e-5)
        assert torch.allclose(model.mlm_head(ours)[real], bert.cls(reference)[real], atol=1e-4)
    for name, tensor in backbone.state_dict().items():
        if not name.startswith("head"):
            assert torch.equal(model.medvl.vision_model.backbone.state_dict()[name], tensor), name

    # The config route: the weight file named in the config survives post_init's initialisation.
    config = tiny_config(vision_config={"weights_path": str(tmp_path / "vit.safetensors")})
    assert torch.equal(MedVLModel(config).vision_model.backbone.pos_embed, backbone.pos_embed)

    wide = BertForMaskedLM(BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=256))
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="hidden_size"):
        MedVLModel.from_pretrained_towers(tiny_config(), text_model_path=tmp_path / "wide")
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **{**TINY_VIT, "depth": 2})
    save_file(other.state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="lacks"):
        MedVLModel.from_pretrained_towers(tiny_config(), vision_weights=tmp_path / "other.safetensors")


def test_zero_shot_image_classification_pipeline():
    words = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "left", "right", "effusion", "normal", "a", "photo", "of",
             "this", "is", "."]
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    model = MedVLModel(tiny_config()).eval()
    classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer,
                          image_processor=image_processor)
    image = Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype("uint8"))
    labels = ["left effusion", "right effusion", "normal"]
    result = classifier(image, candidate_labels=labels)
    assert sorted(item["label"] for item in result) == sorted(labels)
    assert sum(item["score"] for item in result) == pytest.approx(1.0, abs=1e-5)
    # The pipeline's scores are the model's own softmaxed logits_per_image.
    inputs = image_processor(images=[image], return_tensors="pt")
    texts = tokenizer([f"This is a photo of {label}." for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**texts, **inputs).logits_per_image.softmax(dim=-1)[0]
    by_label = {item["label"]: item["score"] for item in result}
    assert [by_label[label] for label in labels] == pytest.approx(probs.tolist(), abs=1e-5)


def test_weights_missing_from_a_checkpoint_are_initialised_and_derived_buffers_recomputed():
    swin = {"backbone": "swin_tiny_patch4_window7_224", "image_size": 32,
            "backbone_kwargs": {"embed_dim": 32, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4}}
    config = tiny_config(vision_config=swin)
    fresh = MedVLModel(config)
    loaded = MedVLModel.from_pretrained(None, config=config, state_dict={})
    state = loaded.state_dict()
    assert not [name for name, tensor in state.items() if tensor.device.type == "meta"]
    index_names = [name for name in state if name.endswith("relative_position_index")]
    assert index_names
    for name in index_names:
        assert torch.equal(state[name], fresh.state_dict()[name]), name
    pos_std = loaded.vision_model.backbone.layers[0].blocks[0].attn.relative_position_bias_table.std().item()
    assert 0.005 < pos_std < 0.05, "bare timm parameters get the configured initialiser"


def test_mean_pooling_ignores_padding_and_separates_texts_from_the_first_step():
    """A fresh tower pooled at [CLS] maps every text to almost the same embedding (contrastive learning then
    stalls at ln(batch)); the mean over real tokens tells texts apart from initialisation on."""
    _, input_ids, attention_mask = text_batch(batch=3, length=12, lengths=(12, 7, 9))
    padded = input_ids.clone()
    padded[1, 7:] = 999  # garbage under the mask must not change the embedding
    spread = {}
    for pooling in ("mean", "cls"):
        torch.manual_seed(0)
        model = MedVLModel(tiny_config(text_config={"pooling": pooling})).eval()
        with torch.no_grad():
            embeds = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            other = model.get_text_features(input_ids=padded, attention_mask=attention_mask).pooler_output
        torch.testing.assert_close(embeds, other)
        unit = torch.nn.functional.normalize(embeds, dim=-1)
        cosine = unit @ unit.t()
        spread[pooling] = 1 - cosine[~torch.eye(3, dtype=torch.bool)].mean().item()
    assert spread["mean"] > 5 * spread["cls"], spread


def flash_style_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, is_causal=None, **kwargs):
    """What a flash kernel takes: a 2-D `(batch, key_length)` padding mask or None, and a causal flag aligned to
    the bottom right (queries are the last positions of the keys, as with a cache). Computed here with plain ops."""
    assert attention_mask is None or attention_mask.ndim == 2, "flash kernels take a 2-D padding mask"
    query_length, key_length = query.shape[2], key.shape[2]
    allowed = torch.ones(query.shape[0], 1, query_length, key_length, dtype=torch.bool)
    if attention_mask is not None:
        allowed &= attention_mask.bool()[:, None, None, :]
    if is_causal:
        offset = key_length - query_length
        allowed &= torch.ones(query_length, key_length, dtype=torch.bool).tril(offset)
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scaling)
    return output.transpose(1, 2).contiguous(), None


def use_flash_style_kernel(model):
    """transformers only accepts a flash implementation it can load (none on a CPU): set the registered stand-in
    on the configs directly, as `set_attn_implementation` would."""
    from transformers import AttentionInterface

    AttentionInterface.register("flash_style_test", flash_style_attention)
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config._attn_implementation_internal = "flash_style_test"


@pytest.mark.parametrize("fusion_type, causal", [("cross_attention", False), ("merged", False), ("cross_attention", True)])
def test_flash_style_kernels_get_2d_masks_and_agree_with_eager(fusion_type, causal):
    config = tiny_config(fusion_type=fusion_type, text_config={"is_causal": causal}, mlm_weight=0.0 if causal else 1.0)
    model = MedVLModel(config).eval()
    pixel_values, input_ids, attention_mask = text_batch()
    with torch.no_grad():
        eager = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                      compute_fusion=True)
        use_flash_style_kernel(model)
        flash = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                      compute_fusion=True)
    real = attention_mask.bool()
    torch.testing.assert_close(flash.fused_hidden_state[real], eager.fused_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flash.text_embeds, eager.text_embeds, atol=1e-5, rtol=1e-5)


def test_flash_style_kernels_generate_what_eager_generates():
    from modeling_medvl import MedVLForConditionalGeneration

    torch.manual_seed(0)
    model = MedVLForConditionalGeneration(tiny_config()).eval()
    prompts = torch.tensor([[0, 1, 7], [1, 8, 9]])  # the first is left-padded
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pixel_values = torch.randn(2, 3, 64, 64)
    eager = model.generate(input_ids=prompts, attention_mask=mask, pixel_values=pixel_values, max_new_tokens=5,
                           do_sample=False, output_scores=True, return_dict_in_generate=True)
    use_flash_style_kernel(model)
    flash = model.generate(input_ids=prompts, attention_mask=mask, pixel_values=pixel_values, max_new_tokens=5,
                           do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert torch.equal(flash.sequences, eager.sequences)
    torch.testing.assert_close(torch.stack(flash.scores), torch.stack(eager.scores), atol=1e-4, rtol=1e-4)


def test_every_paired_class_takes_input_ids_then_pixel_values():
    import inspect

    from modeling_medvl import MedVLForConditionalGeneration, MedVLForQuestionAnswering

    for model_class in (MedVLModel, MedVLForPreTraining, MedVLForQuestionAnswering, MedVLForConditionalGeneration):
        parameters = list(inspect.signature(model_class.forward).parameters)[1:4]
        assert parameters == ["input_ids", "pixel_values", "attention_mask"], (model_class.__name__, parameters)
    assert list(inspect.signature(MedVLModel.encode).parameters)[1:3] == ["input_ids", "pixel_values"]
