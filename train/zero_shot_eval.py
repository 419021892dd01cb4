"""Downstream validation of a pretrained MedVL model without fine-tuning.

- Zero-shot findings AUC: for each CheXpert label, an image's score is P(positive) from the pair of
  prompt-ensemble embeddings (the positive phrasings' mean embedding against the negative ones', a
  softmax over the two similarities at the model's temperature, as CheXzero scores); ROC-AUC against
  the label (1 vs 0; uncertain -1 and blank are left out), macro-averaged over labels that have both
  classes. The prompts are versioned in `train/configs/zero_shot_prompts.yaml`.
- Retrieval recall@k both ways over the validation pairs (`recall@k` image to text, `text_to_image_recall@k`).
  Many studies share a report (normal studies especially), so a retrieved report counts as a hit when its text
  equals the image's own report, and a retrieved image when its report equals the query's; the chance level is
  computed for exactly that rule. It is computed a chunk of queries at a time, in memory O(chunk x N), never the
  N x N matrix (MIMIC-CXR's 377k images would need about 1 TB), and equals the `medvl_retrieval` metric's dense
  result (ties in item order).
- Under several processes every rank embeds its share of the validation rows (in the training precision) and the
  embeddings are gathered, so that no rank waits on a collective while one embeds the whole set.
"""

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from processing.chexpert import CHEXPERT_LABELS
from train.laterality_probe import laterality_probe

DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parent / "configs" / "zero_shot_prompts.yaml"


def _phrasings(path, label, value, side) -> list[str]:
    phrasings = [value] if isinstance(value, str) else value
    if not (isinstance(phrasings, list) and phrasings and all(isinstance(p, str) and p.strip() for p in phrasings)):
        raise ValueError(f"{path}: label {label!r} needs one or more non-empty {side} phrasings")
    return list(phrasings)


def load_prompts(path=None) -> dict:
    """`{"version": ..., "labels": {label: (positive phrasings, negative phrasings)}, "laterality": {label: (left
    phrasings, right phrasings)}}` from the versioned default file, or from `path` (same layout: `version`, then
    `labels: {label: {positive: [...], negative: [...]}}` and optionally `laterality: {label: {left: [...], right:
    [...]}}`; what it leaves out keeps the defaults). A label may also be given as `[positive, negative]`."""
    default = yaml.safe_load(DEFAULT_PROMPTS_FILE.read_text())
    prompts = {"version": str(default["version"]), "labels": {}}
    sources = [(DEFAULT_PROMPTS_FILE, default)]
    if path is not None:
        user = yaml.safe_load(Path(path).read_text()) or {}
        if not {"labels", "laterality"} & set(user):  # the short form: labels at the top
            user = {"version": f"{Path(path).name}", "labels": user}
        prompts["version"] = f"{user.get('version', Path(path).name)} (on default {prompts['version']})"
        sources.append((path, user))
    for source, values in sources:
        for label, pair in (values.get("labels") or {}).items():
            if label not in CHEXPERT_LABELS:
                raise ValueError(f"{source}: unknown label {label!r}; labels are {CHEXPERT_LABELS}")
            if isinstance(pair, dict):
                positive, negative = pair.get("positive"), pair.get("negative")
            elif isinstance(pair, (list, tuple)) and len(pair) == 2:
                positive, negative = pair
            else:
                raise ValueError(f"{source}: label {label!r} needs {{positive: [...], negative: [...]}}")
            prompts["labels"][label] = (
                _phrasings(source, label, positive, "positive"), _phrasings(source, label, negative, "negative")
            )
        for finding, sides in (values.get("laterality") or {}).items():
            if finding not in CHEXPERT_LABELS or not isinstance(sides, dict):
                raise ValueError(
                    f"{source}: laterality needs {{left: [...], right: [...]}} under a label of {CHEXPERT_LABELS}, "
                    f"got {finding!r}"
                )
            prompts.setdefault("laterality", {})[finding] = (
                _phrasings(source, finding, sides.get("left"), "left"), _phrasings(source, finding, sides.get("right"), "right")
            )
    return prompts


def zero_shot_auc(image_embeds, positive_embeds, negative_embeds, label_matrix, label_names, logit_scale=1.0) -> dict:
    """AUC per label of P(positive) = softmax(logit_scale * [image.positive, image.negative])[0]; `label_matrix`
    is (N, L) with nan for left-out entries, the embeddings (L, dim) per label."""
    image_embeds = np.asarray(image_embeds, dtype=np.float64)
    difference = image_embeds @ np.asarray(positive_embeds, np.float64).T - image_embeds @ np.asarray(
        negative_embeds, np.float64
    ).T
    scores = 1.0 / (1.0 + np.exp(-float(logit_scale) * difference))
    per_label = {}
    for column, name in enumerate(label_names):
        targets = label_matrix[:, column]
        keep = (targets == 0) | (targets == 1)
        if keep.sum() and 0 < targets[keep].sum() < keep.sum():
            # AUC on the difference: P(positive) is monotone in it, and saturates to ties at a high temperature.
            per_label[name] = float(roc_auc_score(targets[keep], difference[keep, column]))
    macro = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"zero_shot_auc": macro, "zero_shot_auc_per_label": per_label, "zero_shot_scores": scores}


# Bytes of working memory for one chunk of retrieval queries against every candidate.
RETRIEVAL_CHUNK_BYTES = 64 * 2**20


def retrieval_chunk_size(count: int, dtype, max_chunk_bytes: int = RETRIEVAL_CHUNK_BYTES) -> int:
    """Queries per chunk: each holds its similarities to the `count` candidates plus about six boolean rows."""
    per_query = count * (np.dtype(dtype).itemsize + 6)
    return max(1, min(count, max_chunk_bytes // per_query))


def _normalised(embeds) -> np.ndarray:
    embeds = np.asarray(embeds)
    embeds = embeds if np.issubdtype(embeds.dtype, np.floating) else embeds.astype(np.float64)
    return embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)


def _first_hit_ranks(queries, candidates, groups, chunk_size) -> np.ndarray:
    """0-based rank of each query's best-ranked hit (a candidate of its group) among all candidates, ties broken in
    candidate order as a stable sort breaks them: the candidates ranked before it are those more similar, and those
    as similar that come first."""
    ranks = np.empty(len(queries), dtype=np.int64)
    columns = np.arange(len(candidates))
    for start in range(0, len(queries), chunk_size):
        similarity = queries[start : start + chunk_size] @ candidates.T
        hit = groups[start : start + chunk_size, None] == groups[None, :]
        best = np.max(similarity, axis=1, where=hit, initial=-np.inf, keepdims=True)  # every query hits itself
        tied = similarity == best
        first = np.argmax(tied & hit, axis=1)[:, None]
        ranks[start : start + chunk_size] = (similarity > best).sum(axis=1) + (tied & (columns < first)).sum(axis=1)
    return ranks


def retrieval_recall(image_embeds, text_embeds, texts, ks=(1, 5, 10), chunk_size=None,
                     max_chunk_bytes=RETRIEVAL_CHUNK_BYTES) -> dict:
    """Recall@k of image i and report i (`texts[i]`) both ways, `recall@k` (image to text) and
    `text_to_image_recall@k`, where a retrieved item whose report is identical in text to the true one is a hit;
    `chance_recall@k` is a random ranking's under that rule. `chunk_size` queries at a time (default: as many as
    fit `max_chunk_bytes`); equal to the `medvl_retrieval` metric's dense result."""
    images, reports = _normalised(image_embeds), _normalised(text_embeds)
    count = len(images)
    _, groups, sizes = np.unique(np.asarray([str(text) for text in texts]), return_inverse=True, return_counts=True)
    chunk_size = chunk_size or retrieval_chunk_size(count, np.result_type(images, reports), max_chunk_bytes)
    image_to_text = _first_hit_ranks(images, reports, groups, chunk_size)
    text_to_image = _first_hit_ranks(reports, images, groups, chunk_size)
    group_sizes, queries = np.unique(sizes[groups], return_counts=True)
    results = {}
    for k in ks:
        drawn = min(int(k), count)
        misses = [math.comb(count - int(size), drawn) / math.comb(count, drawn) for size in group_sizes]
        results[f"recall@{k}"] = float(np.mean(image_to_text < drawn))
        results[f"text_to_image_recall@{k}"] = float(np.mean(text_to_image < drawn))
        results[f"chance_recall@{k}"] = float(np.average(1.0 - np.asarray(misses), weights=queries))
    return results


def label_matrix_from_rows(label_dicts, label_names) -> np.ndarray:
    matrix = np.full((len(label_dicts), len(label_names)), np.nan)
    for row, labels in enumerate(label_dicts):
        for column, name in enumerate(label_names):
            value = (labels or {}).get(name)
            if value is not None:
                matrix[row, column] = float(value)
    return matrix


@torch.no_grad()
def embed_dataset(model, processor, dataset, batch_size=64, max_length=256, device="cpu", show_progress=True,
                  start=0, stop=None):
    """Normalised image and report embeddings of rows [start, stop) (columns `image`, `report`)."""
    stop = len(dataset) if stop is None else stop
    dim = model.config.projection_dim
    image_embeds, text_embeds = [torch.zeros(0, dim)], [torch.zeros(0, dim)]
    for first in tqdm(range(start, stop, batch_size), desc="validation", disable=not show_progress, leave=False):
        rows = dataset[first : min(first + batch_size, stop)]
        inputs = processor(
            images=rows["image"], text=rows["report"], padding=True, truncation=True, max_length=max_length,
            return_tensors="pt",
        )
        outputs = model(**{k: v.to(device) for k, v in inputs.items()}, return_loss=False)
        image_embeds.append(outputs.image_embeds.float().cpu())
        text_embeds.append(outputs.text_embeds.float().cpu())
    return torch.cat(image_embeds).numpy(), torch.cat(text_embeds).numpy()


def embed_on_every_rank(embed_rows, count: int, dim: int, accelerator):
    """(image, text) embeddings of all `count` rows, each rank embedding a contiguous share with
    `embed_rows(start, stop)` and every rank receiving all of them through one gather."""
    share = math.ceil(count / accelerator.num_processes)
    start = min(count, accelerator.process_index * share)
    stop = min(count, start + share)
    images, texts = embed_rows(start, stop)
    local = torch.zeros(share, 2, dim)  # shares padded to one size: a gather needs equal shapes
    local[: stop - start, 0], local[: stop - start, 1] = torch.as_tensor(images), torch.as_tensor(texts)
    gathered = accelerator.gather(local.to(accelerator.device)).cpu().reshape(accelerator.num_processes, share, 2, dim)
    lengths = [min(count, (rank + 1) * share) - min(count, rank * share) for rank in range(accelerator.num_processes)]
    rows = torch.cat([gathered[rank, :length] for rank, length in enumerate(lengths)])
    return rows[:, 0].numpy(), rows[:, 1].numpy()


@torch.no_grad()
def embed_texts(model, processor, texts, max_length=256, device="cpu"):
    """Normalised text embeddings of `texts` (through the model's text tower and projection)."""
    inputs = processor(text=list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    features = model.get_text_features(
        input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
    )
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def embed_prompt_ensembles(model, processor, ensembles, max_length=256, device="cpu") -> np.ndarray:
    """One embedding per ensemble: the normalised mean of its phrasings' normalised embeddings."""
    flat = [text for ensemble in ensembles for text in ensemble]
    embeds = embed_texts(model, processor, flat, max_length, device)
    means, start = [], 0
    for ensemble in ensembles:
        mean = embeds[start : start + len(ensemble)].mean(axis=0)
        means.append(mean / max(np.linalg.norm(mean), 1e-12))
        start += len(ensemble)
    return np.stack(means)


def evaluate_pretraining(model, processor, dataset, prompts, batch_size=64, max_length=256, device="cpu",
                         accelerator=None) -> dict:
    """Zero-shot AUC and the laterality probe (when `dataset` has labels) and retrieval recall both ways. With an
    `accelerator`, call it on every rank: each embeds its share of the rows in the training precision, and every
    rank returns the same results."""
    was_training = model.training
    model.eval()
    precision = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    try:
        with precision:
            if accelerator is None:
                image_embeds, text_embeds = embed_dataset(model, processor, dataset, batch_size, max_length, device)
            else:
                image_embeds, text_embeds = embed_on_every_rank(
                    lambda start, stop: embed_dataset(model, processor, dataset, batch_size, max_length, device,
                                                      show_progress=accelerator.is_main_process, start=start,
                                                      stop=stop),
                    len(dataset), model.config.projection_dim, accelerator,
                )
            names = [name for name in CHEXPERT_LABELS if name in prompts["labels"]]
            positive = embed_prompt_ensembles(
                model, processor, [prompts["labels"][name][0] for name in names], max_length, device
            )
            negative = embed_prompt_ensembles(
                model, processor, [prompts["labels"][name][1] for name in names], max_length, device
            )
            sided = [name for name in CHEXPERT_LABELS if name in prompts.get("laterality", {})]
            if sided:
                left, right = (
                    embed_prompt_ensembles(model, processor, [prompts["laterality"][n][i] for n in sided], max_length,
                                           device)
                    for i in (0, 1)
                )
        logit_scale = float(model.clamped_logit_scale().detach())
    finally:
        model.train(was_training)
    # Through select_columns: reading a column of the whole data set would decode every image.
    reports = list(dataset.select_columns(["report"])["report"])
    results = retrieval_recall(image_embeds, text_embeds, reports)
    results["validation_rows"] = len(dataset)
    results["zero_shot_prompts_version"] = prompts["version"]
    if "labels" in dataset.column_names:
        label_rows = list(dataset.select_columns(["labels"])["labels"])
        matrix = label_matrix_from_rows(label_rows, names)
        auc = zero_shot_auc(image_embeds, positive, negative, matrix, names, logit_scale)
        auc.pop("zero_shot_scores")
        results.update(auc)
        if sided:
            results.update(laterality_probe(image_embeds, left, right, reports, label_rows, sided))
    return results


__all__ = [
    "DEFAULT_PROMPTS_FILE",
    "embed_prompt_ensembles",
    "load_prompts",
    "zero_shot_auc",
    "retrieval_recall",
    "retrieval_chunk_size",
    "embed_dataset",
    "embed_on_every_rank",
    "label_matrix_from_rows",
    "evaluate_pretraining",
]
