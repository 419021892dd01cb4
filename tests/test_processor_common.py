"""transformers' own ProcessorTesterMixin, run against MedVLProcessor."""

import unittest

import numpy as np
from PIL import Image
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

    def test_processor_text_has_no_visual(self):
        """The mixin's version mixes text-only samples into an image batch (`images=[[], [image], [image]]`). MedVL's
        model reads one image per text, so the processor refuses such a batch with the counts, rather than return
        inputs that the model refuses later; texts alone (a text-side batch, e.g. zero-shot prompts) are processed
        exactly as in a paired call."""
        processor = self.get_processor()
        texts = self.prepare_text_inputs(batch_size=3)
        images = [Image.fromarray(np.full((30, 40, 3), 60 * i, dtype=np.uint8)) for i in range(3)]
        paired = processor(images=[[image] for image in images], text=texts, return_tensors="pt", padding=True)
        text_only = processor(text=texts, return_tensors="pt", padding=True)
        self.assertNotIn("pixel_values", text_only)
        self.assertEqual(text_only["input_ids"].tolist(), paired["input_ids"].tolist())
        with self.assertRaisesRegex(ValueError, r"got 2 image\(s\) and 3 text\(s\)"):
            processor(images=[[]] + [[image] for image in images[1:]], text=["lower newer"] + texts[1:],
                      return_tensors="pt", padding=True)
