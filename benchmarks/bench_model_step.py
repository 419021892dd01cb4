"""Training-step speed and memory of MedVL's dual-encoder path against transformers' CLIPModel.

Both models get the same widths, depths, heads, image size, patch size, vocabulary, sequence length and batch;
MedVL runs with `fusion_type="none"` and only the contrastive (ITC) loss, CLIPModel with `return_loss=True`, so a
step is the same work: both towers forward, the CLIP loss, backward. Timed iterations alternate between the two
models in one process, so background load on the machine hits both alike; wall and process CPU time are both
recorded (CPU time is steadier on a shared machine). Peak memory is measured in a fresh child process per model
(peak RSS during two steps minus RSS of the built model and inputs).

    python benchmarks/bench_model_step.py                  # defaults below: a few minutes on 2 idle cores
    python benchmarks/bench_model_step.py --profile        # also print the top operators of one step of each

Default size: ViT-S/16 widths (384, 6 heads) at 224 px with 6 vision and 6 text layers, batch 16, 64 tokens.
ViT-B/16 at batch 16 takes ~30-45 s a step on a 2-core machine, too slow for a few-minute run; pass
`--vision-width 768 --vision-heads 12 --vision-depth 12 ...` to measure it where there are more cores.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
import transformers
from tqdm import tqdm
from transformers import CLIPConfig, CLIPModel

from machine_record import cpu_model, load_average, machine, versions, write_json
from modeling_medvl import MedVLConfig, MedVLForPreTraining

MODELS = ("medvl", "clip")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "model_step_cpu.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--vision-width", type=int, default=384)
    parser.add_argument("--vision-depth", type=int, default=6)
    parser.add_argument("--vision-heads", type=int, default=6)
    parser.add_argument("--text-width", type=int, default=384)
    parser.add_argument("--text-depth", type=int, default=6)
    parser.add_argument("--text-heads", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--iters", type=int, default=6, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators per model")
    parser.add_argument("--skip-memory", action="store_true", help="skip the child-process memory measurement")
    # Internal: run in a child process to measure one model's peak memory, print it as JSON.
    parser.add_argument("--memory-probe", choices=MODELS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_medvl(args) -> MedVLForPreTraining:
    config = MedVLConfig(
        vision_config={
            "backbone": "vit_small_patch16_224",
            "backbone_kwargs": {
                "embed_dim": args.vision_width, "depth": args.vision_depth,
                "num_heads": args.vision_heads, "patch_size": args.patch_size,
            },
            "image_size": args.image_size,
        },
        text_config={
            "vocab_size": args.vocab_size, "hidden_size": args.text_width, "num_hidden_layers": args.text_depth,
            "num_attention_heads": args.text_heads, "intermediate_size": 4 * args.text_width,
            "max_position_embeddings": max(args.seq_len, 77),
            # CLIP's text tower is causal and has no dropout: match it so the work is the same.
            "is_causal": True, "mask_token_id": None,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        },
        projection_dim=args.projection_dim,
        fusion_type="none",
        itc_weight=1.0, mlm_weight=0.0, itm_weight=0.0,
    )
    return MedVLForPreTraining(config)


def build_clip(args) -> CLIPModel:
    config = CLIPConfig(
        vision_config={
            "hidden_size": args.vision_width, "num_hidden_layers": args.vision_depth,
            "num_attention_heads": args.vision_heads, "intermediate_size": 4 * args.vision_width,
            "image_size": args.image_size, "patch_size": args.patch_size,
        },
        text_config={
            "vocab_size": args.vocab_size, "hidden_size": args.text_width, "num_hidden_layers": args.text_depth,
            "num_attention_heads": args.text_heads, "intermediate_size": 4 * args.text_width,
            "max_position_embeddings": max(args.seq_len, 77),
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        },
        projection_dim=args.projection_dim,
    )
    return CLIPModel(config)


def make_batch(args) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, args.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    input_ids[:, -1] = 2  # end-of-text last, where CLIP pools
    return {
        "pixel_values": torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Both models take the same inputs and return the contrastive loss with `return_loss=True`."""
    model(**batch, return_loss=True).loss.backward()
    model.zero_grad(set_to_none=True)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(args) -> dict:
    """In a fresh process: peak RSS of two training steps over the resting model and inputs (MiB)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (build_medvl if args.memory_probe == "medvl" else build_clip)(args).train()
    batch = make_batch(args)
    resting = current_rss_bytes()
    for _ in range(2):
        # Gradients stay allocated between steps in a real loop: keep them, as an optimizer would.
        loss = model(**batch, return_loss=True).loss
        loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "resting_rss_mib": resting / 2**20,
        "peak_rss_mib": peak / 2**20,
        "step_peak_delta_mib": (peak - resting) / 2**20,
    }


def measure_memory(args, name: str) -> dict:
    command = [sys.executable, __file__, "--memory-probe", name] + [
        arg for arg in sys.argv[1:] if arg not in ("--profile", "--skip-memory")
    ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def profile_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], row_limit: int = 15) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        train_step(model, batch)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return {}
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"medvl": build_medvl(args).train(), "clip": build_clip(args).train()}
    batch = make_batch(args)
    load_before = load_average()
    wall = {name: [] for name in MODELS}
    cpu = {name: [] for name in MODELS}
    with tqdm(total=len(MODELS) * (args.warmup + args.iters), desc="training steps") as progress:
        for iteration in range(args.warmup + args.iters):
            for name in MODELS:  # alternate, so load from elsewhere on the machine hits both models alike
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                train_step(models[name], batch)
                if iteration >= args.warmup:
                    wall[name].append(time.perf_counter() - wall_start)
                    cpu[name].append(time.process_time() - cpu_start)
                progress.update()
    load_after = load_average()
    results = {
        name: {
            "median_step_s": statistics.median(wall[name]),
            "median_step_cpu_s": statistics.median(cpu[name]),
            "step_times_s": wall[name],
            "step_cpu_times_s": cpu[name],
            "parameters": sum(p.numel() for p in models[name].parameters()),
        }
        for name in MODELS
    }
    if args.profile:
        for name in MODELS:
            print(f"\n== {name}: top operators of one training step (self CPU time) ==")
            print(profile_step(models[name], batch))
    del models
    if not args.skip_memory:
        for name in MODELS:
            results[name].update(measure_memory(args, name))
    report = {
        "benchmark": "forward+backward step, dual encoder + contrastive loss",
        "device": "cpu",
        "torch_threads": args.threads,
        "cpu": cpu_model(),
        # Other work on the machine slows both models; the interleaved rounds and CPU-time ratio temper it.
        "load_average_1min_before_after": [load_before, load_after],
        "versions": versions(torch, transformers, timm),
        "size": {key: getattr(args, key) for key in (
            "batch_size", "image_size", "patch_size", "vision_width", "vision_depth", "vision_heads",
            "text_width", "text_depth", "text_heads", "seq_len", "vocab_size", "projection_dim")},
        "warmup_steps": args.warmup,
        "timed_steps": args.iters,
        "medvl": results["medvl"],
        "clip": results["clip"],
        "time_ratio_medvl_over_clip": results["medvl"]["median_step_s"] / results["clip"]["median_step_s"],
        "cpu_time_ratio_medvl_over_clip": results["medvl"]["median_step_cpu_s"] / results["clip"]["median_step_cpu_s"],
        # Each MedVL step against the CLIP step right after it: robust to load that drifts over the run.
        "median_paired_time_ratio": statistics.median(m / c for m, c in zip(wall["medvl"], wall["clip"])),
    }
    if not args.skip_memory:
        report["memory_ratio_medvl_over_clip"] = (
            results["medvl"]["step_peak_delta_mib"] / results["clip"]["step_peak_delta_mib"]
        )
    report["machine"] = machine(load_at_start=load_before)
    write_json(args.output, report)
    print(f"\nMedVL (fusion none, ITC) vs CLIPModel, batch {args.batch_size}, {args.image_size} px, "
          f"{args.threads} threads, load average {load_before:.1f} -> {load_after:.1f}:")
    for name in MODELS:
        result = results[name]
        line = (f"  {name:6s} median step {result['median_step_s']:.2f} s wall, {result['median_step_cpu_s']:.2f} s "
                f"CPU, {result['parameters'] / 1e6:.1f}M params")
        if not args.skip_memory:
            line += f", step peak RSS +{result['step_peak_delta_mib']:.0f} MiB"
        print(line)
    print(f"  MedVL / CLIP: time {report['time_ratio_medvl_over_clip']:.2f} "
          f"(paired {report['median_paired_time_ratio']:.2f}), CPU time {report['cpu_time_ratio_medvl_over_clip']:.2f}")
    if not args.skip_memory:
        print(f"  memory ratio MedVL / CLIP: {report['memory_ratio_medvl_over_clip']:.2f}")
    print(f"  written to {args.output}")
    return report

if __name__ == "__main__":
    main()
