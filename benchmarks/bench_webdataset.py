"""WebDataset shards read per second by `load_webdataset` (datasets' WebDataset builder underneath), against the
reader it replaced, which parsed the tar members by hand (taken from git history, commit HAND_PARSER_COMMIT), on
the same SynthCXR shards, streamed, with and without the image check; the two alternate round by round.

    python benchmarks/bench_webdataset.py --n 2000 --shards 4
writes benchmarks/results/webdataset_read.json.
"""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets

from machine_record import load_average, machine, write_json
from processing.readers import load_webdataset, write_webdataset
from processing.synthcxr import generate_synthcxr

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parent.parent
HAND_PARSER_COMMIT = "5b8c5adf41431ad7d15612e2838ad53c3deb6157"
HAND_PARSER_PATH = "processing/readers/webdataset_shards.py"


def hand_parser_reader(folder):
    """`load_webdataset` as of HAND_PARSER_COMMIT, imported from its source in git."""
    source = subprocess.run(
        ["git", "show", f"{HAND_PARSER_COMMIT}:{HAND_PARSER_PATH}"],
        cwd=REPOSITORY, check=True, capture_output=True, text=True,
    ).stdout
    path = Path(folder) / "webdataset_hand_parser.py"
    path.write_text(source)
    # A module of processing.readers, so that its relative imports resolve.
    spec = importlib.util.spec_from_file_location("processing.readers.webdataset_hand_parser", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.load_webdataset


def write_shards(folder, n, size, shards):
    features = datasets.Features({"image": datasets.Image(), "report": datasets.Value("string"),
                                  "view": datasets.Value("string")})
    rows = [{"image": s.image, "report": s.report, "view": s.view} for s in generate_synthcxr(n, size=size, seed=0)]
    dataset = datasets.Dataset.from_list(rows, features=features)
    return write_webdataset(dataset, folder, shard_size=-(-n // shards))


def timed_read(reader, shards, check_images):
    start, cpu_start, rows = time.perf_counter(), time.process_time(), 0
    for _ in reader(shards, check_images=check_images):
        rows += 1
    return rows, time.perf_counter() - start, time.process_time() - cpu_start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="SynthCXR samples")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "webdataset_read.json"))
    args = parser.parse_args(argv)
    load_at_start = load_average()
    readers = {"datasets_builder": load_webdataset}
    results = []
    with tempfile.TemporaryDirectory() as folder:
        readers["hand_parser"] = hand_parser_reader(folder)
        shards = write_shards(Path(folder) / "shards", args.n, args.size, args.shards)
        shard_mib = sum(Path(shard).stat().st_size for shard in shards) / 2**20
        for name, reader in readers.items():  # warm: imports, the builder module, page cache
            timed_read(reader, shards[:1], False)
        for check_images in (False, True):
            runs = {name: [] for name in readers}
            for _ in range(args.rounds):
                for name, reader in readers.items():
                    rows, seconds, cpu_seconds = timed_read(reader, shards, check_images)
                    assert rows == args.n, (name, rows)
                    runs[name].append({"rows_per_s": rows / seconds, "rows_per_cpu_s": rows / cpu_seconds})
            result = {"check_images": check_images, "load_average": load_average()}
            for name, measured in runs.items():
                result[f"{name}_rows_per_s"] = [run["rows_per_s"] for run in measured]
                result[f"{name}_rows_per_cpu_s"] = [run["rows_per_cpu_s"] for run in measured]
            for unit in ("rows_per_s", "rows_per_cpu_s"):
                result[f"ratio_builder_vs_hand_parser_{unit}"] = statistics.median(
                    new[unit] / old[unit] for new, old in zip(runs["datasets_builder"], runs["hand_parser"])
                )
            results.append(result)
            print(f"check_images={check_images}: builder {result['datasets_builder_rows_per_s']}, hand parser "
                  f"{result['hand_parser_rows_per_s']} rows/s; median ratio "
                  f"{result['ratio_builder_vs_hand_parser_rows_per_s']:.2f} (per CPU second "
                  f"{result['ratio_builder_vs_hand_parser_rows_per_cpu_s']:.2f})")
    record = {
        "benchmark": "webdataset_read",
        "peer": f"the hand-written tar parser load_webdataset used before (git {HAND_PARSER_COMMIT[:7]})",
        "shards": {"samples": args.n, "shards": args.shards, "image_px": args.size, "mib": round(shard_mib, 1)},
        "machine": machine(datasets, load_at_start=load_at_start, cores_key="cpus"),
        "results": results,
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
