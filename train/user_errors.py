"""User errors in one line: a mistake the user can fix prints `error: <what> (<how to fix>)` on stderr, once (rank 0
under `accelerate launch`), and exits with status 2; `--debug` (anywhere on the command line) or `MEDVL_DEBUG=1`
shows the traceback instead. Anything that is not a `UserError` is a bug and keeps its traceback.

Raise `UserError` where user input is validated (not around whole calls, so that a ValueError from a bug deep inside
still shows where it came from); every entry point runs through `run_main`:

    if __name__ == "__main__":
        run_main(main)
"""

import argparse
import contextlib
import os
import sys

EXIT_USER_ERROR = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "MEDVL_DEBUG"


class UserError(ValueError):
    """A mistake in the command line, a config file or a path that the user can fix; the message says what and how."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the user gave does not exist (still a FileNotFoundError for callers that catch one)."""


class UserErrorExit(SystemExit):
    """Raised by `run_main` after the line is printed: exit status 2; str() is the message."""

    def __init__(self, message: str):
        super().__init__(EXIT_USER_ERROR)
        self.message = message

    def __str__(self):
        return self.message


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes (unknown option, bad value or choice, missing argument) are `UserError`s, not usage
    text; sub-parsers made with `add_subparsers` inherit it."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


@contextlib.contextmanager
def as_user_errors():
    """Re-raise ValueError / FileNotFoundError from validators that are not ours (they name the value) as `UserError`
    / `MissingPathError`; only around argument checks, never around training or model code."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as error:
        raise MissingPathError(str(error)) from error
    except ValueError as error:
        raise UserError(str(error)) from error


def at_least(minimum, kind=int):
    """An argparse `type` accepting a `kind` number >= minimum (`--n -5` -> "argument --n: -5 is not >= 1")."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not >= {minimum}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def raise_parse_errors_as_user_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The same for an existing parser instance (HfArgumentParser)."""

    def error(message):
        raise UserError(f"{message} (see --help)")

    parser.error = error
    return parser


def debug_enabled(argv=()) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_main_rank() -> bool:
    """Rank 0 of a launched job (RANK is set by accelerate / torchrun), or a lone process."""
    return os.environ.get("RANK", "0") == "0"


def one_line(error) -> str:
    return " ".join(str(error).split())


def report(error) -> int:
    """Print `error: <message>` once (rank 0) and return the user-error exit status."""
    if is_main_rank():
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_main(main, argv=None):
    """Call `main(argv)` (argv: sys.argv[1:] without `--debug`); a `UserError` is reported in one line and ends the
    process with status 2 (`UserErrorExit`), unless debugging. Returns main's result; a script's `__main__` block
    calls `run_main(main)` and the exit status is 0 unless main returns an int."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [item for item in argv if item != DEBUG_FLAG]
    if debug:
        os.environ[DEBUG_ENV] = "1"  # and for the processes this one starts (medvl launch)
    try:
        return main(argv)
    except UserError as error:
        if debug:
            raise
        report(error)
        raise UserErrorExit(one_line(error)) from None


__all__ = ["ArgumentParser", "EXIT_USER_ERROR", "MissingPathError", "as_user_errors", "at_least", "UserError", "UserErrorExit", "debug_enabled", "is_main_rank",
           "raise_parse_errors_as_user_errors", "report", "run_main"]
