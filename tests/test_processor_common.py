"""transformers' own ProcessorTesterMixin, run against MedVLProcessor."""

import unittest

from conftest import import_upstream_tests

import_upstream_tests()

from transformers import AutoImageProcessor, PreTrainedConfig  # noqa: E402
from transformers_tests.test_processing_common import ProcessorTesterMixin  # noqa: E402

from processing.image_processing_medvl import MedVLImageProcessor  # noqa: E402
from processing.processing_medvl import MedVLProcessor  # noqa: E402
from processing.tokenizer_training import train_clinical_tokenizer  # noqa: E402

# The mixin's own texts ("lower newer", "upper older longer string") plus report-like ones, so
# the tokenizer knows their words.
CORPUS = ["lower newer", "upper older longer string", "lower older newer upper string longer"] * 20 + [
    "Small left pleural effusion. No pneumothorax.",
    "Heart size is normal. Lungs are clear.",
] * 20


class MedVLProcessorTestConfig(PreTrainedConfig):
    """Lets AutoImageProcessor resolve MedVLImageProcessor by name (the mixin loads components
    through the Auto classes, without remote code)."""

    model_type = "medvl_processor_test"


AutoImageProcessor.register(
    MedVLProcessorTestConfig, image_processor_classes={"torchvision": MedVLImageProcessor}, exist_ok=True
)


class MedVLProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = MedVLProcessor

    @classmethod
    def _setup_image_processor(cls):
        return MedVLImageProcessor(size=32)

    @classmethod
    def _setup_tokenizer(cls):
        return train_clinical_tokenizer(CORPUS, vocab_size=300, max_length=256)

    def prepare_text_inputs(self, batch_size=None, modalities=None):
        # The mixin's texts end in a space that the clinical normaliser trims; give them already
        # normalised so its comparisons with the bare tokenizer test the keyword plumbing.
        texts = super().prepare_text_inputs(batch_size=batch_size, modalities=modalities)
        return texts.strip() if isinstance(texts, str) else [text.strip() for text in texts]

    @unittest.skip("MedVL pairs exactly one image with each text; a text without its image is refused by design")
    def test_processor_text_has_no_visual(self):
        pass
