"""Argument checks of the data generators (an audit found silently wrong
data, e.g. NaN weights for n_samples=0, and deep numpy errors)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from bayesgmm.datasets import make_five_class, make_mixture


@pytest.mark.parametrize("kw, message", [
    (dict(n_samples=0), "n_samples must be >= 1, got 0"),
    (dict(n_samples=2.5), "n_samples must be an integer, got 2.5"),
    (dict(n_samples="10"), "n_samples must be an integer, got '10'"),
    (dict(n_components=2.5), "n_components must be an integer, got 2.5"),
    (dict(n_components=0), "n_components must be >= 1, got 0"),
    (dict(n_features=0), "n_features must be >= 1, got 0"),
    (dict(separation=-1), r"separation must be >= 0.0, got -1.0"),
    (dict(separation=np.nan), "separation must be >= 0.0, got nan"),
    (dict(min_weight=-0.5), r"min_weight must be >= 0.0, got -0.5"),
])
def test_make_mixture_refuses_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        make_mixture(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(n_classes=0), "n_classes must be >= 1, got 0"),
    (dict(n_per_class=2.5), "n_per_class must be an integer, got 2.5"),
    (dict(min_clusters=5, max_clusters=2), "max_clusters=2 is below min_clusters=5"),
])
def test_make_five_class_refuses_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        make_five_class(**kw)


def test_truth_checks_counts_and_shapes_and_matches_scipy():
    X, labels, truth = make_mixture(300, 3, random_state=0)
    for counts in ([1, 2], [1, 2, -1], [1.5, 2, 3]):     # [1, 2] left out component 2
        with pytest.raises(ValueError, match="counts must be 3 non-negative integers"):
            truth.sample(counts)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\).*got shape \(2,\): use "
                                         r"X.reshape\(1, -1\)"):
        truth.log_density(np.zeros(2))
    with pytest.raises(ValueError, match=r"got shape \(3, 3\)"):
        truth.log_density(np.zeros((3, 3)))
    # The density itself, against scipy's.
    ref = np.log(sum(w * norm.pdf(X, m, s).prod(1)
                     for w, m, s in zip(truth.weights, truth.means, truth.scales)))
    np.testing.assert_allclose(truth.log_density(X), ref, rtol=1e-10)
    _, _, classes = make_five_class(0)
    with pytest.raises(ValueError, match="n_per_class must be >= 1, got 0"):
        classes.sample(0)
