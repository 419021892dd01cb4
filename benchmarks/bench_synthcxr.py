"""SynthCXR images per second at 64, 256 and 512 px: generation alone (image, report, labels,
questions), generation with writing the MIMIC-CXR-JPG layout (JPEG files, report files,
tables), and in parallel processes; against the peer a training loop would otherwise use:
decoding the same images from JPEG files on disk with PIL, in the same run.

    python benchmarks/bench_synthcxr.py --n 200
writes benchmarks/results/synthcxr.json.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from machine_record import load_average, machine, write_json
from processing.synthcxr import generate_synthcxr, write_synthcxr

RESULTS = Path(__file__).resolve().parent / "results"


def _rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def _timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def _cpu_timed(function):
    # CPU seconds of this process: on a shared, loaded machine wall time also counts waiting.
    start = time.process_time()
    function()
    return time.process_time() - start


def bench_size(size, n, workers):
    list(generate_synthcxr(2, size=size, seed=1))  # warm caches (pixel grids, imports)
    studies, generate_seconds = _timed(lambda: list(generate_synthcxr(n, size=size, seed=0)))
    generate_cpu_seconds = _cpu_timed(lambda: list(generate_synthcxr(n, size=size, seed=0)))
    _, parallel_seconds = _timed(lambda: list(generate_synthcxr(n, size=size, seed=0, num_workers=workers)))
    with tempfile.TemporaryDirectory() as folder:
        _, write_seconds = _timed(
            lambda: write_synthcxr(folder, n, size=size, seed=0, layouts=("mimic-cxr-jpg",), progress=False)
        )
        jpeg_paths = sorted(Path(folder, "mimic-cxr-jpg", "files").rglob("*.jpg"))
        jpeg_bytes = [p.read_bytes() for p in jpeg_paths]

        def decode():
            for path in jpeg_paths:
                np.asarray(Image.open(path).convert("L"))

        _, decode_seconds = _timed(decode)
        decode_cpu_seconds = _cpu_timed(decode)
    pixels = np.stack([np.asarray(s.image, dtype=np.float32) for s in studies[:32]])
    return {
        "size": size,
        "n": n,
        "generate_images_per_s": _rate(n, generate_seconds),
        "generate_images_per_cpu_s": _rate(n, generate_cpu_seconds),
        "peer_decode_jpg_images_per_cpu_s": _rate(n, decode_cpu_seconds),
        "ratio_generate_vs_decode_cpu": _rate(n, generate_cpu_seconds) / _rate(n, decode_cpu_seconds),
        "generate_parallel_images_per_s": _rate(n, parallel_seconds),
        "parallel_workers": workers,
        "generate_and_write_mimic_jpg_images_per_s": _rate(n, write_seconds),
        "peer_decode_jpg_from_disk_images_per_s": _rate(n, decode_seconds),
        "ratio_generate_vs_decode": _rate(n, generate_seconds) / _rate(n, decode_seconds),
        "mean_jpeg_kib": float(np.mean([len(b) for b in jpeg_bytes]) / 1024),
        "pixel_mean": float(pixels.mean()),
        "pixel_std": float(pixels.std()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="studies per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(RESULTS / "synthcxr.json"))
    args = parser.parse_args(argv)
    load_at_start = load_average()
    results = []
    for size in args.sizes:
        n = args.n if size <= 256 else max(20, args.n // 4)
        result = bench_size(size, n, args.workers)
        results.append(result)
        print(
            f"{size:4d} px: generate {result['generate_images_per_s']:7.1f}/s, "
            f"{args.workers} workers {result['generate_parallel_images_per_s']:7.1f}/s, "
            f"generate+write JPG {result['generate_and_write_mimic_jpg_images_per_s']:7.1f}/s, "
            f"peer (decode JPG) {result['peer_decode_jpg_from_disk_images_per_s']:7.1f}/s, "
            f"ratio {result['ratio_generate_vs_decode']:.3f}; per CPU second: generate "
            f"{result['generate_images_per_cpu_s']:.1f}/s, decode {result['peer_decode_jpg_images_per_cpu_s']:.1f}/s"
        )
    record = {
        "benchmark": "synthcxr",
        "peer": "PIL decoding the same images from JPEG files on disk",
        "machine": machine(PIL, np, load_at_start=load_at_start, cores_key="cpus"),
        "results": results,
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
