"""Images per second per core: MedVLImageProcessor against transformers' CLIPImageProcessor (the
processor a user of a CLIP-style model would pick) on the same images and the same 384 x 384
output, in the same run; plus MedVL-only sources (16-bit PNG and DICOM files) and the whole
MedVLProcessor (image + report pairs, and reports alone: normalise + tokenize).

Every measurement runs on one thread (`torch.set_num_threads(1)`, `cv2.setNumThreads(1)`), so rates
are per core.

    python benchmarks/bench_image_processor.py --images 64
writes benchmarks/results/image_processor.json.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import torch
import transformers
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

from bench_text_pipeline import synthetic_reports
from machine_record import load_average, machine, write_json
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from processing.tokenizer_training import train_clinical_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 384


def radiograph_like(rng, side, deep):
    """Smooth structure plus noise (compresses like an X-ray, unlike white noise), 8 or 16 bit."""
    coarse = rng.random((side // 64, side // 64))
    smooth = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC), float)
    values = np.clip(smooth / 255.0 + rng.normal(0, 0.03, (side, side)), 0, 1)
    return (values * 65535).astype(np.uint16) if deep else (values * 255).astype(np.uint8)


def write_dicom(path, pixels):
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 32768, 50000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def best_rate(function, n_items, repeats):
    """Items per second of the fastest run (the least disturbed by other load), and all timings."""
    function()  # warm-up: first-call allocations and lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return n_items / min(times), [round(t, 4) for t in times]


def interleaved_rates(cases, n_items, repeats):
    """Like `best_rate` for several cases, taken in rounds (every case once per round) so that
    load from other processes hits all cases alike; by wall clock and by CPU time of this process
    (one thread: the steadier per-core measure on a shared machine)."""
    for run in cases.values():
        run()  # warm-up
    timings, cpu_timings = {name: [] for name in cases}, {name: [] for name in cases}
    for _ in tqdm(range(repeats), desc="rounds over the image cases"):
        for name, run in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            timings[name].append(round(time.perf_counter() - start, 4))
            cpu_timings[name].append(round(time.process_time() - start_cpu, 4))
    rates = {name: round(n_items / min(times), 2) for name, times in timings.items()}
    cpu_rates = {name: round(n_items / min(times), 2) for name, times in cpu_timings.items()}
    return rates, cpu_rates, timings, cpu_timings


def in_batches(processor, items, batch_size, **kwargs):
    def run():
        for start in range(0, len(items), batch_size):
            processor(items[start : start + batch_size], return_tensors="pt", **kwargs)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=1024, help="source images are side x side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--out", default=str(RESULTS / "image_processor.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_at_start = load_average()

    rng = np.random.default_rng(0)
    grey8 = [radiograph_like(rng, args.side, deep=False) for _ in tqdm(range(args.images), desc="8-bit images")]
    grey16 = [radiograph_like(rng, args.side, deep=True) for _ in tqdm(range(args.images), desc="16-bit images")]
    pil8 = [Image.fromarray(a) for a in grey8]

    workdir = Path(tempfile.mkdtemp(prefix="medvl_bench_"))
    png8, png16, dicoms = [], [], []
    for index, (a8, a16) in enumerate(tqdm(list(zip(grey8, grey16)), desc="files")):
        png8.append(str(workdir / f"{index}_8.png"))
        png16.append(str(workdir / f"{index}_16.png"))
        dicoms.append(str(workdir / f"{index}.dcm"))
        Image.fromarray(a8).save(png8[-1])
        Image.fromarray(a16).save(png16[-1])
        write_dicom(dicoms[-1], a16)

    square = {"height": SIZE, "width": SIZE}
    clip = CLIPImageProcessor(size=square, do_center_crop=False)
    clip_pil = CLIPImageProcessorPil(size=square, do_center_crop=False)
    medvl = MedVLImageProcessor(size=SIZE)
    medvl_pad = MedVLImageProcessor(size=SIZE, resize_mode="pad")
    medvl_clahe = MedVLImageProcessor(size=SIZE, do_local_contrast=True)
    n, b, r = args.images, args.batch_size, args.repeats

    cases = {
        "clip_torchvision_pil_8bit (peer)": in_batches(clip, pil8, b),
        "clip_pil_backend_pil_8bit": in_batches(clip_pil, pil8, b),
        "medvl_pil_8bit": in_batches(medvl, pil8, b),
        "medvl_pad_pil_8bit": in_batches(medvl_pad, pil8, b),
        "medvl_clahe_pil_8bit": in_batches(medvl_clahe, pil8, b),
        "clip_torchvision_png_8bit_files (peer)": in_batches(clip, png8, b),
        "medvl_png_8bit_files": in_batches(medvl, png8, b),
        "medvl_png_16bit_files": in_batches(medvl, png16, b),
        "medvl_dicom_16bit_files": in_batches(medvl, dicoms, b),
    }
    rates, cpu_rates, timings, cpu_timings = interleaved_rates(cases, n, r)

    reports = synthetic_reports(args.reports)
    tokenizer = train_clinical_tokenizer(reports, vocab_size=30522)
    processor = MedVLProcessor(image_processor=medvl, tokenizer=tokenizer)
    pair_reports = reports[:n]
    text_rate, text_times = best_rate(
        lambda: [processor(text=reports[s : s + 256]) for s in range(0, len(reports), 256)], len(reports), r
    )
    pair_rate, pair_times = best_rate(
        lambda: [
            processor(images=pil8[s : s + b], text=pair_reports[s : s + b], return_tensors="pt") for s in range(0, n, b)
        ],
        n,
        r,
    )

    def ratios(rates):
        peer = rates["clip_torchvision_pil_8bit (peer)"]
        return {
            "pil_8bit": round(rates["medvl_pil_8bit"] / peer, 3),
            "pil_8bit_pad": round(rates["medvl_pad_pil_8bit"] / peer, 3),
            "pil_8bit_clahe": round(rates["medvl_clahe_pil_8bit"] / peer, 3),
            "png_8bit_files": round(rates["medvl_png_8bit_files"] / rates["clip_torchvision_png_8bit_files (peer)"], 3),
        }

    result = {
        "benchmark": "image_processor",
        "source_images": f"{n} greyscale {args.side}x{args.side} radiograph-like images (smooth structure + noise)",
        "output": f"pixel_values {SIZE}x{SIZE}, batches of {b}",
        "threads": torch.get_num_threads(),
        "images_per_second_per_core": rates,
        "ratio_medvl_to_clip": ratios(rates),
        "images_per_cpu_second": cpu_rates,
        "ratio_medvl_to_clip_cpu": ratios(cpu_rates),
        "processor": {
            "reports_per_second_normalise_plus_tokenize": round(text_rate, 1),
            "image_report_pairs_per_second": round(pair_rate, 2),
            "reports": len(reports),
            "tokenizer_vocab_size": len(tokenizer),
        },
        "seconds_per_run": {**timings, "processor_text": text_times, "processor_pairs": pair_times},
        "cpu_seconds_per_run": cpu_timings,
        "notes": "MedVL resizes grey images on one channel and expands to three afterwards; CLIP converts to RGB "
        "first. MedVL keeps 16-bit and DICOM sources in float32 (no 8-bit quantisation). 16-bit PNG and DICOM "
        "cases have no CLIP counterpart (CLIP would clip them to 8 bits). 8-bit sources are resampled in uint8 by "
        "both. With local contrast on, 8-bit images are equalised by OpenCV's CLAHE in uint8. Cases run in "
        "interleaved rounds; the best round per case is reported (compare ratios within one run: the machine is "
        f"shared). Load average at the start: {load_at_start:.1f}, at the end: {load_average():.1f}.",
        "machine": machine(torch, transformers, pydicom, cv2, load_at_start=load_at_start),
    }
    write_json(args.out, result)
    summary = ("images_per_second_per_core", "ratio_medvl_to_clip", "ratio_medvl_to_clip_cpu", "processor")
    print(json.dumps({key: result[key] for key in summary}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
