"""Every chart's text for screen readers (its ``alt``): what it shows, in numbers.

The Lab's and the sweep charts' summaries are tested beside their figures (test_charts.py,
test_sweep_charts.py); these are the probe's, the Inside page's and the Learn page's.
"""

from __future__ import annotations

import numpy as np
from test_probes import made_sweep

from dropout_demo import feature_charts, features, probe_charts


def test_probe_summaries_name_the_digits_and_the_peaks():
    s = made_sweep([0.0, 0.01, 0.02, 0.2, 0.3, 0.25, 0.4], [1, 1, 1, 1, 7, 7, 7])
    probs = probe_charts.probe_probability_summary(s)
    assert probs.startswith("Probability of the top digits against rotation")
    assert "T = 2 passes" in probs and "± std" in probs
    assert "digit 1: 90% at 0°, 90% at 90°, 1% at 180° (highest 90% at 0°)" in probs
    assert "digit 7: 1% at 0°" in probs and "(highest 90% at 120°)" in probs
    unc = probe_charts.probe_uncertainty_summary(s)
    assert "mutual information from 0.00 to 0.40 nats, highest at 180°" in unc
    assert "predictive entropy from 0.10 to 0.50 nats" in unc
    still = made_sweep([0.0, 0.0, 0.0], [1, 1, 7], p=0.0)
    assert "± std" not in probe_charts.probe_probability_summary(still)


def test_feature_summaries_give_each_models_numbers():
    rng = np.random.default_rng(0)
    a = features.summarise(np.maximum(rng.normal(0.5, 1, (100, 128)), 0))
    b = features.summarise(np.maximum(rng.normal(-0.5, 1, (100, 128)), 0))
    named = [("A: p = 0", a), ("B: p = 0.5", b)]
    hist = feature_charts.histogram_summary(named)
    assert f"A: p = 0: {a.zero_fraction:.0%} of activations are zero" in hist
    assert f"the others average {b.mean_active:.2f}" in hist
    units = feature_charts.unit_means_summary(named)
    assert f"B: p = 0.5: largest {b.unit_means[0]:.2f}" in units
    assert f"{a.dead_units} of 128 units never fire" in units
    filters = feature_charts.filters_summary(np.zeros((32, 3, 3)), "A")
    assert "32 filters" in filters


def test_learn_mask_summary_lists_the_dropped_units():
    from dropout_demo.ui.learn import mask_summary

    a = np.array([1.0, 2.0, 3.0, 4.0])
    kept = np.array([True, False, True, False])
    out = np.where(kept, a / 0.5, 0.0)
    text = mask_summary(a, out, kept, 0.5)
    assert "4 units before and after dropout with p = 0.50" in text
    assert "2 kept and scaled by 2.00, 2 dropped (u1, u3)" in text
    assert "Mean before 2.500, after this mask 2.000." in text
