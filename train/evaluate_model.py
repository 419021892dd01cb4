"""Clinical evaluation of a saved MedVL model on a labelled split, with safety and bias checks.

    python train/evaluate_model.py --model runs/ft1/checkpoint-best --data chexpert:/data/CheXpert-v1.0-small \\
        --split valid --out runs/ft1/eval.json
    python train/evaluate_model.py --model runs/p1/checkpoint-best --data synthcxr:n=512,size=64,seed=7 --out zs.json
    python train/evaluate_model.py --config eval.yaml --bootstrap_samples 2000
    python train/evaluate_model.py --model runs/rg/checkpoint-best --data mimic-cxr:/data/mimic-cxr-jpg --split test
    python train/evaluate_model.py --model runs/vqa/checkpoint-best --data vqa-rad:/data/vqa-rad --split test
    python train/evaluate_model.py --model runs/vqa/open_answers/checkpoint-best --data vqa-rad:/data/vqa-rad \
        --split test --out runs/vqa/eval_open.json

A classification head (`MedVLForImageClassification`, a full model or a LoRA adapter folder) is scored on its own
labels; a pretraining checkpoint (`MedVLForPreTraining` / `MedVLModel`) is scored zero-shot with the versioned
prompt ensembles (train/configs/zero_shot_prompts.yaml: each label's positive against its negative phrasings). A
generating model (`MedVLForConditionalGeneration`) writes reports, or, in a VQA run's `open_answers/` folder (or with
`--task vqa`), answers questions; a VQA run's answer classifier (`MedVLForQuestionAnswering`) answers them with the
run's generator for the open ones: see `train.evaluate_generation` for the data sources and results (CIDEr-D,
ROUGE-L, BLEU-1..4, or VQA accuracy closed and open, with bootstrap 95% intervals).

`--out eval.json` gets: per-label and macro AUC-ROC with bootstrap 95% intervals (the project's `medvl_auroc`
module), the label-order check (labels whose AUC lies below 0.5 beyond its interval: a warning naming them, most
often a swapped label column), per-label confusion matrices at `--threshold`, calibration (expected calibration
error, reliability bins), every metric per subgroup the metadata holds (sex, age band, view position, site) with
counts, and the largest subgroup gap (also printed). Figures go to `<out>_figures/`: roc_curves/roc_<label>.png,
confusion_matrix.png, reliability.png, subgroups.png. Data sources and splits: see `train.clinical_eval_data`.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_medvl import MedVLConfig
from processing.chexpert import CHEXPERT_LABELS
from train.clinical_eval import (
    calibration,
    confusion_matrices,
    describe_gap,
    evaluate_auroc,
    largest_gap,
    select_labels,
    subgroup_assignments,
    subgroup_metrics,
)
from train.clinical_eval_data import (
    CLASSIFIER,
    METADATA_COLUMNS,
    ZERO_SHOT_MODELS,
    check_not_training_data,
    check_split,
    load_evaluation_split,
)
from train.clinical_plots import confusion_plot, reliability_plot, subgroup_plot
from train.evaluate_generation import (
    ANSWER_CLASSIFIER,
    GENERATOR,
    TASKS,
    describe,
    evaluate_generation,
    generation_task,
    load_generation_split,
    run_folder,
)
from train.finetune_data import ClassificationCollator
from train.finetune_eval import plot_roc_curves, probabilities
from train.finetune_model import load_processor
from train.logging_utils import get_logger
from train.lora_presets import load_finetuned_model
from train.run_config import parse_config_and_args
from train.user_errors import MissingPathError, UserError, as_user_errors, run_main
from train.zero_shot_eval import embed_prompt_ensembles, load_prompts

logger = get_logger("medvl.evaluate")


@dataclass
class EvaluateArguments:
    model: Optional[str] = field(default=None, metadata={
        "help": "Saved MedVL folder (full or LoRA adapter): a classifier, a pretraining checkpoint (zero-shot), a "
                "report generator, a VQA run's answer classifier or its open-answer generator "
                "(open_answers/checkpoint-best)."})
    task: str = field(default="auto", metadata={
        "help": "For a generating model: 'report_generation' or 'vqa'; 'auto': 'vqa' in a VQA run's open_answers/ "
                "folder.", "choices": list(TASKS)})
    data: Optional[str] = field(default=None, metadata={
        "help": "Labelled source: chexpert:/dir, mimic-cxr:/dir, synthcxr:/written_dir, synthcxr:n=256,size=64,seed=7 "
                "or saved:/dir; for VQA also vqa-rad:/dir or slake:/dir."})
    split: str = field(default="valid", metadata={"help": "Which split to score.", "choices": ["valid", "test"]})
    out: str = field(default="eval.json", metadata={
        "help": "Results JSON; figures go to <out without .json>_figures/."})
    labels: list[str] = field(default_factory=list, metadata={"help": "Labels to score (default: all the model has)."})
    uncertain_policy: str = field(default="ones", metadata={
        "help": "Uncertain (-1) targets: 'ones', 'zeros' or 'ignore' (left out), as in fine-tuning.",
        "choices": ["ones", "zeros", "ignore"]})
    blank_policy: str = field(default="zeros", metadata={"help": "Blank targets: 'zeros' or 'ignore'.",
                                                           "choices": ["zeros", "ignore"]})
    bootstrap_samples: int = field(default=1000, metadata={"help": "Resamples for the 95%% intervals (0: none)."})
    subgroup_bootstrap_samples: int = field(
        default=100, metadata={"help": "Resamples per subgroup interval (each group costs about as much as the whole "
                                       "set)."}
    )
    min_group_size: int = field(default=20, metadata={"help": "Smallest subgroup compared in the gap."})
    calibration_bins: int = field(default=10, metadata={"help": "Equal-width probability bins of the ECE."})
    threshold: float = field(default=0.5, metadata={"help": "Probability at or above which a label is predicted."})
    max_new_tokens: int = field(default=128, metadata={"help": "Report generation: the most tokens per report."})
    html_examples: int = field(default=8, metadata={
        "help": "Report generation: studies shown in <out>_figures/examples.html (0: none)."})
    zero_shot_prompts: Optional[str] = field(default=None, metadata={
        "help": "Prompt file in the layout of train/configs/zero_shot_prompts.yaml (zero-shot only)."})
    base_model: Optional[str] = field(default=None, metadata={"help": "Base of a LoRA adapter that was moved."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "Where generated SynthCXR sets are kept (default: <out folder>/data_cache)."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resampling."})
    device: str = field(default="auto", metadata={"help": "'auto' (a GPU when there is one), 'cpu', 'cuda', ..."})


def parse_evaluate_args(argv=None) -> EvaluateArguments:
    (args,) = parse_config_and_args((EvaluateArguments,), argv)
    if not args.model:
        raise UserError("--model: give a saved MedVL folder (e.g. runs/ft1/checkpoint-best)")
    if not args.data:
        raise UserError("--data: give a labelled source (e.g. chexpert:/data/CheXpert-v1.0-small)")
    with as_user_errors():
        check_split(args.split)
    for name in ("bootstrap_samples", "subgroup_bootstrap_samples"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.batch_size < 1 or args.min_group_size < 1 or args.max_new_tokens < 1:
        raise UserError("--batch_size, --min_group_size and --max_new_tokens must be >= 1")
    if args.html_examples < 0:
        raise UserError(f"--html_examples must be >= 0, got {args.html_examples}")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder (give a .json file path)")
    return args


def inspect_model(folder, requested_labels, prompts_file=None, task="auto"):
    """(mode, label names, prompts or None) of a saved model, before anything heavy is loaded."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingPathError(f"--model {folder}: not a saved MedVL model folder (no config.json)")
    config = MedVLConfig.from_pretrained(str(folder))
    architectures = config.architectures or []
    if GENERATOR in architectures:
        return generation_task(folder, task), None, None
    if ANSWER_CLASSIFIER in architectures and task in ("auto", "vqa"):
        return "vqa", None, None
    if task != "auto":
        raise UserError(f"--task {task}: for a generating model ({GENERATOR}) or, vqa, an answer classifier "
                        f"({ANSWER_CLASSIFIER}); --model {folder} is {architectures}")
    if CLASSIFIER in architectures:
        labels = [config.id2label[index] for index in sorted(config.id2label)]
        return "classification", select_labels(requested_labels, labels, "the model's classification head"), None
    if any(name in architectures for name in ZERO_SHOT_MODELS):
        prompts = load_prompts(prompts_file)
        labels = [name for name in CHEXPERT_LABELS if name in prompts["labels"]]
        return "zero_shot", select_labels(requested_labels, labels, "the zero-shot prompt file"), prompts
    raise UserError(f"--model {folder}: a {architectures} model; evaluate_model scores a classification head "
                     f"({CLASSIFIER}), a generating model ({GENERATOR}), an answer classifier ({ANSWER_CLASSIFIER}) "
                     f"or, zero-shot, a pretraining checkpoint ({' / '.join(ZERO_SHOT_MODELS)})")


@torch.no_grad()
def predict_logits(model, processor, mode, dataset, label_names, args, prompts=None, device="cpu"):
    """(N, L) logits (classification: the head's; zero-shot: the model's temperature x the image embedding's
    similarity to each label's positive ensemble minus its negative one, CheXzero's score) and (N, L) targets."""
    collator = ClassificationCollator(processor, label_names, args.uncertain_policy, args.blank_policy)
    model.to(device).eval()
    if mode == "zero_shot":
        medvl = getattr(model, "medvl", model)
        if not hasattr(processor, "tokenizer"):
            raise ValueError(f"--model {args.model}: zero-shot needs the tokenizer saved beside the checkpoint")
        ensembles = [embed_prompt_ensembles(medvl, processor, [prompts["labels"][name][side] for name in label_names],
                                            device=device) for side in (0, 1)]
        direction = torch.tensor(ensembles[0] - ensembles[1], dtype=torch.float32, device=device)
        scale = float(medvl.clamped_logit_scale())
    else:
        columns = [model.config.label2id[name] for name in label_names]
    images = dataset.select_columns(["image", "labels"])
    logits, targets = [], []
    for start in tqdm(range(0, len(images), args.batch_size), desc="evaluate", leave=False):
        batch = collator([images[i] for i in range(start, min(start + args.batch_size, len(images)))])
        pixel_values = batch["pixel_values"].to(device)
        if mode == "zero_shot":
            features = medvl.get_image_features(pixel_values=pixel_values)
            features = features.pooler_output if hasattr(features, "pooler_output") else features
            output = scale * torch.nn.functional.normalize(features.float(), dim=-1) @ direction.T
        else:
            output = model(pixel_values=pixel_values).logits.float()[:, columns]
        logits.append(output.cpu())
        targets.append(batch["labels"])
    return torch.cat(logits).numpy().astype(np.float64), torch.cat(targets).numpy().astype(np.float64)


def evaluate_predictions(logits, targets, label_names, metadata: dict, args, figures_dir) -> dict:
    """Every number and figure of the evaluation from (N, L) logits and targets and the metadata columns."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    scores = probabilities(logits)
    overall = evaluate_auroc(logits, targets, label_names, args.bootstrap_samples, args.seed)
    confusion = confusion_matrices(scores, targets, label_names, args.threshold)
    calibrated = calibration(scores, targets, label_names, args.calibration_bins)
    subgroups = subgroup_metrics(logits, scores, targets, label_names, subgroup_assignments(metadata),
                                 args.subgroup_bootstrap_samples, args.seed, args.calibration_bins, args.min_group_size)
    figures = {
        "roc_curves": [str(figures_dir / path) for path in plot_roc_curves(logits, targets, label_names, overall,
                                                                           figures_dir)],
        "confusion_matrix": confusion_plot(confusion, figures_dir / "confusion_matrix.png"),
        "reliability": reliability_plot(calibrated, figures_dir / "reliability.png"),
    }
    if subgroups:
        figures["subgroups"] = subgroup_plot(subgroups, overall["auroc_macro"], figures_dir / "subgroups.png")
    known = (targets == 0) | (targets == 1)
    below_chance = overall.pop("labels_below_chance")
    return {
        "num_studies": int(len(targets)),
        "label_names": list(label_names),
        "label_counts": {name: {"positive": int((targets[:, c] == 1).sum()),
                                "negative": int((targets[:, c] == 0).sum()),
                                "unknown": int((~known[:, c]).sum())} for c, name in enumerate(label_names)},
        "bootstrap_samples": args.bootstrap_samples,
        **overall,
        "label_order_check": {"ok": not below_chance, "labels_below_chance": below_chance},
        "confusion": confusion,
        "calibration": calibrated,
        "subgroup_attributes_absent": [name for name in METADATA_COLUMNS if name not in metadata],
        "subgroups": subgroups,
        "largest_subgroup_gap": largest_gap(subgroups),
        "largest_subgroup_ece_gap": largest_gap(subgroups, "ece"),
        "figures": figures,
    }


def resolve_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def run_evaluation(args: EvaluateArguments) -> dict:
    started = time.time()
    out = Path(args.out)
    # Argument errors first, before the model is loaded or any data is read or generated.
    cache_root = Path(args.cache_dir or out.parent / "data_cache")
    with as_user_errors():  # the label, prompt and data checks of clinical_eval / clinical_eval_data name the value
        mode, label_names, prompts = inspect_model(args.model, args.labels, args.zero_shot_prompts, args.task)
        labelled = label_names is not None  # classification, zero-shot: scored on image labels
        check_not_training_data(args.data, args.split, args.model if labelled else run_folder(args.model, mode))
        dataset = (load_evaluation_split(args.data, args.split, cache_root) if labelled
                   else load_generation_split(mode, args.data, args.split, cache_root))
    model = load_finetuned_model(args.model, args.base_model)
    processor = load_processor(args.model, model.config.vision_config.image_size)
    results = {"model": str(args.model), "mode": mode, "data": args.data, "split": args.split,
               "bootstrap_samples": args.bootstrap_samples}
    figures_dir = out.parent / f"{out.stem}_figures"
    if labelled:
        logits, targets = predict_logits(model, processor, mode, dataset, label_names, args, prompts,
                                         resolve_device(args.device))
        metadata = {name: dataset[name] for name in METADATA_COLUMNS if name in dataset.column_names}
        results.update(uncertain_policy=args.uncertain_policy, blank_policy=args.blank_policy)
        if prompts is not None:
            results["zero_shot_prompts_version"] = prompts["version"]
        results.update(evaluate_predictions(logits, targets, label_names, metadata, args, figures_dir))
    else:
        results.update(evaluate_generation(mode, model, processor, dataset, args, figures_dir,
                                           resolve_device(args.device)))
    results["elapsed_s"] = time.time() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    report(results, out)
    return results


def report(results: dict, out) -> None:
    if "auroc_macro" not in results:
        print(describe(results))
        print(f"results in {out}")
        return
    low, high = results["auroc_macro_ci"]
    lines = [f"{results['mode']} macro AUC {results['auroc_macro']:.4f} (95% CI {low:.4f}-{high:.4f}) over "
             f"{len(results['labels_in_macro'])} labels, {results['num_studies']} studies; ECE "
             f"{results['calibration']['ece']:.4f}",
             describe_gap(results["largest_subgroup_gap"])]
    below = results["label_order_check"]["labels_below_chance"]
    if below:
        lines.append(f"LABEL ORDER CHECK FAILED: AUC below 0.5 beyond its interval for {list(below)}")
    lines.append(f"results in {out}")
    for line in lines:
        print(line)


def main(argv=None) -> dict:
    return run_evaluation(parse_evaluate_args(argv))


__all__ = ["EvaluateArguments", "evaluate_predictions", "inspect_model", "main", "parse_evaluate_args",
           "predict_logits", "run_evaluation"]

if __name__ == "__main__":
    run_main(main)
