"""Train a domain BPE tokenizer on clinical text with `tokenizers`.

Byte-level BPE (GPT-2 / CLIP style: every byte is in the base alphabet, so no text is ever
unknown), trained on reports passed through the clinical normaliser first, wrapped as a
`transformers.PreTrainedTokenizerFast` ready for `save_pretrained` / `AutoTokenizer`.

Two special-token layouts:

- ``style="bert"`` (bidirectional text tower with masked language modelling):
  ``[PAD] [UNK] [CLS] [SEP] [MASK]``; a sequence is ``[CLS] text [SEP]``
  (pairs ``[CLS] a [SEP] b [SEP]``).
- ``style="clip"`` (causal CLIP-style tower): ``<|startoftext|> <|endoftext|> <|pad|>``;
  a sequence is ``<|startoftext|> text <|endoftext|>``. Use ``vocab_size=49408`` for the
  published CLIP vocabulary size.

Both add `DEID_TOKEN` ("[DEID]") as a special token: BPE never splits it and it has a fixed id.

Vocabulary size is a ceiling: BPE stops merging when no pair of tokens occurs `min_frequency`
times, so a small corpus gives a smaller vocabulary than asked (a warning gives the size
reached). Ids are then all below `vocab_size`, so a model sized for the target still fits.
"""

import contextlib
import multiprocessing
import warnings
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .clinical_text_medvl import DEID_TOKEN, ClinicalTextNormalizer

SPECIAL_TOKENS = {
    "bert": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    "clip": {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|pad|>",
    },
}
CLIP_VOCAB_SIZE = 49408
_DEFAULT = object()


def iter_texts(texts, text_column="report", batch_size=1000):
    """Yield the strings of `texts`: any iterable of str, or a `datasets.Dataset` /
    `IterableDataset` whose `text_column` is read in batches (no full materialisation)."""
    try:
        import datasets
    except ImportError:  # datasets is a dependency; the guard keeps this module light to import
        datasets = None
    if datasets is not None and isinstance(texts, (datasets.Dataset, datasets.IterableDataset)):
        if text_column not in (texts.column_names or []):
            raise ValueError(f"column {text_column!r} not in the data set's columns {texts.column_names}")
        for batch in texts.select_columns([text_column]).iter(batch_size=batch_size):
            yield from batch[text_column]
        return
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise ValueError(f"texts must be an iterable of strings or a datasets column, got {type(texts).__name__}")
    yield from texts


def _valid_texts(texts, text_column, skip_invalid, counts):
    for index, text in enumerate(iter_texts(texts, text_column)):
        if not isinstance(text, str) or not text.strip():
            problem = "is empty" if isinstance(text, str) else f"is not a string ({type(text).__name__})"
            if not skip_invalid:
                raise ValueError(f"text at index {index} {problem}")
            warnings.warn(f"skipping text at index {index}: it {problem}", stacklevel=3)
            counts["skipped"] += 1
            continue
        counts["used"] += 1
        yield text


@contextlib.contextmanager
def _normalised(texts, normalizer, num_proc):
    """The texts through `normalizer`, in order; in `num_proc` worker processes when > 1."""
    if normalizer is None:
        yield texts
    elif num_proc <= 1:
        yield map(normalizer, texts)
    else:
        # Started before `tokenizers` starts its own threads; order is kept (imap, not unordered).
        with multiprocessing.Pool(num_proc) as pool:
            yield pool.imap(normalizer, texts, chunksize=64)


def train_clinical_tokenizer(
    texts,
    vocab_size=30522,
    style="bert",
    normalizer=_DEFAULT,
    max_length=256,
    min_frequency=2,
    show_progress=False,
    text_column="report",
    skip_invalid=False,
    num_proc=1,
):
    """Train a byte-level BPE tokenizer on clinical reports.

    Args:
        texts: iterable of report strings, or a `datasets.Dataset`/`IterableDataset`
            (its `text_column` is streamed in batches).
        vocab_size: target vocabulary size including special tokens (a ceiling, see module doc).
        style: "bert" ([CLS] ... [SEP], [MASK] for MLM) or "clip" (<|startoftext|> ... <|endoftext|>).
        normalizer: applied to every text first: a callable, a `ClinicalTextNormalizer.to_dict()`
            dict, None for raw text; default `ClinicalTextNormalizer()`.
        max_length: `model_max_length` of the returned tokenizer (truncation length).
        min_frequency: a merge needs a pair seen at least this often.
        show_progress: the `tokenizers` progress bar.
        text_column: column to read when `texts` is a data set.
        skip_invalid: skip (with a warning, counted) empty or non-string texts instead of raising.
        num_proc: processes normalising the texts (the normaliser is pure Python, one core each).

    Returns:
        `PreTrainedTokenizerFast` with its special-token attributes, `deid_token`, the post-processor
        adding the style's start/end tokens and `model_max_length=max_length`.

    Raises:
        ValueError: an empty or non-string text (naming its index), an unknown style, no usable
        text, or a vocabulary size below the byte alphabet plus the special tokens.
    """
    if style not in SPECIAL_TOKENS:
        raise ValueError(f"style must be one of {sorted(SPECIAL_TOKENS)}, got {style!r}")
    if normalizer is _DEFAULT:
        normalizer = ClinicalTextNormalizer()
    elif isinstance(normalizer, dict):
        normalizer = ClinicalTextNormalizer(**normalizer)
    special = SPECIAL_TOKENS[style]
    special_list = list(dict.fromkeys(special.values())) + [DEID_TOKEN]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(special_list)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an int >= {minimum} (byte alphabet + special tokens), got {vocab_size!r}")
    if not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length must be an int >= 3, got {max_length!r}")

    tokenizer = Tokenizer(models.BPE(unk_token=special.get("unk_token")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_list,
        initial_alphabet=alphabet,
        show_progress=show_progress,
    )
    counts = {"used": 0, "skipped": 0}
    with _normalised(_valid_texts(texts, text_column, skip_invalid, counts), normalizer, num_proc) as training_texts:
        tokenizer.train_from_iterator(training_texts, trainer)
    if counts["used"] == 0:
        raise ValueError("no usable text to train the tokenizer on")
    if counts["skipped"]:
        warnings.warn(f"skipped {counts['skipped']} invalid texts of {counts['used'] + counts['skipped']}", stacklevel=2)

    start, end = (special["cls_token"], special["sep_token"]) if style == "bert" else (special["bos_token"], special["eos_token"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}",
        pair=f"{start} $A {end} $B:1 {end}:1",
        special_tokens=[(start, tokenizer.token_to_id(start)), (end, tokenizer.token_to_id(end))],
    )
    reached = tokenizer.get_vocab_size()
    if reached < vocab_size:
        warnings.warn(
            f"the corpus filled {reached} of the {vocab_size} vocabulary entries asked for "
            f"(BPE found no more pairs seen {min_frequency}+ times)",
            stacklevel=2,
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        clean_up_tokenization_spaces=False,
        extra_special_tokens={"deid_token": DEID_TOKEN},
        **special,
    )
    return wrapped


__all__ = ["CLIP_VOCAB_SIZE", "SPECIAL_TOKENS", "iter_texts", "train_clinical_tokenizer"]
