"""Where a pretraining optimizer step's time goes: MedVL against open_clip and transformers' CLIPModel.

Profiles the contenders of `bench_pretrain_step.py` (the same steps: forward, CLIP loss, backward, clip at 1.0,
AdamW) with torch.profiler, after warm-up, and splits each step's wall time two ways:
- by phase: forward (with the loss), backward (autograd's engine), gradient clipping, optimizer, and the time no
  traced operator was running (Python and framework overhead between operators);
- by operator family of the self time: matrix multiplies, attention kernels, convolutions, layer norms, GELU,
  softmax and cross-entropy, optimizer arithmetic, memory movement (copies, cats, indexing), the rest.

Two sizes: `tiny` (the tiny preset's widths at 64 px, batch 64: the demo's scale) and `vit_s` (ViT-S/16 widths
with 6 + 6 layers at 224 px, batch 16).

    python benchmarks/profile_pretrain_step.py                     # both sizes, every contender; a few minutes
    python benchmarks/profile_pretrain_step.py --sizes tiny --contenders medvl_itc medvl_full

Writes benchmarks/results/profiles/pretrain_step_cpu.json and prints one table per size.
"""

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench_pretrain_step import CONTENDERS, build
from bench_pretrain_step import parse_args as step_args
from machine_record import load_average, machine, versions, write_json

# Not a compared figure: kept beside the results, outside the summary table's *.json.
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "profiles" / "pretrain_step_cpu.json"
SIZES = {
    "tiny": [],
    "vit_s": ["--batch-size", "16", "--image-size", "224", "--patch-size", "16", "--width", "384", "--heads", "6",
              "--vision-depth", "6", "--text-depth", "6", "--vocab-size", "30522", "--projection-dim", "256"],
}
# Operator families, matched on the operator's name in order; the first match wins.
FAMILIES = (
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")),
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("layer_norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("softmax_loss", ("softmax", "cross_entropy", "nll_loss", "logsumexp")),
    ("optimizer_math", ("_foreach", "_fused_adam", "addcdiv", "addcmul", "lerp", "sqrt")),
    ("memory", ("copy", "cat", "index", "gather", "scatter", "clone", "contiguous", "empty", "zeros", "fill",
                "stack", "slice", "select", "expand", "view", "reshape", "permute", "transpose", "to", "pad")),
)


def family_of(name: str) -> str:
    for family, keys in FAMILIES:
        if any(key in name for key in keys):
            return family
    return "other"


def phase_of(event) -> str:
    name = event.name
    if name.startswith("autograd::engine::evaluate_function") or "Backward" in name:
        return "backward"
    if name.startswith("Optimizer."):
        return "optimizer"
    if "foreach_norm" in name or name.startswith("aten::_foreach_mul") or name == "aten::clamp":
        return "clip"
    return "forward"


def profile_contender(step, iters: int) -> dict:
    """Median wall time of `iters` untraced steps, then one traced step split by phase and operator family."""
    step()
    walls = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        step()
        traced_wall = time.perf_counter() - start
    events = profiler.events()
    main_thread = max({event.thread for event in events}, key=lambda t: sum(e.cpu_time_total for e in events
                                                                          if e.thread == t and e.cpu_parent is None))
    phases, families, operators = defaultdict(float), defaultdict(float), defaultdict(float)
    for event in events:
        if event.thread == main_thread and event.cpu_parent is None:
            phases[phase_of(event)] += event.cpu_time_total / 1e6
        if event.name.startswith("aten::"):
            families[family_of(event.name)] += event.self_cpu_time_total / 1e6
            operators[event.name] += event.self_cpu_time_total / 1e6
    phases["untraced (Python, framework)"] = max(traced_wall - sum(phases.values()), 0.0)
    top = dict(sorted(operators.items(), key=lambda item: -item[1])[:8])
    return {"median_step_s": statistics.median(walls), "traced_step_s": traced_wall,
            "phases_s": dict(phases), "operator_families_s": dict(families), "top_operators_s": top}


def format_table(size: str, profiles: dict) -> str:
    names = list(profiles)
    lines = [f"\n== {size}: seconds per step (share of the traced step) ==",
             f"{'':34s}" + "".join(f"{name:>20s}" for name in names)]
    lines.append(f"{'median step, untraced':34s}" + "".join(f"{profiles[n]['median_step_s']:>20.3f}" for n in names))
    for table in ("phases_s", "operator_families_s"):
        keys = sorted({key for n in names for key in profiles[n][table]})
        for key in keys:
            cells = []
            for n in names:
                value, total = profiles[n][table].get(key, 0.0), profiles[n]["traced_step_s"]
                cells.append(f"{value:>11.3f} ({value / total:4.0%})")
            lines.append(f"{table[:-2] + ': ' + key:34s}" + "".join(f"{cell:>20s}" for cell in cells))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--contenders", nargs="+", default=["medvl_itc", "medvl_full", "open_clip", "hf_clip"],
                        choices=CONTENDERS)
    parser.add_argument("--iters", type=int, default=3, help="untimed-profiler steps whose median is reported")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    record = {"benchmark": "where a pretraining step's time goes (torch.profiler, CPU)",
              "command": "python benchmarks/profile_pretrain_step.py " + " ".join(argv or []),
              "torch_threads": args.threads, "sizes": {}}
    for size in args.sizes:
        size_args = step_args(SIZES[size])
        torch.manual_seed(0)
        profiles = {}
        for name in args.contenders:
            _, step = build(size_args, name)
            profiles[name] = profile_contender(step, args.iters)
        record["sizes"][size] = {"size": {k: v for k, v in vars(size_args).items()
                                          if k not in ("output", "memory_probe", "contenders")},
                                 "contenders": profiles}
        print(format_table(size, profiles), flush=True)
    record["versions"] = versions(torch, __import__("open_clip"), __import__("transformers"))
    record["machine"] = machine(load_at_start=load_before)
    write_json(args.output, record)
    print(f"\nwritten to {args.output}")
    return record


if __name__ == "__main__":
    main()
