"""The papers' ablations on one data set and seed: fusion strategy x tower initialisation, each cell a short
pretraining run (train/pretrain.py) and a classification fine-tune (train/finetune.py), compared on the fine-tuned
validation macro AUC.

    python train/ablate.py --grid fusion=none,cross_attention,merged init=domain,general \\
        --data synthcxr:n=2000,size=64 --out runs/ablate --steps 100

What the two initialisations mean here (no pretrained weights are downloaded; these machines are offline):
- domain: the classifier's vision tower starts from this cell's own contrastive pretraining (ITC + MLM, + ITM when
  the cell has fusion layers) on the image-report pairs of --data, --steps steps with the cell's fusion_type: the
  domain image-text pretraining stage.
- general: no domain pretraining; the vision tower starts from general-purpose weights: a timm weight file held
  locally (--general_vision_weights, e.g. ImageNet weights of the preset's backbone) or, without one, timm's own
  fresh initialisation. Its fine-tune never sees fusion layers (the image classifier has none), so the general
  cells of every fusion_type are the same run: it is trained once and reported in each of them (`shared_with`).

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
from train.data_loading import parse_data_spec
from train.run_config import parse_config_and_args

INITS = ("domain", "general")
GRID_VALUES = {"fusion": FUSION_TYPES, "init": INITS}
GRID_DEFAULTS = {"fusion": "cross_attention", "init": "domain"}
DEFINITIONS = {
    "domain": "vision tower from this cell's short contrastive pretraining on --data (with the cell's fusion_type)",
    "general": "no domain pretraining; vision tower from --general_vision_weights, else timm's fresh initialisation",
}


@dataclass
class AblateArguments:
    grid: list[str] = field(default_factory=lambda: ["fusion=none,cross_attention,merged", "init=domain,general"],
                            metadata={"help": "Axes as key=value,value: fusion=" + ",".join(FUSION_TYPES)
                                      + " and init=domain,general. Offline, init means: domain = "
                                      + DEFINITIONS["domain"] + "; general = " + DEFINITIONS["general"]
                                      + " (the general cells of every fusion_type are one shared run)."})
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
        "help": "A local timm weight file for the 'general' vision tower (e.g. ImageNet weights of the backbone)."})


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


def pretrain_argv(args, cell, folder: Path) -> list:
    overrides = [f"fusion_type={cell['fusion']}"] + (["itm_weight=0"] if cell["fusion"] == "none" else [])
    return ["--model_preset", args.model_preset, "--data", args.data, "--output_dir", str(folder),
            "--model_overrides", *overrides, "--max_steps", str(args.steps), "--seed", str(args.seed),
            "--per_device_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
            "--warmup_steps", str(max(1, args.steps // 10)), "--eval_steps", str(args.steps), "--save_steps", "0",
            "--save_total_limit", "1", "--validation_size", str(args.validation_size), "--num_workers", "0",
            "--tokenizer_vocab_size", "1000", "--max_text_length", "128", "--report_to", "none"]


def finetune_argv(args, init_folder, folder: Path, cache: Path) -> list:
    steps = str(args.finetune_steps or args.steps)
    start = ["--init", str(init_folder)] if init_folder else ["--model_preset", args.model_preset] + (
        ["--model_overrides", f"vision_config.weights_path={args.general_vision_weights}"]
        if args.general_vision_weights else [])
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
    init_folder = None
    if cell["init"] == "domain":
        pretrain_folder = folder / "pretrain"
        pretrain_folder.mkdir(parents=True, exist_ok=True)
        shared = pretrain_folder / "data_cache"  # the generated data, made once for every cell
        if not shared.exists():
            shared.symlink_to(cache.resolve(), target_is_directory=True)
        summary = pretrain.main(pretrain_argv(args, cell, pretrain_folder))
        final_eval = summary.get("final_eval") or {}
        record["pretrain"] = {"steps": summary["steps"], "final_loss": summary.get("final_loss"),
                              "zero_shot_auc": final_eval.get("zero_shot_auc"), "recall@5": final_eval.get("recall@5"),
                              "seconds": summary["seconds_this_launch"]}
        init_folder = (pretrain_folder / "checkpoint-last").resolve()
    results = finetune.main(finetune_argv(args, init_folder, folder / "finetune", cache))
    record["finetune"] = {key: results[key] for key in ("auroc_macro", "auroc_macro_ci", "auroc_per_label",
                                                        "labels_in_macro", "num_studies")}
    record["seconds"] = time.time() - started
    return record


def _cell(value):
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(cells: list) -> str:
    lines = ["| fusion | init | pretrain steps | zero-shot AUC | fine-tuned macro AUC (95% CI) | minutes |",
             "|---|---|---|---|---|---|"]
    for cell in cells:
        pre, fine = cell.get("pretrain") or {}, cell["finetune"]
        low, high = fine["auroc_macro_ci"]
        note = f" (= {cell['shared_with']})" if cell.get("shared_with") else ""
        lines.append(f"| {cell['fusion']} | {cell['init']}{note} | {pre.get('steps', 0)} | "
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
    colours = ["tab:blue" if cell["init"] == "domain" else "tab:orange" for cell in cells]
    figure, axis = plt.subplots(figsize=(1.2 * len(cells) + 2, 3.6))
    axis.bar(range(len(cells)), values, yerr=errors, capsize=3, color=colours)
    axis.set_xticks(range(len(cells)), [f"{c['fusion']}\n{c['init']}" for c in cells], fontsize=8)
    axis.axhline(0.5, ls="--", color="grey", lw=1)
    axis.set(ylim=(0, 1), ylabel="fine-tuned macro AUC", title="fusion x initialisation (95% CI)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def run_ablation(args) -> dict:
    cells = parse_grid(args.grid)
    if parse_data_spec(args.data).kind not in ("synthcxr", "mimic-cxr", "saved"):
        raise ValueError(f"--data {args.data}: both stages need image-report pairs with labels "
                         "(synthcxr:, mimic-cxr: or saved:)")
    if args.steps < 1 or (args.finetune_steps is not None and args.finetune_steps < 1):
        raise ValueError("--steps and --finetune_steps must be >= 1")
    if args.general_vision_weights and not Path(args.general_vision_weights).is_file():
        raise FileNotFoundError(f"--general_vision_weights {args.general_vision_weights}: no such file")
    out = Path(args.out)
    cache = out / "data_cache"
    cache.mkdir(parents=True, exist_ok=True)
    records, done = [], {}
    for cell in tqdm(cells, desc="ablation cells", unit="cell"):
        shared = done.get("general") if cell["init"] == "general" else None
        if shared is not None:
            records.append({**shared, **cell, "shared_with": cell_name(shared)})
            continue
        record = run_cell(args, cell, out, cache)
        done.setdefault(cell["init"] if cell["init"] == "general" else cell_name(cell), record)
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


__all__ = ["AblateArguments", "main", "markdown_table", "parse_grid", "run_ablation"]

if __name__ == "__main__":
    main()
