"""transformers' own common model and config tests (ModelTesterMixin, ConfigTester), taken from the source
distribution of the installed transformers version, run against MedVLConfig, MedVLModel and MedVLForPreTraining.
The task heads are in test_model_common_heads.py (a separate file, so the two run in parallel)."""

import unittest

import torch
from model_common_testing import MedVLCommonTests, MedVLModelTester
from transformers_tests.test_configuration_common import ConfigTester

from modeling_medvl import MedVLConfig, MedVLForPreTraining, MedVLModel


class MedVLModelTest(MedVLCommonTests, unittest.TestCase):
    all_model_classes = (MedVLModel,)
    additional_model_inputs = ["pixel_values"]
    # Its training loss is the contrastive one, which does not use the fusion layers (they serve the heads).
    test_all_params_have_gradient = False

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        inputs_dict["return_loss"] = True  # like CLIPModel: the contrastive loss is the base model's training loss
        return inputs_dict

    @unittest.skip(reason="The vision tower is a timm backbone, which returns no per-layer hidden states.")
    def test_get_image_features_hidden_states(self):
        pass

    @unittest.skip(reason="The vision tower is a timm backbone, whose fused attention returns no attention weights.")
    def test_get_image_features_attentions(self):
        pass

    def test_image_features_width(self):
        """The shape check the mixin cannot make (the width is timm's `num_features`, not a config field)."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = MedVLModel(config).eval()
        with torch.no_grad():
            features = model.get_image_features(pixel_values=inputs_dict["pixel_values"])
        tokens = (self.model_tester.image_size // self.model_tester.patch_size) ** 2 + 1  # patches + class token
        self.assertEqual(features.last_hidden_state.shape, (self.model_tester.batch_size, tokens,
                                                            self.model_tester.hidden_size))
        self.assertEqual(features.pooler_output.shape, (self.model_tester.batch_size, self.model_tester.projection_dim))


class MedVLForPreTrainingTest(MedVLCommonTests, unittest.TestCase):
    all_model_classes = (MedVLForPreTraining,)
    additional_model_inputs = ["pixel_values", "input_ids"]
    # ITM draws its hard negatives at random (torch.multinomial), which the mixin's output-equivalence checks cannot
    # allow for: the common inputs compute ITC and MLM (with fixed masking) only, so the ITM head gets no gradient
    # there. test_every_parameter_trains_with_all_terms checks it with ITM on.
    test_all_params_have_gradient = False

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        inputs_dict.update(self.model_tester.mlm_inputs(inputs_dict["input_ids"]))
        inputs_dict["loss_terms"] = ("itc", "mlm")
        return inputs_dict

    def test_every_parameter_trains_with_all_terms(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = MedVLForPreTraining(config).train()
        model.gradient_checkpointing_enable()  # activation_checkpointing_enable from 5.24 on
        inputs = self._prepare_for_class(inputs_dict, MedVLForPreTraining)
        inputs["loss_terms"] = ("itc", "mlm", "itm")
        output = model(**inputs)
        self.assertEqual(set(output.loss_terms), {"itc", "mlm", "itm"})
        output.loss.backward()
        without_gradient = [name for name, parameter in model.named_parameters() if parameter.grad is None]
        self.assertEqual(without_gradient, [])


class MedVLConfigTest(unittest.TestCase):
    def setUp(self):
        self.model_tester = MedVLModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=MedVLConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "fusion_type", "logit_scale_init_value"],
            projection_dim=24,
            fusion_type="merged",
        )

    def test_config(self):
        self.config_tester.run_common_tests()
