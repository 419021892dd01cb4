"""Downstream validation of a pretrained MedVL model without fine-tuning.

- Zero-shot findings AUC: for each CheXpert label, an image's score is P(positive) from the pair of
  prompt-ensemble embeddings (the positive phrasings' mean embedding against the negative ones', a
  softmax over the two similarities at the model's temperature, as CheXzero scores); ROC-AUC against
  the label (1 vs 0; uncertain -1 and blank are left out), macro-averaged over labels that have both
  classes. The prompts are versioned in `train/configs/zero_shot_prompts.yaml`.
- Image-to-text retrieval recall@k over the validation reports. Many studies share a report
  (normal studies especially), so a retrieved report counts as a hit when its text equals the
  image's own report; the chance level is computed for exactly that rule.
"""

from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from processing.chexpert import CHEXPERT_LABELS
from train.laterality_probe import laterality_probe
from train.metrics.medvl_retrieval.medvl_retrieval import embedding_similarity, retrieval_recall_at_k

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


def retrieval_recall(image_embeds, text_embeds, texts, ks=(1, 5, 10)) -> dict:
    """Image-to-text recall@k where any report identical to the image's own counts as a hit, and its chance
    level: the `medvl_retrieval` metric's implementation, with the reports as group ids."""
    both_ways = retrieval_recall_at_k(embedding_similarity(image_embeds, text_embeds), ks, group_ids=list(texts))
    results = {}
    for k in ks:
        results[f"recall@{k}"] = both_ways[f"image_to_text_recall@{k}"]
        results[f"chance_recall@{k}"] = both_ways[f"chance_recall@{k}"]
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
def embed_dataset(model, processor, dataset, batch_size=64, max_length=256, device="cpu", show_progress=True):
    """Normalised image and report embeddings of every row (columns `image`, `report`)."""
    image_embeds, text_embeds = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="validation", disable=not show_progress, leave=False):
        rows = dataset[start : start + batch_size]
        inputs = processor(
            images=rows["image"], text=rows["report"], padding=True, truncation=True, max_length=max_length,
            return_tensors="pt",
        )
        outputs = model(**{k: v.to(device) for k, v in inputs.items()}, return_loss=False)
        image_embeds.append(outputs.image_embeds.float().cpu())
        text_embeds.append(outputs.text_embeds.float().cpu())
    return torch.cat(image_embeds).numpy(), torch.cat(text_embeds).numpy()


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


def evaluate_pretraining(model, processor, dataset, prompts, batch_size=64, max_length=256, device="cpu") -> dict:
    """Zero-shot AUC and the laterality probe (when `dataset` has labels) and image-to-text retrieval recall."""
    was_training = model.training
    model.eval()
    try:
        image_embeds, text_embeds = embed_dataset(model, processor, dataset, batch_size, max_length, device)
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
                embed_prompt_ensembles(model, processor, [prompts["laterality"][n][i] for n in sided], max_length, device)
                for i in (0, 1)
            )
        logit_scale = float(model.clamped_logit_scale())
    finally:
        model.train(was_training)
    results = retrieval_recall(image_embeds, text_embeds, dataset["report"])
    results["zero_shot_prompts_version"] = prompts["version"]
    if "labels" in dataset.column_names:
        matrix = label_matrix_from_rows(dataset["labels"], names)
        auc = zero_shot_auc(image_embeds, positive, negative, matrix, names, logit_scale)
        auc.pop("zero_shot_scores")
        results.update(auc)
        if sided:
            results.update(laterality_probe(image_embeds, left, right, dataset["report"], dataset["labels"], sided))
    return results


__all__ = [
    "DEFAULT_PROMPTS_FILE",
    "embed_prompt_ensembles",
    "load_prompts",
    "zero_shot_auc",
    "retrieval_recall",
    "label_matrix_from_rows",
    "evaluate_pretraining",
]
