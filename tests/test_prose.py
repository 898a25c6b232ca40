"""No measured number is typed into prose: notebooks' Markdown cells and the README hold none.

A result of this repository reaches a reader only through code (a cell's rendered output, or a
README block a command writes between `<!-- rendered: NAME -->` and `<!-- /rendered: NAME -->`),
so a re-run on another machine cannot leave a sentence behind that its numbers contradict. What
prose may type (the seed's and the literature's figures) is listed once, in helpers.quoted.

The scanner flags percentages (and accuracy points), spreads, times, ratios and correlation
values; it does not flag shapes ("28×28", "64 × 10") or settings written as a name and a value
("lr 0.1", "batch 64", "20 epochs"). The tests at the end pin both sides on crafted strings.
"""
from __future__ import annotations

import json
import re

import pytest

from helpers import notebooks, paths
from helpers.quoted import QUOTED

# A number: "98", "0.3", "10,000", a range "2.4–3.0", optionally "~" or "≈" before it. Never the
# tail of a word or of a longer number ("fc-v657", the "3" of "0.3").
NUM = r"(?<![\w.])(?:[~≈]\s?)?\d+(?:[.,]\d+)*(?:\s?[–—-]\s?\d+(?:[.,]\d+)*)?"
WORDNUM = (r"\b(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
           r"thirty|forty|fifty|hundred|half|a half|a third|a quarter|a tenth)(?:\s+and\s+a\s+half)?")
# "points" is also a study's points ("30 points, each trained"): it counts as accuracy when the
# number is a decimal, or the words around it measure a difference.
POINTS_AFTER = r"(?=\s+(?:lower|higher|behind|below|above|ahead|apart|better|worse|short|off|down|up|more|less)\b)"
POINTS_BEFORE = r"\b(?:within|by|lost|lose|loses|gained|gains|gain|dropped|drops|fell|falls)\s+(?:about\s+|almost\s+|nearly\s+|only\s+)?"
TIME_UNIT = (r"(?:ms|milliseconds?|s|secs?|seconds?|min|mins|minutes?|h|hrs?|hours?|days?|"
             r"core-minutes?|core-hours?)\b")
# "N times" multiplies when a comparison follows ("4 times faster", "nearly four times one at
# batch 128"); "failed three times," counts repetitions.
TIMES_AFTER = (r"(?=\s+(?:as|faster|slower|longer|shorter|more|less|fewer|larger|smaller|higher|lower|"
               r"bigger|cheaper|one|that|what|the|its|their|over)\b)")

PATTERNS = {
    "percentage": [
        rf"{NUM}\s*(?:%|percent\b|per cent\b)",
        r"\bpercentage[ -]points?\b",
        rf"(?<![\w.])\d*\.\d+\s*points?\b",
        rf"(?:{NUM}|{WORDNUM})\s+points?\b{POINTS_AFTER}",
        rf"{POINTS_BEFORE}(?:{NUM}|{WORDNUM})\s+points?\b",
    ],
    "spread": [rf"(?:{NUM}\s*%?\s*)?(?:±|\+/-|\+-)\s*{NUM}\s*%?"],
    "time": [
        rf"{NUM}\s*{TIME_UNIT}(?:\s*\d+(?:\.\d+)?\s*{TIME_UNIT})*",
        # no "a second" (an ordinal as often as a time), no "a day" ("on a day when")
        rf"{WORDNUM}\s+(?:milliseconds?|minutes?|hours?)\b",
    ],
    "ratio": [
        # a shape ("28×28", "64 × 10", "3×1024") has a number after the sign
        rf"{NUM}\s*[×✕](?!\s*\d)",
        rf"{NUM}\s?x(?!\w)(?!\s*\d)",
        rf"(?:{NUM}|{WORDNUM}|\bmany|\bseveral)\s+times\b{TIMES_AFTER}",
        r"\b(?:twice|thrice)\s+(?:as|the)\b",
        rf"\bfactor\s+of\s+(?:about\s+|roughly\s+|nearly\s+|almost\s+)?(?:{NUM}|{WORDNUM})",
    ],
    "correlation": [
        # the name, then (within the clause) its value: "Spearman 0.89", "ρ = 0.42", "Spearman ρ over all 30 pairs 0.89"
        r"\b(?:Spearman|Pearson|Kendall|correlations?|rho|ρ|τ)\b[^.;\n]{0,40}?(?<![\w.])[-−]?\d*\.\d+"
        r"(?:\s?[–—-]\s?\d*\.\d+)?",
        r"\b[rR]²?\s*=\s*[-−]?\d*\.\d+",
    ],
}
COMPILED = [(kind, re.compile(p)) for kind, ps in PATTERNS.items() for p in ps]


def findings(text: str) -> list[tuple[int, str, str]]:
    """Every measurement-like phrase in `text`: (offset, the phrase, its kinds), overlaps merged."""
    spans = sorted((m.start(), m.end(), kind) for kind, rx in COMPILED for m in rx.finditer(text)
                   if m.group().strip())
    merged: list[list] = []
    for start, end, kind in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2].add(kind)
        else:
            merged.append([start, end, {kind}])
    return [(s, " ".join(text[s:e].split()), "/".join(sorted(k))) for s, e, k in merged]


def typed_measurements(text: str) -> list[tuple[int, str, str]]:
    """The findings that are not quoted figures (helpers.quoted)."""
    return [f for f in findings(text) if f[1] not in QUOTED]


def readme_prose(text: str) -> str:
    """The README with its rendered blocks blanked out (line numbers kept); a broken pair is an error."""
    lines = text.split("\n")
    open_name = None
    for i, line in enumerate(lines):
        opening = re.fullmatch(r"<!-- rendered: ([\w-]+) -->", line.rstrip())
        closing = re.fullmatch(r"<!-- /rendered: ([\w-]+) -->", line.rstrip())
        if opening and open_name is None:
            open_name = opening.group(1)
        elif opening or (closing and closing.group(1) != open_name):
            raise ValueError(f"README line {i + 1}: {line.strip()} inside rendered block {open_name!r}")
        elif closing:
            open_name = None
        elif open_name is not None:
            lines[i] = ""
    if open_name is not None:
        raise ValueError(f"README: rendered block {open_name!r} is never closed")
    return "\n".join(lines)


def committed_notebooks() -> list[str]:
    """notebooks/ (all seven, as helpers.notebooks.ORDER names them) and the full-budget runs' copies."""
    on_disk = sorted(p.stem for p in paths.NOTEBOOKS.glob("*.ipynb"))
    assert on_disk == sorted(notebooks.ORDER), f"notebooks/ holds {on_disk}, helpers.notebooks.ORDER {notebooks.ORDER}"
    full = sorted((paths.ROOT / "figures" / "full").glob("*.ipynb"))
    return [f"notebooks/{n}.ipynb" for n in notebooks.ORDER] + [str(p.relative_to(paths.ROOT)) for p in full]


def notebook_violations(path: str) -> list[str]:
    nb = json.loads((paths.ROOT / path).read_text())
    return [f"{path} cell {i}: {text!r} ({kind})"
            for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "markdown"
            for _, text, kind in typed_measurements("".join(cell["source"]))]


def readme_violations() -> list[str]:
    text = readme_prose((paths.ROOT / "README.md").read_text())
    return [f"README.md line {text.count(chr(10), 0, offset) + 1}: {phrase!r} ({kind})"
            for offset, phrase, kind in typed_measurements(text)]


HOW_TO_FIX = ("render it from the results (a code cell's Markdown output, or a README block the "
              "README command writes), or, for a figure from the seed or the literature or a setting, "
              "list it in helpers/quoted.py with its source")


@pytest.mark.parametrize("path", committed_notebooks())
def test_notebook_markdown_types_no_measurement(path):
    found = notebook_violations(path)
    assert not found, f"{len(found)} typed measurements ({HOW_TO_FIX}):\n" + "\n".join(found)


def test_readme_types_no_measurement_outside_its_rendered_blocks():
    found = readme_violations()
    assert not found, f"{len(found)} typed measurements ({HOW_TO_FIX}):\n" + "\n".join(found)


# ------------------------------------------------------------------------- the scanner itself

@pytest.mark.parametrize("text, phrase, kind", [
    ("levels off just under 97.9% after", "97.9%", "percentage"),
    ("at 98.3 % after 20 epochs", "98.3 %", "percentage"),
    ("20% of the digits", "20%", "percentage"),
    ("ends 0.3 points behind the best", "0.3 points", "percentage"),
    ("about a tenth of a percentage point", "percentage point", "percentage"),
    ("1e-3 ends four and a half points lower", "four and a half points", "percentage"),
    ("more than three points lower", "three points", "percentage"),
    ("the seed lost 25 points between", "lost 25 points", "percentage"),
    ("5 percent of them", "5 percent", "percentage"),
    ("the spread is ± 0.02 here", "± 0.02", "spread"),
    ("98.33 ± 0.11% at the full budget", "98.33 ± 0.11%", "percentage/spread"),
    ("**99.19% ± 0.02** over 3 seeds", "99.19% ± 0.02", "percentage/spread"),
    ("shifts of ±2 px", "±2", "spread"),
    ("trains in 19 s on two cores", "19 s", "time"),
    ("one seed took 1.5 min", "1.5 min", "time"),
    ("06: 426 seconds", "426 seconds", "time"),
    ("took 10 min 14 s on this machine", "10 min 14 s", "time"),
    ("a step costs 3 ms", "3 ms", "time"),
    ("the run takes 2 hours", "2 hours", "time"),
    ("three seeds (121–126 s each on one core)", "121–126 s", "time"),
    ("about 19 core-minutes per seed", "19 core-minutes", "time"),
    ("in well under a minute", "a minute", "time"),
    ("the seed's own pipeline: ~45 min on a day", "~45 min", "time"),
    ("batch 8 costs 4.2× batch 256", "4.2×", "ratio"),
    ("1.6x the digits per second", "1.6x", "ratio"),
    ("costs 3 times more", "3 times", "ratio"),
    ("costs nearly four times one at batch 128", "four times", "ratio"),
    ("costs many times one at batch 256", "many times", "ratio"),
    ("the same cells took 2.4–3.0× longer", "2.4–3.0×", "ratio"),
    ("loader epoch 20–22x faster", "20–22x", "ratio"),
    ("a factor of about 2.4 in spread per layer", "factor of about 2.4", "ratio"),
    ("twice as fast", "twice as", "ratio"),
    ("rank the 30 pairs alike (Spearman 0.89)", "Spearman 0.89", "correlation"),
    ("over its top 15 pairs ρ = 0.42", "ρ = 0.42", "correlation"),
    ("Spearman ρ over all 30 pairs 0.89", "Spearman ρ over all 30 pairs 0.89", "correlation"),
    ("ranked the grid badly (Spearman 0.25–0.79 in earlier", "Spearman 0.25–0.79", "correlation"),
    ("with r = 0.7", "r = 0.7", "correlation"),
])
def test_each_kind_of_measurement_is_flagged(text, phrase, kind):
    assert [(p, k) for _, p, k in findings(text)] == [(phrase, kind)]


@pytest.mark.parametrize("text", [
    "centred by centre of mass in 28×28, fitted into 20×20",
    "a batch of 64 validation digits gives 64 × 10 logits",
    "the product [2n, 19] @ [19, 784] per step",
    "the 6 × 5 pairs of the grid, MLP 3×1024 and 2×8192",
    "lr 0.1, batch 64, weight decay 1e-5, dropout 0.2, momentum 0.9, 20 epochs",
    "label smoothing 0.1, paper brightness 0.3–0.9, `fraction = 0.2`",
    "a fifth of the digits, the 10,000 test digits, 6,000 validation digits",
    "Thirty points, each trained once per seed; 10 of its 30 points are 04's",
    "a task that failed three times, over all runs, is recorded; at most three runs in all",
    "(x/255 − 0.1307) / 0.3081, variance 2/fan_in, 1/(3·fan_in)",
    "mean ± std over seeds; a second kind of machine; in minutes on a 2-core CPU",
    "A rank correlation near 1 means the cheaper budget orders the points as the full one does",
    "object at 0x7f3a2b1c, notebooks 04–06, the 512–256 model for 30 epochs",
    "Python 3.11, torch 2.13, 3 seeds, 04's nine learning rates, 1e-3 and 1e-4",
])
def test_shapes_settings_and_plain_counts_are_not_flagged(text):
    assert findings(text) == []


def test_quoted_figures_pass_and_every_entry_is_a_whole_finding():
    for phrase in QUOTED:
        assert [p for _, p, _ in findings(phrase)] == [phrase], f"helpers.quoted key {phrase!r} is not what the scanner matches"
        assert typed_measurements(f"the seed reported {phrase} there") == []
    assert [p for _, p, _ in typed_measurements("the seed's 73.78%, ours 99.19%")] == ["99.19%"]


def test_readme_rendered_blocks_are_skipped_and_must_be_closed():
    text = ("typed 12 s\n<!-- rendered: speed -->\nrendered 99.19%\n<!-- /rendered: speed -->\n"
            "<!-- rendered: results -->\n| 4.2× |\n<!-- /rendered: results -->\nafter 3.5 min\n")
    prose = readme_prose(text)
    assert [p for _, p, _ in typed_measurements(prose)] == ["12 s", "3.5 min"]
    assert prose.count("\n") == text.count("\n")  # line numbers kept for the report
    with pytest.raises(ValueError, match="never closed"):
        readme_prose("<!-- rendered: results -->\n99%\n")
    with pytest.raises(ValueError, match="inside rendered block"):
        readme_prose("<!-- rendered: results -->\n<!-- /rendered: studies -->\n")
