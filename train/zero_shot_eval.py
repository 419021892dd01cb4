"""Downstream validation of a pretrained MedVL model without fine-tuning.

- Zero-shot findings AUC: for each CheXpert label, an image's score is its similarity to a
  positive prompt minus its similarity to a negative prompt; ROC-AUC against the label (1 vs 0;
  uncertain -1 and blank are left out), macro-averaged over labels that have both classes.
- Image-to-text retrieval recall@k over the validation reports. Many studies share a report
  (normal studies especially), so a retrieved report counts as a hit when its text equals the
  image's own report; the chance level is computed for exactly that rule.
"""

import math
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from processing.chexpert import CHEXPERT_LABELS

# Positive / negative phrasings in the style of radiology reports. Positives state the finding the way
# reports do ("Moderate left pleural effusion."), not as "There is a ...": normal reports are full of
# "There is no ...", so that opener pulls a positive prompt towards the normal studies.
DEFAULT_PROMPTS = {
    "No Finding": ("No acute cardiopulmonary abnormality.", "Abnormal chest radiograph."),
    "Enlarged Cardiomediastinum": ("The cardiomediastinal silhouette is enlarged.", "The mediastinum is normal."),
    "Cardiomegaly": ("The heart is enlarged. Cardiomegaly.", "The heart size is normal."),
    "Lung Opacity": ("Opacity in the lung.", "The lungs are clear."),
    "Lung Lesion": ("Pulmonary nodule.", "No pulmonary nodule."),
    "Edema": ("Moderate pulmonary edema.", "No pulmonary edema."),
    "Consolidation": ("Focal consolidation in the lower lobe.", "No focal consolidation."),
    "Pneumonia": ("Findings consistent with pneumonia.", "No evidence of pneumonia."),
    "Atelectasis": ("Bibasilar atelectasis.", "No atelectasis."),
    "Pneumothorax": ("Moderate pneumothorax.", "No pneumothorax."),
    "Pleural Effusion": ("Moderate pleural effusion.", "No pleural effusion."),
    "Pleural Other": ("Pleural thickening.", "No pleural abnormality."),
    "Fracture": ("Acute rib fracture.", "No acute fracture."),
    "Support Devices": ("Support devices in standard position.", "No support devices."),
}


def load_prompts(path=None) -> dict:
    """Prompts per label: the defaults, updated from a YAML/JSON file {label: [positive, negative]}."""
    prompts = dict(DEFAULT_PROMPTS)
    if path is None:
        return prompts
    values = yaml.safe_load(Path(path).read_text()) or {}
    for label, pair in values.items():
        if label not in CHEXPERT_LABELS:
            raise ValueError(f"{path}: unknown label {label!r}; labels are {CHEXPERT_LABELS}")
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ValueError(f"{path}: label {label!r} needs [positive prompt, negative prompt]")
        prompts[label] = tuple(pair)
    return prompts


def zero_shot_auc(image_embeds, positive_embeds, negative_embeds, label_matrix, label_names) -> dict:
    """AUC per label from prompt-difference scores; `label_matrix` is (N, L) with nan for left-out entries."""
    image_embeds = np.asarray(image_embeds, dtype=np.float64)
    scores = image_embeds @ np.asarray(positive_embeds, np.float64).T - image_embeds @ np.asarray(
        negative_embeds, np.float64
    ).T
    per_label = {}
    for column, name in enumerate(label_names):
        targets = label_matrix[:, column]
        keep = (targets == 0) | (targets == 1)
        if keep.sum() and 0 < targets[keep].sum() < keep.sum():
            per_label[name] = float(roc_auc_score(targets[keep], scores[keep, column]))
    macro = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"zero_shot_auc": macro, "zero_shot_auc_per_label": per_label}


def retrieval_recall(image_embeds, text_embeds, texts, ks=(1, 5, 10)) -> dict:
    """Image-to-text recall@k where any report identical to the image's own counts as a hit."""
    image_embeds = torch.as_tensor(np.asarray(image_embeds), dtype=torch.float64)
    text_embeds = torch.as_tensor(np.asarray(text_embeds), dtype=torch.float64)
    count = len(texts)
    _, text_ids = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    text_ids = torch.as_tensor(text_ids)
    same_text = text_ids[:, None] == text_ids[None, :]
    ranking = (image_embeds @ text_embeds.T).argsort(dim=1, descending=True)
    matches = torch.gather(same_text, 1, ranking)
    copies = same_text.sum(dim=1).tolist()
    results = {}
    for k in ks:
        k = min(k, count)
        results[f"recall@{k}"] = float(matches[:, :k].any(dim=1).double().mean())
        # Chance: probability that k reports drawn at random include one of the m identical ones.
        chance = [1.0 - math.comb(count - m, k) / math.comb(count, k) for m in copies]
        results[f"chance_recall@{k}"] = float(np.mean(chance))
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


def evaluate_pretraining(model, processor, dataset, prompts, batch_size=64, max_length=256, device="cpu") -> dict:
    """Zero-shot AUC (labels present in `dataset`) and image-to-text retrieval recall on `dataset`."""
    was_training = model.training
    model.eval()
    try:
        image_embeds, text_embeds = embed_dataset(model, processor, dataset, batch_size, max_length, device)
        names = [name for name in CHEXPERT_LABELS if name in prompts]
        positive = embed_texts(model, processor, [prompts[name][0] for name in names], max_length, device)
        negative = embed_texts(model, processor, [prompts[name][1] for name in names], max_length, device)
    finally:
        model.train(was_training)
    results = retrieval_recall(image_embeds, text_embeds, dataset["report"])
    if "labels" in dataset.column_names:
        matrix = label_matrix_from_rows(dataset["labels"], names)
        results.update(zero_shot_auc(image_embeds, positive, negative, matrix, names))
    return results


__all__ = [
    "DEFAULT_PROMPTS",
    "load_prompts",
    "zero_shot_auc",
    "retrieval_recall",
    "label_matrix_from_rows",
    "evaluate_pretraining",
]
