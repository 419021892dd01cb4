"""transformers' own ImageProcessingTestMixin, run against MedVLImageProcessor."""

import unittest

from conftest import import_upstream_tests

import_upstream_tests()

import pytest  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoImageProcessor, PreTrainedConfig  # noqa: E402

try:
    from transformers_tests.test_image_processing_common import ImageProcessingTester, ImageProcessingTestMixin
except ImportError:  # the mixin of older releases (5.10.1 among them) has no tester base class and another API
    pytest.skip(f"transformers {transformers.__version__}'s image-processing common tests have no "
                "ImageProcessingTester base class; MedVL runs them on the releases that have it (5.24 does)",
                allow_module_level=True)

from processing.image_processing_medvl import MedVLImageProcessor  # noqa: E402


class MedVLImageProcessorTestConfig(PreTrainedConfig):
    """Stands in for the model config so AutoImageProcessor can resolve the class by name without
    remote code (the mixin loads saved processors through AutoImageProcessor)."""

    model_type = "medvl_image_processor_test"


AutoImageProcessor.register(
    MedVLImageProcessorTestConfig, image_processor_classes={"torchvision": MedVLImageProcessor}, exist_ok=True
)


class MedVLImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 4)
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 64)
        kwargs.setdefault("size", {"height": 18, "width": 20})
        kwargs.setdefault("resize_mode", "pad")
        kwargs.setdefault("do_local_contrast", True)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin finds classes from transformers' model folders; MedVL's lives outside them.
        return {"torchvision": MedVLImageProcessor}


class MedVLImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = MedVLImageProcessingTester
    test_cast_dtype = True

    def test_image_processor_has_medvl_attributes(self):
        processor = MedVLImageProcessor(**self.image_processor_dict)
        self.assertEqual(processor.resize_mode, "pad")
        self.assertTrue(processor.do_local_contrast)
        self.assertEqual(dict(processor.size), {"height": 18, "width": 20})
