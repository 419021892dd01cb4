"""Rewrites the summary table of benchmarks/README.md and of the project's README.md (between their summary markers)
from benchmarks/results/*.json:
one row per compared figure, with its ratio to the peer, the speed target where there is one, and the machine,
library versions, load average and date of the run it comes from.

    python benchmarks/summarize.py
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
MISSING = "–"
COLUMNS = ("Benchmark", "Compared", "MedVL", "Peer", "Ratio", "Target", "Met", "Machine", "Versions", "Load average",
           "Date")
# Older image and text results record the load average only in their notes.
NOTES_LOAD = re.compile(r"Load average at the start: (\d+(?:\.\d+)?), at the end: (\d+(?:\.\d+)?)")
OUTPUT_SIZE = re.compile(r"pixel_values (\d+)x\d+")
# The speed targets: the MedVL / peer speed ratio each figure should reach.
TARGETS = {"step_vs_clip_model": 1.2, "step_vs_open_clip": 1.1, "full_vs_itc_step": 0.5,
           "local_contrast_vs_clip_processor": 2.0, "text_vs_tokenizer": 1.0, "loader_vs_step": 1.0}
GPU_PEERS = {"open_clip": ("open_clip `CLIP` + `ClipLoss`", "open_clip"),
             "hf_clip": ("transformers' `CLIPModel`", "transformers")}


class ResultsError(ValueError):
    """A results file that cannot be summarised; the message names it."""


def dig(value, *keys):
    """value[k1][k2]...; None where a key is absent (fields older runs did not record)."""
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def quotient(numerator, denominator):
    return numerator / denominator if isinstance(numerator, (int, float)) and denominator else None


def row(compared, medvl, peer, ratio, cpu_ratio, packages, target=None, load=None):
    """One compared figure. Ratios are MedVL over the peer with higher better (speed, not time); `cpu_ratio` is the
    same by process CPU time, steadier on a shared machine; `load`: this figure's own load average, if any."""
    return {"compared": compared, "medvl": medvl, "peer": peer, "ratio": ratio, "cpu_ratio": cpu_ratio,
            "packages": packages, "target": target, "load": load}


def figure(value, unit):
    if not isinstance(value, (int, float)):
        return MISSING
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def model_step_rows(record):
    size = dig(record, "size") or {}
    shape = (f", {size['vision_depth']} + {size['text_depth']} layers of width {size['vision_width']}, "
             f"{size['image_size']} px, batch {size['batch_size']},"
             if {"vision_depth", "text_depth", "vision_width", "image_size", "batch_size"} <= size.keys() else "")
    return [row(
        f"dual-encoder training step (fusion none, ITC){shape} vs transformers' `CLIPModel` of the same sizes",
        figure(dig(record, "medvl", "median_step_s"), "s/step"),
        figure(dig(record, "clip", "median_step_s"), "s/step"),
        # The script records time ratios (lower is better): their inverse is the speed ratio.
        quotient(1, dig(record, "time_ratio_medvl_over_clip")),
        quotient(1, dig(record, "cpu_time_ratio_medvl_over_clip")),
        ("torch", "transformers", "timm"),
        target=TARGETS["step_vs_clip_model"],
    )]


def pretrain_step_rows(record):
    size = dig(record, "size") or {}
    shape = (f", batch {size['batch_size']}, {size['image_size']} px, width {size['width']},"
             if {"batch_size", "image_size", "width"} <= size.keys() else "")
    contenders = dig(record, "contenders") or {}
    itc = dig(contenders, "medvl_itc")

    def pairs(name):
        return figure(dig(contenders, name, "pairs_per_second"), "pairs/s")

    def against_itc(name):
        """`name`'s step against MedVL's ITC step (the script records only ITC over the others)."""
        return (quotient(dig(contenders, name, "pairs_per_second"), dig(itc, "pairs_per_second")),
                quotient(dig(itc, "median_cpu_s"), dig(contenders, name, "median_cpu_s")))

    rows = [
        row(f"pretraining optimizer step, ITC{shape} vs open_clip `CLIP` + `ClipLoss`", pairs("medvl_itc"),
            pairs("open_clip"), dig(record, "ratios_medvl_itc_over", "open_clip", "throughput"),
            dig(record, "ratios_medvl_itc_over", "open_clip", "cpu_time"), ("torch", "open_clip"),
            target=TARGETS["step_vs_open_clip"]),
        row(f"pretraining optimizer step, ITC{shape} vs transformers' `CLIPModel`", pairs("medvl_itc"),
            pairs("hf_clip"), dig(record, "ratios_medvl_itc_over", "hf_clip", "throughput"),
            dig(record, "ratios_medvl_itc_over", "hf_clip", "cpu_time"), ("torch", "transformers"),
            target=TARGETS["step_vs_clip_model"]),
        row(f"full pretraining step (ITC + MLM + ITM, cross-attention fusion){shape} vs MedVL's ITC step alone",
            pairs("medvl_full"), pairs("medvl_itc"), *against_itc("medvl_full"), ("torch",),
            target=TARGETS["full_vs_itc_step"]),
        row(f"ITC step as 4 micro-batches of exact accumulation{shape} vs one batch", pairs("medvl_itc_accum4"),
            pairs("medvl_itc"), *against_itc("medvl_itc_accum4"), ("torch",)),
    ]
    # A run of some contenders only (--contenders) has no figures for the others.
    return [r for r in rows if r["medvl"] != MISSING or r["peer"] != MISSING]


IMAGE_CASES = (  # ratio key, MedVL case, peer case, what, target
    ("pil_8bit", "medvl_pil_8bit", "clip_torchvision_pil_8bit (peer)", "8-bit images in memory", None),
    ("pil_8bit_clahe", "medvl_clahe_pil_8bit", "clip_torchvision_pil_8bit (peer)",
     "8-bit images in memory, local contrast (CLAHE) on", TARGETS["local_contrast_vs_clip_processor"]),
    ("pil_8bit_pad", "medvl_pad_pil_8bit", "clip_torchvision_pil_8bit (peer)",
     "8-bit images in memory, padded to square", None),
    ("png_8bit_files", "medvl_png_8bit_files", "clip_torchvision_png_8bit_files (peer)", "8-bit PNG files", None),
)


def image_processor_rows(record):
    rates = dig(record, "images_per_second_per_core")
    size = OUTPUT_SIZE.match(str(dig(record, "output")))
    return [
        row(f"image preprocessing{f' to {size[1]} px' if size else ''} on one core, {what}, vs transformers' "
            "`CLIPImageProcessor`", figure(dig(rates, medvl), "images/s"), figure(dig(rates, peer), "images/s"),
            dig(record, "ratio_medvl_to_clip", key), dig(record, "ratio_medvl_to_clip_cpu", key),
            ("torch", "transformers", "opencv"), target=target)
        for key, medvl, peer, what, target in IMAGE_CASES
    ]


def text_pipeline_rows(record):
    rates = dig(record, "reports_per_second")
    return [row(
        f"clinical normalisation + tokenization of {dig(record, 'reports') or MISSING} reports vs the tokenizer "
        "alone on the raw reports", figure(dig(rates, "normalise_plus_tokenize"), "reports/s"),
        figure(dig(rates, "tokenize_raw_reports (peer baseline)"), "reports/s"),
        dig(record, "ratio_normalise_plus_tokenize_to_tokenize_only"),
        dig(record, "ratio_normalise_plus_tokenize_to_tokenize_only_cpu"), ("tokenizers", "transformers"),
        target=TARGETS["text_vs_tokenizer"],
    )]


def synthcxr_rows(record):
    return [
        row(f"SynthCXR generation at {dig(case, 'size') or MISSING} px vs PIL decoding the same JPEG files",
            figure(dig(case, "generate_images_per_s"), "images/s"),
            figure(dig(case, "peer_decode_jpg_from_disk_images_per_s"), "images/s"),
            dig(case, "ratio_generate_vs_decode"), dig(case, "ratio_generate_vs_decode_cpu"), ("pillow", "numpy"))
        for case in dig(record, "results") or []
    ]


def webdataset_rows(record):
    def median(values):
        return statistics.median(values) if isinstance(values, list) and values else None

    return [
        row(f"`load_webdataset` {'checking' if dig(case, 'check_images') else 'not checking'} images vs the "
            "hand-written tar parser it replaced (median of rounds)",
            figure(median(dig(case, "datasets_builder_rows_per_s")), "rows/s"),
            figure(median(dig(case, "hand_parser_rows_per_s")), "rows/s"),
            dig(case, "ratio_builder_vs_hand_parser_rows_per_s"),
            dig(case, "ratio_builder_vs_hand_parser_rows_per_cpu_s"), ("datasets",),
            load=[None, dig(case, "load_average")])
        for case in dig(record, "results") or []
    ]


def data_loading_rows(record):
    rows = []
    for name, setting in (dig(record, "settings") or {}).items():
        step = dig(setting, "step_pairs_per_second")
        what = (f"pretraining's loader ({dig(setting, 'image_side_on_disk')} px JPEG files to "
                f"{dig(setting, 'model_image_size')} px, augmentation {'on' if dig(setting, 'augment') else 'off'})")
        for workers, rate in (dig(setting, "loader_pairs_per_second") or {}).items():
            if step is None:
                rows.append(row(f"{what}, {workers}", figure(rate, "pairs/s"), MISSING, None, None, ("torch",)))
            else:
                rows.append(row(f"{what}, {workers}, vs the training step it feeds (`{name}` setting)",
                                figure(rate, "pairs/s"), figure(step, "pairs/s"), quotient(rate, step), None,
                                ("torch",), target=TARGETS["loader_vs_step"]))
    return rows


def gpu_step_rows(record):
    rows = []
    dtype, device = dig(record, "dtype") or MISSING, dig(record, "device") or MISSING
    for size, entry in (dig(record, "sizes") or {}).items():
        contenders = dig(entry, "contenders") or {}
        medvl = dig(contenders, "medvl_itc")
        for peer, (peer_name, package) in GPU_PEERS.items():
            if peer in contenders:
                rows.append(row(
                    f"{dtype} training step on {device}, {size}, batch {dig(medvl, 'batch_size')}, MedVL ITC vs "
                    f"{peer_name} (MFU {dig(medvl, 'mfu') or 0:.0%} vs {dig(contenders, peer, 'mfu') or 0:.0%})",
                    figure(dig(medvl, "pairs_per_second"), "pairs/s"),
                    figure(dig(contenders, peer, "pairs_per_second"), "pairs/s"),
                    quotient(dig(medvl, "pairs_per_second"), dig(contenders, peer, "pairs_per_second")), None,
                    ("torch", package),
                    target=TARGETS["step_vs_open_clip" if peer == "open_clip" else "step_vs_clip_model"]))
    return rows


def model_step_load(record):
    return dig(record, "load_average_1min_before_after")


def pretrain_step_load(record):
    return [dig(record, "load_average_before_after", 0, 0), dig(record, "load_average_before_after", 1, 0)]


def notes_load(record):
    match = NOTES_LOAD.search(str(dig(record, "notes")))
    return [float(match[1]), float(match[2])] if match else None


# benchmark name (its prefix, for the two scripts that write a description there) -> label, rows, load before
# the shared machine record.
BENCHMARKS = {
    "forward+backward step": ("`bench_model_step.py`", model_step_rows, model_step_load),
    "pretraining optimizer step": ("`bench_pretrain_step.py`", pretrain_step_rows, pretrain_step_load),
    "image_processor": ("`bench_image_processor.py`", image_processor_rows, notes_load),
    "text_pipeline": ("`bench_text_pipeline.py`", text_pipeline_rows, notes_load),
    "synthcxr": ("`bench_synthcxr.py`", synthcxr_rows, lambda record: None),
    "webdataset_read": ("`bench_webdataset.py`", webdataset_rows, lambda record: None),
    "pretraining data pipeline": ("`bench_data_loading.py`", data_loading_rows, lambda record: None),
    "training step on one accelerator": ("`bench_gpu_step.py`", gpu_step_rows, lambda record: None),
}


def benchmark_of(record, path):
    name = dig(record, "benchmark")
    for prefix, benchmark in BENCHMARKS.items():
        if isinstance(name, str) and name.startswith(prefix):
            return benchmark
    raise ResultsError(f"{path}: unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")


def times(ratio):
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.3f}×"


def ratio_text(ratio, cpu_ratio):
    if not isinstance(ratio, (int, float)):
        return MISSING
    return times(ratio) + (f" (CPU time {times(cpu_ratio)})" if isinstance(cpu_ratio, (int, float)) else "")


def met_text(ratio, cpu_ratio, target):
    if target is None:
        return ""
    if not isinstance(ratio, (int, float)):
        return MISSING
    met = ratio >= target
    verdict = "met" if met else "not met"
    # A shared machine's load slows wall clock more than CPU time: say where the two disagree.
    if isinstance(cpu_ratio, (int, float)) and (cpu_ratio >= target) != met:
        verdict += f" ({'met' if not met else 'not met'} by CPU time)"
    return verdict


def machine_text(record):
    machine = dig(record, "machine") or {}
    cpu = machine.get("cpu_model") or dig(record, "cpu") or MISSING
    cores = machine.get("cpu_count", machine.get("cpus"))
    gpus = machine.get("gpus")
    gpu = MISSING if gpus is None else ", ".join(gpus) or "none"
    return f"{cpu}, {cores if cores is not None else MISSING} cores, GPU {gpu}"


def versions_text(record, packages):
    recorded = {**(dig(record, "versions") or {}), **(dig(record, "machine") or {})}
    return ", ".join(f"{package} {recorded.get(package, MISSING)}" for package in packages)


def load_text(span):
    if not isinstance(span, list) or len(span) != 2 or span == [None, None]:
        return MISSING
    return " → ".join(f"{value:.1f}" if isinstance(value, (int, float)) else MISSING for value in span)


def commit_date(path):
    """When the results file was last committed: the date of results written before runs recorded theirs."""
    result = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent,
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def read_runs(path):
    """The runs a results file holds: one record, or a list of them (runs kept side by side)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    runs = data if isinstance(data, list) else [data]
    if not runs or not all(isinstance(run, dict) for run in runs):
        raise ResultsError(f"{path}: expected a benchmark record (a JSON object) or a list of them")
    return runs


def table_rows(results):
    paths = sorted(Path(results).glob("*.json"))
    if not paths:
        raise ResultsError(f"{results}: no results (*.json)")
    lines = []
    for path in paths:
        for record in read_runs(path):
            label, rows_of, old_load = benchmark_of(record, path)
            run_load = dig(record, "machine", "load_average_1min_start_end") or old_load(record)
            date = str(dig(record, "machine", "date") or "")[:10] or commit_date(path) or MISSING
            for figure_row in rows_of(record):
                target = figure_row["target"]
                lines.append([
                    f"{label} (`{path.name}`)", figure_row["compared"], figure_row["medvl"], figure_row["peer"],
                    ratio_text(figure_row["ratio"], figure_row["cpu_ratio"]),
                    "" if target is None else f"≥ {target}×",
                    met_text(figure_row["ratio"], figure_row["cpu_ratio"], target),
                    machine_text(record), versions_text(record, figure_row["packages"]),
                    load_text(run_load or figure_row["load"]),
                    date,
                ])
    return lines


def markdown_table(lines):
    header = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    return "\n".join(header + ["| " + " | ".join(line) + " |" for line in lines])


def summarize(results=HERE / "results", readme=HERE / "README.md"):
    """Rewrite the table between the README's summary markers; everything outside them is kept."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ResultsError(f"{readme}: no {START} ... {END} markers to write the summary between")
    table = markdown_table(table_rows(results))
    readme.write_text(text[: start + len(START)] + "\n" + table + "\n" + text[end:])
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, nargs="+", default=[HERE / "README.md", HERE.parent / "README.md"],
                        help="the files whose summary markers get the table (default: both READMEs)")
    args = parser.parse_args(argv)
    try:
        for readme in args.readme:
            table = summarize(args.results, readme)
        print(table)
    except ResultsError as error:
        sys.exit(f"summarize.py: {error}")


if __name__ == "__main__":
    main()
