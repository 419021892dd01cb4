"""`medvl data`: generate SynthCXR in the real data sets' layouts, and preview data sets.

medvl data synth --out data/synthcxr --n 5000 --size 512 --seed 0
medvl data preview --data data/synthcxr --out preview.png --n 16
medvl data preview --out preview.png --n 16          # generated on the fly
"""

from pathlib import Path

from train.user_errors import UserError, at_least


def _parse_mix(text):
    """ "normal=0.4,pleural_effusion=0.2" -> {"normal": 0.4, "pleural_effusion": 0.2}."""
    mix = {}
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        try:
            value = float(weight) if sep else -1.0
        except ValueError:
            value = -1.0
        if value < 0:
            raise UserError(f"--mix {text!r}: items look like kind=weight with a weight >= 0, got {item!r} "
                            "(e.g. normal=0.4,pleural_effusion=0.6)")
        mix[name.strip()] = value
    from processing.synthcxr import FINDING_KINDS

    unknown = sorted(set(mix) - {"normal", *FINDING_KINDS})
    if unknown:
        raise UserError(f"--mix {text!r}: unknown kinds {unknown} (use normal or {', '.join(FINDING_KINDS)})")
    if sum(mix.values()) <= 0:
        raise UserError(f"--mix {text!r}: the weights sum to 0 (give at least one positive weight)")
    return mix


def _parse_split(text):
    from processing.synthcxr.generator import check_split_fractions

    try:
        items = [item.partition("=") for item in text.split(",")]
        if not all(equals for _, equals, _ in items):
            raise ValueError("items look like split=share")
        return check_split_fractions([(name.strip(), float(share)) for name, _, share in items])
    except ValueError as error:
        raise UserError(f"--split {text!r}: {error} (e.g. train=0.7,validate=0.1,test=0.2)") from None


def _generation_options(args):
    options = {"max_findings": args.max_findings, "uncertain_rate": args.uncertain_rate}
    if args.mix:
        options["mix"] = _parse_mix(args.mix)
    if getattr(args, "split", None):
        options["split_fractions"] = _parse_split(args.split)
    return options


def _check_output(path, folder: bool):
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file (give a folder path, new or existing)")
    if not folder and path.is_dir():
        raise UserError(f"--out {path} is a folder (give a .png file path)")


def run_synth(args):
    from processing.synthcxr import write_synthcxr

    _check_output(args.out, folder=True)
    folders = write_synthcxr(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        layouts=tuple(args.layouts),
        gzip_tables=args.gzip_tables,
        num_workers=args.workers,
        **_generation_options(args),
    )
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    print(f"ground truth: {Path(args.out) / 'synthcxr.jsonl'}")
    return 0


def run_preview(args):
    from processing.synthcxr.preview import contact_sheet, dataset_samples, synthetic_samples

    _check_output(args.out, folder=False)
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder (a SynthCXR output, MIMIC-CXR-JPG or Open-I folder)")
    if args.data:
        samples = dataset_samples(args.data, args.n)
    else:
        samples = synthetic_samples(args.n, size=args.size, seed=args.seed, **_generation_options(args))
    sheet = contact_sheet(samples, columns=args.columns, tile=args.tile)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
    return 0


def _add_generation_arguments(parser):
    parser.add_argument("--size", type=at_least(8), default=512, help="image side in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    parser.add_argument(
        "--mix", default=None, help="study mix, e.g. 'normal=0.4,pleural_effusion=0.3,pneumothorax=0.3'"
    )
    parser.add_argument("--max-findings", type=at_least(0), default=2, help="most abnormal kinds per study (default 2)")
    parser.add_argument(
        "--uncertain-rate", type=at_least(0.0, float), default=0.1, help="fraction of findings reported with hedging (CheXpert -1)"
    )


def register(parser):
    from processing.synthcxr.writers import LAYOUTS

    commands = parser.add_subparsers(dest="command", metavar="{synth,preview}")
    synth = commands.add_parser("synth", help="write SynthCXR in the MIMIC-CXR-JPG, Open-I and VQA-RAD layouts")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n", type=at_least(1), required=True, help="number of studies")
    _add_generation_arguments(synth)
    synth.add_argument(
        "--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS), help="layouts to write (default all)"
    )
    synth.add_argument(
        "--gzip-tables", action="store_true", help="write the MIMIC tables as .csv.gz, as PhysioNet ships them"
    )
    synth.add_argument(
        "--split", default=None, help="shares of the official splits (default train=0.9,validate=0.05,test=0.05)"
    )
    synth.add_argument("--workers", type=at_least(0), default=0, help="processes rendering images (default 0: this one)")
    synth.set_defaults(func=run_synth)

    preview = commands.add_parser("preview", help="contact sheet PNG of images with their reports")
    preview.add_argument(
        "--data", default=None, help="a SynthCXR output, MIMIC-CXR-JPG or Open-I folder (default: generate on the fly)"
    )
    preview.add_argument("--out", required=True, help="PNG to write")
    preview.add_argument("--n", type=at_least(1), default=16, help="number of samples (default 16)")
    preview.add_argument("--columns", type=at_least(1), default=4)
    preview.add_argument("--tile", type=at_least(8), default=256, help="image tile side in the sheet (default 256)")
    _add_generation_arguments(preview)
    preview.set_defaults(func=run_preview)
