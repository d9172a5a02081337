"""Argument types shared by the subcommands: each parses text with the checks of :mod:`gamornet.core.validation`.

A bad value ends in argparse's usage error carrying the library's message
(the argument's name and ``Received: ...``), before anything runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from gamornet.core.network import BOOL_PRESETS
from gamornet.core.validation import parse_input_shape

__all__ = ["argument_type", "input_shape", "int_at_least", "number", "bools", "hdu", "add_grid_arguments"]


def argument_type(check: Callable[[str], object]) -> Callable[[str], object]:
    """Wrap a checker that raises ValueError (with its 'Received: ...' message) as an argparse type."""

    def convert(text: str):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _input_shape(text: str):
    return parse_input_shape(text, "input_shape")


#: ``SDSS``, ``CANDELS`` (any case), ``H,W,C`` or ``HxWxC``.
input_shape = argument_type(_input_shape)


def int_at_least(name: str, minimum: int) -> Callable[[str], int]:
    """An integer ``>= minimum``; errors name ``name``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={text!r}")
        return value

    return argument_type(check)


def number(name: str, low: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """A finite number (``>= low``, or ``> low`` with ``low_open``); errors name ``name``."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
        if bad:
            bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
            raise ValueError(f"`{name}` must be a finite number{bound}. Received: {name}={text!r}")
        return value

    return argument_type(check)


def parse_bools(text: str, name: str):
    """A preset name, ``all`` (8 x True), or 8 comma-separated true/false (or 1/0) values."""
    if text == "all":
        return [True] * 8
    if text in BOOL_PRESETS:
        return text
    words = [w.strip().lower() for w in text.split(",")]
    truth = {"1": True, "true": True, "t": True, "0": False, "false": False, "f": False}
    if len(words) != 8 or any(w not in truth for w in words):
        raise ValueError(f"`{name}` must be a preset ({', '.join(sorted(BOOL_PRESETS))}), 'all' or 8 comma-separated "
                         f"true/false values. Received: {name}={text!r}")
    return [truth[w] for w in words]


def bools(name: str) -> Callable[[str], object]:
    """The argparse type of :func:`parse_bools`."""
    return argument_type(lambda text: parse_bools(text, name))


def hdu(text: str):
    """A FITS HDU: its number, or its EXTNAME."""
    return int(text) if text.isdigit() else text


def add_grid_arguments(parser, survey_help: str, of: str) -> None:
    """The grid and catalogue-column options shared by ``gamornet cutout`` and ``gamornet predict --catalog``.

    ``--survey``, ``--pixel-scale``, ``--size``, ``--ra-column``,
    ``--dec-column``, ``--id-column``; ``survey_help`` says what ``--survey``
    is for, ``of`` names what the grid is of (in the help texts).
    """
    parser.add_argument("--survey", type=str.upper, choices=("SDSS", "CANDELS"),
                        help=f"{survey_help}: SDSS (167x167 at 0.396\"/px), CANDELS (83x83 at 0.06\"/px)")
    parser.add_argument("--pixel-scale", type=number("pixel_scale", low=0, low_open=True), metavar="ARCSEC",
                        help=f"arcsec per pixel of {of} (replaces the scale the grid would have)")
    parser.add_argument("--size", type=int_at_least("size", 1), metavar="N", help=f"pixels on a side of {of}")
    parser.add_argument("--ra-column", metavar="NAME", help="RA column (default: found by name, e.g. ra, RAJ2000)")
    parser.add_argument("--dec-column", metavar="NAME", help="Dec column (default: found by name, e.g. dec, DEJ2000)")
    parser.add_argument("--id-column", metavar="NAME", help="id column (default: found by name, e.g. id, objid; "
                        "else the row number)")
