"""MedVLProcessor: images + clinical text to model inputs, input checks, and a saved folder that
reloads offline through AutoProcessor with trust_remote_code in a fresh process."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from dicom_fixtures import write_dicom
from processing.clinical_text_medvl import ClinicalTextNormalizer
from processing.image_io_medvl import MedicalImageError
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from processing.tokenizer_training import train_clinical_tokenizer

REPORTS = [
    "FINDINGS: Small L pleural effusion. No PTX. IMPRESSION: Small left effusion.",
    "FINDINGS: Heart size is normal. Lungs are clear. IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: RLL opacity c/w pneumonia. IMPRESSION: Right lower lobe pneumonia.",
    "Seen by Dr. Smith on 01/02/2023. Cardiomegaly with mild pulmonary edema.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_clinical_tokenizer(REPORTS * 10, vocab_size=350, min_frequency=1)


@pytest.fixture()
def processor(tokenizer):
    return MedVLProcessor(image_processor=MedVLImageProcessor(size=32), tokenizer=tokenizer)


def grey(seed=0, size=(40, 48)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8))


def test_images_and_text_give_model_inputs(processor, tmp_path):
    dicom = write_dicom(tmp_path / "a.dcm", np.arange(48 * 40, dtype=np.uint16).reshape(40, 48))
    batch = processor(images=[str(dicom), grey(1), np.asarray(grey(2))], text=REPORTS[:3], return_tensors="pt")
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask"}
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 3
    assert batch["attention_mask"].sum(1).min() > 3  # padded to the longest, every row has content


def test_text_is_normalised_before_tokenizing(processor, tokenizer):
    ids = processor(text=[REPORTS[0], REPORTS[3]])["input_ids"]
    decoded = processor.batch_decode(ids, skip_special_tokens=True)
    assert "left pleural effusion" in decoded[0] and "pneumothorax" in decoded[0] and "PTX" not in decoded[0]
    assert "FINDINGS" not in decoded[0]  # sections extracted
    assert "Smith" not in decoded[1] and "2023" not in decoded[1]
    assert "[DEID]" in processor.decode(ids[1])  # a special token: hidden by skip_special_tokens
    assert processor.decode(ids[0], skip_special_tokens=True) == decoded[0]
    raw = MedVLProcessor(tokenizer=tokenizer, normalize_text=False)
    assert "PTX" in raw.decode(raw(text=REPORTS[0])["input_ids"], skip_special_tokens=True)


def test_normaliser_switches(tokenizer):
    kept = MedVLProcessor(tokenizer=tokenizer, normalizer={"expand_abbreviations": False})
    assert kept.normalizer == ClinicalTextNormalizer(expand_abbreviations=False)
    assert "PTX" in kept.decode(kept(text=REPORTS[0])["input_ids"], skip_special_tokens=True)
    with pytest.raises(TypeError, match="normalizer"):
        MedVLProcessor(tokenizer=tokenizer, normalizer="yes")


def test_truncation_at_256_by_default_and_overridable(processor):
    long_report = "Small left pleural effusion. " * 200
    assert processor(text=long_report, return_tensors="pt")["input_ids"].shape == (1, 256)
    assert processor(text=long_report, max_length=40, return_tensors="pt")["input_ids"].shape == (1, 40)


def test_single_modalities(processor):
    assert set(processor(images=grey(), return_tensors="pt")) == {"pixel_values"}
    assert set(processor(text="No acute process.", return_tensors="pt")) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="at least one input"):
        processor()


def test_mismatched_counts_bad_text_and_bad_files_name_the_item(processor, tmp_path):
    with pytest.raises(ValueError, match=r"got 2 image\(s\) and 3 text\(s\)"):
        processor(images=[grey(), grey(1)], text=REPORTS[:3])
    with pytest.raises(ValueError, match=r"text at index 1 is empty"):
        processor(text=["Clear lungs.", "   "])
    with pytest.raises(ValueError, match=r"text at index 2 is a int"):
        processor(text=["Clear lungs.", "Normal heart.", 5])
    with pytest.raises(ValueError, match="empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match="videos or audio"):
        processor(text="Clear.", videos=[np.zeros((2, 3, 4, 4))])
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(MedicalImageError, match=r"index 1 .*cut\.png"):
        processor(images=[grey(), str(tmp_path / "cut.png")], text=REPORTS[:2])
    with pytest.raises(ValueError, match="needs a tokenizer"):
        MedVLProcessor()


def test_saved_folder_reloads_offline_through_remote_code(processor, tmp_path):
    processor = MedVLProcessor(
        image_processor=MedVLImageProcessor(size=24, resize_mode="pad", do_local_contrast=True),
        tokenizer=processor.tokenizer,
        normalizer=ClinicalTextNormalizer(keep_section_headers=True),
    )
    folder, image_path = tmp_path / "ckpt", tmp_path / "x.png"
    grey(5).save(image_path)
    processor.save_pretrained(folder)
    assert {"processing_medvl.py", "image_processing_medvl.py", "clinical_text_medvl.py"} <= set(os.listdir(folder))
    expected = processor(images=str(image_path), text=REPORTS[0], return_tensors="pt")

    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert processor.normalizer.keep_section_headers and processor.image_processor.resize_mode == "pad"
        batch = processor(images={str(image_path)!r}, text={REPORTS[0]!r}, return_tensors="pt")
        torch.save(dict(batch), {str(tmp_path / "reloaded.pt")!r})
        """
    )
    # A fresh process, away from the repository, with the Hub unreachable.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = torch.load(tmp_path / "reloaded.pt")
    assert set(reloaded) == set(expected)
    for key in expected:
        torch.testing.assert_close(reloaded[key], expected[key], rtol=0, atol=0)
