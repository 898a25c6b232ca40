"""The figures that prose may type: quoted from the seed project or the literature, never measured here.

tests/test_prose.py fails on any percentage, spread, time, ratio or correlation typed into a
notebook's Markdown or the README outside its rendered blocks, unless the text it matched is a key
below, character for character (runs of spaces count as one). Each value says where the figure
comes from, in one line. A setting that reads like a measurement ("20% of the digits") may be
listed too, with the source "a setting, not a measurement".
"""

QUOTED: dict[str, str] = {
    "73.78%": "the seed notebook's test accuracy, after it normalized training and test data differently",
    "95%": "the confidence level of the intervals and of the within-noise rule: a convention, not a measurement",
    "98.66%": "test accuracy of an earlier version of this repository (commit c0e6452, figures/07_test_eval.json)",
    "99.17%": "test accuracy of an earlier version of this repository (commit 2d235df, figures/07_test_eval.json)",
    "30 s": "helpers.storage.GRACE_S, how long a PostgreSQL worker may be silent: a setting, not a measurement",
    "10 s": "the fault table's deadline for an unreachable database (CONNECT_TIMEOUT_S and retries): a setting",
    "60 s": "helpers.storage.OUTAGE_S, how long a lost database is waited for: a setting, not a measurement",
    "98.94%": "Srivastava et al. 2014 (JMLR, dropout), MLP 3×1024 with max-norm, no augmentation",
    "99.05%": "Srivastava et al. 2014 (JMLR, dropout), MLP 2×8192 with max-norm, no augmentation",
    "99.30%": "Simard et al. 2003 (ICDAR), one hidden layer of 800 units, elastic distortions",
    "99.65%": "Cireşan et al. 2010 (Neural Computation), 6-layer MLP, elastic and affine distortions",
    "98.40%": "Keras examples, mnist_mlp.py: test accuracy after 20 epochs",
}

# The published MLP results that 07's context table sets beside this repository's models:
# (the key in QUOTED, the model, its source).
LITERATURE = [
    ("98.40%", "MLP 512-512 with dropout, 20 epochs", "Keras examples, mnist_mlp.py"),
    ("98.94%", "MLP 3×1024, dropout and max-norm, no augmentation", "Srivastava et al. 2014, JMLR"),
    ("99.05%", "MLP 2×8192, dropout and max-norm, no augmentation", "Srivastava et al. 2014, JMLR"),
    ("99.30%", "MLP with one hidden layer of 800 units, elastic distortions", "Simard et al. 2003, ICDAR"),
    ("99.65%", "6-layer MLP, elastic and affine distortions", "Cireşan et al. 2010, Neural Computation"),
]
