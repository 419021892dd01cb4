"""Pretraining data: `--data` sources, a global-batch sampler, and the collator that runs the joint
augmentation, the processor and MLM masking inside the dataloader workers.

Every random choice made for a sample (augmentation, masked positions) comes from a generator
seeded by (run seed, epoch, sample index). A sample therefore looks the same whichever rank,
worker or micro-batch processes it: runs with 1 or 2 processes, or resumed from a checkpoint,
see identical global batches.
"""

import hashlib
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from modeling_medvl.losses_medvl import IGNORE_INDEX, mask_tokens
from processing.chexpert import CHEXPERT_LABELS
from train.laterality_probe import FINDING_WORDS, stated_side
from train.user_errors import UserError

SOURCE_KINDS = ("mimic-cxr", "chexpert", "openi", "pairs", "saved", "wds", "synthcxr")
# The reader options a `KIND:LOCATION?key=value&key=value` spec may carry; LIST_OPTIONS take comma-separated values.
SOURCE_OPTIONS = {
    "mimic-cxr": ("split", "view", "per", "sections"),
    "chexpert": ("split", "view"),
    "openi": ("per", "sections"),
    "pairs": ("image_column", "text_column"),
    "saved": ("split",),
    "wds": (),
}
LIST_OPTIONS = ("view",)
# Each reader's split names (aliases to its own name); `saved` takes any split name of its DatasetDict.
SOURCE_SPLITS = {
    "mimic-cxr": {"train": "train", "validate": "validate", "validation": "validate", "val": "validate",
                  "test": "test"},
    "chexpert": {"train": "train", "valid": "valid", "validate": "valid", "validation": "valid"},
}


@dataclass
class DataSpec:
    kind: str
    location: str = ""
    options: dict = field(default_factory=dict)


def _reader_options(spec: str, kind: str, query: str) -> dict:
    valid = SOURCE_OPTIONS[kind]
    options = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise UserError(f"--data {spec!r}: options are key=value pairs joined by '&' (got {item!r})")
        if key not in valid:
            raise UserError(f"--data {spec!r}: unknown option {key!r}; {kind} takes "
                            + (", ".join(f"{name}=" for name in valid) if valid else "no options"))
        options[key] = [part.strip() for part in value.split(",") if part.strip()] if key in LIST_OPTIONS else value
    split = options.get("split")
    if split is not None and kind in SOURCE_SPLITS and split not in SOURCE_SPLITS[kind]:
        raise UserError(f"--data {spec!r}: {kind} splits are {', '.join(SOURCE_SPLITS[kind])} (got {split!r})")
    return options


def parse_data_spec(spec: str) -> DataSpec:
    """`kind:location[?key=value&key=value]` (the reader's options, see SOURCE_OPTIONS), or
    `synthcxr:n=2000,size=64,seed=0`."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        raise UserError(f"--data {spec!r}: expected KIND:LOCATION with KIND one of {SOURCE_KINDS} "
                        "(e.g. mimic-cxr:/data/mimic-cxr-jpg?split=train&view=PA,AP or synthcxr:n=2000,size=64,seed=0)")
    if kind != "synthcxr":
        # wds: takes no options, and its glob patterns may hold a '?'.
        location, _, query = rest.partition("?") if SOURCE_OPTIONS[kind] else (rest, "", "")
        if not location:
            raise UserError(f"--data {spec!r}: missing the location after '{kind}:' (e.g. {kind}:/data/folder)")
        return DataSpec(kind, location, _reader_options(spec, kind, query))
    options = {"n": 2000, "size": 64, "seed": 0}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in options:
            raise UserError(f"--data {spec!r}: synthcxr options are n=, size=, seed= (got {item!r})")
        try:
            options[key] = int(value)
        except ValueError:
            raise UserError(f"--data {spec!r}: {key} must be an integer, got {value!r}") from None
    if options["n"] < 1 or options["size"] < 8:
        raise UserError(f"--data {spec!r}: need n >= 1 and size >= 8")
    return DataSpec(kind, options=options)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def mask_rows(input_ids, attention_mask, seeds, mask_token_id, vocab_size, special_ids, probability):
    """MLM masking of each row from its own seed, on its unpadded tokens (so the choice does not depend
    on how long the other reports of its micro-batch are)."""
    mlm_input_ids = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, seed in enumerate(seeds):
        real = attention_mask[row].bool()
        masked, row_labels = mask_tokens(
            input_ids[row, real][None], None, mask_token_id, vocab_size, special_ids, probability,
            generator=torch.Generator().manual_seed(seed),
        )
        mlm_input_ids[row, real] = masked[0]
        labels[row, real] = row_labels[0]
    return mlm_input_ids, labels


def match_group_id(labels, report: str) -> int:
    """A 63-bit id shared by rows that say the same thing: the same positive (1) and uncertain (-1) findings, on
    the same side as far as the report states one, when the row has labels; else the same report after
    lower-casing and dropping punctuation. Negated and unmentioned findings are alike here: "No pulmonary edema."
    adds nothing to a normal study, but a left and a right effusion differ. A hash, so every rank and worker gives
    one row the same id."""
    stated = {name: (labels or {}).get(name) for name in CHEXPERT_LABELS}
    if any(value is not None for value in stated.values()):
        key = "labels:" + ",".join(
            f"{name}={int(value)}{':' + (stated_side(report, name) or '') if name in FINDING_WORDS else ''}"
            for name, value in stated.items() if value in (1, -1)
        )
    else:
        key = "report:" + " ".join(re.sub(r"[^0-9a-z]+", " ", report.lower()).split())
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


class PretrainCollator:
    """(index, row) items -> model inputs: augmentation, processor, MLM masking (runs in workers)."""

    def __init__(self, processor, augmentation=None, mlm_probability: Optional[float] = 0.15, max_length=256, seed=0):
        self.processor = processor
        self.augmentation = augmentation
        self.mlm_probability = mlm_probability
        self.max_length = max_length
        self.seed = seed
        self.epoch = 0
        tokenizer = processor.tokenizer
        self.mask_token_id = tokenizer.mask_token_id
        self.special_ids = sorted(set(tokenizer.all_special_ids))
        self.vocab_size = len(tokenizer)
        if mlm_probability and self.mask_token_id is None:
            raise ValueError("MLM needs a tokenizer with a mask token; this tokenizer has none")

    def __call__(self, items):
        images, reports, seeds, groups = [], [], [], []
        for index, row in items:
            seed = sample_seed(self.seed, self.epoch, index)
            image, report = row["image"], row["report"]
            if self.augmentation is not None:
                image, report = self.augmentation(image, report, rng=random.Random(seed))
            images.append(image)
            reports.append(report)
            groups.append(match_group_id(row.get("labels"), report))
            seeds.append(seed)
        batch = self.processor(
            images=images, text=reports, padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {
            "pixel_values": batch["pixel_values"],
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "match_groups": torch.tensor(groups, dtype=torch.long),
        }
        if self.mlm_probability:
            inputs["mlm_input_ids"], inputs["mlm_labels"] = mask_rows(
                batch["input_ids"], batch["attention_mask"], seeds, self.mask_token_id, self.vocab_size,
                self.special_ids, self.mlm_probability,
            )
        return inputs


class IndexedRows(Dataset):
    """A map-style data set whose items carry their index (the collator seeds each sample from it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]


class GlobalBatchSampler:
    """This rank's micro-batches of one epoch, from a global order that ignores the process count.

    The epoch's permutation is cut into global batches of `per_device x processes x accumulation`
    rows; rank r takes rows [r*K*b, (r+1)*K*b) of each and splits them into K micro-batches.
    Incomplete global batches at the end of an epoch are dropped.
    """

    def __init__(self, num_rows, per_device_batch_size, num_processes, rank, accumulation_steps, seed, epoch=0,
                 start_step=0):
        self.num_rows = num_rows
        self.micro = per_device_batch_size
        self.processes = num_processes
        self.rank = rank
        self.accumulation = accumulation_steps
        self.global_batch = per_device_batch_size * num_processes * accumulation_steps
        self.seed = seed
        self.epoch = epoch
        self.start_step = start_step
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {num_rows} rows, fewer than one global batch of {self.global_batch}"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.global_batch

    def __len__(self):
        return (self.steps_per_epoch - self.start_step) * self.accumulation

    def __iter__(self):
        order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        local = self.accumulation * self.micro
        for step in range(self.start_step, self.steps_per_epoch):
            rows = order[step * self.global_batch : (step + 1) * self.global_batch]
            mine = rows[self.rank * local : (self.rank + 1) * local]
            for micro in range(self.accumulation):
                yield mine[micro * self.micro : (micro + 1) * self.micro].tolist()


class IndexedStream(IterableDataset):
    """A streamed data set as (index, row) pairs; the index is a content hash (stable under resume)."""

    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        for row in self.stream:
            key = f"{row.get('__key__', '')}|{row.get('study_id', '')}|{row['report']}"
            yield zlib.crc32(key.encode()), row


# A DataLoader draws its workers' base seed from torch's global RNG when an iterator starts, which
# would shift the model's dropout stream depending on where a (resumed) run starts its epoch; its
# own generator keeps the global RNG untouched (the collator seeds every sample itself).
def make_map_loader(dataset, collator, sampler: GlobalBatchSampler, num_workers: int):
    return DataLoader(
        IndexedRows(dataset), batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
        generator=torch.Generator().manual_seed(sampler.seed + sampler.epoch),
    )


def make_stream_loader(stream, collator, per_device_batch_size: int, num_workers: int, seed: int = 0):
    return DataLoader(
        IndexedStream(stream), batch_size=per_device_batch_size, collate_fn=collator, num_workers=num_workers,
        drop_last=True, generator=torch.Generator().manual_seed(seed),
    )


def micro_batch_groups(loader, accumulation_steps: int):
    """Group a loader's micro-batches into lists of `accumulation_steps` (one optimizer step each)."""
    group = []
    for micro_batch in loader:
        group.append(micro_batch)
        if len(group) == accumulation_steps:
            yield group
            group = []


def synthcxr_cache_folder(cache_root, options: dict) -> Path:
    return Path(cache_root) / f"synthcxr-n{options['n']}-size{options['size']}-seed{options['seed']}"


__all__ = [
    "DataSpec",
    "SOURCE_OPTIONS",
    "SOURCE_SPLITS",
    "parse_data_spec",
    "sample_seed",
    "mask_rows",
    "match_group_id",
    "PretrainCollator",
    "GlobalBatchSampler",
    "make_map_loader",
    "make_stream_loader",
    "micro_batch_groups",
]
