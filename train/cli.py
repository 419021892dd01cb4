"""The `medvl` console script. Each command group lives in its own module with a
`register(subparsers)` function, imported only when that group is named."""

import importlib
import sys

from train.user_errors import DEBUG_FLAG, ArgumentParser, run_main

COMMAND_GROUPS = {
    "data": ("train.cli_data", "generate SynthCXR, preview data sets"),
    "tokenizer": ("train.cli_tokenizer", "train the domain BPE tokenizer"),
    "convert": ("train.cli_convert", "convert CLIP / open_clip / timm + BERT weights into a MedVL folder"),
    "export": ("train.cli_export", "write a Hub-ready folder (card, Space) from a checkpoint"),
    "push": ("train.cli_export", "upload an exported folder to the Hub (--dry-run lists it)"),
}


def build_parser(group=None):
    parser = ArgumentParser(prog="medvl", description="MedVL: medical vision-language models.",
                            epilog=f"A mistake in the arguments prints one line, `error: ...`, and exits with status 2; "
                                   f"{DEBUG_FLAG} (anywhere) or MEDVL_DEBUG=1 shows the traceback.")
    subparsers = parser.add_subparsers(dest="group", metavar="{" + ",".join(COMMAND_GROUPS) + "}")
    for name, (module, help_text) in COMMAND_GROUPS.items():
        if name == group:
            importlib.import_module(module).register(subparsers.add_parser(name, help=help_text))
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def dispatch(argv):
    group = argv[0] if argv and argv[0] in COMMAND_GROUPS else None
    args = build_parser(group).parse_args(argv)
    if args.group is None or not hasattr(args, "func"):
        build_parser(group).print_help()
        return 2
    return args.func(args) or 0


def main(argv=None):
    """The console script: `dispatch` with user errors in one line (status 2)."""
    return run_main(dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
