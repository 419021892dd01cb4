"""bf16 training-step throughput, model FLOP utilisation (MFU) and the largest batch that fits, on one GPU: MedVL
against open_clip and transformers' CLIPModel of the same tower sizes.

For each size (`vit-b16`: ViT-B/16 at 224 px with CLIP's 12-layer width-512 text tower; `vit-l14-336`: MedVL's
preset, OpenAI CLIP ViT-L/14-336's towers) and contender, a step is what a training loop does per batch: forward
under bf16 autocast, the CLIP loss, backward, AdamW (fused). Contenders: `medvl_itc` (fusion off, the peers'
work), `medvl_full` (ITC + ITM with its cross-attention fusion; MLM where the text tower is bidirectional),
`open_clip`, `hf_clip`.

MFU = the step's FLOPs (torch's FlopCounterMode over one forward and backward) / step time / the bf16 matmul rate
measured on the same GPU in the same run (an 8192-square `torch.mm`), so it needs no datasheet figure. The largest
batch is found for MedVL by doubling until CUDA runs out of memory, with and without gradient checkpointing.

    python benchmarks/bench_gpu_step.py                                   # both sizes; about 5 minutes on an H200
    python benchmarks/bench_gpu_step.py --device cpu --dtype float32 --sizes tiny --batch-size 8 --iters 2 \\
        --no-batch-search                                                 # what the tests run

Writes benchmarks/results/gpu_step.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from machine_record import load_average, machine, versions, write_json
from train.pretrain_setup import enable_activation_checkpointing

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "gpu_step.json"
CONTENDERS = ("medvl_itc", "medvl_full", "open_clip", "hf_clip")
# Tower sizes: vision (timm backbone, width, depth, heads, patch, image size), text (width, depth, heads, vocab).
SIZES = {
    "vit-b16": {"backbone": "vit_base_patch16_224", "vision": (768, 12, 12, 16, 224), "text": (512, 12, 8, 49408),
                "projection_dim": 512, "open_clip": "ViT-B-16"},
    "vit-l14-336": {"backbone": "vit_large_patch14_clip_quickgelu_336", "vision": (1024, 24, 16, 14, 336),
                    "text": (768, 12, 12, 49408), "projection_dim": 768, "open_clip": "ViT-L-14-336"},
    "tiny": {"backbone": "vit_tiny_patch16_224", "vision": (128, 2, 4, 16, 64), "text": (128, 2, 4, 1000),
             "projection_dim": 64, "open_clip": None},
}
TEXT_LENGTH = 77


def build_medvl(size: dict, full: bool):
    from modeling_medvl import MedVLConfig, MedVLForPreTraining

    width, depth, heads, patch, image = size["vision"]
    text_width, text_depth, text_heads, vocab = size["text"]
    config = MedVLConfig(
        vision_config={"backbone": size["backbone"], "image_size": image, "backbone_kwargs": {
            "embed_dim": width, "depth": depth, "num_heads": heads, "patch_size": patch}},
        text_config={"vocab_size": vocab, "hidden_size": text_width, "num_hidden_layers": text_depth,
                     "num_attention_heads": text_heads, "intermediate_size": 4 * text_width,
                     "max_position_embeddings": TEXT_LENGTH, "is_causal": True, "mask_token_id": None,
                     "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                     "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
        projection_dim=size["projection_dim"], fusion_type="cross_attention" if full else "none",
        num_fusion_layers=2, itc_weight=1.0, mlm_weight=0.0, itm_weight=1.0 if full else 0.0,
    )
    model = MedVLForPreTraining(config)
    return model, lambda batch: model(**batch).loss


def build_hf_clip(size: dict):
    from transformers import CLIPConfig, CLIPModel

    width, depth, heads, patch, image = size["vision"]
    text_width, text_depth, text_heads, vocab = size["text"]
    config = CLIPConfig(
        vision_config={"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads,
                       "intermediate_size": 4 * width, "image_size": image, "patch_size": patch},
        text_config={"hidden_size": text_width, "num_hidden_layers": text_depth, "num_attention_heads": text_heads,
                     "intermediate_size": 4 * text_width, "vocab_size": vocab, "max_position_embeddings": TEXT_LENGTH,
                     "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
        projection_dim=size["projection_dim"], attn_implementation="sdpa",
    )
    model = CLIPModel(config)
    return model, lambda batch: model(**batch, return_loss=True).loss


def build_open_clip(size: dict):
    import open_clip
    from open_clip.loss import ClipLoss

    model = open_clip.create_model(size["open_clip"], pretrained=None)
    loss = ClipLoss()

    def forward(batch):
        out = model(batch["pixel_values"], batch["input_ids"])
        return loss(*out[:3]) if isinstance(out, tuple) else loss(out["image_features"], out["text_features"],
                                                                   out["logit_scale"])

    return model, forward


def build(name: str, size: dict):
    if name.startswith("medvl"):
        return build_medvl(size, full=name == "medvl_full")
    return build_open_clip(size) if name == "open_clip" else build_hf_clip(size)


def make_batch(size: dict, batch_size: int, device) -> dict:
    image, vocab = size["vision"][-1], size["text"][-1]
    input_ids = torch.randint(5, vocab - 1, (batch_size, TEXT_LENGTH), device=device)
    input_ids[:, 0], input_ids[:, -1] = 1, 2
    return {"pixel_values": torch.randn(batch_size, 3, image, image, device=device),
            "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, dtype, n: int) -> float:
    """Measured FLOP/s of an n-square matrix multiply in `dtype`: the MFU's denominator."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats = 20 if device.type == "cuda" else 2
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def step_function(model, forward, device, dtype):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(name, size, args, device, dtype) -> dict:
    torch.manual_seed(0)
    model, forward = build(name, size)
    model.to(device).train()
    step = step_function(model, forward, device, dtype)
    batch = make_batch(size, args.batch_size, device)
    for _ in range(args.warmup):
        step(batch)
    synchronize(device)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    median = statistics.median(times)
    result = {"batch_size": args.batch_size, "median_step_s": median, "pairs_per_second": args.batch_size / median,
              "step_times_s": times, "flops_per_step": counter.get_total_flops(),
              "parameters": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, step, batch
    return result


def largest_batch(size, device, dtype, checkpointing: bool, start: int, limit: int) -> int:
    """The largest power-of-two batch (from `start`) whose MedVL ITC step runs without running out of memory."""
    model, forward = build_medvl(size, full=False)
    model.to(device).train()
    if checkpointing:
        enable_activation_checkpointing(model)
    step = step_function(model, forward, device, dtype)
    fits, batch_size = 0, start
    while batch_size <= limit:
        try:
            step(make_batch(size, batch_size, device))
            synchronize(device)
            fits, batch_size = batch_size, batch_size * 2
        except torch.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    del model, step
    return fits


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["vit-b16", "vit-l14-336"], choices=SIZES)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--no-batch-search", action="store_true", help="skip the largest-batch search")
    parser.add_argument("--batch-search-limit", type=int, default=4096)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU: pass --device cpu for a CPU smoke run")
    torch.backends.cuda.matmul.allow_tf32 = True
    load_before = load_average()
    peak = matmul_rate(device, dtype, args.matmul_size)
    record = {"benchmark": "training step on one accelerator: throughput, MFU, largest batch",
              "command": "python benchmarks/bench_gpu_step.py " + " ".join(argv or []),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else args.device,
              "dtype": args.dtype, "measured_matmul_flops_per_second": peak, "sizes": {}}
    for size_name in args.sizes:
        size = SIZES[size_name]
        contenders = [n for n in args.contenders if n != "open_clip" or size["open_clip"]]
        results = {}
        for name in contenders:
            results[name] = measure(name, size, args, device, dtype)
            results[name]["mfu"] = results[name]["flops_per_step"] / results[name]["median_step_s"] / peak
            print(f"{size_name:12s} {name:11s} {results[name]['pairs_per_second']:9.1f} pairs/s  "
                  f"MFU {results[name]['mfu']:.1%}", flush=True)
        entry = {"contenders": results}
        if not args.no_batch_search:
            entry["largest_batch_medvl_itc"] = {
                "without_checkpointing": largest_batch(size, device, dtype, False, args.batch_size,
                                                       args.batch_search_limit),
                "with_checkpointing": largest_batch(size, device, dtype, True, args.batch_size,
                                                    args.batch_search_limit),
            }
            print(f"{size_name:12s} largest MedVL batch: {entry['largest_batch_medvl_itc']}", flush=True)
        record["sizes"][size_name] = entry
    packages = [torch, __import__("transformers"), __import__("timm")]
    if "open_clip" in args.contenders:
        packages.append(__import__("open_clip"))
    record["versions"] = versions(*packages)
    record["machine"] = machine(load_at_start=load_before)
    write_json(args.output, record)
    print(json.dumps({"matmul_tflops": peak / 1e12}), f"\nwritten to {args.output}")
    return record


if __name__ == "__main__":
    main()
