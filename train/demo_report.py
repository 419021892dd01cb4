"""The demo's report: the results table (every task on the test split against its baselines), the stage times, the
loss curves, ROC curves, calibration and subgroups, and a few test images with their generated reports and where
the fusion layers attend, as report.html and report.md at the top of the demo's folder."""

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from processing import load_mimic_cxr  # noqa: E402
from train.clinical_eval import describe_gap  # noqa: E402
from train.demo_scales import LORA  # noqa: E402

# (task JSON, metric, what the row shows)
TABLE_ROWS = (
    ("zero_shot", "auroc_macro", "Zero-shot findings, macro AUC (prompt ensembles)"),
    ("zero_shot", "laterality_accuracy", "Laterality probe, accuracy (left vs right prompts)"),
    ("zero_shot", "recall@5", "Image → report retrieval, recall@5"),
    ("classification", "auroc_macro", "Findings classification, macro AUC"),
    ("vqa", "accuracy", "VQA, all questions, accuracy"),
    ("vqa", "closed_accuracy", "VQA, closed questions, accuracy (answer classifier)"),
    ("vqa", "open_accuracy", "VQA, open questions, accuracy (generated answers)"),
    ("report_generation", "cider", "Report generation, CIDEr-D"),
    ("report_generation", "rouge_l", "Report generation, ROUGE-L"),
    ("report_generation", "bleu_4", "Report generation, BLEU-4"),
)
BASELINES = ("majority", "untrained")
RESULTS_FILE = "results.json"
ROC_SHOWN = ("cardiomegaly", "pleural_effusion", "pneumothorax")  # SynthCXR's most frequent findings
EXAMPLES = 4
DISCLAIMER = ("Research software on synthetic data: not a medical device, and these figures say nothing about "
              "performance on real radiographs.")


def _number(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def training_note(task: str) -> str:
    """How the demo fine-tuned `task`, shown on its first row."""
    if task == "zero_shot":
        return ""
    return f" (LoRA {LORA[task]})" if task in LORA else " (full fine-tuning)"


def results_rows(evaluated: dict) -> list:
    rows = []
    for task, key, what in TABLE_ROWS:
        result = evaluated.get(task)
        if result is None or result.get(key) is None:
            continue
        if all(row["task"] != task for row in rows):
            what += training_note(task)
        interval = result.get(f"{key}_ci")
        baselines = {name: (result.get("baselines", {}).get(name) or {}).get(key) for name in BASELINES}
        above = all(value is None or result[key] > value for value in baselines.values())
        rows.append({"task": task, "metric": key, "what": what, "value": result[key],
                     "interval": list(interval) if interval else None, **baselines, "above_baselines": above})
    return rows


def markdown_table(rows: list) -> str:
    lines = ["| Task (test split) | MedVL | 95% interval | Majority | Untrained | Above both |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        interval = f"{row['interval'][0]:.3f} – {row['interval'][1]:.3f}" if row["interval"] else "–"
        lines.append(f"| {row['what']} | {row['value']:.3f} | {interval} | {_number(row['majority'])} | "
                     f"{_number(row['untrained'])} | {'yes' if row['above_baselines'] else 'NO'} |")
    return "\n".join(lines)


def finetuning_curves(out: Path, figure: Path) -> Path | None:
    """Training loss of each fine-tuning stage against its step, from the Trainer's state in its last checkpoint."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    drawn = False
    for axis, task in zip(axes, ("classification", "vqa", "report_generation")):
        states = sorted((out / task).glob("checkpoint-*/trainer_state.json"),
                        key=lambda path: json.loads(path.read_text())["global_step"])
        history = json.loads(states[-1].read_text())["log_history"] if states else []
        points = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
        if points:
            axis.plot(*zip(*points), marker=".")
            drawn = True
        axis.set_title(task.replace("_", " "))
        axis.set_xlabel("step")
        axis.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return figure if drawn else None


def test_examples(demo, folder: Path) -> list:
    """A few test images through the exported folder (its own code, as the Space runs it): the generated report
    and the fusion layers' attention for the finding the zero-shot head ranks first."""
    from hub_cards.space_app import FINDINGS, Demo

    space = Demo(str(demo.out / "export"))
    studies = load_mimic_cxr(demo.mimic, split="test").select(range(EXAMPLES))
    examples = []
    for index, row in enumerate(studies):
        scores = space.zero_shot(row["image"], FINDINGS)
        top = max(scores, key=scores.get)
        heat, _ = space.heatmap(row["image"], top)
        image_path, heat_path = folder / f"example_{index}.png", folder / f"example_{index}_attention.png"
        row["image"].convert("RGB").resize((256, 256)).save(image_path)
        if heat is not None:
            heat.save(heat_path)
        examples.append({"image": image_path, "attention": heat_path if heat is not None else None,
                         "top_finding": top, "reference": row["report"], "generated": space.report(row["image"], [])})
    return examples


def relative(path, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve()).as_posix()


def roc_figures(figures_dir: Path, what: str) -> list:
    return [(f"{what}: ROC on the test split, {label.replace('_', ' ')}",
             figures_dir / "roc_curves" / f"roc_{label}.png") for label in ROC_SHOWN]


def figures(demo, folder: Path) -> list:
    out, evaluated = demo.out, demo.out / "evaluate"
    candidates = [
        ("Pretraining losses (each term against its prior)", out / "pretrain" / "loss_curve.png"),
        ("Fine-tuning losses", finetuning_curves(out, folder / "finetuning_losses.png")),
        *roc_figures(evaluated / "classification_figures", "Classification"),
        ("Classification: reliability (calibration)", evaluated / "classification_figures" / "reliability.png"),
        ("Classification: subgroups", evaluated / "classification_figures" / "subgroups.png"),
        *roc_figures(evaluated / "zero_shot_figures", "Zero-shot"),
    ]
    return [(title, path) for title, path in candidates if path is not None and Path(path).is_file()]


def write_report(demo, folder: Path) -> dict:
    evaluated = {path.stem: json.loads(path.read_text()) for path in (demo.out / "evaluate").glob("*.json")
                 if path.stem != "summary"}
    state = json.loads((demo.out / "demo_state.json").read_text())
    stage_seconds = {name: entry["seconds"] for name, entry in state["finished"].items()}
    rows = results_rows(evaluated)
    export_check = json.loads((demo.out / "export_check.json").read_text())
    examples = test_examples(demo, folder)
    shown = figures(demo, folder)
    gap = evaluated.get("classification", {}).get("largest_subgroup_gap")
    results = {"settings": state["settings"], "rows": rows, "stage_seconds": stage_seconds,
               "export_max_abs_difference": max(export_check["max_abs_difference"].values()),
               "largest_subgroup_gap": gap}
    (folder / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str))
    settings = state["settings"]
    intro = (f"SynthCXR, {settings['studies']} studies in the MIMIC-CXR-JPG layout at {settings['image_size']} px "
             f"(and {settings['vqa_studies']} in the VQA-RAD layout), model preset `{settings['preset']}`, scale "
             f"`{settings['scale']}`, seed {settings['seed']}. Every figure is on the test split, which no stage "
             "trained on or selected a checkpoint with; intervals are bootstrap 95% intervals over studies.")
    times = " · ".join(f"{name} {seconds:.0f} s" for name, seconds in stage_seconds.items())
    markdown = ["# MedVL demo", "", intro, "", markdown_table(rows), "",
                f"Classification, {describe_gap(gap)}." if gap else "", "",
                f"Stage times: {times}.", "",
                f"The exported folder (`export/`) reloads offline through the Auto classes with outputs equal to the "
                f"checkpoints' (largest difference {results['export_max_abs_difference']:.1e}). Open the Space: "
                f"`python {demo.out / 'export' / 'space' / 'app.py'}`.", "",
                *[f"![{title}]({relative(path, demo.out)})" for title, path in shown], "", "## Test images", ""]
    for example in examples:
        markdown += [f"![test image]({relative(example['image'], demo.out)})"
                     + (f" ![attention]({relative(example['attention'], demo.out)})" if example["attention"] else ""),
                     "", f"- reference: {example['reference']}", f"- generated: {example['generated']}",
                     f"- attention for: {example['top_finding']}", ""]
    markdown += ["", DISCLAIMER]
    (demo.out / "report.md").write_text("\n".join(markdown))
    (demo.out / "report.html").write_text(html_page(intro, rows, gap, times, results, shown, examples, demo))
    print("\n" + markdown_table(rows) + "\n", flush=True)
    return results


def html_page(intro, rows, gap, times, results, shown, examples, demo) -> str:
    escape = html.escape
    table = ["<table><tr><th>Task (test split)</th><th>MedVL</th><th>95% interval</th><th>Majority</th>"
             "<th>Untrained</th><th>Above both</th></tr>"]
    for row in rows:
        interval = f"{row['interval'][0]:.3f} – {row['interval'][1]:.3f}" if row["interval"] else "–"
        table.append(f"<tr><td>{escape(row['what'])}</td><td><b>{row['value']:.3f}</b></td><td>{interval}</td>"
                     f"<td>{_number(row['majority'])}</td><td>{_number(row['untrained'])}</td>"
                     f"<td>{'yes' if row['above_baselines'] else '<b>NO</b>'}</td></tr>")
    table.append("</table>")
    figures_html = "".join(f"<figure><img src='{relative(path, demo.out)}' alt='{escape(title)}'>"
                           f"<figcaption>{escape(title)}</figcaption></figure>" for title, path in shown)
    example_html = "".join(
        "<div class='example'>"
        f"<img src='{relative(e['image'], demo.out)}' alt='test image'>"
        + (f"<img src='{relative(e['attention'], demo.out)}' alt='attention for {escape(e['top_finding'])}'>"
           if e["attention"] else "")
        + f"<p><b>Reference:</b> {escape(e['reference'])}</p><p><b>Generated:</b> {escape(e['generated'])}</p>"
          f"<p><i>Attention for “{escape(e['top_finding'])}”</i></p></div>" for e in examples)
    gap_html = f"<p>Classification, {escape(describe_gap(gap))}.</p>" if gap else ""
    space = escape(f"python {demo.out / 'export' / 'space' / 'app.py'}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MedVL demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:8px}}figure img{{max-width:340px}}
.example{{display:inline-block;width:520px;vertical-align:top;margin:8px}}.example img{{width:250px}}</style>
</head><body><h1>MedVL demo</h1><p>{escape(intro)}</p><h2>Results</h2>{''.join(table)}{gap_html}
<p>Stage times: {escape(times)}.</p>
<p>The exported folder reloads offline through the Auto classes with outputs equal to the checkpoints' (largest
difference {results['export_max_abs_difference']:.1e}). Open the Space: <code>{space}</code></p>
<h2>Curves</h2>{figures_html}<h2>Test images</h2>{example_html}<p><i>{escape(DISCLAIMER)}</i></p></body></html>
"""


__all__ = ["results_rows", "write_report"]
