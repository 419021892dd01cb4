"""MedVL's clinical processing: image processor, clinical text, tokenizer training, processor,
joint augmentation, data set readers and the SynthCXR generator.

Names are imported lazily so that `import processing` stays cheap (no torch, datasets or pydicom
until a name that needs them is used).
"""

import importlib

_LAZY_NAMES = {
    ".image_io_medvl": ["read_medical_image", "MedicalImageError"],
    ".image_processing_medvl": ["MedVLImageProcessor"],
    ".processing_medvl": ["MedVLProcessor"],
    ".clinical_text_medvl": ["ClinicalTextNormalizer", "extract_sections", "swap_laterality", "DEID_TOKEN"],
    ".tokenizer_training": ["train_clinical_tokenizer"],
    ".augmentation": ["JointAugmentation"],
    ".readers": [
        "load_mimic_cxr",
        "load_chexpert",
        "load_openi",
        "load_vqa_rad",
        "load_slake",
        "load_image_text_pairs",
        "load_webdataset",
        "load_image_folder",
        "load_coco_captions",
        "load_flickr30k",
        "write_webdataset",
    ],
    ".synthcxr": ["generate_synthcxr", "write_synthcxr"],
}
_MODULE_OF = {name: module for module, names in _LAZY_NAMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'processing' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
