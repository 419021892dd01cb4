"""VQA data for fine-tuning: the training and validation splits of `--data`, the answer vocabulary (the training
split's answers only) and the collator.

Sources: `vqa-rad:/dir` (its train questions; a share of the training images is held out for validation, since
VQA-RAD has no validation split and its test split is never read here), `slake:/dir` (train.json / validate.json,
English questions), `saved:/dir` (a DatasetDict with train and validation splits of image, question, answer,
answer_type) and `synthcxr:n=..,size=..,seed=..`: SynthCXR written out in VQA-RAD's layout once (into the cache
folder) and read back by the VQA-RAD reader, validated on fresh studies from another seed.

Answers are kept in the VQA metric's normal form (lowercase, no punctuation or articles), so that "PA" and "pa"
are one class. A validation answer outside the vocabulary gets the target -100 (no loss) and counts as wrong in the
metric (`out_of_vocabulary`), never dropped.
"""

import functools
import hashlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import PartialState

import processing
from modeling_medvl.losses_medvl import IGNORE_INDEX
from train.data_loading import parse_data_spec, synthcxr_cache_folder
from train.data_sources import default_validation_spec
from train.metrics import load_metric

VQA_KINDS = ("vqa-rad", "slake", "saved", "synthcxr")
VQA_COLUMNS = ("image", "question", "answer", "answer_type")
SAVED_VALIDATION_NAMES = ("validation", "valid", "validate")


@functools.lru_cache(maxsize=1)
def _metric_normalizer():
    metric = load_metric("medvl_vqa", keep_in_memory=True)
    return sys.modules[type(metric).__module__].normalize_answer


def normalize_answer(text) -> str:
    """The VQA metric's own normalisation (train/metrics/medvl_vqa), so that vocabulary and metric agree."""
    return _metric_normalizer()(text)


def split_source(spec_text: str):
    """(kind, location or synthcxr options) of a VQA `--data` source (vqa-rad: and slake: are VQA-only kinds)."""
    kind, sep, location = spec_text.partition(":")
    if kind in ("vqa-rad", "slake"):
        if not location:
            raise ValueError(f"--data {spec_text!r}: missing the folder after '{kind}:'")
        return kind, location
    spec = parse_data_spec(spec_text)
    if spec.kind not in VQA_KINDS:
        raise ValueError(f"--data {spec_text}: VQA fine-tuning reads {VQA_KINDS} sources, not {spec.kind!r}")
    return spec.kind, spec.options if spec.kind == "synthcxr" else spec.location


def held_out(image, fraction: float) -> bool:
    """Whether an image goes to the carved-out validation split: a hash of its file name, so that every question
    about one image falls on the same side and the split does not depend on the order of the rows."""
    name = Path(image["path"] if isinstance(image, dict) else str(image)).name
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "little") / 2**64 < fraction


def carve_validation(dataset, fraction: float):
    """(train, validation) of a split with no validation counterpart, by image."""
    images = dataset.cast_column("image", datasets.Image(decode=False))["image"]
    flags = [held_out(image, fraction) for image in images]
    return (dataset.select([i for i, flag in enumerate(flags) if not flag]),
            dataset.select([i for i, flag in enumerate(flags) if flag]))


def synthcxr_vqa(options: dict, cache_root):
    """SynthCXR in VQA-RAD's layout (written once, main process first), read by the VQA-RAD reader; every study."""
    folder = synthcxr_cache_folder(Path(cache_root) / "vqa", options)
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (folder / "vqa-rad" / "VQA_RAD Dataset Public.json").is_file():
            processing.write_synthcxr(folder, options["n"], size=options["size"], seed=options["seed"],
                                      layouts=("vqa-rad",), progress=False)
    return processing.load_vqa_rad(folder / "vqa-rad")


def _saved_split(location: str, names):
    loaded = datasets.load_from_disk(location)
    if not isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"--data saved:{location}: VQA needs a DatasetDict with train and validation splits")
    for name in names:
        if name in loaded:
            return loaded[name]
    raise ValueError(f"--data saved:{location}: no {' / '.join(names)} split among {list(loaded)}")


def _checked(dataset, source: str, split: str):
    names = dataset.column_names or []
    missing = [name for name in VQA_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"{source}: the data set lacks the VQA column(s) {missing} (columns: {names})")
    if len(dataset) == 0:
        raise ValueError(f"{source}: the {split} split is empty")
    return dataset.select_columns(list(VQA_COLUMNS))


@dataclass
class VqaSplits:
    train: datasets.Dataset
    validation: datasets.Dataset
    train_spec: str
    validation_spec: str
    answers: list  # the vocabulary: normalised training answers, most frequent first
    answer_counts: dict  # {answer type: Counter of normalised training answers}


def load_vqa_splits(data_args, cache_root) -> VqaSplits:
    spec_text = data_args.data
    kind, location = split_source(spec_text)
    validation_spec = data_args.validation_data
    if kind == "synthcxr":
        train = synthcxr_vqa(location, cache_root)
        validation_spec = validation_spec or default_validation_spec([spec_text], data_args.validation_size)
        validation = None
    elif kind == "vqa-rad":
        train, validation = carve_validation(processing.load_vqa_rad(location, split="train"),
                                             data_args.validation_fraction)
        validation_spec = validation_spec or f"{spec_text} (held-out {data_args.validation_fraction:g} of train images)"
    elif kind == "slake":
        train, validation = processing.load_slake(location, "train"), processing.load_slake(location, "validate")
        validation_spec = validation_spec or f"{spec_text} (validate.json)"
    else:
        train, validation = _saved_split(location, ("train",)), _saved_split(location, SAVED_VALIDATION_NAMES)
        validation_spec = validation_spec or f"{spec_text} (validation)"
    if data_args.validation_data or validation is None:
        other_kind, other = split_source(validation_spec)
        validation = {
            "synthcxr": lambda: synthcxr_vqa(other, cache_root),
            "vqa-rad": lambda: processing.load_vqa_rad(other, split="train"),
            "slake": lambda: processing.load_slake(other, "validate"),
            "saved": lambda: _saved_split(other, SAVED_VALIDATION_NAMES),
        }[other_kind]()
    train = _checked(train, f"--data {spec_text}", "training")
    validation = _checked(validation, f"validation data {validation_spec}", "validation")
    counts = {}
    for answer, kind_of in zip(train["answer"], train["answer_type"]):
        counts.setdefault(kind_of.upper(), Counter())[normalize_answer(answer)] += 1
    total = sum(counts.values(), Counter())
    answers = sorted(total, key=lambda answer: (-total[answer], answer))
    return VqaSplits(train, validation, spec_text, validation_spec, answers, counts)


def out_of_vocabulary(dataset, answers) -> int:
    vocabulary = set(answers)
    return sum(normalize_answer(answer) not in vocabulary for answer in dataset["answer"])


class VqaCollator:
    """Rows of image + question + answer -> `pixel_values`, the question's `input_ids` / `attention_mask` and the
    answer's index in the vocabulary (-100 outside it)."""

    def __init__(self, processor, answers, max_length=128):
        self.processor = processor
        self.answer_ids = {answer: index for index, answer in enumerate(answers)}
        self.max_length = max_length

    def __call__(self, rows):
        batch = self.processor(images=[row["image"] for row in rows], text=[row["question"] for row in rows],
                               padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        labels = [self.answer_ids.get(normalize_answer(row["answer"]), IGNORE_INDEX) for row in rows]
        return {
            "pixel_values": batch["pixel_values"],
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.long),
        }


__all__ = [
    "VqaCollator",
    "VqaSplits",
    "carve_validation",
    "load_vqa_splits",
    "normalize_answer",
    "out_of_vocabulary",
]
