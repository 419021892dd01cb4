"""What several test files share: tiny model configs and batches, a SynthCXR tokenizer, loopback ports for commands
that listen on one, and `accelerate launch` with two CPU ranks."""

from .launching import launch_two_processes
from .models import BOS, EOS, MASK, PAD, text_batch, tiny_config
from .ports import free_port, run_on_a_free_port, start_on_a_free_port
from .tokenizers import synthcxr_tokenizer

__all__ = ["BOS", "EOS", "MASK", "PAD", "free_port", "launch_two_processes", "run_on_a_free_port",
           "start_on_a_free_port", "synthcxr_tokenizer", "text_batch", "tiny_config"]
