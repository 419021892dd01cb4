"""transformers' own common model tests (ModelTesterMixin, from the source distribution of the installed
transformers version) run against MedVL's task heads: image classification, question answering, report generation."""

import unittest

import torch
from model_common_testing import EAGER_SDPA_SKIP_REASON, EagerMatchesSdpaOnLogits, MedVLCommonTests, skip_generated

from modeling_medvl import MedVLForConditionalGeneration, MedVLForImageClassification, MedVLForQuestionAnswering
from modeling_medvl.losses_medvl import IGNORE_INDEX


class MedVLForImageClassificationTest(MedVLCommonTests, unittest.TestCase):
    all_model_classes = (MedVLForImageClassification,)
    # Image only, through a timm backbone whose fused attention exposes no attention weights (as transformers'
    # own TimmWrapper tests declare).
    has_attentions = False
    _is_composite = False
    test_resize_embeddings = False  # image only: no token embeddings to resize

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = {"pixel_values": inputs_dict["pixel_values"]}
        if return_labels:
            inputs_dict["labels"] = torch.arange(self.model_tester.batch_size) % self.model_tester.num_labels
        return inputs_dict

    @unittest.skip(reason="Image-only head: the mixin expects an nn.Embedding of tokens, which it does not have.")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip(reason="Its only layers are timm's, which checkpoint through timm's own checkpoint_seq rather "
                          "than transformers' GradientCheckpointingLayer (see test_timm_gradient_checkpointing).")
    def test_gradient_checkpointing_enable_disable(self):
        pass

    @unittest.skip(reason="See test_gradient_checkpointing_enable_disable: no GradientCheckpointingLayer to hook.")
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason="See test_gradient_checkpointing_enable_disable: no GradientCheckpointingLayer to hook.")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason="See test_gradient_checkpointing_enable_disable: no GradientCheckpointingLayer to hook.")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    def test_timm_gradient_checkpointing(self):
        """Checkpointing reaches the timm backbone and leaves the gradients unchanged."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = MedVLForImageClassification(config).train()
        inputs = self._prepare_for_class(inputs_dict, MedVLForImageClassification, return_labels=True)

        def gradients():
            model.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

        plain = gradients()
        model.gradient_checkpointing_enable()  # activation_checkpointing_enable from 5.24 on
        self.assertTrue(model.vision_model.gradient_checkpointing)
        self.assertTrue(all("forward" in vars(block) for block in model.vision_model.blocks))
        checkpointed = gradients()
        self.assertEqual(set(plain), set(checkpointed))
        for name, grad in plain.items():
            torch.testing.assert_close(checkpointed[name], grad, msg=name)
        model.gradient_checkpointing_disable()
        self.assertFalse(model.vision_model.gradient_checkpointing)

class MedVLForQuestionAnsweringTest(EagerMatchesSdpaOnLogits, MedVLCommonTests, unittest.TestCase):
    all_model_classes = (MedVLForQuestionAnswering,)
    additional_model_inputs = ["pixel_values"]
    # With fusion layers the answer is read from the fused state; the contrastive projections and temperature of
    # the MedVLModel inside serve only fusion_type="none" and zero-shot use, so they get no gradient here.
    test_all_params_have_gradient = False

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            inputs_dict["labels"] = torch.arange(self.model_tester.batch_size) % self.model_tester.num_labels
        return inputs_dict


class MedVLForConditionalGenerationTest(EagerMatchesSdpaOnLogits, MedVLCommonTests, unittest.TestCase):
    all_model_classes = (MedVLForConditionalGeneration,)
    additional_model_inputs = ["pixel_values"]

    @unittest.skip(reason="The source distribution carries no tests/generation, so GenerationTesterMixin is an "
                          "empty stand-in; generate() is tested by MedVL's own generation tests.")
    def test_generation_tester_mixin_inheritance(self):
        pass

    @unittest.skip(reason="A captioner built from the vision tower and its own cross-attending decoder: there is no "
                          "base MedVLModel inside for base_model to return (the mixin allows skipping such models).")
    def test_model_base_model_prefix(self):
        pass

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            inputs_dict["labels"] = inputs_dict["input_ids"].masked_fill(inputs_dict["attention_mask"] == 0,
                                                                         IGNORE_INDEX)
        return inputs_dict


skip_generated(MedVLForQuestionAnsweringTest, "test_eager_matches_sdpa_inference_", EAGER_SDPA_SKIP_REASON)
skip_generated(MedVLForConditionalGenerationTest, "test_eager_matches_sdpa_inference_", EAGER_SDPA_SKIP_REASON)

