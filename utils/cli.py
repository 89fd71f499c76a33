"""Command-line entry point: `python -m utils <command> --help`.

Each command lives in the module that does the work. A module named in COMMANDS exposes
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their command
runs (or when `--help` lists them), so `python -m utils check` does not import TensorFlow.

Every command gets the same error handling from `main`: a bad option value is an argparse usage
error (exit status 2; give options `choices=` or a type from utils.arguments); an expected
failure (utils.errors.UserError: bad data, a bad option value found later, an unusable model
file, a run folder in use, a diverged run) and a file the operating system refuses (missing,
permission denied, disk full) print one `error: ...` line and exit with status 1; Ctrl-C exits
with status 130. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from utils.errors import UserError

# OSErrors that are the environment's answer about a path, not a bug of ours.
EXPECTED_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOENT", "EACCES", "EPERM", "ENOSPC", "EROFS", "ENOTDIR",
                                      "EISDIR", "EEXIST", "EDQUOT", "ENAMETOOLONG", "ELOOP")
    if hasattr(errno, name))

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("utils.data.check", "validate a dataset folder and print a summary"),
    "split": ("utils.data.splits", "write a lesion-grouped train/val/test (or k-fold) manifest"),
    "download": ("utils.data.download", "download a dataset with resume and checksum verification"),
    "synthetic": (
        "utils.data.synthetic",
        "generate the synthetic dataset in the HAM10000/ISIC layout",
    ),
    "balance": (
        "utils.augmentation.balance",
        "augment the training split offline up to per-class targets",
    ),
    "preprocess": (
        "utils.augmentation.preprocess_dataset",
        "write a preprocessed copy of a dataset (colour constancy, hair removal, field of view)",
    ),
    "train": ("utils.training.train", "train a classifier (two-stage fine-tuning or from scratch)"),
    "evaluate": (
        "utils.evaluation.evaluate",
        "metrics with confidence intervals and plots from predictions",
    ),
    "predict": ("utils.evaluation.predict", "class probabilities for one image or a folder"),
    "compare": ("utils.evaluation.compare", "one table over all runs (CSV and markdown)"),
    "external": (
        "utils.evaluation.external",
        "predict and score a run on an external test set (ISIC 2018 Task 3, ISIC 2019)",
    ),
    "audit": (
        "utils.studies.audit",
        "leakage audit: published protocol vs lesion-grouped protocol",
    ),
    "ood": (
        "utils.studies.ood",
        "unknown lesion types: train with one class held out, score its detection",
    ),
    "reproduce": (
        "utils.studies.reproduce",
        "the end-to-end job: data, split, balance, train, report",
    ),
    "ablate": (
        "utils.studies.ablate",
        "train with and without each preprocessing step; paired differences with CIs",
    ),
    "select-recipe": (
        "utils.studies.recipe_selection",
        "paired screening runs (validation only) behind the budgeted CPU recipe",
    ),
    "headtohead": (
        "utils.studies.headtohead",
        "the paper's backbones trained with one recipe for the same wall clock each",
    ),
}


def build_parser(commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="python -m utils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the command asked for (fast `check`, no TensorFlow import).
    if argv and argv[0] in COMMANDS:
        parser = build_parser({argv[0]: COMMANDS[argv[0]]})
    else:
        parser = build_parser()
    args = parser.parse_args(argv)  # a bad option: usage line and exit status 2
    try:
        return int(args._run(args) or 0)
    except UserError as error:  # expected: the message names the file/value and the fix
        return fail(str(error))
    except OSError as error:
        if error.errno not in EXPECTED_ERRNOS:
            raise
        where = f"{error.filename}: " if error.filename else ""
        return fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume where it can", file=sys.stderr)
        return 130


def fail(message: str) -> int:
    """Print one `error:` line (details, if any, indented below it); exit status 1."""
    print(f"error: {message.strip()}", file=sys.stderr)
    return 1
