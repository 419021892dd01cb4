"""The papers' ablations on one data set and seed: fusion strategy x tower initialisation, each cell a short
pretraining run (train/pretrain.py) and a classification fine-tune (train/finetune.py), compared on the fine-tuned
validation macro AUC.

    python train/ablate.py --grid fusion=none,cross_attention,merged init=random,domain \\
        --data synthcxr:n=2000,size=64 --out runs/ablate --steps 100
    medvl convert --from clip --src clip-vit-base-patch16/ --out medvl-clip/          # general-domain weights
    medvl convert --from open_clip --src BiomedCLIP/ --out medvl-biomedclip/           # domain weights
    python train/ablate.py --grid fusion=none,cross_attention init=random,general,domain \\
        --general_model medvl-clip/ --domain_model medvl-biomedclip/ --data synthcxr:n=2000,size=64 --out runs/ab2

What the three initialisations mean (files are local; nothing is downloaded):
- random: no pretraining; the towers of --model_preset from fresh initialisation.
- general: no domain pretraining; the fine-tune starts from a general-domain model: --general_model (a MedVL
  folder, e.g. `medvl convert --from clip` of a CLIP checkpoint) or a vision tower from --general_vision_weights (a
  local timm weight file, e.g. ImageNet weights of the preset's backbone). init=general without either is an error
  (use init=random for fresh towers).
- domain: this cell's contrastive pretraining (ITC + MLM when the text tower has a mask token, + ITM when the cell
  has fusion layers) on the image-report pairs of --data with the cell's fusion_type, starting from --domain_model
  (a MedVL folder converted from a domain model, e.g. `medvl convert --from open_clip` of BiomedCLIP; its own
  tokenizer kept; --domain_model_steps steps, default --steps) or, without it, from fresh initialisation (--steps
  steps); the fine-tune starts from that pretraining's last checkpoint. A folder whose fusion_type is not the
  cell's is pretrained with its fusion layers rebuilt fresh for the cell (train/ablate_sources.py).
The image classifier has no fusion layers, so the random and general cells (and domain cells with
--domain_model_steps 0, fine-tuned straight from the folder) of every fusion_type are the same run: it is trained
once and reported in each of them (`shared_with`). Each cell's record names its start (`source`: a path or
"fresh init").

Every cell uses the same data, seed, tokenizer settings and fine-tuning recipe. The output folder gets
ablation.json (every cell's numbers and the definitions above), ablation.md (the table) and ablation.png (macro AUC
with its 95% interval per cell), and one folder per cell with the two runs.
"""

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from modeling_medvl.configuration_medvl import FUSION_TYPES
from train.ablate_sources import FRESH, cell_source, check_sources, text_length, with_fusion_type
from train.data_loading import parse_data_spec
from train.run_config import parse_config_and_args

INITS = ("random", "general", "domain")
GRID_VALUES = {"fusion": FUSION_TYPES, "init": INITS}
GRID_DEFAULTS = {"fusion": "cross_attention", "init": "domain"}
DEFINITIONS = {
    "random": "no pretraining; towers of --model_preset from fresh initialisation",
    "general": "no domain pretraining; fine-tune from --general_model (a MedVL folder, e.g. `medvl convert --from "
               "clip`) or a vision tower from --general_vision_weights (a local timm file); one of them is required",
    "domain": "this cell's short contrastive pretraining on --data with the cell's fusion_type, from --domain_model "
              "(a MedVL folder, e.g. `medvl convert --from open_clip` of BiomedCLIP; fusion layers rebuilt if its "
              "fusion_type differs) when given, else from fresh initialisation; the fine-tune starts from it",
}


@dataclass
class AblateArguments:
    grid: list[str] = field(default_factory=lambda: ["fusion=none,cross_attention,merged", "init=random,domain"],
                            metadata={"help": "Axes as key=value,value: fusion=" + ",".join(FUSION_TYPES)
                                      + " and init=" + ",".join(INITS) + ". init means: "
                                      + "; ".join(f"{k} = {v}" for k, v in DEFINITIONS.items())
                                      + " (the random and general cells of every fusion_type are one shared run)."})
    data: str = field(default="synthcxr:n=2000,size=64,seed=0",
                      metadata={"help": "Image-report pairs with labels, for both stages (synthcxr:, mimic-cxr:)."})
    out: str = field(default="runs/ablate", metadata={"help": "Output folder."})
    steps: int = field(default=100, metadata={"help": "Pretraining steps of a domain cell."})
    finetune_steps: Optional[int] = field(default=None, metadata={"help": "Fine-tuning steps (default: --steps)."})
    model_preset: str = field(default="tiny-convnext", metadata={"help": "MedVLConfig preset of every cell."})
    seed: int = 0
    batch_size: int = field(default=32, metadata={"help": "Batch size of both stages."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Pretraining peak learning rate."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning peak learning rate."})
    validation_size: int = field(default=256, metadata={"help": "Studies of the SynthCXR validation set."})
    bootstrap_samples: int = field(default=200, metadata={"help": "Resamples of the fine-tuned AUC's interval."})
    general_vision_weights: Optional[str] = field(default=None, metadata={
        "help": "A local timm weight file for the 'general' vision tower of --model_preset (e.g. ImageNet weights of "
                "the backbone)."})
    general_model: Optional[str] = field(default=None, metadata={
        "help": "A MedVL folder the 'general' cells fine-tune from (e.g. `medvl convert --from clip --src CLIP_DIR "
                "--out DIR`); its architecture replaces --model_preset there."})
    domain_model: Optional[str] = field(default=None, metadata={
        "help": "A MedVL folder with its tokenizer the 'domain' cells pretrain from (e.g. `medvl convert --from "
                "open_clip --src BiomedCLIP_DIR --out DIR`); without it they pretrain from fresh initialisation."})
    domain_model_steps: Optional[int] = field(default=None, metadata={
        "help": "Pretraining steps of a domain cell from --domain_model (default: --steps; 0: fine-tune straight "
                "from the folder, one run shared by every fusion_type)."})


def parse_grid(items) -> list[dict]:
    """["fusion=none,merged", "init=domain"] -> the cells, every combination; unnamed axes take their default."""
    axes = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or key not in GRID_VALUES:
            raise ValueError(f"--grid {item!r}: expected fusion=... or init=... (comma-separated values)")
        chosen = [value for value in values.split(",") if value]
        bad = [value for value in chosen if value not in GRID_VALUES[key]]
        if bad or not chosen:
            raise ValueError(f"--grid {item!r}: unknown {key} value(s) {bad}; choose from {list(GRID_VALUES[key])}")
        if key in axes:
            raise ValueError(f"--grid: {key} given twice")
        axes[key] = list(dict.fromkeys(chosen))
    names = list(GRID_VALUES)
    values = [axes.get(name, [GRID_DEFAULTS[name]]) for name in names]
    return [dict(zip(names, combination)) for combination in itertools.product(*values)]


def cell_name(cell: dict) -> str:
    return f"fusion-{cell['fusion']}_init-{cell['init']}"


def domain_steps(args) -> int:
    """Pretraining steps of a domain cell."""
    return args.steps if args.domain_model_steps is None or not args.domain_model else args.domain_model_steps


def pretrain_argv(args, cell, folder: Path, start=None) -> list:
    """Arguments of a domain cell's pretraining: from fresh initialisation with the cell's fusion_type, or from the
    MedVL folder `start` (already of the cell's fusion_type) with --domain_model's tokenizer."""
    steps = domain_steps(args)
    if start is None:
        overrides = [f"fusion_type={cell['fusion']}"] + (["itm_weight=0"] if cell["fusion"] == "none" else [])
        model, text_length_ = ["--model_overrides", *overrides, "--tokenizer_vocab_size", "1000"], 128
    else:
        model = ["--model_name_or_path", str(start), "--tokenizer", str(Path(args.domain_model).resolve())]
        text_length_ = text_length(args.domain_model, 128)
    return ["--model_preset", args.model_preset, *model, "--data", args.data, "--output_dir", str(folder),
            "--max_steps", str(steps), "--seed", str(args.seed),
            "--per_device_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
            "--warmup_steps", str(max(1, steps // 10)), "--eval_steps", str(steps), "--save_steps", "0",
            "--save_total_limit", "1", "--validation_size", str(args.validation_size), "--num_workers", "0",
            "--max_text_length", str(text_length_), "--report_to", "none"]


def finetune_argv(args, init_folder, folder: Path, cache: Path, vision_weights=None) -> list:
    steps = str(args.finetune_steps or args.steps)
    start = ["--init", str(init_folder)] if init_folder else ["--model_preset", args.model_preset] + (
        ["--model_overrides", f"vision_config.weights_path={Path(vision_weights).resolve()}"]
        if vision_weights else [])
    return [*start, "--data", args.data, "--output_dir", str(folder), "--cache_dir", str(cache),
            "--validation_size", str(args.validation_size), "--max_steps", steps, "--seed", str(args.seed),
            "--per_device_train_batch_size", str(args.batch_size), "--learning_rate", str(args.finetune_learning_rate),
            "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", steps, "--save_steps", steps,
            "--save_total_limit", "1", "--early_stopping_patience", "0", "--evaluate_initial_model", "false",
            "--bootstrap_samples", str(args.bootstrap_samples), "--augment", "false", "--report_to", "none",
            "--disable_tqdm", "true"]


def run_cell(args, cell, out: Path, cache: Path) -> dict:
    """One cell's pretraining (domain) and fine-tuning, in this process; returns its record."""
    from train import finetune, pretrain

    folder, started, record = out / cell_name(cell), time.time(), dict(cell)
    record["source"] = cell_source(args, cell["init"])
    init_folder, vision_weights = None, None
    if cell["init"] == "general":
        init_folder = Path(args.general_model).resolve() if args.general_model else None
        vision_weights = args.general_vision_weights
    elif cell["init"] == "domain" and domain_steps(args) == 0:
        init_folder = Path(args.domain_model).resolve()
    elif cell["init"] == "domain":
        start = None
        if args.domain_model:
            start, record["fusion_layers"] = with_fusion_type(Path(args.domain_model).resolve(), cell["fusion"],
                                                              folder / "start", args.seed)
        pretrain_folder = folder / "pretrain"
        pretrain_folder.mkdir(parents=True, exist_ok=True)
        shared = pretrain_folder / "data_cache"  # the generated data, made once for every cell
        if not shared.exists():
            shared.symlink_to(cache.resolve(), target_is_directory=True)
        summary = pretrain.main(pretrain_argv(args, cell, pretrain_folder, start))
        final_eval = summary.get("final_eval") or {}
        record["pretrain"] = {"steps": summary["steps"], "final_loss": summary.get("final_loss"),
                              "zero_shot_auc": final_eval.get("zero_shot_auc"), "recall@5": final_eval.get("recall@5"),
                              "seconds": summary["seconds_this_launch"]}
        init_folder = (pretrain_folder / "checkpoint-last").resolve()
    results = finetune.main(finetune_argv(args, init_folder, folder / "finetune", cache, vision_weights))
    record["finetune"] = {key: results[key] for key in ("auroc_macro", "auroc_macro_ci", "auroc_per_label",
                                                        "labels_in_macro", "num_studies")}
    record["seconds"] = time.time() - started
    return record


def _cell(value):
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(cells: list) -> str:
    lines = ["| fusion | init | start | pretrain steps | zero-shot AUC | fine-tuned macro AUC (95% CI) | minutes |",
             "|---|---|---|---|---|---|---|"]
    for cell in cells:
        pre, fine = cell.get("pretrain") or {}, cell["finetune"]
        low, high = fine["auroc_macro_ci"]
        note = f" (= {cell['shared_with']})" if cell.get("shared_with") else ""
        lines.append(f"| {cell['fusion']} | {cell['init']}{note} | {cell.get('source', FRESH)} | {pre.get('steps', 0)} | "
                     f"{_cell(pre.get('zero_shot_auc'))} | {fine['auroc_macro']:.3f} ({_cell(low)}-{_cell(high)}) | "
                     f"{cell['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def bar_plot(cells: list, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [cell["finetune"]["auroc_macro"] for cell in cells]
    errors = [[max(0.0, v - c["finetune"]["auroc_macro_ci"][0]) for v, c in zip(values, cells)],
              [max(0.0, c["finetune"]["auroc_macro_ci"][1] - v) for v, c in zip(values, cells)]]
    errors = [[0.0 if math.isnan(e) else e for e in side] for side in errors]  # no interval: no error bar
    palette = {"domain": "tab:blue", "general": "tab:orange", "random": "tab:grey"}
    colours = [palette.get(cell["init"], "tab:grey") for cell in cells]
    figure, axis = plt.subplots(figsize=(1.2 * len(cells) + 2, 3.6))
    axis.bar(range(len(cells)), values, yerr=errors, capsize=3, color=colours)
    axis.set_xticks(range(len(cells)), [f"{c['fusion']}\n{c['init']}" for c in cells], fontsize=8)
    axis.axhline(0.5, ls="--", color="grey", lw=1)
    axis.set(ylim=(0, 1), ylabel="fine-tuned macro AUC", title="fusion x initialisation (95% CI)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def check_arguments(args) -> list:
    """The grid's cells; every argument error is raised here, before any data is generated or any run starts."""
    cells = parse_grid(args.grid)
    if parse_data_spec(args.data).kind not in ("synthcxr", "mimic-cxr", "saved"):
        raise ValueError(f"--data {args.data}: both stages need image-report pairs with labels "
                         "(synthcxr:, mimic-cxr: or saved:)")
    if args.steps < 1 or (args.finetune_steps is not None and args.finetune_steps < 1):
        raise ValueError("--steps and --finetune_steps must be >= 1")
    check_sources(args, {cell["init"] for cell in cells})
    return cells


def run_ablation(args) -> dict:
    cells = check_arguments(args)
    out = Path(args.out)
    cache = out / "data_cache"
    cache.mkdir(parents=True, exist_ok=True)
    records, done = [], {}
    for cell in tqdm(cells, desc="ablation cells", unit="cell"):
        # Without a pretraining of the cell's fusion_type, the fine-tune is the same run for every fusion_type.
        without_pretraining = cell["init"] != "domain" or domain_steps(args) == 0
        key = cell["init"] if without_pretraining else cell_name(cell)
        shared = done.get(key)
        if shared is not None:
            records.append({**shared, **cell, "shared_with": cell_name(shared)})
            continue
        record = run_cell(args, cell, out, cache)
        done[key] = record
        records.append(record)
    results = {"arguments": asdict(args), "definitions": DEFINITIONS, "cells": records}
    (out / "ablation.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(records)
    (out / "ablation.md").write_text(f"# Ablation on {args.data} (seed {args.seed}, {args.steps} pretraining steps)\n\n"
                                     + table + "\n" + "\n".join(f"- {k}: {v}" for k, v in DEFINITIONS.items()) + "\n")
    results["plot"] = bar_plot(records, out / "ablation.png")
    print(table)
    return results


def main(argv=None) -> dict:
    (args,) = parse_config_and_args((AblateArguments,), argv)
    return run_ablation(args)


def cli(argv=None):
    """`python train/ablate.py ...`: argument errors, checked before any run, are user errors (one line, status 2)."""
    from train.user_errors import as_user_errors

    (args,) = parse_config_and_args((AblateArguments,), argv)
    with as_user_errors():
        check_arguments(args)
    return run_ablation(args)


__all__ = ["AblateArguments", "check_arguments", "cli", "main", "markdown_table", "parse_grid", "run_ablation"]

if __name__ == "__main__":
    from train.user_errors import run_main

    run_main(cli)
