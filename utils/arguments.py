"""argparse value types that refuse a bad option value with one usage line (exit status 2)
naming the value and what is accepted, before a command does anything.

    parser.add_argument("--workers", type=positive_int)
    parser.add_argument("--dataset", type=checked(readers.dataset_key))
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (1, 2, 3, ...)")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 or more")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (e.g. seconds)."""
    value = _number(text)
    if not 0.0 <= value < float("inf"):  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"{value} is not a finite number >= 0")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def url(text: str) -> str:
    """An http(s):// (or file://) URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file"
                                                         and not parts.netloc):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s):// URL (e.g. https://dataverse.harvard.edu)")
    return text


def checked(convert: Callable[[str], Any], name: str | None = None) -> Callable[[str], Any]:
    """An argparse type from a function that normalises a value or raises ValueError naming
    the accepted values (e.g. readers.dataset_key, backbones.get_backbone)."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, KeyError) as error:
            raise argparse.ArgumentTypeError(str(error).strip("'\"")) from None

    parse.__name__ = name or getattr(convert, "__name__", "value")
    return parse


class Fractions(argparse.Action):
    """Three fractions (train, val, test): non-negative, summing to 1, train > 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Sequence[float] | None, option_string: str | None = None) -> None:
        fractions = [float(v) for v in values or ()]
        if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 \
                or abs(sum(fractions) - 1.0) > 1e-6:
            raise argparse.ArgumentError(
                self, f"{' '.join(f'{f:g}' for f in fractions)} are not three non-negative "
                      "fractions (train, val, test) summing to 1 with train > 0, "
                      "e.g. 0.7 0.15 0.15")
        setattr(namespace, self.dest, fractions)
