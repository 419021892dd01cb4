"""Tiny MedVL configs and batches for tests."""

import torch

from modeling_medvl import MedVLConfig

# The tiny preset's special token ids (its text config's defaults).
PAD, BOS, EOS, MASK = 0, 1, 2, 3


def tiny_config(**overrides) -> MedVLConfig:
    """The "tiny" preset (ViT of width 128 on 64 px images, 2-layer text tower, vocabulary 1,000), with overrides."""
    return MedVLConfig.from_preset("tiny", **overrides)


def text_batch(batch=3, length=10, lengths=(10, 6, 8), image_size=64, vocab_size=1000):
    """(pixel_values, input_ids, attention_mask): random images and texts that start with BOS, end with EOS and are
    right-padded to `lengths`."""
    pixel_values = torch.randn(batch, 3, image_size, image_size)
    input_ids = torch.randint(MASK + 1, vocab_size, (batch, length))
    input_ids[:, 0] = BOS
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for row, real in enumerate(lengths[:batch]):
        attention_mask[row, :real] = 1
        input_ids[row, real - 1] = EOS
        input_ids[row, real:] = PAD
    return pixel_values, input_ids, attention_mask
