"""Argument types for ``argparse``: they turn a bad value into a usage error naming it."""

from __future__ import annotations

import argparse
import codecs

from ..sources import ATTRIBUTE_TYPES

__all__ = [
    "attribute_spec", "non_negative_float", "non_negative_int", "positive_float", "positive_int",
    "text_encoding",
]


def _whole_number(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole_number(text, 1, "at least 1")


def _finite_number(text: str, minimum: float, rule: str, *, inclusive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    # written so that NaN fails too: no comparison with NaN is true
    low_enough = value >= minimum if inclusive else value > minimum
    if not low_enough or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _finite_number(text, 0.0, "a positive number", inclusive=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _finite_number(text, 0.0, "a finite number, 0 or more", inclusive=True)


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    return _whole_number(text, 0, "0 or more")


def attribute_spec(text: str) -> str:
    """``COL`` or ``COL:TYPE`` for ``--attr``: an unknown TYPE is an error naming the known ones.

    The last ``:`` always starts the type, so a column whose name holds a colon is written with
    its type: ``--attr a:b:str``.
    """
    name, colon, kind = text.rpartition(":")
    if not colon:
        name, kind = text, "str"
    if kind not in ATTRIBUTE_TYPES:
        raise argparse.ArgumentTypeError(
            f"unknown type {kind!r} in {text!r}; the types are {', '.join(ATTRIBUTE_TYPES)} "
            "(a column name holding ':' needs its type: 'a:b:str')"
        )
    if not name:
        raise argparse.ArgumentTypeError(f"no column name in {text!r}; expected COL or COL:TYPE")
    return text


def text_encoding(text: str) -> str:
    """A codec name for ``--encoding`` that reads lines as bytes ending in ``\\n``.

    The readers split the input into lines before decoding, which only works when ``\\n`` is the
    byte 0x0A: UTF-16 and UTF-32 are refused here rather than misread later.
    """
    try:
        info = codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r}") from None
    try:
        encoder = info.incrementalencoder()
        encoder.encode("x")  # past a byte order mark, if the codec writes one
        ascii_compatible = encoder.encode("id,x\n") == b"id,x\n"
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise argparse.ArgumentTypeError(
            f"encoding {text!r} is not supported: lines must end in the byte 0x0A (UTF-8, Latin-1, "
            "cp1252 and the like; convert UTF-16/32 files to UTF-8 first)"
        )
    return info.name
