"""`medvl tokenizer train`: train the domain BPE tokenizer on report text.

Inputs (one or more `--input`, mixed freely):
  - a `.jsonl` file: one JSON object per line, the report in `--field` (default "report");
  - a `.csv` file: the report in column `--field`;
  - a `.txt` file: one report per line;
  - a directory: every `*.txt` file below it is one report (MIMIC-CXR's `files/` layout).

    medvl tokenizer train --input reports.jsonl --field report --vocab-size 30522 --style bert --out tok/
"""

import csv
import json
from pathlib import Path

from train.user_errors import report


def read_reports(paths, field="report"):
    """Yield report strings from the inputs above; a malformed line raises ValueError naming the
    file and line."""
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*.txt")):
                yield file.read_text(encoding="utf-8", errors="replace")
        elif not path.is_file():
            raise ValueError(f"input {path} does not exist")
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                    if not isinstance(row, dict) or field not in row:
                        raise ValueError(f"{path}:{number}: no field {field!r}")
                    yield row[field]
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                if field not in (reader.fieldnames or []):
                    raise ValueError(f"{path}: no column {field!r} (columns: {reader.fieldnames})")
                for row in reader:
                    yield row[field]
        else:
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield line.rstrip("\n")


def run_train(args):
    missing = [path for path in args.input if not Path(path).exists()]
    if missing:
        return report(f"input not found: {', '.join(missing)} (check the --input paths)")
    from tqdm.auto import tqdm

    from processing.clinical_text_medvl import ClinicalTextNormalizer
    from processing.tokenizer_training import train_clinical_tokenizer
    normalizer = None
    if not args.no_normalize:
        normalizer = ClinicalTextNormalizer(
            extract_sections=not args.keep_all_sections,
            deidentify=not args.no_deidentify,
            expand_abbreviations=not args.no_expand_abbreviations,
            standardize_terms=not args.no_standardize_terms,
        )
    reports = tqdm(read_reports(args.input, args.field), desc="reports", unit=" reports", disable=args.quiet)
    try:
        tokenizer = train_clinical_tokenizer(
            reports,
            vocab_size=args.vocab_size,
            style=args.style,
            normalizer=normalizer,
            max_length=args.max_length,
            min_frequency=args.min_frequency,
            skip_invalid=args.skip_invalid,
            num_proc=args.num_proc,
        )
    except ValueError as error:  # a malformed input line, an invalid option value
        return report(error)
    out = Path(args.out)
    tokenizer.save_pretrained(out)
    if normalizer is not None:
        # The tokenizer expects text normalised the same way: record how.
        (out / "clinical_text_normalizer.json").write_text(json.dumps(normalizer.to_dict(), indent=2) + "\n")
    if not args.quiet:
        print(f"saved a {len(tokenizer)}-token {args.style}-style tokenizer to {out}")
    return 0


def register(parser):
    commands = parser.add_subparsers(dest="command", metavar="{train}")
    train = commands.add_parser("train", help="train a byte-level BPE tokenizer on clinical reports")
    train.add_argument("--input", nargs="+", required=True, help=".jsonl, .csv, .txt (one per line) or a directory of .txt")
    train.add_argument("--field", default="report", help="JSON field / CSV column holding the report")
    train.add_argument("--out", required=True, help="output folder (save_pretrained)")
    train.add_argument("--vocab-size", type=int, default=30522, help="target vocabulary size (49408 for CLIP-style)")
    train.add_argument("--style", choices=("bert", "clip"), default="bert", help="special-token layout")
    train.add_argument("--max-length", type=int, default=256, help="model_max_length (truncation length)")
    train.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    train.add_argument("--no-normalize", action="store_true", help="train on the raw text")
    train.add_argument("--keep-all-sections", action="store_true", help="do not extract FINDINGS/IMPRESSION")
    train.add_argument("--no-deidentify", action="store_true", help="skip de-identification")
    train.add_argument("--no-expand-abbreviations", action="store_true", help="skip abbreviation expansion")
    train.add_argument("--no-standardize-terms", action="store_true", help="skip terminology standardisation")
    train.add_argument("--num-proc", type=int, default=1, help="processes normalising the reports")
    train.add_argument("--skip-invalid", action="store_true", help="skip empty/non-string reports with a warning")
    train.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    train.set_defaults(func=run_train)
