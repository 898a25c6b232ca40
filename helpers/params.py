"""Checks for notebook parameters, run in the cell after `parameters`, before any work.

papermill passes `-p flag false` as the *string* "false" (only `True`/`False` become bools), so a
bare truthiness test would read it as True. Every check names the parameter and what it got.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence


class ParameterError(ValueError):
    """A notebook or function parameter is out of range or of the wrong type."""


def _fail(name: str, value: Any, expected: str) -> None:
    raise ParameterError(f"parameter {name!r}: expected {expected}, got {value!r}")


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    hint = " (papermill: pass -p NAME True / False, capitalised, or -y 'NAME: false')" \
        if isinstance(value, str) else ""
    _fail(name, value, "True or False" + hint)


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        _fail(name, value, "an integer")
    if minimum is not None and value < minimum:
        _fail(name, value, f"an integer >= {minimum}")
    if maximum is not None and value > maximum:
        _fail(name, value, f"an integer <= {maximum}")
    return int(value)


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real in [low, high]; `low_open` / `high_open` exclude the ends."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        _fail(name, value, "a finite number")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        _fail(name, value, f"a number in {left}{'-inf' if low is None else low}, "
                           f"{'inf' if high is None else high}{right}")
    return float(value)


def positive(name: str, value: Any) -> float:
    return number(name, value, low=0.0, low_open=True)


def sizes(name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """A non-empty list of integers >= minimum (hidden sizes, batch sizes)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        _fail(name, value, f"a non-empty list of integers >= {minimum}")
    return tuple(integer(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))


def numbers(name: str, value: Any, **bounds: Any) -> tuple[float, ...]:
    """A non-empty list of finite numbers, each checked as `number(..., **bounds)`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        _fail(name, value, "a non-empty list of numbers")
    return tuple(number(f"{name}[{i}]", v, **bounds) for i, v in enumerate(value))


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        _fail(name, value, "one of " + ", ".join(repr(o) for o in options))
    return value
