"""The demo's evaluation on the test split, which no stage trained on or selected a checkpoint with: each task's
fine-tuned model against two baselines, the majority answer and the untrained model (the same architecture and
processor, freshly initialised with the demo's seed). Each task's JSON has the layout the model card reads (metrics
at the top with `<metric>_ci` intervals, `baselines`), and `summary.json` the headline figure of each.
"""

import json
from dataclasses import replace
from pathlib import Path

import torch

from modeling_medvl import MedVLConfig
from processing import load_mimic_cxr
from train.evaluate_generation import load_generation_split, load_vqa_split
from train.evaluate_model import main as evaluate_model
from train.finetune_args import FinetuneDataArguments
from train.finetune_generation import report_scores
from train.finetune_generation import score_summary as report_summary
from train.finetune_model import load_processor
from train.finetune_report_data import most_frequent_report, normalized_reports
from train.finetune_vqa import majority_answers, vqa_scores
from train.finetune_vqa import score_summary as vqa_summary
from train.finetune_vqa_data import load_vqa_splits
from train.lora_presets import load_finetuned_model, model_class
from train.zero_shot_eval import evaluate_pretraining, load_prompts

SUMMARY_FILE = "summary.json"
UNTRAINED_FOLDER = "untrained"


def untrained_copy(trained_folder: Path, target: Path, seed: int) -> Path:
    """`trained_folder`'s architecture (its config, LoRA merged away) freshly initialised, saved with its processor."""
    config = MedVLConfig.from_pretrained(str(trained_folder))
    torch.manual_seed(seed)
    model = model_class(config)(config)
    model.save_pretrained(str(target))
    load_processor(trained_folder, config.vision_config.image_size).save_pretrained(str(target))
    return target


def with_baselines(result: dict, baselines: dict, headline: str) -> dict:
    return {**result, "baselines": baselines, "headline": headline}


def evaluate_saved(model_folder: Path, demo, out: Path, data=None) -> dict:
    """train/evaluate_model.py on the test split (of the demo's MIMIC-CXR-JPG layout unless `data` is given)."""
    return evaluate_model(["--model", str(model_folder), "--data", data or f"mimic-cxr:{demo.mimic}", "--split", "test",
                           "--out", str(out), "--bootstrap_samples", str(demo.scale.bootstrap_samples),
                           "--subgroup_bootstrap_samples", "20", "--min_group_size", "10", "--seed", str(demo.seed),
                           "--max_new_tokens", str(demo.scale.max_new_tokens), "--device", device_of(demo)])


def headline_auc(result: dict) -> dict:
    return {"auroc_macro": result["auroc_macro"], "auroc_macro_ci": result.get("auroc_macro_ci")}


def classification(demo, folder: Path) -> dict:
    trained = evaluate_saved(demo.best("classification"), demo, folder / "classification.json")
    untrained = evaluate_saved(untrained_copy(demo.best("classification"), folder / UNTRAINED_FOLDER / "classification",
                                              demo.seed), demo, folder / UNTRAINED_FOLDER / "classification.json")
    # A majority (constant) score ranks no study above another: AUC 0.5 for every label.
    baselines = {"majority": {"auroc_macro": 0.5}, "untrained": headline_auc(untrained)}
    result = with_baselines(trained, baselines, "auroc_macro")
    (folder / "classification.json").write_text(json.dumps(result, indent=2))
    return result


def held_out_studies(demo):
    return load_mimic_cxr(demo.mimic, split="test")


def zero_shot(demo, folder: Path) -> dict:
    """Zero-shot AUC with intervals, subgroups and calibration (train/evaluate_model.py), and the laterality probe
    and image-report retrieval on the same test studies, for the pretrained model and the untrained one."""
    untrained_folder = untrained_copy(demo.pretrained, folder / UNTRAINED_FOLDER / "pretrain", demo.seed)
    trained = evaluate_saved(demo.pretrained, demo, folder / "zero_shot.json")
    untrained = evaluate_saved(untrained_folder, demo, folder / UNTRAINED_FOLDER / "zero_shot.json")
    studies, prompts = held_out_studies(demo), load_prompts()
    probes = {}
    for name, model_folder in (("trained", demo.pretrained), ("untrained", untrained_folder)):
        model = load_finetuned_model(model_folder)
        processor = load_processor(model_folder, model.config.vision_config.image_size)
        probes[name] = evaluate_pretraining(model.medvl, processor, studies, prompts, device=device_of(demo))
    kept = ("laterality_accuracy", "recall@1", "recall@5", "recall@10", "text_recall@5", "image_recall@5")
    probe = {key: value for key, value in probes["trained"].items() if key in kept or key.startswith("laterality")}
    baselines = {"majority": {"auroc_macro": 0.5},
                 "untrained": {**headline_auc(untrained),
                               **{key: value for key, value in probes["untrained"].items() if key in probe}}}
    result = with_baselines({**trained, "task": "zero_shot", **probe}, baselines, "auroc_macro")
    (folder / "zero_shot.json").write_text(json.dumps(result, indent=2))
    return result


def device_of(demo) -> str:
    return "cuda" if demo.device == "cuda" or (demo.device == "auto" and torch.cuda.is_available()) else "cpu"


def report_generation(demo, folder: Path) -> dict:
    """Greedy reports for the test studies (CIDEr-D, ROUGE-L, BLEU with intervals), beside the most frequent
    training report and the untrained model's reports."""
    trained_folder = demo.best("report_generation")
    trained = evaluate_saved(trained_folder, demo, folder / "report_generation.json")
    untrained = evaluate_saved(untrained_copy(trained_folder, folder / UNTRAINED_FOLDER / "report_generation",
                                              demo.seed), demo, folder / UNTRAINED_FOLDER / "report_generation.json")
    processor = load_processor(trained_folder, demo.scale.image_size)
    scored = load_generation_split("report_generation", f"mimic-cxr:{demo.mimic}", "test", folder / "data_cache")
    references = normalized_reports(processor, scored.select_columns(["report"])["report"])
    common = most_frequent_report(processor, load_mimic_cxr(demo.mimic, split="train").select_columns(["report"])[
        "report"])
    majority = {**report_summary(report_scores([common] * len(references), references)), "report": common}
    baselines = {"majority": majority, "untrained": report_summary(untrained)}
    result = with_baselines({**trained, "task": "report_generation"}, baselines, "cider")
    (folder / "report_generation.json").write_text(json.dumps(result, indent=2))
    return result


def vqa(demo, folder: Path) -> dict:
    """The answer classifier (closed questions) with the run's open-answer generator (open ones) on VQA-RAD's test
    questions, beside the majority answer of each answer type in the training split and the untrained classifier."""
    trained_folder, data = demo.best("vqa"), f"vqa-rad:{demo.vqa_rad}"
    trained = evaluate_saved(trained_folder, demo, folder / "vqa.json", data=data)
    untrained = evaluate_saved(untrained_copy(trained_folder, folder / UNTRAINED_FOLDER / "vqa", demo.seed), demo,
                               folder / UNTRAINED_FOLDER / "vqa.json", data=data)
    splits = load_vqa_splits(FinetuneDataArguments(data=data), folder / "data_cache")
    questions = load_vqa_split(data, "test", folder / "data_cache")
    majority = vqa_scores(majority_answers(replace(splits, validation=questions)), questions["answer"],
                          questions["answer_type"], splits.answers)
    baselines = {"majority": vqa_summary(majority), "untrained": vqa_summary(untrained)}
    result = with_baselines({**trained, "task": "vqa"}, baselines, "accuracy")
    (folder / "vqa.json").write_text(json.dumps(result, indent=2))
    return result


def headline(result: dict) -> dict:
    key = result["headline"]
    return {"metric": key, "value": result[key], "interval": result.get(f"{key}_ci"),
            **{name: baseline.get(key) for name, baseline in result["baselines"].items()}}


def evaluate_all(demo, folder: Path) -> dict:
    results = {"zero_shot": zero_shot(demo, folder), "classification": classification(demo, folder),
               "vqa": vqa(demo, folder), "report_generation": report_generation(demo, folder)}
    summary = {task: headline(result) for task, result in results.items()}
    for task, line in summary.items():
        beaten = all(line[name] is not None and line["value"] > line[name] for name in ("majority", "untrained"))
        line["beats_both_baselines"] = bool(beaten)
        print(f"  {task}: {line['metric']} {line['value']:.3f} (majority {line['majority']:.3f}, untrained "
              f"{line['untrained']:.3f}){'' if beaten else '  NOT above both baselines'}", flush=True)
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return results


__all__ = ["evaluate_all", "untrained_copy"]
