"""Training throughput (pairs/s) and peak memory of train/pretrain.py's optimizer step against
open_clip's and transformers' CLIPModel's, at matched size and global batch, on CPU.

A step is what each library's training loop does per global batch: forward both towers, the
CLIP loss, backward, clip the gradient norm at 1.0, AdamW update. Contenders:

- `medvl_itc`: MedVL's step (`ExactAccumulationStep`), fusion off, contrastive loss only: the
  same work as the peers.
- `medvl_itc_accum4`: the same global batch as 4 micro-batches through the exact (cached
  embedding) accumulation: the cost of the extra no-grad pass.
- `medvl_full`: the composite objective (cross-attention fusion, ITC + MLM + ITM).
- `open_clip`: `open_clip.CLIP` built from a config of the same widths/depths + `ClipLoss`.
- `hf_clip`: transformers' `CLIPModel(return_loss=True)` of the same widths/depths.

Timed steps alternate between contenders in one process, so background load hits all alike;
wall time and process CPU time are recorded. Peak memory is measured in a child process per
contender: after one warm-up step the peak-RSS mark is reset, and the figure is the peak RSS over
two more steps minus the RSS before them.

    python benchmarks/bench_pretrain_step.py               # tiny preset sizes, batch 64
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from machine_record import machine, versions, write_json

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "pretrain_step_cpu.json"
CONTENDERS = ("medvl_itc", "medvl_itc_accum4", "medvl_full", "open_clip", "hf_clip")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128, help="both towers")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vision-depth", type=int, default=3)
    parser.add_argument("--text-depth", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--projection-dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--memory-probe", choices=CONTENDERS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_batch(args, with_mlm):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3
    batch = {
        "pixel_values": torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
    }
    if with_mlm:
        labels = torch.full_like(ids, -100)
        picked = torch.rand(ids.shape, generator=generator) < 0.15
        picked[:, 0] = picked[:, -1] = False
        labels[picked] = ids[picked]
        batch["mlm_input_ids"] = ids.masked_fill(picked, 4)
        batch["mlm_labels"] = labels
    return batch


def apply_update(model, optimizer):
    """The update every contender makes after its backward: clip at norm 1.0, AdamW step."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def optimizer_for(model):
    from train.optim import build_optimizer

    return build_optimizer(model, learning_rate=1e-4, weight_decay=0.02)


def build_medvl(args, name):
    from modeling_medvl import MedVLConfig, MedVLForPreTraining, contrastive_loss
    from train.contrastive_accumulation import ExactAccumulationStep

    full = name == "medvl_full"
    config = MedVLConfig.from_preset(
        "tiny",
        vision_config={"image_size": args.image_size, "backbone_kwargs": {
            "embed_dim": args.width, "depth": args.vision_depth, "num_heads": args.heads, "patch_size": args.patch_size}},
        text_config={"vocab_size": args.vocab_size, "hidden_size": args.width, "num_hidden_layers": args.text_depth,
                     "num_attention_heads": args.heads, "intermediate_size": 4 * args.width},
        projection_dim=args.projection_dim,
        fusion_type="cross_attention" if full else "none",
        mlm_weight=1.0 if full else 0.0,
        itm_weight=1.0 if full else 0.0,
    )
    model = MedVLForPreTraining(config).train()
    optimizer = optimizer_for(model)
    accelerator = Accelerator(cpu=True)
    weights = {"itc": config.itc_weight, "mlm": config.mlm_weight, "itm": config.itm_weight}
    step_fn = ExactAccumulationStep(accelerator, contrastive_loss, weights)
    batch = make_batch(args, with_mlm=full)
    parts = 4 if name == "medvl_itc_accum4" else 1
    micro_batches = [{k: v.chunk(parts)[i] for k, v in batch.items()} for i in range(parts)]

    def step():
        step_fn(model, micro_batches)
        apply_update(model, optimizer)

    return model, step


def build_open_clip(args):
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(
        embed_dim=args.projection_dim,
        vision_cfg=CLIPVisionCfg(layers=args.vision_depth, width=args.width, head_width=args.width // args.heads,
                                 patch_size=args.patch_size, image_size=args.image_size, mlp_ratio=4.0),
        text_cfg=CLIPTextCfg(context_length=args.seq_len, vocab_size=args.vocab_size, width=args.width,
                             heads=args.heads, layers=args.text_depth, mlp_ratio=4.0),
        output_dict=True,
    ).train()
    optimizer, loss_fn = optimizer_for(model), ClipLoss()
    batch = make_batch(args, with_mlm=False)

    def step():
        out = model(batch["pixel_values"], batch["input_ids"])
        loss_fn(out["image_features"], out["text_features"], out["logit_scale"]).backward()
        apply_update(model, optimizer)

    return model, step


def build_hf_clip(args):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        vision_config={"hidden_size": args.width, "num_hidden_layers": args.vision_depth,
                       "num_attention_heads": args.heads, "intermediate_size": 4 * args.width,
                       "image_size": args.image_size, "patch_size": args.patch_size},
        text_config={"hidden_size": args.width, "num_hidden_layers": args.text_depth,
                     "num_attention_heads": args.heads, "intermediate_size": 4 * args.width,
                     "vocab_size": args.vocab_size, "max_position_embeddings": args.seq_len,
                     "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3},
        projection_dim=args.projection_dim,
    )
    model = CLIPModel(config).train()
    optimizer = optimizer_for(model)
    batch = make_batch(args, with_mlm=False)

    def step():
        model(**batch, return_loss=True).loss.backward()
        apply_update(model, optimizer)

    return model, step


def build(args, name):
    if name.startswith("medvl"):
        return build_medvl(args, name)
    return build_open_clip(args) if name == "open_clip" else build_hf_clip(args)


def status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(args, name):
    """Steady-state step memory: after one warm-up step (one-time allocator, thread-pool and optimizer
    state growth), reset the peak-RSS mark and take two more steps."""
    model, step = build(args, name)
    step()
    resting = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
    for _ in range(2):
        step()
    peak = status_bytes("VmHWM")
    return {"parameters": sum(p.numel() for p in model.parameters()), "resting_rss_mib": resting / 2**20,
            "peak_rss_mib": peak / 2**20, "step_peak_delta_mib": (peak - resting) / 2**20}


def measure_memory(argv, name):
    command = [sys.executable, __file__, *argv, "--memory-probe", name]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_probe:
        print(json.dumps(memory_probe(args, args.memory_probe)))
        return None
    steps = {name: build(args, name)[1] for name in args.contenders}
    for name, step in steps.items():
        for _ in range(args.warmup):
            step()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    load_before = os.getloadavg()
    for _ in range(args.iters):  # interleaved: background load hits every contender alike
        for name, step in steps.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    results = {
        "benchmark": "pretraining optimizer step (forward, CLIP loss, backward, clip 1.0, AdamW), CPU",
        "command": "python benchmarks/bench_pretrain_step.py " + " ".join(argv),
        "size": {k: v for k, v in vars(args).items() if k not in ("output", "memory_probe", "contenders")},
        "versions": {"python": platform.python_version(),
                     **versions(torch, __import__("open_clip"), __import__("transformers"))},
        "load_average_before_after": [load_before, os.getloadavg()],
        "contenders": {},
    }
    for name in steps:
        median = statistics.median(wall[name])
        results["contenders"][name] = {
            "median_step_s": median, "pairs_per_second": args.batch_size / median,
            "median_cpu_s": statistics.median(cpu[name]), "step_times_s": wall[name],
            **measure_memory(argv, name),
        }
    contenders = results["contenders"]
    if "medvl_itc" in contenders:
        base = contenders["medvl_itc"]
        results["ratios_medvl_itc_over"] = {
            peer: {"throughput": base["pairs_per_second"] / contenders[peer]["pairs_per_second"],
                   "cpu_time": contenders[peer]["median_cpu_s"] / base["median_cpu_s"],
                   "peak_memory_delta": base["step_peak_delta_mib"] / contenders[peer]["step_peak_delta_mib"]}
            for peer in ("open_clip", "hf_clip", "medvl_itc_accum4") if peer in contenders
        }
    results["machine"] = machine(load_at_start=load_before[0])
    write_json(args.output, results)
    for name, values in contenders.items():
        print(f"{name:18s} {values['pairs_per_second']:8.1f} pairs/s  cpu {values['median_cpu_s']:.3f} s/step  "
              f"peak +{values['step_peak_delta_mib']:.0f} MiB")
    return results


if __name__ == "__main__":
    main()
