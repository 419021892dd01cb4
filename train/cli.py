"""The `medvl` console script. Each command group lives in its own module with a
`register(subparsers)` function, imported only when that group is named."""

import importlib
import os
import signal
import sys

from train.user_errors import DEBUG_FLAG, EXIT_USER_ERROR, ArgumentParser, run_main

COMMAND_GROUPS = {
    "demo": ("train.demo", "everything on SynthCXR in one command: data, tokenizer, pretraining, fine-tuning (three "
                           "tasks), test-split evaluation, export, report.html"),
    "data": ("train.cli_data", "generate SynthCXR, preview data sets"),
    "tokenizer": ("train.cli_tokenizer", "train the domain BPE tokenizer"),
    "convert": ("train.cli_convert", "convert CLIP / open_clip / timm + BERT weights into a MedVL folder"),
    "export": ("train.cli_export", "write a Hub-ready folder (card, Space) from a checkpoint"),
    "push": ("train.cli_export", "upload an exported folder to the Hub (--dry-run lists it)"),
}
LAUNCH_HELP = ("`accelerate launch` (same options) of a training script; a mistake in the script's arguments ends "
               "it with the script's one error line, without accelerate's traceback; SIGTERM or SIGUSR1 reach the "
               "training processes, which checkpoint and stop")
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# The signals torch elastic passes on to the ranks (torchrun's --signals-to-handle, read from PET_SIGNALS_TO_HANDLE):
# its default list lacks SIGUSR1, whose default action kills the launcher and leaves the ranks running.
ELASTIC_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def launch(argv):
    """`medvl launch [accelerate launch options] train/pretrain.py [script options]`: accelerate's launch command in
    this process. When the script stopped on a user error (status 2; rank 0 printed the line) this exits with status 2
    and nothing more, where `accelerate launch` re-raises the child's failure (CalledProcessError, or torch elastic's
    ChildFailedError with its log lines); any other failure keeps accelerate's report.

    SIGTERM or SIGUSR1 (a scheduler's notice of preemption) is passed on to the training processes; the launcher waits
    for them (30 s, or TORCH_ELASTIC_SHUTDOWN_TIMEOUT; a training run finishes its step, checkpoints and stops) and
    exits with status 0 and one line, where accelerate ends with torch elastic's SignalException traceback."""
    import logging
    import subprocess

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if not argv or argv[0] in ("-h", "--help"):
        launch_command_parser().print_help()
        return 0
    elastic_logger = logging.getLogger("torch.distributed.elastic")
    level = elastic_logger.level
    elastic_logger.setLevel(logging.CRITICAL)  # its "failed (exitcode: 2)" lines; a real failure re-raises below
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", ELASTIC_SIGNALS)
    try:
        launch_command(launch_command_parser().parse_args(argv))
    except SignalException as error:
        if error.sigval not in PREEMPTION_SIGNALS:
            raise
        print(f"medvl launch: {error.sigval.name} passed on to the training processes, which have ended (a training "
              "run saves a checkpoint first: continue with --resume_from latest)", file=sys.stderr, flush=True)
        return 0
    except subprocess.CalledProcessError as error:
        if error.returncode != EXIT_USER_ERROR:
            raise
    except ChildFailedError as error:
        if error.get_first_failure()[1].exitcode != EXIT_USER_ERROR:
            raise
    else:
        return 0
    finally:
        elastic_logger.setLevel(level)
    return EXIT_USER_ERROR


def build_parser(group=None):
    parser = ArgumentParser(prog="medvl", description="MedVL: medical vision-language models.",
                            epilog=f"A mistake in the arguments prints one line, `error: ...`, and exits with status 2; "
                                   f"{DEBUG_FLAG} (anywhere) or MEDVL_DEBUG=1 shows the traceback.")
    subparsers = parser.add_subparsers(dest="group", metavar="{" + ",".join([*COMMAND_GROUPS, "launch"]) + "}")
    subparsers.add_parser("launch", help=LAUNCH_HELP)  # dispatched before parsing: the options are accelerate's
    for name, (module, help_text) in COMMAND_GROUPS.items():
        if name == group:
            importlib.import_module(module).register(subparsers.add_parser(name, help=help_text))
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def dispatch(argv):
    if argv and argv[0] == "launch":
        return launch(argv[1:])
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
