"""The `medvl` console script. Each command group lives in its own module with a
`register(subparsers)` function, imported only when that group is named."""

import argparse
import importlib
import sys

COMMAND_GROUPS = {
    "data": ("train.cli_data", "generate SynthCXR, preview data sets"),
    "tokenizer": ("train.cli_tokenizer", "train the domain BPE tokenizer"),
    "convert": ("train.cli_convert", "convert CLIP / open_clip / timm + BERT weights into a MedVL folder"),
    "export": ("train.cli_export", "write a Hub-ready folder (card, Space) from a checkpoint"),
    "push": ("train.cli_export", "upload an exported folder to the Hub (--dry-run lists it)"),
}


def build_parser(group=None):
    parser = argparse.ArgumentParser(prog="medvl", description="MedVL: medical vision-language models.")
    subparsers = parser.add_subparsers(dest="group", metavar="{" + ",".join(COMMAND_GROUPS) + "}")
    for name, (module, help_text) in COMMAND_GROUPS.items():
        if name == group:
            importlib.import_module(module).register(subparsers.add_parser(name, help=help_text))
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    group = argv[0] if argv and argv[0] in COMMAND_GROUPS else None
    args = build_parser(group).parse_args(argv)
    if args.group is None or not hasattr(args, "func"):
        build_parser(group).print_help()
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
