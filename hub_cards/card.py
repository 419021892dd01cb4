"""The model card: `huggingface_hub`'s `ModelCardData` (license, tags, pipeline tag, base model, data sets, metrics
and a `model-index` built from the evaluation JSON) rendered through `templates/model_card.md`.

Every number on the card comes from a file of the run: the evaluation JSON (a metric with its data set, split
and 95% interval), `run_config.yaml` and `train_summary.json`. Without an evaluation JSON the card says "Not
evaluated" and has no `model-index`.
"""

import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .usage import usage_snippet

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
DATASET_NAMES = {"synthcxr": "SynthCXR", "chexpert": "CheXpert", "mimic": "MIMIC-CXR", "mimic_cxr": "MIMIC-CXR",
                 "openi": "Open-I", "vqa_rad": "VQA-RAD", "slake": "SLAKE"}
TASK_TYPES = {"classification": "image-classification", "vqa": "visual-question-answering",
              "report_generation": "image-to-text", "zero_shot": "zero-shot-image-classification"}
METRIC_TYPES = {"auroc": "roc_auc", "accuracy": "accuracy", "vqa_score": "vqa_score", "bleu": "bleu",
                "rouge": "rouge", "cider": "cider", "f1": "f1"}
NOT_EVALUATED = "**Not evaluated.** No evaluation results were given for {what} at export"
# Fields of an evaluation JSON that are floats but not results of the model.
NOT_METRICS = {"elapsed_s", "seconds"}
TRAINING_FIELDS = (  # (label, where to look: run_config, its `resolved` section, or train_summary)
    ("Data", ("data",)), ("Initialised from", ("init", "model_name_or_path")), ("Model preset", ("model_preset",)),
    ("LoRA", ("lora",)), ("Processes (devices)", ("resolved.num_processes", "num_processes")),
    ("Mixed precision", ("mixed_precision", "bf16", "fp16")),
    ("Global batch", ("resolved.global_batch_size", "global_batch_size")),
    ("Per-device batch", ("per_device_batch_size", "per_device_train_batch_size")),
    ("Gradient accumulation", ("resolved.gradient_accumulation_steps", "gradient_accumulation_steps")),
    ("Optimiser steps", ("steps", "global_step", "resolved.max_steps", "max_steps")),
    ("Epochs", ("epochs", "num_epochs", "num_train_epochs")), ("Learning rate", ("learning_rate",)),
    ("Warmup steps", ("resolved.warmup_steps", "warmup_steps")), ("Weight decay", ("weight_decay",)),
    ("Gradient clipping (global norm)", ("max_grad_norm",)), ("Seed", ("seed",)),
    ("Stopped because", ("stop_reason", "stopped_early")), ("Training time (s)", ("seconds_this_launch", "elapsed_s")),
)


def dataset_of(spec) -> tuple:
    """(type, name) of a data spec such as `synthcxr:n=2000,size=64` or `chexpert:/data/CheXpert`: the kind, and
    a readable name without local paths."""
    text = str(spec[0] if isinstance(spec, (list, tuple)) and spec else spec or "unknown")
    kind, _, options = text.partition(":")
    name = DATASET_NAMES.get(kind, kind)
    if options and "/" not in options and "\\" not in options:
        name = f"{name} ({options})"
    return kind, name


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _interval(value):
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_finite(v) for v in value):
        return [float(value[0]), float(value[1])]
    return None


def eval_metrics(results: dict) -> list:
    """Every result of an evaluation JSON: top-level float fields (`auroc_macro`, with `auroc_macro_ci`) and
    per-label dictionaries (`auroc_per_label`, with `auroc_per_label_ci`); baselines are not the model's."""
    metrics = []
    for key, value in results.items():
        if isinstance(value, float) and key not in NOT_METRICS and not key.endswith("_ci") and _finite(value):
            metrics.append({"key": key, "value": value, "interval": _interval(results.get(f"{key}_ci"))})
        elif key.endswith("_per_label") and isinstance(value, dict):
            base, intervals = key[: -len("_per_label")], results.get(f"{key}_ci") or {}
            for label, score in value.items():
                if _finite(score):
                    metrics.append({"key": base, "label": label, "value": float(score),
                                    "interval": _interval(intervals.get(label))})
    for metric in metrics:
        stem = metric["key"].split("_")[0]
        metric["type"] = METRIC_TYPES.get(stem, metric["key"])
        metric["name"] = metric["key"].replace("_", " ") + (f": {metric['label']}" if "label" in metric else "")
    return metrics


def eval_results(results: dict, subfolder=None) -> list:
    """`huggingface_hub.EvalResult`s for the card's `model-index`: one per metric, with data set, split and interval.
    A task model's results (`subfolder`) carry its folder in the task name: `report_generation (report_generation/)`."""
    task = results.get("task", "classification")
    dataset_type, dataset_name = dataset_of(results.get("validation_data") or results.get("data"))
    entries = []
    for metric in eval_metrics(results):
        args = {"bootstrap_samples": results.get("bootstrap_samples"), "num_examples": results.get("num_studies")}
        if metric["interval"] is not None:
            args["confidence_interval_95"] = metric["interval"]
        entries.append(EvalResult(
            task_type=TASK_TYPES.get(task, task), task_name=f"{task} ({subfolder}/)" if subfolder else task,
            dataset_type=dataset_type,
            dataset_name=dataset_name, dataset_split=results.get("split", "validation"),
            metric_type=metric["type"], metric_name=metric["name"], metric_value=metric["value"],
            metric_args={key: value for key, value in args.items() if value is not None},
        ))
    return entries


def _format_interval(interval) -> str:
    return "no interval" if interval is None else f"{interval[0]:.3f} – {interval[1]:.3f}"


def evaluation_section(results, what="this folder") -> str:
    if not results:
        return (NOT_EVALUATED.format(what=what) + ", so this card reports no metric for it. Evaluate the model on "
                "your own data before relying on it.")
    _, dataset_name = dataset_of(results.get("validation_data") or results.get("data"))
    lines = [f"Task: {results.get('task', 'classification')}; data: {dataset_name}, split "
             f"`{results.get('split', 'validation')}`, {results.get('num_studies', 'unknown')} studies; 95% "
             f"intervals from {results.get('bootstrap_samples', 0)} bootstrap resamples.", "",
             "| Metric | Value | 95% interval |", "|---|---|---|"]
    lines += [f"| {m['name']} | {m['value']:.4f} | {_format_interval(m['interval'])} |" for m in eval_metrics(results)]
    baselines = results.get("baselines") or {}
    if baselines:
        lines += ["", "Baselines on the same split:", "", "| Baseline | Metric | Value |", "|---|---|---|"]
        for name, baseline in baselines.items():
            lines += [f"| {name} | {m['name']} | {m['value']:.4f} |" for m in eval_metrics(baseline) if "label" not in m]
    return "\n".join(lines)


def subgroup_section(results) -> str:
    groups = (results or {}).get("subgroups")
    if not groups:
        return ("No subgroup evaluation (by sex, age, race, site, scanner or projection) was run for this model: its "
                "performance on any subgroup is unknown. Chest X-ray models are known to under-perform on "
                "under-represented groups and to pick up site and scanner shortcuts.")
    lines = ["| Subgroup | Metric | Value | 95% interval |", "|---|---|---|---|"]
    for group, group_results in groups.items():
        lines += [f"| {group} | {m['name']} | {m['value']:.4f} | {_format_interval(m['interval'])} |"
                  for m in eval_metrics(group_results)]
    return "\n".join(lines)


def task_models_section(task_models) -> str:
    """Each task model kept in a subfolder: where, which Auto class and weights, and its own evaluation."""
    if not task_models:
        return ""
    lines = ["## Task models in this folder", "",
             "Besides the root model, this repository holds task models in subfolders; each loads with "
             "`subfolder=` (see *How to use*; the code is the root's `*_medvl.py`):", "",
             "| Task | Subfolder | Auto class | Model | Weights |", "|---|---|---|---|---|"]
    lines += [f"| {m['task']} | `{m['subfolder']}/` | `{m['auto_class']}` | `{m['architecture']}` | "
              f"{', '.join(m['weights'])} |" for m in task_models]
    for m in task_models:
        lines += ["", f"### Evaluation of `{m['subfolder']}/` ({m['task']})", "",
                  evaluation_section(m.get("eval"), f"the {m['task']} model")]
    return "\n".join(lines)


def model_index(results, task_models) -> list:
    """The model-index entries: the root model's evaluation, then each task model's."""
    entries = eval_results(results) if results else []
    for m in task_models or ():
        entries += eval_results(m["eval"], m["subfolder"]) if m.get("eval") else []
    return entries


def _lookup(sources: dict, path: str):
    value = sources
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def training_section(run_config, summary, versions: dict) -> str:
    if not run_config and not summary:
        return "No run files (`run_config.yaml`, `train_summary.json`) were found beside the checkpoint."
    merged = {**(run_config or {}), **(summary or {})}
    rows = []
    for label, paths in TRAINING_FIELDS:
        value = next((v for v in (_lookup(merged, p) for p in paths) if v not in (None, [], "")), None)
        if value is not None:
            rows.append(f"| {label} | {dataset_of(value)[1] if label == 'Data' else value} |")
    rows += [f"| {name} | {version} |" for name, version in versions.items()]
    return "\n".join(["| Setting | Value |", "|---|---|", *rows])


def deid_section(processor_settings: dict) -> str:
    normalizer = (processor_settings or {}).get("normalizer") or {}
    step = ("The processor's clinical text normaliser replaces names, dates, identifiers and other protected "
            "health information with a placeholder token before tokenizing (`normalizer.deidentify: true`)."
            if normalizer.get("deidentify") else
            "The processor's de-identification step is off: text given to it is tokenized as is.")
    return ("Training reports came from data sets released de-identified by their providers (or from the "
            f"procedural SynthCXR generator, which holds no patient data). {step} No image pixel data is "
            "de-identified by the model: burned-in text in images is the user's responsibility.")


def build_card(facts: dict) -> ModelCard:
    """The card from `facts`: model_name, summary, architecture, weights, auto_classes (list), pipeline_tag,
    license, tags, base_model, datasets, eval (dict or None), run_config, train_summary, versions, processor
    (settings dict), usage (dict of usage_snippet's arguments), adapter_note, run and checkpoint (folder names)."""
    results, task_models = facts.get("eval"), facts.get("task_models") or []
    every = [r for r in [results] + [m.get("eval") for m in task_models] if r]
    metrics = sorted({m["type"] for r in every for m in eval_metrics(r)}) or None
    card_data = ModelCardData(
        model_name=facts["model_name"], license=facts.get("license", "apache-2.0"), library_name="transformers",
        pipeline_tag=facts["pipeline_tag"], tags=facts.get("tags"), base_model=facts.get("base_model"),
        datasets=facts.get("datasets") or None, metrics=metrics,
        eval_results=model_index(results, task_models) or None,
        **({"medvl": {key: facts[key] for key in ("run", "checkpoint") if facts.get(key)}} if facts.get("run") else {}),
    )
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE),
        model_name=facts["model_name"], summary=facts["summary"], architecture=facts["architecture"],
        weights=facts["weights"], auto_classes=", ".join(f"`{name}`" for name in facts["auto_classes"]),
        adapter_note=facts.get("adapter_note"), usage=usage_snippet(**facts["usage"]),
        training_data=facts.get("training_data") or "Not recorded.",
        training_details=training_section(facts.get("run_config"), facts.get("train_summary"), facts["versions"]),
        evaluation=evaluation_section(results), subgroups=subgroup_section(results),
        deid=deid_section(facts.get("processor")), task_models=task_models_section(task_models),
    )


def card_problems(folder, results=None, task_results=None) -> list:
    """What is wrong with `folder/README.md`: it must parse back, carry license, pipeline tag and tags, and (when
    `results` is given) its model-index must hold exactly the evaluation's metrics. Task models' entries (task name
    ending in "/)") are checked against `task_results` ({subfolder: evaluation JSON}) when given."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return ["README.md (the model card) is missing"]
    try:
        card = ModelCard.load(path)
    except Exception as error:  # the card's YAML header is the user's to fix: report, do not crash
        return [f"README.md does not parse: {error}"]
    data, problems = card.data, []
    problems += [f"the card has no {field}" for field in ("license", "pipeline_tag", "tags") if not getattr(data, field)]
    if "not a medical device" not in card.text.lower():
        problems.append("the card lacks the 'not a medical device' statement")
    entries = data.eval_results or []
    for subfolder, expected_results in [(None, results)] + sorted((task_results or {}).items()):
        tag = f" ({subfolder}/)" if subfolder else "/)"
        found = sorted((r.metric_name, round(r.metric_value, 12)) for r in entries
                       if r.task_name.endswith(tag) == bool(subfolder))
        expected = sorted((m["name"], round(m["value"], 12)) for m in eval_metrics(expected_results or {}))
        if (expected_results is not None or subfolder) and found != expected:
            problems.append(f"the card's model-index holds {len(found)} metrics for {subfolder or 'the root model'}, "
                            f"its evaluation JSON {len(expected)}")
        not_evaluated = NOT_EVALUATED.format(what="this folder") in card.text
        if expected_results is None and not subfolder and found and not_evaluated:
            problems.append("the card says 'not evaluated' but has a model-index")
    return problems


__all__ = ["build_card", "card_problems", "dataset_of", "eval_metrics", "eval_results", "model_index",
           "task_models_section", "training_section"]
