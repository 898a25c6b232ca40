"""Checks for notebook parameters, run in the cell after `parameters`, before any work.

papermill passes `-p flag false` as the *string* "false" (only `True`/`False` become bools), so a
bare truthiness test would read it as True. Every check names the parameter and what it got.
"""
from __future__ import annotations

import math
import os
from numbers import Integral, Real
from dataclasses import dataclass
from typing import Any, Sequence


SCHEDULES = ("onecycle", "constant")


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


def check_settings(n_train: int, **settings) -> dict:
    """Validate the training settings a notebook passes (any subset of them); return them cleaned.

    One place for the checks 03-06 share, so a bad value stops each of them the same way,
    before any training: epochs, batch_size (<= n_train), lr, momentum, weight_decay, hidden,
    dropout, schedule, seed, workers.
    """
    checks = {
        "epochs": lambda v: integer("epochs", v, minimum=1),
        "batch_size": lambda v: integer("batch_size", v, minimum=1, maximum=n_train),
        "lr": lambda v: positive("lr", v),
        "momentum": lambda v: number("momentum", v, low=0.0, high=1.0, high_open=True),
        "weight_decay": lambda v: number("weight_decay", v, low=0.0),
        "hidden": lambda v: list(sizes("hidden", v)),
        "dropout": lambda v: list(numbers("dropout", v, low=0.0, high=1.0, high_open=True)),
        "schedule": lambda v: choice("schedule", v, SCHEDULES),
        "seed": lambda v: integer("seed", v, minimum=0),
        "workers": lambda v: integer("workers", v, minimum=0) or os.cpu_count() or 1,
    }
    unknown = set(settings) - set(checks)
    if unknown:
        raise TypeError(f"check_settings: no check for {sorted(unknown)}")
    cleaned = {name: checks[name](value) for name, value in settings.items()}
    if "hidden" in cleaned and "dropout" in cleaned and len(cleaned["hidden"]) != len(cleaned["dropout"]):
        raise ParameterError(f"parameter 'dropout': one rate per hidden layer, got "
                               f"{len(cleaned['dropout'])} rates for {len(cleaned['hidden'])} layers")
    return cleaned


BUDGETS = ("default", "full")
FULL_EPOCHS = 20   # the seed project's budget: 20 epochs for every point


@dataclass(frozen=True)
class StudySettings:
    """A study notebook's parameters, checked, by name (never unpacked by position)."""

    notebook: str
    grid: dict            # parameter -> tuple of values, e.g. {"lr": (0.01, 0.1)}
    fixed: dict           # the training settings every point shares
    epochs: int           # each point trains this long, once per seed
    seeds: tuple          # (int, ...)
    budget: str           # "default" or "full"
    workers: int          # local worker processes
    storage: str          # a PostgreSQL URL without password, or "" (journal file / DIGITS_STORAGE)

    def as_dict(self) -> dict:
        return {"notebook": self.notebook, "grid": {k: list(v) for k, v in self.grid.items()},
                "fixed": self.fixed, "epochs": self.epochs, "seeds": list(self.seeds), "budget": self.budget,
                "workers": self.workers}


def seeds(name: str, value: Any) -> tuple[int, ...]:
    """A non-empty list of distinct seeds >= 0."""
    out = sizes(name, value, minimum=0)
    if len(set(out)) != len(out):
        _fail(name, value, "distinct seeds")
    return out


def study_settings(notebook: str, n_train: int, *, grid: dict, budget: str, epochs: Any, seeds_: Any,
                   workers: Any, storage: Any, **fixed: Any) -> StudySettings:
    """Check a study notebook's parameters (grid values, budget, training settings) in one go.

    `grid` maps each varied setting to its list of values ("lr" or "batch_size"); `fixed` holds
    the rest (checked by `check_settings`). Every point trains for `epochs` (FULL_EPOCHS with
    budget "full": make reproduce-full) once per seed of `seeds_`.
    """
    budget = choice("budget", budget, BUDGETS)
    checked_grid = {}
    for name, values in grid.items():
        plural = {"lr": "learning_rates", "batch_size": "batch_sizes"}[name]
        if name == "lr":
            checked_grid[name] = numbers(plural, values, low=0.0, low_open=True)
        else:
            checked_grid[name] = sizes(plural, values)
            for i, v in enumerate(checked_grid[name]):
                integer(f"{plural}[{i}]", v, maximum=n_train)
        if len(set(checked_grid[name])) != len(checked_grid[name]):
            _fail(plural, values, "distinct values")
    fixed = check_settings(n_train, **fixed)
    epochs = FULL_EPOCHS if budget == "full" else integer("epochs", epochs, minimum=1)
    workers = integer("workers", workers, minimum=0) or os.cpu_count() or 1
    if not isinstance(storage, str):
        _fail("storage", storage, "a string (a postgresql:// URL, or empty)")
    return StudySettings(notebook, checked_grid, fixed, epochs, seeds("seeds", seeds_), budget, workers, storage)
