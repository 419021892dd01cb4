"""Does pretraining's data pipeline keep up with its step? Image-report pairs per second out of `train/pretrain.py`'s
own loader (JPEG decoding, the clinical processor, the joint augmentation, MLM masking, collation) with
`--num_workers` 0, 1 and 2, beside the training step's own rate at the same setting, in one run.

Two settings on SynthCXR written as JPEG files in the MIMIC-CXR-JPG layout:
- `demo`: `medvl demo`'s pretraining (64 px images, the tiny-convnext preset, batch 64, no augmentation);
- `384px`: 384 px images resized by the processor to the model's 384 px input, with the joint augmentation (the
  paper-sized recipes' input); only the loader is timed here (the step at that size belongs on a GPU).

    python benchmarks/bench_data_loading.py            # a few minutes on 2 cores

Writes benchmarks/results/data_loading.json.
"""

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine_record import load_average, machine, versions, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "data_loading.json"
SETTINGS = {
    "demo": {"size": 64, "image_size": 64, "augment": "false", "time_step": True},
    "384px": {"size": 384, "image_size": 384, "augment": "true", "time_step": False},
}


def write_data(folder: Path, studies: int, size: int) -> Path:
    subprocess.run([sys.executable, "-m", "train.cli", "data", "synth", "--out", str(folder), "--n", str(studies),
                    "--size", str(size), "--layouts", "mimic-cxr-jpg", "--split", "train=1.0,validate=0,test=0"],
                   check=True, cwd=REPO, capture_output=True)
    return folder / "mimic-cxr-jpg"


def pretraining_run(data: Path, setting: dict, workers: int, batch_size: int, output_dir: Path):
    from train.pretrain import PretrainingRun
    from train.run_config import parse_pretrain_args

    args = ["--config", str(REPO / "train/configs/pretrain_tiny_synthcxr.yaml"),
            "--model_overrides", f"vision_config.image_size={setting['image_size']}",
            "--data", f"mimic-cxr:{data}", "--validation_size", "0", "--augment", setting["augment"],
            "--num_workers", str(workers), "--per_device_batch_size", str(batch_size), "--max_steps", "1000",
            "--eval_steps", "0", "--save_steps", "0", "--report_to", "none", "--output_dir", str(output_dir)]
    return PretrainingRun(*parse_pretrain_args(args))


def loader_rate(run, batches: int, batch_size: int) -> float:
    """Pairs per second out of the loader, over `batches` batches after the first (worker start-up excluded)."""
    iterator = run._epoch_batches()
    next(iterator)
    start = time.perf_counter()
    for _ in itertools.islice(iterator, batches):
        pass
    return batches * batch_size / (time.perf_counter() - start)


def step_rate(run, steps: int, batch_size: int) -> float:
    """Pairs per second of the training step alone, on one batch held in memory."""
    micro_batches = next(iter(run._epoch_batches()))
    run._train_step(micro_batches)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run._train_step(micro_batches)
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--studies", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = load_average()
    record = {"benchmark": "pretraining data pipeline: pairs/s out of the loader vs the step",
              "command": "python benchmarks/bench_data_loading.py " + " ".join(argv or []),
              "torch_threads": torch.get_num_threads(), "settings": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.settings:
            setting = SETTINGS[name]
            data = write_data(Path(scratch) / name, args.studies, setting["size"])
            rates = {}
            for workers in args.workers:
                run = pretraining_run(data, setting, workers, args.batch_size, Path(scratch) / f"run-{name}-{workers}")
                rates[f"num_workers={workers}"] = loader_rate(run, args.batches, args.batch_size)
                print(f"{name:6s} loader, num_workers={workers}: {rates[f'num_workers={workers}']:7.1f} pairs/s",
                      flush=True)
            entry = {"image_side_on_disk": setting["size"], "model_image_size": setting["image_size"],
                     "augment": setting["augment"] == "true", "loader_pairs_per_second": rates}
            if setting["time_step"]:
                entry["step_pairs_per_second"] = step_rate(run, 3, args.batch_size)
                print(f"{name:6s} training step alone: {entry['step_pairs_per_second']:7.1f} pairs/s", flush=True)
            record["settings"][name] = entry
    record["versions"] = versions(torch)
    record["machine"] = machine(load_at_start=load_before)
    write_json(args.output, record)
    print(f"written to {args.output}")
    return record


if __name__ == "__main__":
    main()
