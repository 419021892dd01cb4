"""Write one self-contained, Hub-ready folder from a loaded MedVL model and its processor:

    config.json (auto_map: only the Auto classes whose weights are all in the folder), model*.safetensors (sharded
    above `max_shard_size`), the remote-code files (*_medvl.py), processor_config.json + tokenizer files,
    adapter/ (a LoRA adapter kept apart, when asked), README.md (the model card) and space/ (the Spaces demo);
    one subfolder per task model (`report_generation/`, `classification/`, `vqa/`), each a complete MedVL folder
    (config.json, safetensors, remote code, its own processor), listed in the root config's `medvl_task_models`.

A task model loads with `AutoModelForXxx.from_pretrained(folder, subfolder=task, trust_remote_code=True)`. transformers
(5.24) reads config.json and the weights from the subfolder but the remote code from the repository ROOT
(`get_cached_module_file` ignores `subfolder`): every subfolder's code is therefore checked equal to the root's.

The folder is written beside `out` and renamed into place once complete. Loading the model from the run (full or
LoRA) is the caller's job (`train/cli_export.py`): this module imports `modeling_medvl` and `processing` only.
"""

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path

import yaml
from transformers.utils import logging as hf_logging

import modeling_medvl

from .card import build_card, dataset_of

SPACE_FILES = {"space_app.py": "app.py", "templates/space_requirements.txt": "requirements.txt",
               "templates/space_readme.md": "README.md"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ADAPTER_FOLDER = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TAGS = ["medical", "radiology", "chest-x-ray", "vision-language", "medvl", "custom_code"]
TASK_CLASSES = {"report_generation": "AutoModelForImageTextToText", "classification": "AutoModelForImageClassification",
                "vqa": "AutoModelForVisualQuestionAnswering"}
TASK_MODELS_KEY = "medvl_task_models"  # root config.json: {task: subfolder}
VERSIONED = ("torch", "transformers", "timm", "peft", "huggingface_hub")


def held_auto_classes(folder) -> list:
    """The Auto classes of `folder/config.json`'s auto_map whose model finds every one of its weights in the
    folder (a pretraining checkpoint holds no classifier; a classifier holds no text tower)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    held = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        for auto_class, target in sorted(config.get("auto_map", {}).items()):
            model_class = getattr(modeling_medvl, target.split(".")[-1], None)
            if auto_class == "AutoConfig" or model_class is None or not hasattr(model_class, "from_pretrained"):
                continue
            _, info = model_class.from_pretrained(str(folder), output_loading_info=True)
            if not info["missing_keys"] and not info.get("mismatched_keys"):
                held.append(auto_class)
    finally:
        hf_logging.set_verbosity(verbosity)
    return held


def restrict_auto_map(folder, held, **extra) -> dict:
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config["auto_map"] = {key: value for key, value in config["auto_map"].items()
                          if key == "AutoConfig" or key in held}
    config.update(extra)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def save_model(model, processor, folder, max_shard_size) -> list:
    """`model` and `processor` saved into `folder`; returns the Auto classes it holds (see held_auto_classes)."""
    model.save_pretrained(str(folder), max_shard_size=max_shard_size)
    if processor is not None:
        processor.save_pretrained(str(folder))
    return held_auto_classes(folder)


def write_task_models(root, task_models: dict, max_shard_size) -> dict:
    """Each `{task: (model, processor)}` into `root/<task>/`; returns {task: subfolder}. The task's Auto class must
    find all its weights there, and the subfolder's remote code must equal the root's (which transformers loads)."""
    written = {}
    for task, (model, processor) in sorted(task_models.items()):
        if task not in TASK_CLASSES:
            raise ValueError(f"unknown task model {task!r}: expected one of {sorted(TASK_CLASSES)}")
        folder = Path(root) / task
        held = save_model(model, processor, folder, max_shard_size)
        if TASK_CLASSES[task] not in held:
            raise ValueError(f"the {task} model ({type(model).__name__}) does not hold the weights of "
                             f"{TASK_CLASSES[task]}; it holds {held or 'no Auto class'}")
        restrict_auto_map(folder, [TASK_CLASSES[task]])  # a subfolder serves its one task
        different = [p.name for p in folder.glob("*_medvl.py")
                     if not (Path(root) / p.name).is_file() or (Path(root) / p.name).read_bytes() != p.read_bytes()]
        if different:
            raise ValueError(f"{task}/ remote code differs from the root's (which transformers loads): {different}")
        written[task] = task
    return written


def pickled_files(folder) -> list:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.suffix in PICKLE_SUFFIXES)


def copy_adapter(adapter_dir, folder, repo_id) -> Path:
    """The LoRA adapter's files into `folder/adapter/`, its base model named by the repository it will live in."""
    target = Path(folder) / ADAPTER_FOLDER
    target.mkdir()
    for name in ADAPTER_FILES:
        if not (Path(adapter_dir) / name).is_file():
            raise FileNotFoundError(f"{adapter_dir}: no {name} (adapters are exported from safetensors only)")
        shutil.copy(Path(adapter_dir) / name, target / name)
    settings = json.loads((target / ADAPTER_FILES[0]).read_text())
    settings["base_model_name_or_path"] = repo_id
    (target / ADAPTER_FILES[0]).write_text(json.dumps(settings, indent=2) + "\n")
    return target


def read_run_files(run_dir) -> tuple:
    """(run_config.yaml, train_summary.json) of a run folder, each None when absent."""
    run_dir = Path(run_dir) if run_dir else None
    config_path = run_dir / "run_config.yaml" if run_dir else None
    summary_path = run_dir / "train_summary.json" if run_dir else None
    run_config = yaml.safe_load(config_path.read_text()) if config_path and config_path.is_file() else None
    summary = json.loads(summary_path.read_text()) if summary_path and summary_path.is_file() else None
    return run_config, summary


def library_versions() -> dict:
    versions = {"Python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def describe(config, parameters: int) -> tuple:
    """(summary, architecture) sentences from the model's config."""
    vision, text = config.vision_config, config.text_config
    kwargs = ", ".join(f"{key}={value}" for key, value in (vision.backbone_kwargs or {}).items())
    architecture = (f"vision tower `{vision.backbone}`{f' ({kwargs})' if kwargs else ''} at {vision.image_size} px; "
                    f"text tower {text.num_hidden_layers} layers × {text.hidden_size} "
                    f"({'causal' if text.is_causal else 'bidirectional'}, vocabulary {text.vocab_size}); fusion "
                    f"`{config.fusion_type}` ({config.num_fusion_layers} layers); shared space {config.projection_dim}"
                    f"; {parameters / 1e6:.2f} M parameters")
    summary = ("MedVL is a chest radiograph vision-language model: an image encoder and a clinical text encoder "
               "projected into one space (CLIP-style contrastive pretraining with masked language modelling and "
               "image-text matching), with cross-modal fusion layers and task heads.")
    return summary, architecture


def training_data(run_config) -> str:
    specs = (run_config or {}).get("data") or []
    specs = [specs] if isinstance(specs, str) else specs
    if not specs:
        return "Not recorded."
    rows = (run_config.get("resolved") or {}).get("train_rows")
    names = ", ".join(dataset_of(spec)[1] for spec in specs)
    return f"{names}{f' ({rows} training rows)' if rows else ''}."


def space_files(folder):
    source = Path(__file__).parent
    (Path(folder) / "space").mkdir()
    for name, target in SPACE_FILES.items():
        shutil.copy(source / name, Path(folder) / "space" / target)


def export_folder(model, processor, out, *, eval_results=None, run_dir=None, adapter_dir=None, repo_id=None,
                  max_shard_size="2GB", license="apache-2.0", base_model=None, overwrite=False,
                  checkpoint_name=None, task_models=None, task_evals=None) -> dict:
    """Write the Hub folder `out` for `model` (a MedVL PreTrainedModel) and `processor`; returns a summary.
    `task_models`: {task: (model, processor)} written into subfolders; `task_evals`: {task: evaluation JSON}."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    repo_id = repo_id or f"your-org/{out.resolve().name}"
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    held = save_model(model, processor, tmp, max_shard_size)
    tasks = write_task_models(tmp, task_models or {}, max_shard_size)
    if set(task_evals or {}) - set(tasks):
        raise ValueError(f"evaluation results for {sorted(set(task_evals) - set(tasks))} without its task model")
    task_facts = [{"task": task, "subfolder": sub, "auto_class": TASK_CLASSES[task],
                   "eval": (task_evals or {}).get(task), **task_model_facts(tmp / sub)} for task, sub in tasks.items()]
    has_tokenizer = (tmp / "tokenizer.json").is_file() or (tmp / "tokenizer_config.json").is_file()
    if not has_tokenizer:  # the zero-shot pipeline needs prompts tokenized
        held = [name for name in held if name != "AutoModelForZeroShotImageClassification"]
    config = restrict_auto_map(tmp, held, **({TASK_MODELS_KEY: tasks} if tasks else {}))
    if adapter_dir is not None:
        copy_adapter(adapter_dir, tmp, repo_id)
    pickles = pickled_files(tmp)
    if pickles:
        raise ValueError(f"refusing to export pickled files: {pickles}")
    run_config, summary = read_run_files(run_dir)
    zero_shot = "AutoModel" in held and has_tokenizer
    classifier = "AutoModelForImageClassification" in held
    if not (zero_shot or classifier):
        pipeline_tag = "image-text-to-text" if "AutoModelForImageTextToText" in held else "feature-extraction"
    else:
        pipeline_tag = "zero-shot-image-classification" if zero_shot else "image-classification"
    summary_text, architecture = describe(model.config, model.num_parameters())
    weights = sorted(p.name for p in tmp.glob("*.safetensors"))
    card = build_card({
        "model_name": repo_id.split("/")[-1], "summary": summary_text, "architecture": architecture,
        "weights": f"safetensors ({', '.join(weights)})", "auto_classes": held, "pipeline_tag": pipeline_tag,
        "license": license, "tags": TAGS + (["lora"] if adapter_dir else []), "base_model": base_model,
        "datasets": sorted({dataset_of(spec)[0] for spec in _as_list((run_config or {}).get("data"))}),
        "run": Path(run_dir).resolve().name if run_dir else None, "checkpoint": checkpoint_name,
        "eval": eval_results, "run_config": run_config, "train_summary": summary, "versions": library_versions(),
        "training_data": training_data(run_config),
        "processor": json.loads((tmp / "processor_config.json").read_text())
        if (tmp / "processor_config.json").is_file() else None,
        "adapter_note": "the fine-tuned adapter is kept in `adapter/`; the root weights are its base" if adapter_dir
        else None,
        "usage": {"repo_id": repo_id, "zero_shot": zero_shot, "classifier": classifier, "adapter": bool(adapter_dir),
                  "multi_label": config.get("problem_type") != "single_label_classification",
                  "tasks": [{key: facts[key] for key in ("task", "subfolder", "multi_label")} for facts in task_facts]},
        "task_models": task_facts,
    })
    card.save(tmp / "README.md")
    space_files(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"folder": str(out), "auto_classes": held, "pipeline_tag": pipeline_tag, "weights": weights,
            "evaluated": eval_results is not None, "repo_id": repo_id, "task_models": tasks}


def task_model_facts(folder) -> dict:
    config = json.loads((Path(folder) / "config.json").read_text())
    return {"weights": sorted(p.name for p in Path(folder).glob("*.safetensors")),
            "architecture": (config.get("architectures") or ["?"])[0],
            "multi_label": config.get("problem_type") != "single_label_classification"}


def _as_list(value):
    return [] if value is None else [value] if isinstance(value, str) else list(value)


__all__ = ["TASK_CLASSES", "TASK_MODELS_KEY", "export_folder", "held_auto_classes", "library_versions", "pickled_files",
           "read_run_files", "write_task_models"]
