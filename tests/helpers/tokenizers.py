"""A small clinical BPE tokenizer trained on SynthCXR reports, trained once per test process."""

from functools import lru_cache

from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer


@lru_cache(maxsize=4)
def synthcxr_tokenizer(studies: int = 48, vocab_size: int = 400):
    """Trained on the reports of `studies` SynthCXR studies (seed 0); shared, so save it rather than change it."""
    return train_clinical_tokenizer([s.report for s in generate_synthcxr(studies, size=16, seed=0)],
                                    vocab_size=vocab_size)
