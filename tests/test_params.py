"""Parameter checks: each bad value stops with its parameter's name."""
import math

import pytest

from helpers import params as P


@pytest.mark.parametrize("value", ["false", "False", 0, 1, None])
def test_boolean_rejects_non_bools(value):
    with pytest.raises(P.ParameterError, match="parameter 'resume'"):
        P.boolean("resume", value)


def test_boolean_string_hint_mentions_papermill():
    with pytest.raises(P.ParameterError, match="papermill"):
        P.boolean("resume", "false")


@pytest.mark.parametrize("value", [0, -0.1, math.nan, math.inf, "0.1", True])
def test_positive_rejects(value):
    with pytest.raises(P.ParameterError, match="parameter 'lr'"):
        P.positive("lr", value)


def test_ranges_and_lists():
    assert P.integer("epochs", 3, minimum=1) == 3
    with pytest.raises(P.ParameterError, match=">= 1"):
        P.integer("epochs", 0, minimum=1)
    with pytest.raises(P.ParameterError, match="an integer"):
        P.integer("epochs", 2.5)
    with pytest.raises(P.ParameterError, match=r"\[0.0, 1.0\)"):
        P.number("dropout", 1.0, low=0.0, high=1.0, high_open=True)
    with pytest.raises(P.ParameterError, match="non-empty"):
        P.sizes("hidden", [])
    with pytest.raises(P.ParameterError, match=r"hidden\[1\]"):
        P.sizes("hidden", [64, 0])
    with pytest.raises(P.ParameterError, match="one of"):
        P.choice("schedule", "cosine", ["onecycle", "constant"])
    assert P.numbers("lrs", [0.1, 1]) == (0.1, 1.0)
