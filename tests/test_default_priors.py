"""The default covariance priors: empirical Bayes, scaled to the spread of
the k-means++ seeding (bayesgmm.fitting.seeded_spread), checked against a
hand computation, and the reason for them: better held-out fits at small n
without widening well-separated clusters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from bayesgmm import BayesianGMM, GMMClassifier, Priors
from bayesgmm.fitting import seeded_spread
from bayesgmm.priors import SPREAD_FACTOR

CPU = dict(device="cpu")


@pytest.mark.parametrize("refine", [0, 1, 2])
def test_seeded_spread_matches_a_hand_computation(refine):
    rng = np.random.default_rng(0)
    P = [rng.normal(size=(40, 3)), rng.normal(size=(25, 3)) * 2]
    P[1][3, 1] = np.nan                                   # a missing entry
    w = [rng.uniform(0.5, 2, 40), None]
    centres = rng.normal(size=(2, 2, 4, 3))               # (R, G, K, D)
    centres[1, 0, 3] = 50.0                               # a centre no point is nearest
    ks = [4, 2]
    tot, mass = np.zeros(3), np.zeros(3)
    for r in range(2):
        for g in range(2):
            ww = np.ones(len(P[g])) if w[g] is None else w[g]
            cs = centres[r, g, :ks[g]].copy()
            for step in range(refine + 1):
                near = []
                for x in P[g]:
                    o = ~np.isnan(x)
                    near.append(int(np.argmin([np.sum((x[o] - c[o]) ** 2) for c in cs])))
                near = np.array(near)
                for j in range(ks[g]):
                    for f in range(3):     # each feature's observed points of cluster j
                        sel = (near == j) & ~np.isnan(P[g][:, f])
                        if sel.any():
                            x, wi = P[g][sel, f], ww[sel]
                            mu = np.sum(wi * x) / wi.sum()
                            cs[j, f] = mu                 # Lloyd: the centre to the mean
                            if step == refine:
                                tot[f] += np.sum(wi * (x - mu) ** 2)
                                mass[f] += wi.sum()
    np.testing.assert_allclose(seeded_spread(P, w, centres, ks, refine=refine), tot / mass,
                               rtol=1e-10)


def test_lloyds_step_keeps_a_noisy_feature_out_of_a_separated_ones_spread():
    """Two clusters 2,000 sds apart in x, noise in y: the nearest-seed
    partition gives points far from their seed in y to the other cluster,
    which made x's prior spread 300 times the clusters' own and the fitted
    variances 8 (truth 1); after one Lloyd step the fit matches
    scikit-learn's maximum likelihood."""
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(-1e3, 1, (500, 2)), rng.normal(1e3, 1, (500, 2))]
    X[:, 1] = rng.normal(0, 1, 1000)
    ref = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    for covariance_type in ("diag", "full"):
        gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
        var = gmm.covariances_ if covariance_type == "diag" else \
            np.diagonal(gmm.covariances_, axis1=1, axis2=2)
        order = np.argsort(gmm.means_[:, 0])
        np.testing.assert_allclose(var[order], ref.covariances_[np.argsort(ref.means_[:, 0])],
                                   rtol=0.1)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_clusters_far_apart_in_every_feature_keep_their_own_spread(covariance_type):
    """Clusters of sd 1, 2e5 apart: the floor of the prior's spread is
    relative to the widest feature's, not to the data's spread (1e-3 of
    which, 100, made the fitted variance 41)."""
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(-1e5, 1, (500, 2)), rng.normal(1e5, 1, (500, 2))]
    gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    var = gmm.covariances_ if covariance_type == "diag" else \
        np.diagonal(gmm.covariances_, axis1=1, axis2=2)
    ml = np.array([X[:500].var(0), X[500:].var(0)])
    np.testing.assert_allclose(var[np.argsort(gmm.means_[:, 0])], ml, rtol=0.15)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_default_covariance_prior_is_scaled_to_the_seedings_spread(covariance_type):
    # Two tight clusters far apart: the seeding's spread is the clusters'
    # (about 1), not the data's (about 100), and the prior follows it.
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(100, 1, (200, 2))])
    gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    p = gmm.priors_
    if covariance_type in ("full", "tied"):
        typical = np.sqrt(np.diag(p.covariance_scale)) / SPREAD_FACTOR
    else:
        typical = np.atleast_1d(p.scale_rate) / (2 * SPREAD_FACTOR)
    assert np.all((typical > 0.8) & (typical < 1.25)), typical
    # A user's value is kept as given.
    mine = Priors(covariance_scale=3.0, scale_rate=3.0)
    q = BayesianGMM(2, covariance_type=covariance_type, random_state=0, priors=mine,
                    **CPU).fit(X).priors_
    if covariance_type in ("full", "tied"):
        np.testing.assert_allclose(q.covariance_scale, 3.0 * np.eye(2))
    else:
        np.testing.assert_allclose(q.scale_rate, 3.0)


def _truth(seed):
    r = np.random.default_rng(seed)
    w = r.dirichlet(np.full(3, 5.0))
    m = r.uniform(-4, 4, size=(3, 2))
    c = []
    for _ in range(3):
        Q, _ = np.linalg.qr(r.normal(size=(2, 2)))
        c.append(Q @ np.diag(r.uniform(0.2, 1.5, 2)) @ Q.T)
    return w, m, np.array(c)


def _draw(t, n, rng):
    z = rng.choice(3, size=n, p=t[0])
    return np.stack([rng.multivariate_normal(t[1][k], t[2][k]) for k in z])


def test_default_priors_beat_maximum_likelihood_at_small_n():
    # K=3, D=2, n=30 (benchmarks/small_n.py with 5 seeds): held-out
    # log-likelihood per point against the truth's.  The first release's
    # priors (near-zero scale) lost to maximum likelihood here.
    ours, ml, first = [], [], []
    for seed in range(5):
        t = _truth(seed)
        rng = np.random.default_rng(1000 + seed)
        X, Xte = _draw(t, 30, rng), _draw(t, 2000, rng)
        best = np.log(sum(t[0][k] * multivariate_normal(t[1][k], t[2][k]).pdf(Xte)
                          for k in range(3))).mean()
        ours.append(BayesianGMM(3, random_state=seed, **CPU).fit(X).score(Xte) - best)
        first.append(BayesianGMM(3, random_state=seed, priors=Priors(
            covariance_scale=(0.1 * X.std(0)) ** 2), **CPU).fit(X).score(Xte) - best)
        ml.append(GaussianMixture(3, random_state=seed).fit(X).score(Xte) - best)
    ours, ml, first = map(np.array, (ours, ml, first))
    assert ours.mean() > ml.mean() and ours.mean() > first.mean(), (ours, ml, first)
    assert (ours > ml).sum() >= 4, (ours, ml)


def test_classifier_default_prior_pools_the_classes_seeding():
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(50, 1, (100, 2)),
                        rng.normal(-50, 1, (100, 2))])
    y = np.repeat([0, 1, 1], 100)            # class 1: two clusters far apart
    clf = GMMClassifier(2, random_state=0, **CPU).fit(X, y)
    typical = np.sqrt(np.diag(clf.priors_[0].covariance_scale)) / SPREAD_FACTOR
    assert np.all((typical > 0.5) & (typical < 1.5)), typical


def _collinear_pair(seed: int = 0):
    """Two clusters of 250 points, 4 sd apart, in two features that differ
    by 0.001 sd: the default (diagonal) Wishart scale widens the thin
    direction so much that the MAP leaves one component empty."""
    rng = np.random.default_rng(seed)
    lab = np.repeat([0, 1], 250)
    x1 = rng.standard_normal(500) + 4 * lab
    return np.c_[x1, x1 + 1e-3 * rng.standard_normal(500)], lab


def test_an_empty_component_is_said_with_the_remedy_that_recovers_it():
    from sklearn.metrics import adjusted_rand_score

    X, lab = _collinear_pair()
    with pytest.warns(UserWarning, match=r"1 of 2 components ended with weight below half a "
                                         r"row's share.*Priors\(covariance_scale=") as rec:
        gmm = BayesianGMM(2, random_state=0, **CPU).fit(X)
    assert rec[0].filename == __file__                        # points at the fit call
    assert gmm.weights_.min() < 1e-3 / X.shape[0] and gmm.n_effective_components_ == 1
    clf_X = np.concatenate([X, X + [0.0, 1.0]])
    with pytest.warns(UserWarning, match=r"class 'b': 1 of 2 components") as rec:
        GMMClassifier(2, random_state=0, **CPU).fit(clf_X, np.repeat(["a", "b"], 500))
    assert rec[0].filename == __file__
    # The remedy the warning names: a prior scale below the thin direction's
    # spread finds both clusters.  Their covariances are then nearly
    # singular (correlation 1 - 5e-7), beyond float32: that is said, and a
    # float64 fit says nothing.
    with pytest.warns(UserWarning, match=r"condition number 2\.\de\+06 .*dtype='float64'"):
        fixed = BayesianGMM(2, random_state=0, priors=Priors(covariance_scale=1e-4),
                            **CPU).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = BayesianGMM(2, random_state=0, priors=Priors(covariance_scale=1e-4),
                            dtype="float64", **CPU).fit(X)
    assert adjusted_rand_score(lab, fixed.predict(X)) > 0.8
    assert fixed.score(X) > gmm.score(X) + 2


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_surplus_components_on_ordinary_data_say_nothing(covariance_type):
    # Under the flat Dirichlet surplus components share the data rather
    # than empty: K = 10 on iris keeps every component, without a warning.
    from bayesgmm.datasets import load_iris

    X = load_iris().iloc[:, :4].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gmm = BayesianGMM(10, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    assert gmm.n_effective_components_ == 10


def test_one_starving_component_of_many_says_nothing():
    # 16 Gaussians per ring: one of them ends empty, which is the prior
    # preferring 15, not a lost cluster; the warning needs half of them.
    from bayesgmm.datasets import make_circles

    X, y = make_circles(800, noise=0.01, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = GMMClassifier(16, max_iter=0, random_state=0, **CPU).fit(X, y)
    assert clf.n_effective_components_.min() < 16


def test_priors_compare_and_hash_by_value_arrays_included():
    """Equal hyperparameters are equal however written (a list, an array,
    a numpy scalar), and hash alike; per-component arrays no longer raise
    numpy's 'truth value of an array is ambiguous' on ==, nor TypeError on
    hash (a fitted estimator's priors_ could not be a dict key or set
    member)."""
    a = Priors(weight_concentration=np.ones(3), covariance_scale=np.eye(2))
    b = Priors(weight_concentration=[1, 1, 1], covariance_scale=[[1.0, 0.0], [0.0, 1.0]])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Priors(weight_concentration=[1, 1, 2], covariance_scale=np.eye(2))
    assert a != Priors(weight_concentration=np.ones(3))              # a field left None
    assert Priors(scale_rate=1.0) == Priors(scale_rate=np.float64(1.0))
    assert Priors(scale_rate=[1.0]) != Priors(scale_rate=1.0)        # shapes differ
    assert Priors() == Priors() and Priors() != "Priors()"
    X = np.random.default_rng(0).normal(size=(50, 2))
    fitted = BayesianGMM(3, priors=a, n_init=1, device="cpu", random_state=0).fit(X).priors_
    assert {fitted: 1}[fitted] == 1 and fitted == fitted


def test_auto_priors_do_not_depend_on_components_never_tried():
    """45 points, D=2, full: "auto" tries K up to 7 whatever max_components;
    the prior's seeding takes the same K, so max_components=10 and 1000 give
    one prior and one fit (with 1000 centres the seeding's spread was that
    of single points: the prior shrank to 1e-5 and K=4 was chosen)."""
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal([0, 0], 1, (15, 2)), rng.normal([5, 0], 1, (15, 2)),
              rng.normal([0, 5], 1, (15, 2))]
    y = np.repeat([0, 1, 0], 15)
    fits = [BayesianGMM("auto", max_components=m, random_state=0, **CPU).fit(X)
            for m in (10, 1000)]
    np.testing.assert_array_equal(fits[0].priors_.covariance_scale,
                                  fits[1].priors_.covariance_scale)
    assert fits[0].n_components_ == fits[1].n_components_ == 3
    assert fits[0].loss_ == fits[1].loss_
    clfs = [GMMClassifier("auto", max_components=m, random_state=0, **CPU).fit(X, y)
            for m in (10, 1000)]
    np.testing.assert_array_equal(clfs[0].priors_[0].covariance_scale,
                                  clfs[1].priors_[0].covariance_scale)
    np.testing.assert_array_equal(clfs[0].n_components_, clfs[1].n_components_)


@pytest.mark.parametrize("n_components", [4, "auto"])
def test_clusters_of_identical_points_give_one_prior_whatever_the_dtype_or_weights(n_components):
    """Four distinct rows (two binary features), K >= 4: every cluster of
    the seeding is one repeated point, spread 0; float64 sums leave ~1e-8
    of rounding there, which the relative floor took as a spread (a prior
    of 3.5e-17 in float64 against 4.96e-7 in float32, 1.8e-23 for the rows
    weighted).  Below RESOLVED_SPREAD it counts as none: one prior."""
    X = np.random.default_rng(0).integers(0, 2, (200, 2)).astype(float)
    rows, counts = np.unique(X, axis=0, return_counts=True)
    kw = dict(random_state=0, **CPU)
    fits = [BayesianGMM(n_components, dtype="float32", **kw).fit(X),
            BayesianGMM(n_components, dtype="float64", **kw).fit(X),
            BayesianGMM(n_components, dtype="float64", **kw).fit(rows, sample_weight=counts)]
    psi = [f.priors_.covariance_scale for f in fits]
    np.testing.assert_allclose(psi[1], psi[0], rtol=1e-12)
    np.testing.assert_allclose(psi[2], psi[0], rtol=1e-12)
    # The old rule's floor: 1e-3 of each feature's spread, at twice the variance.
    np.testing.assert_allclose(np.diag(psi[0]), 2 * (1e-3 * X.std(0)) ** 2, rtol=1e-12)


@pytest.mark.parametrize("estimator", ["mixture", "classifier"])
def test_missing_entries_weigh_the_default_wishart_prior_by_their_pair_coverage(estimator):
    # With entries missing, each covariance entry is estimated from the
    # rows observing both its features: the default Wishart prior counts as
    # 1 / q points instead of one (q: that fraction of the weight, averaged
    # over the D x D entries, features missing independently), its scatter
    # scaled alike, so that it weighs against the data what it weighs on
    # complete data.  Hand computation from the mask and the weights.
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0, 1, (150, 3)), rng.normal(6, 1, (150, 3))])
    y = np.repeat([0, 1], 150)
    w = rng.integers(1, 4, X.shape[0]).astype(float)
    Xm = X.copy()
    Xm[rng.random(X.shape) < np.array([0.1, 0.3, 0.5])] = np.nan
    Xm[np.isnan(Xm).all(1), 0] = X[np.isnan(Xm).all(1), 0]
    p = (w[:, None] * ~np.isnan(Xm)).sum(0) / w.sum()
    both = np.outer(p, p)
    np.fill_diagonal(both, p)
    q = both.mean()

    def fit(cov, priors=None, data=Xm):
        kw = dict(covariance_type=cov, missing="marginalize", random_state=0, priors=priors,
                  **CPU)
        if estimator == "mixture":
            return BayesianGMM(2, **kw).fit(data, sample_weight=w).priors_
        return GMMClassifier(1, **kw).fit(data, y, sample_weight=w).priors_[0]

    for cov in ("full", "tied"):
        full, diag = fit(cov), fit("diag")
        typical = np.atleast_1d(diag.scale_rate) / 2        # the same seeding's spread
        assert full.covariance_dof == pytest.approx(3 + 1 + 1 / q, rel=1e-12)
        np.testing.assert_allclose(full.covariance_scale, np.diag(typical ** 2) / q, rtol=1e-10)
    # Complete data: one point, as before.
    complete = fit("full", data=X)
    assert complete.covariance_dof == 3 + 2
    # A user's values are kept as given.
    mine = fit("full", Priors(covariance_dof=7.0, covariance_scale=2.0))
    assert mine.covariance_dof == 7.0
    np.testing.assert_allclose(mine.covariance_scale, 2.0 * np.eye(3))


def test_a_prior_mean_far_from_the_data_is_said():
    # Priors(mean_loc=1e4) on data around 0: the default mean_scale is the
    # data's (2 sd), so the prior held the means 5,000 of its sds away and
    # the fit diverged with remedies that do not help (float64, the
    # covariance prior); at 1e3 it "fitted" a component at ~(1000, 1000).
    # Said at the user's line, naming the features and a mean_scale that
    # reaches the data.
    import pandas as pd

    X = np.random.default_rng(0).normal(size=(200, 2))
    # (Such a prior also leaves one of the two components empty, or a thin
    # one beyond float32: said too, not checked here.)
    warnings.filterwarnings("ignore", message=".*components ended with weight below")
    warnings.filterwarnings("ignore", message=".*beyond what float32 resolves")
    with pytest.warns(UserWarning, match=r"BayesianGMM: Priors.mean_loc is far from the data in "
                                         r"feature\(s\) 0 \(5\d\d x mean_scale .*, 1 .*give a "
                                         r"mean_loc within the data's range, or a mean_scale "
                                         r"that reaches the data \(e.g. Priors\(mean_scale=1e"
                                         r"\+03\)\)") as caught:
        BayesianGMM(2, priors=Priors(mean_loc=1e3), **CPU).fit(X)
    assert [w.filename for w in caught if "mean_loc" in str(w.message)] == [__file__]
    df = pd.DataFrame(X, columns=["a", "b"])
    with pytest.warns(UserWarning, match=r"GMMClassifier: .* feature\(s\) 'b' \(2\d\d x "):
        GMMClassifier(1, priors=Priors(mean_loc=[0.0, 500.0]), **CPU).fit(df, np.arange(200) % 2)
    # Near the data, or with a scale that reaches it, or the defaults: silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for priors in (None, Priors(mean_loc=3.0), Priors(mean_loc=1e3, mean_scale=1e3),
                       Priors(mean_scale=0.01)):
            BayesianGMM(1, priors=priors, **CPU).fit(X)
        from bayesgmm.datasets import load_iris
        BayesianGMM(2, priors=Priors.pyro_iris(), covariance_type="diag", **CPU).fit(
            load_iris()[["petal_length"]])


def test_priors_repr_is_one_line_with_large_arrays_summarised():
    """A fitted 20-feature model's priors printed 87 lines (and broke the
    estimator's indented repr); small arrays and lists stay whole."""
    X = np.random.default_rng(0).normal(size=(300, 20))
    g = BayesianGMM(3, n_init=1, device="cpu").fit(X)
    text = repr(g.priors_)
    assert "\n" not in text and len(text) < 600
    assert "weight_concentration=array([1., 1., 1.])" in text       # 3 entries: whole
    assert "covariance_dof=22.0" in text and "..." in text and "(20, 20)" in text
    small = Priors(weight_concentration=[1, 2], mean_scale=np.arange(3.0))
    assert repr(small) == "Priors(weight_concentration=[1, 2], mean_scale=array([0., 1., 2.]))"
    assert "\n" not in repr(BayesianGMM(3, priors=Priors(covariance_scale=np.eye(20)))).split(
        "priors=")[1]
    import torch
    assert "\n" not in repr(Priors(covariance_scale=torch.eye(20)))      # tensors too
    assert repr(Priors(mean_loc=torch.zeros(2))) == "Priors(mean_loc=tensor([0., 0.]))"
