"""What several test files share: tiny model configs and batches, a SynthCXR tokenizer, free loopback ports and
`accelerate launch` with two CPU ranks."""

from .models import BOS, EOS, MASK, PAD, text_batch, tiny_config
from .tokenizers import synthcxr_tokenizer

__all__ = ["BOS", "EOS", "MASK", "PAD", "synthcxr_tokenizer", "text_batch", "tiny_config"]
