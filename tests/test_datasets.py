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
    (dict(separation=np.nan), "separation must be a finite number >= 0.0, got nan"),
    (dict(min_weight=-0.5), r"min_weight must be >= 0.0, got -0.5"),
    # Beyond this machine's memory: refused before any work (10**9 features
    # were killed by the OS; 10**30 points overflowed inside numpy).
    (dict(n_features=10 ** 9, n_samples=10 ** 4),
     r"^make_mixture\(n_samples=10000, n_components=3, n_features=1000000000\) asks for about "
     r".* GiB, more than this machine's .*fewer points, components or features"),
    (dict(n_samples=10 ** 30), r"^make_mixture\(n_samples=10{30}, .* asks for about"),
    (dict(n_components=10 ** 12), r"n_components=1000000000000, n_features=2\) asks for"),
])
def test_make_mixture_refuses_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        make_mixture(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(n_classes=0), "n_classes must be at least 2 .*got 0"),
    (dict(n_per_class=2.5), "n_per_class must be an integer, got 2.5"),
    (dict(min_clusters=5, max_clusters=2), "max_clusters=2 is below min_clusters=5"),
    (dict(n_classes=1), "n_classes must be at least 2 .*got 1: for one mixture, use make_mixture"),
    (dict(n_per_class=10 ** 15), r"^make_five_class\(n_per_class=10{15}, n_classes=5, "
                                 r"max_clusters=10\) asks for about .* GiB"),
    (dict(n_classes=10 ** 15), r"n_classes=10{15}, max_clusters=10\) asks for about"),
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


@pytest.mark.parametrize("n, k, kw", [(4, 6, {}), (7, 10, {"min_weight": 0.0}),
                                      (13, 8, {"random_state": 3}), (14, 9, {})])
def test_make_mixture_with_few_points_per_component(n, k, kw):
    # The remainder of the rounding went to the largest component and took
    # it below zero: an error about a `counts` argument nobody passed.
    import warnings
    kw = {"random_state": 0, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no log(0) from empty components
        X, labels, truth = make_mixture(n, k, **kw)
        truth.log_density(X)
    counts = np.bincount(labels, minlength=k)
    assert X.shape == (n, 2) and counts.sum() == n and counts.min() >= 0
    np.testing.assert_allclose(truth.weights, counts / n)


def test_make_mixture_gives_the_rounding_remainder_to_the_heaviest_component():
    # With every count rounding to 0 the remainder went to component 0,
    # whatever its weight.  The weights drawn for a seed do not depend on
    # n_samples: at 100,000 points the heaviest has the most.
    for seed in range(6):
        heaviest = np.bincount(make_mixture(100_000, 5, random_state=seed)[1]).argmax()
        labels = make_mixture(1, 5, random_state=seed)[1]      # every count rounds to 0
        assert labels.tolist() == [heaviest], (seed, labels, heaviest)


def test_make_mixture_takes_more_than_ten_components_by_default():
    _, labels, truth = make_mixture(1200, 12, random_state=0)
    np.testing.assert_allclose(truth.weights, 1 / 12)      # min_weight = 1/K: equal weights
    # Up to ten components the default floor is 0.1, as before.
    assert make_mixture(1000, 10, random_state=0)[2].weights.min() >= 0.1 - 1e-12


def test_five_class_sample_draws_only_the_clusters_the_truth_weighs():
    # With fewer points per class than clusters, clusters without a training
    # point have weight 0 in the truth but were still sampled, and
    # bayes_predict was 66% accurate where the Bayes rule of the sampled
    # data is 82%.
    from scipy.stats import multivariate_normal
    _, _, truth = make_five_class(random_state=0, n_per_class=5, n_classes=3)
    Xt, yt = truth.sample(600, random_state=1)
    dens = np.zeros((len(Xt), truth.n_classes))
    for c, m in enumerate(truth.mixtures):
        live = np.flatnonzero(m.weights > 0)
        for k in live:                                  # equal weights over the live clusters
            dens[:, c] += multivariate_normal(m.means[k], np.diag(m.scales[k] ** 2)).pdf(Xt) \
                / live.size
    np.testing.assert_array_equal(truth.bayes_predict(Xt), dens.argmax(1))
    # The points come from the clusters of positive weight: few fall closest
    # (by density) to an empty one (3-6% here, where sampling the empty
    # clusters too put 2/7 to 4/9 of each class there).
    for c, m in enumerate(truth.mixtures):
        P = Xt[yt == c]
        logpdf = np.stack([multivariate_normal(m.means[k], np.diag(m.scales[k] ** 2)).logpdf(P)
                           for k in range(m.weights.size)], 1)
        empty = m.weights[logpdf.argmax(1)] == 0
        assert 0 < (m.weights == 0).sum() and empty.mean() < 0.1


def test_make_circles_refuses_no_points():
    from bayesgmm.datasets import make_circles
    with pytest.raises(ValueError, match="n_samples"):
        make_circles(0)
    # ... and more than this machine holds (numpy's 'Maximum allowed size
    # exceeded' named nothing), as a count or an (outer, inner) pair.
    for n in (10 ** 30, (10 ** 30, 5)):
        with pytest.raises(ValueError, match=r"^make_circles\(n_samples=.*\) asks for about .* "
                                             r"GiB.*fewer points"):
            make_circles(n)


def test_make_circles_takes_scikit_learns_outer_inner_pair():
    from bayesgmm.datasets import make_circles
    X, y = make_circles((30, 10))
    assert X.shape == (40, 2) and np.bincount(y).tolist() == [30, 10]
