"""MedVLProcessor: one object that turns radiographs and report texts into model inputs.

images -> `MedVLImageProcessor` -> `pixel_values` (B, 3, H, W)
text   -> `ClinicalTextNormalizer` (switchable) -> tokenizer (truncation at 256 by default)
       -> `input_ids`, `attention_mask`

MedVL pairs one image with one text, so when both are given their counts must match. The
processor saves to one folder (tokenizer files, `processor_config.json` with the image
processor's and the normaliser's settings, and this code) that reloads offline with
`AutoProcessor.from_pretrained(folder, trust_remote_code=True)`.
"""

from transformers.image_utils import ImageInput
from transformers.processing_utils import ProcessorMixin

from .clinical_text_medvl import ClinicalTextNormalizer
from .image_processing_medvl import MedVLImageProcessor, _flatten_images

DEFAULT_MAX_LENGTH = 256


class MedVLProcessor(ProcessorMixin):
    r"""
    Combines `MedVLImageProcessor`, the clinical text normaliser and a tokenizer.

    Args:
        image_processor (`MedVLImageProcessor`, *optional*): defaults to `MedVLImageProcessor()`.
        tokenizer (`PreTrainedTokenizerBase`): e.g. from `train_clinical_tokenizer` (required).
        normalizer (`ClinicalTextNormalizer` or `dict`, *optional*): the normaliser, or its
            settings as given by `ClinicalTextNormalizer.to_dict()`; defaults to every step on.
        normalize_text (`bool`, defaults to `True`): normalise text before tokenizing.
        chat_template (`str`, *optional*): passed to `ProcessorMixin`.

    Calling the processor: `processor(images=..., text=..., return_tensors="pt", **kwargs)`;
    tokenizer and image-processor keyword arguments (`max_length`, `padding`, `size`, ...) pass
    through. Text defaults: `truncation=True`, `max_length=256`, `padding=True`.
    """

    text_kwargs = {
        "truncation": True,
        "max_length": DEFAULT_MAX_LENGTH,
        "padding": True,
        "return_token_type_ids": False,
    }

    def __init__(
        self, image_processor=None, tokenizer=None, normalizer=None, normalize_text=True, chat_template=None, **kwargs
    ):
        if tokenizer is None:
            raise ValueError("MedVLProcessor needs a tokenizer (for example one from `train_clinical_tokenizer`).")
        if image_processor is None:
            image_processor = MedVLImageProcessor()
        self.normalizer = _build_normalizer(normalizer)
        self.normalize_text = bool(normalize_text)
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images: ImageInput | str | list | None = None, text: str | list[str] | None = None, **kwargs):
        """Process `images` (one or a list: PIL, arrays, tensors, paths incl. DICOM) and `text`
        (a string or a list of strings, one per image)."""
        if kwargs.get("videos") is not None or kwargs.get("audio") is not None:
            raise ValueError("MedVLProcessor takes images and text only (no videos or audio).")
        if text is not None:
            text = self._checked_normalized_text(text)
            if images is not None:
                image_count, text_count = len(_flatten_images(images)), (1 if isinstance(text, str) else len(text))
                if image_count != text_count:
                    raise ValueError(
                        f"got {image_count} image(s) and {text_count} text(s): MedVL pairs each image with one text, "
                        "so the counts must match"
                    )
        return super().__call__(images=images, text=text, **kwargs)

    def _checked_normalized_text(self, text):
        single = isinstance(text, str)
        if not single and not isinstance(text, (list, tuple)):
            raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}")
        texts = [text] if single else list(text)
        if not texts:
            raise ValueError("text is an empty list: give at least one string")
        checked = []
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise ValueError(f"text at index {index} is a {type(item).__name__}, expected a string")
            if not item.strip():
                raise ValueError(f"text at index {index} is empty")
            if self.normalize_text:
                item = self.normalizer(item)
                if not item.strip():
                    raise ValueError(f"text at index {index} is empty after normalisation")
            checked.append(item)
        return checked[0] if single else checked

    def normalize(self, text):
        """The clinical normaliser alone (whatever `normalize_text` says)."""
        return self.normalizer(text)

    @property
    def unused_input_names(self):
        return ["token_type_ids"]

    def save_pretrained(self, save_directory, push_to_hub=False, **kwargs):
        saved = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        # Saving records `auto_map` on the object for the JSON file; drop it so that saving leaves
        # the processor as it was (and equal to one loaded back).
        self.__dict__.pop("auto_map", None)
        return saved

    def to_dict(self):
        output = super().to_dict()
        output["normalizer"] = self.normalizer.to_dict()
        return output


def _build_normalizer(normalizer):
    if normalizer is None:
        return ClinicalTextNormalizer()
    if isinstance(normalizer, ClinicalTextNormalizer):
        return normalizer
    if isinstance(normalizer, dict):
        return ClinicalTextNormalizer(**normalizer)
    raise TypeError(
        f"normalizer must be a ClinicalTextNormalizer, a dict of its settings or None, got {type(normalizer).__name__}"
    )


MedVLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MedVLProcessor"]
