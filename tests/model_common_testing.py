"""Shared pieces for running transformers' own common model tests (ModelTesterMixin, taken from the source
distribution of the installed transformers version) against MedVL: the tiny model tester and what holds for every
MedVL class. Used by test_model_common.py (config, base and pretraining model) and test_model_common_heads.py."""

import copy
import tempfile
import unittest

import torch

from conftest import import_upstream_tests

import_upstream_tests()

from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402

from modeling_medvl import MedVLConfig, MedVLForImageClassification  # noqa: E402
from modeling_medvl.losses_medvl import IGNORE_INDEX  # noqa: E402

PAD, BOS, EOS, MASK = 0, 1, 2, 3
FIRST_WORD_ID = 4


class MedVLModelTester:
    """Tiny MedVL configs and inputs: a 2-layer width-32 timm ViT on 32 px images, a 2-layer width-32 text tower."""

    def __init__(
        self,
        parent,
        batch_size=4,
        seq_length=7,
        image_size=32,
        patch_size=8,
        num_channels=3,
        vocab_size=128,  # holds the text config's default special token ids (101-103)
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        projection_dim=16,
        fusion_type="cross_attention",
        num_labels=3,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.projection_dim = projection_dim
        self.fusion_type = fusion_type
        self.num_labels = num_labels
        self.is_training = is_training
        self.vision_config = {
            "backbone": "vit_tiny_patch16_224",
            "backbone_kwargs": {"embed_dim": hidden_size, "depth": num_hidden_layers,
                                "num_heads": num_attention_heads, "patch_size": patch_size},
            "image_size": image_size,
            "num_channels": num_channels,
        }
        self.text_config = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "intermediate_size": intermediate_size,
            "max_position_embeddings": 64,
            "pad_token_id": PAD,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "mask_token_id": MASK,
        }

    def get_config(self) -> MedVLConfig:
        return MedVLConfig(
            vision_config=copy.deepcopy(self.vision_config),
            text_config=copy.deepcopy(self.text_config),
            projection_dim=self.projection_dim,
            fusion_type=self.fusion_type,
            num_fusion_layers=1,
            num_decoder_layers=1,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        # Texts start with BOS, end with EOS and are right-padded to different lengths.
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - FIRST_WORD_ID) + FIRST_WORD_ID
        attention_mask = torch.ones_like(input_ids)
        for row in range(self.batch_size):
            length = self.seq_length - row % 3
            input_ids[row, 0] = BOS
            input_ids[row, length - 1] = EOS
            input_ids[row, length:] = PAD
            attention_mask[row, length:] = 0
        return self.get_config(), pixel_values, input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}

    def mlm_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fixed masking (token 2 of every text), so MLM outputs do not depend on a random draw."""
        mlm_input_ids = input_ids.clone()
        mlm_input_ids[:, 2] = MASK
        mlm_labels = torch.full_like(input_ids, IGNORE_INDEX)
        mlm_labels[:, 2] = input_ids[:, 2]
        return {"mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels}


def skip_generated(test_class, prefix: str, reason: str):
    """Skip every test the mixin generated from one parameterized method (e.g. each dtype/padding case)."""
    for name in dir(ModelTesterMixin):
        if name.startswith(prefix):
            skipped = unittest.skip(reason=reason)(getattr(ModelTesterMixin, name))
            skipped.skipped_by_medvl = True  # counted as MedVL's skip in the test summary (conftest.py)
            setattr(test_class, name, skipped)
    return test_class


class MedVLCommonTests(ModelTesterMixin):
    """What holds for every MedVL class under transformers' common tests; one unittest class per model class."""

    _is_composite = True  # vision + text sub-configs
    # The vision tower is a timm backbone: its position table belongs to timm and is sized by `image_size`.
    test_resize_position_embeddings = False
    # Checked against the timm backbone's own width in test_image_features_width below.
    skip_test_image_features_output_shape = True

    def setUp(self):
        self.model_tester = MedVLModelTester(self)

    def test_reverse_loading_mapping(self):
        # MedVL's one weight conversion reshapes the temperature (0-d on disk, one element in the model) and renames
        # no key, where the upstream test expects every conversion to rename.
        super().test_reverse_loading_mapping(check_keys_were_modified=False)

    @unittest.skip(reason="MedVL's forward takes no inputs_embeds: images enter as pixel_values through a timm "
                          "backbone and text as input_ids.")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="MedVL's forward takes no inputs_embeds (see test_inputs_embeds).")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(reason="Composite image-text output (like CLIPOutput): there is no single stack whose per-layer "
                          "hidden states the output could carry, and the timm vision tower does not return them.")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Composite image-text output without per-layer attentions (see test_hidden_states_output).")
    def test_attention_outputs(self):
        pass

    @unittest.skip(reason="Needs per-layer hidden states and attentions in the output (see test_hidden_states_output).")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    def test_sdpa_can_dispatch_composite_models(self):
        """The mixin's version expects the towers to be PreTrainedModel sub-models. MedVL's text-side attention
        (text tower, fusion, decoder) are plain modules reading `config.text_config`: check they follow the model's
        requested implementation when loading."""
        for model_class in self.all_model_classes:
            config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            model = model_class(config)
            with tempfile.TemporaryDirectory() as tmpdirname:
                model.save_pretrained(tmpdirname)
                for implementation in ("sdpa", "eager"):
                    loaded = model_class.from_pretrained(tmpdirname, attn_implementation=implementation)
                    self.assertEqual(loaded.config._attn_implementation, implementation)
                    attention_configs = [module.config for module in loaded.modules() if type(module).__name__
                                         .startswith("MedVL") and type(module).__name__.endswith("Attention")]
                    if model_class is not MedVLForImageClassification:
                        self.assertTrue(attention_configs, "no text-side attention layer found")
                    for attention_config in attention_configs:
                        self.assertEqual(attention_config._attn_implementation, implementation)

class EagerMatchesSdpaOnLogits:
    """For heads whose output has logits but no hidden_states, which the mixin's eager-vs-SDPA test compares."""

    def test_eager_matches_sdpa_on_logits(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()  # right-padded texts
        (model_class,) = self.all_model_classes
        model = model_class(config).eval()
        inputs = self._prepare_for_class(inputs_dict, model_class)
        logits = {}
        for implementation in ("sdpa", "eager"):
            model.set_attn_implementation(implementation)
            self.assertEqual(model.config.text_config._attn_implementation, implementation)
            with torch.no_grad():
                logits[implementation] = model(**inputs).logits
        torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=1e-5, rtol=1e-4)


EAGER_SDPA_SKIP_REASON = ("The mixin compares hidden_states unless the class name says Classification; this head "
                          "returns logits only: see test_eager_matches_sdpa_on_logits.")
