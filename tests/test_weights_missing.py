"""Sample weights and missing values (``sample_weight``, ``missing="marginalize"``,
``impute``), checked against repeated rows, scipy densities, Pyro's own loss
and an independent numpy EM step for data missing at random."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from bayesgmm import BayesianGMM, GMMClassifier
from bayesgmm import covariance as cm
from bayesgmm import fitting
from bayesgmm.covariance import COVARIANCE_TYPES
from bayesgmm.fitting import (PRECISION_ROUTE_MIN_FEATURES, ConditionalCovariance, Groups,
                              _JoinedConditional, class_elbo_loss, elbo_loss, negative_log_joint,
                              observed_component_log_prob, observed_terms)
from bayesgmm.priors import MixtureParams, Standardizer, resolve_priors

CPU = dict(device="cpu", random_state=0)


def _blobs(seed=0, n=(120, 150, 90), D=3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D, D)) * 0.4 + np.eye(D)
    centres = np.array([[0.0] * D, [6.0] * D, [0.0, 7.0] + [-5.0] * (D - 2)])
    X = np.concatenate([rng.normal(size=(m, D)) @ A + c for m, c in zip(n, centres)])
    y = np.repeat(np.arange(3), n)
    return X, y


def _hide(X, frac, seed=0):
    """X with a fraction of entries missing completely at random (no row
    left empty)."""
    rng = np.random.default_rng(seed)
    Xm = X.copy()
    Xm[rng.random(X.shape) < frac] = np.nan
    empty = np.isnan(Xm).all(1)
    Xm[empty, 0] = X[empty, 0]
    return Xm


def _sorted(est):
    """Fitted (weights, means, covariances) in the order of the first mean
    coordinate (labels are arbitrary)."""
    o = np.argsort(est.means_[:, 0])
    cov = est.covariances_ if est.covariances_.ndim == 2 and est.covariance_type_ == "tied" \
        else est.covariances_[o]
    return est.weights_[o], est.means_[o], cov


# ------------------------------------------------------------ sample weights
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows_mixture(covariance_type):
    X, _ = _blobs()
    w = np.random.default_rng(1).integers(0, 4, len(X))
    kw = dict(covariance_type=covariance_type, dtype="float64", tol=1e-9, **CPU)
    a = BayesianGMM(3, **kw).fit(X, sample_weight=w)
    perm = np.random.default_rng(2).permutation(int(w.sum()))
    b = BayesianGMM(3, **kw).fit(np.repeat(X, w, axis=0)[perm])
    for x, y in zip(_sorted(a), _sorted(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-7)
    np.testing.assert_allclose(a.loss_, b.loss_, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:n_components='auto' chose the largest K")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows_classifier(covariance_type):
    X, y = _blobs()
    y = np.where(X[:, 0] > 3, 1, 0)          # two classes of 1-2 blobs each
    w = np.random.default_rng(1).integers(0, 4, len(X))
    kw = dict(covariance_type=covariance_type, dtype="float64", tol=1e-9, **CPU)
    a = GMMClassifier(2, **kw).fit(X, y, sample_weight=w)
    b = GMMClassifier(2, **kw).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(a.class_prior_, b.class_prior_, rtol=1e-12)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), rtol=1e-6)
    np.testing.assert_allclose(a.class_losses_, b.class_losses_, rtol=1e-9)
    # "auto" chooses K per class by BIC with the weighted sizes.
    a = GMMClassifier("auto", max_components=3, **kw).fit(X, y, sample_weight=w)
    b = GMMClassifier("auto", max_components=3, **kw).fit(np.repeat(X, w, axis=0),
                                                          np.repeat(y, w))
    np.testing.assert_array_equal(a.n_components_, b.n_components_)
    np.testing.assert_allclose(a.bic_, b.bic_, rtol=1e-7)


@pytest.mark.filterwarnings("ignore:n_components='auto' chose the largest K")
def test_auto_caps_k_by_the_weight_as_the_rows_repeated_would():
    # 9 rows of weight 3: full 2-D mixtures of K <= 4 have fewer than 27
    # parameters, as for the 27 rows repeated (the cap counted the 9 rows).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 2))
    X[::2] += 6
    kw = dict(max_components=6, covariance_type="full", dtype="float64", **CPU)
    a = BayesianGMM("auto", **kw).fit(X, sample_weight=np.full(9, 3.0))
    b = BayesianGMM("auto", **kw).fit(np.repeat(X, 3, axis=0))
    assert np.isfinite(b.bic_).sum() == 4
    np.testing.assert_allclose(a.bic_, b.bic_, rtol=1e-7)
    assert a.n_components_ == b.n_components_
    Xc = np.vstack([X, rng.normal(size=(60, 2)) + 20])
    yc = np.r_[np.zeros(9), np.ones(60)].astype(int)
    c = GMMClassifier("auto", **kw).fit(Xc, yc, sample_weight=np.r_[np.full(9, 3.0), np.ones(60)])
    d = GMMClassifier("auto", **kw).fit(np.vstack([np.repeat(X, 3, axis=0), Xc[9:]]),
                                        np.r_[np.zeros(27), np.ones(60)].astype(int))
    np.testing.assert_array_equal(c.n_components_, d.n_components_)
    np.testing.assert_allclose(c.bic_, d.bic_, rtol=1e-7)
    # Fewer rows than the weight allows components: K stops at the rows.
    e = BayesianGMM("auto", **kw | {"covariance_type": "spherical"}).fit(
        X[:3], sample_weight=np.full(3, 100.0))
    assert np.isfinite(e.bic_).sum() == 3


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_zero_weights_equal_dropped_rows_float32(Est):
    X, y = _blobs()
    w = (np.random.default_rng(3).random(len(X)) < 0.7).astype(float)
    keep = w > 0
    args, args_kept = ((X, y), (X[keep], y[keep])) if Est is GMMClassifier else ((X,), (X[keep],))
    a = Est(3 if Est is BayesianGMM else 1, **CPU).fit(*args, sample_weight=w)
    b = Est(3 if Est is BayesianGMM else 1, **CPU).fit(*args_kept)
    # Rows of weight 0 are removed before anything else: the same fit exactly.
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)


def test_fractional_weights_scale_against_the_prior():
    """Weights are frequency weights: multiplying them all by c is c times
    the data against the same prior (the fit of the rows repeated c times)."""
    X, _ = _blobs()
    kw = dict(dtype="float64", tol=1e-10, **CPU)
    double = BayesianGMM(3, **kw).fit(X, sample_weight=np.full(len(X), 2.0))
    repeated = BayesianGMM(3, **kw).fit(np.concatenate([X, X]))
    for x, y in zip(_sorted(double), _sorted(repeated)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bad, match", [
    (np.r_[-1.0, np.ones(359)], "finite and >= 0, got -1.0 at row 0"),
    (np.r_[np.inf, np.ones(359)], "finite and >= 0, got inf"),
    (np.r_[np.nan, np.ones(359)], "finite and >= 0, got nan"),
    (np.ones(10), r"shape \(10,\), expected \(360,\)"),
    (np.ones((360, 2)), r"shape \(360, 2\)"),
    (np.zeros(360), "all zero"),
    (["a"] * 360, r"must hold numbers, got list of dtype <U1, first 'a': convert it, e.g. "
                  r"np.asarray\(sample_weight, dtype=float\)"),
    (np.full(360, 2 + 3j), r"must be real numbers, got complex values \(dtype complex128\)"),
    (np.ones(360) * 1j, "must be real numbers"),
    # float32 statistics: weights summing to ~1e38 once gave a wrong, "converged" fit
    (np.full(360, 5e35), r"sums to 1.8e\+38, beyond what the fit's float32 statistics hold.*"
                         r"dtype='float64'"),
    (np.full(360, 1e-46), r"spans 1e-46 to 1e-46, beyond what the fit's float32 arithmetic.*"
                          r"dtype='float64'"),
])
@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_bad_weights_are_clear_errors_and_keep_the_fit(Est, bad, match):
    X, y = _blobs()
    args = (X, y) if Est is GMMClassifier else (X,)
    est = Est(2, max_iter=0, em_max_iter=5, **CPU).fit(*args)
    means = est.means_.copy()
    with pytest.raises(ValueError, match=match):
        est.fit(*args, sample_weight=bad)
    np.testing.assert_array_equal(est.means_, means)


def test_weighted_score_bic_aic_and_fit_predict_equal_repeated_rows():
    """score, bic and aic with sample_weight are those of the repeated rows
    (N the weights' sum), bic_ of a weighted "auto" fit is bic with the
    fit's weights, and fit_predict passes the weights to fit."""
    X, _ = _blobs()
    w = np.random.default_rng(1).integers(0, 4, len(X)).astype(float)
    rep = np.repeat(X, w.astype(int), axis=0)
    gmm = BayesianGMM("auto", max_components=4, dtype="float64", **CPU).fit(X, sample_weight=w)
    assert gmm.score(X, sample_weight=w) == pytest.approx(gmm.score(rep), rel=1e-12)
    assert gmm.bic(X, sample_weight=w) == pytest.approx(gmm.bic(rep), rel=1e-12)
    assert gmm.aic(X, sample_weight=w) == pytest.approx(gmm.aic(rep), rel=1e-12)
    assert gmm.bic_[gmm.n_components_ - 1] == pytest.approx(gmm.bic(X, sample_weight=w),
                                                            rel=1e-9)
    assert gmm.score(X, sample_weight=w) != pytest.approx(gmm.score(X), rel=1e-6)
    labels = BayesianGMM(3, dtype="float64", **CPU).fit_predict(X, sample_weight=w)
    fitted = BayesianGMM(3, dtype="float64", **CPU).fit(X, sample_weight=w)
    np.testing.assert_array_equal(labels, fitted.predict(X))
    with pytest.raises(ValueError, match=r"sample_weight has shape \(3,\)"):
        gmm.score(X, sample_weight=[1.0, 2.0, 3.0])
    # A row of weight 0 is dropped even where its density underflows to 0
    # (log -inf): score, bic and aic equal those without it (0 x -inf is NaN).
    far = np.vstack([X, np.full((1, X.shape[1]), 1e300)])
    wf = np.r_[w, 0.0]
    assert gmm.score_samples(far)[-1] == -np.inf
    assert gmm.score(far, sample_weight=wf) == pytest.approx(gmm.score(rep), rel=1e-12)
    assert gmm.bic(far, sample_weight=wf) == pytest.approx(gmm.bic(rep), rel=1e-12)


@pytest.mark.parametrize("bad, match", [
    (np.full(360, 5e35), r"sums to 1.8e\+38, beyond what the fit's float32 statistics"),
    (np.full(360, 1e-46), r"spans 1e-46 to 1e-46, beyond what the fit's float32 arithmetic"),
])
@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_out_of_core_weights_beyond_float32_are_refused(tmp_path, Est, bad, match):
    """The same refusals when X is read in chunks (a memmap), where the
    weights are checked chunk by chunk."""
    X, y = _blobs()
    np.save(tmp_path / "x.npy", X)
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    args = (Xm, y) if Est is GMMClassifier else (Xm,)
    with pytest.raises(ValueError, match=match + ".*dtype='float64'"):
        Est(2, **CPU).fit(*args, sample_weight=bad)


def test_weights_accept_lists_series_and_tensors():
    X, _ = _blobs()
    w = np.random.default_rng(0).integers(1, 3, len(X)).astype(float)
    ref = BayesianGMM(3, **CPU).fit(X, sample_weight=w).means_
    for form in (list(w), pd.Series(w), torch.tensor(w)):
        np.testing.assert_array_equal(BayesianGMM(3, **CPU).fit(X, sample_weight=form).means_, ref)


# ------------------------------------------------ the objective: Pyro's loss
def _params(name, D, K, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    base = torch.eye(D, dtype=dtype) * torch.linspace(0.5, 2.0, D, dtype=dtype)
    base[0, 1] = base[1, 0] = 0.3
    covs = torch.stack([base * (1 + k) for k in range(K)])
    value = {"full": torch.linalg.inv(covs), "tied": torch.linalg.inv(base),
             "diag": torch.sqrt(torch.diagonal(covs, dim1=-2, dim2=-1)),
             "spherical": torch.linspace(1.0, 1.5, K, dtype=dtype)}[name]
    w = torch.linspace(1.0, 2.0, K, dtype=dtype)
    return MixtureParams(w / w.sum(), torch.randn(K, D, generator=g, dtype=dtype), value)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weighted_masked_loss_equals_pyro(covariance_type):
    """The fused loss with sample weights and missing entries (per-pattern
    marginals, weighted statistics) equals the loss Pyro computes from the
    model (weighted factor, per-point ObservedNormal)."""
    D, K, N = 3, 2, 25
    g = torch.Generator().manual_seed(1)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    X[torch.rand(N, D, generator=g) < 0.25] = float("nan")
    X[torch.isnan(X).all(1), 0] = 0.5
    w = torch.rand(N, generator=g, dtype=torch.float64) * 3
    family = cm.get(covariance_type, D)
    priors = resolve_priors(None, family, K, (np.zeros(D), np.ones(D)))
    pt = Standardizer(np.zeros(D), np.ones(D)).priors(priors, "cpu", dtype=torch.float64)
    params = _params(covariance_type, D, K)
    one = torch.zeros(1, dtype=torch.long)
    for weight in (None, w):
        fused = negative_log_joint(Groups.single(X, weight), params.map(lambda t: t[None]), one,
                                   pt, family)
        assert float(fused) == pytest.approx(elbo_loss(X, params, pt, family, weight), rel=1e-12)
    # The per-class model: classes 0/1, every class padded to K components.
    labels = torch.arange(N) % 2
    cparams = params.map(lambda t: torch.stack([t, t]))
    mask = torch.ones(2, K, dtype=torch.bool)
    fused = negative_log_joint(Groups.from_labels(X, labels, 2, w), cparams, torch.arange(2), pt,
                               family, mask).sum()
    assert float(fused) == pytest.approx(
        class_elbo_loss(X, labels, cparams, pt, mask, family, w), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_observed_marginal_matches_scipy(covariance_type):
    D, K = 4, 3
    params = _params(covariance_type, D, K)
    family = cm.get(covariance_type, D)
    cov = family.dense(params.cov, K).numpy()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, D))
    X[rng.random(X.shape) < 0.4] = np.nan
    X[np.isnan(X).all(1), 1] = 0.3
    got = observed_component_log_prob(torch.tensor(X), params, family).numpy()
    for n, x in enumerate(X):
        o = ~np.isnan(x)
        for k in range(K):
            ref = np.log(params.weights[k].item()) + multivariate_normal(
                params.means[k].numpy()[o], cov[k][np.ix_(o, o)]).logpdf(x[o])
            assert got[k, n] == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("rows", ["light", "mixed", "heavy"])
def test_observed_terms_match_the_textbook_conditional_gaussian(covariance_type, rows):
    """Both routes of ``observed_terms`` (the precision's partitions for
    rows missing at most half the features, one factor of each pattern's
    observed covariance for the others), alone and in one block, against
    numpy per row: the observed marginal's density (scipy), E[x_m | x_o]
    and the conditional covariance of the missing block, per pattern and
    summed with pattern weights."""
    D, K = PRECISION_ROUTE_MIN_FEATURES, 3
    base = _params(covariance_type, D, K)
    family = cm.get(covariance_type, D)
    # Two pairs (as a classifier's classes), each with its own means,
    # covariances and missing entries.
    wider = {"full": base.cov / 1.5, "tied": base.cov / 1.5}.get(covariance_type,
                                                                 base.cov * 1.5 ** 0.5)
    p = MixtureParams(torch.stack([base.weights, base.weights]),
                      torch.stack([base.means, base.means + 0.5]), torch.stack([base.cov, wider]))
    cov = family.dense(p.cov, K).numpy()                             # (2, K, D, D)
    X = np.random.default_rng(1).normal(size=(60, D)) * 2

    def holes(seed):
        rng = np.random.default_rng(seed)
        hide = rng.random(X.shape) < (0.8 if rows == "heavy" else 0.35)
        hide[:, 0] = False
        most = D // 2 if rows == "light" else D - 1
        hide[0, 1:1 + most] = True                    # one row at the most
        for row in hide:                              # at most ``most`` per row
            row[np.flatnonzero(row)[most:]] = False
        if rows == "heavy":
            hide[:, 1:D // 2 + 2] = True              # every row misses more than half
        return hide

    hide = np.stack([holes(2), holes(3)])                            # (2, n, D)
    observed = ~hide
    x = torch.tensor(np.where(observed, X, 0.0)).transpose(-1, -2)   # (2, D, n)
    o = torch.tensor(observed).transpose(-1, -2)
    logn, y, ccov, inv = observed_terms(x, o, p, family)
    routes = {"light": ConditionalCovariance, "heavy": ConditionalCovariance,
              "mixed": _JoinedConditional}
    assert type(ccov) is routes[rows]                                # the routes under test
    assert (ccov.parts is not None) == (rows == "light")
    only = observed_terms(x, o, p, family, need_moments=False)[0]
    per = ccov.per_pattern()                                         # (2, T, K, D, D)
    R = torch.rand(2, K, per.shape[1], dtype=torch.float64,
                   generator=torch.Generator().manual_seed(2))
    mass = np.zeros((2, K, D, D))
    for q in range(2):
        for n, xn in enumerate(X):
            ob, mi = observed[q, n], hide[q, n]
            for k in range(K):
                S, mu = cov[q, k], p.means[q, k].numpy()
                Soo = S[np.ix_(ob, ob)]
                ref = multivariate_normal(mu[ob], Soo).logpdf(xn[ob])
                assert float(logn[q, k, n]) == pytest.approx(ref, rel=1e-10)
                assert float(only[q, k, n]) == pytest.approx(ref, rel=1e-10)
                e = xn - mu
                e[mi] = S[np.ix_(mi, ob)] @ np.linalg.solve(Soo, e[ob])
                np.testing.assert_allclose(y[q, k, :, n].numpy(), e, rtol=1e-10, atol=1e-12)
                C = np.zeros((D, D))
                C[np.ix_(mi, mi)] = S[np.ix_(mi, mi)] - S[np.ix_(mi, ob)] @ np.linalg.solve(
                    Soo, S[np.ix_(ob, mi)])
                np.testing.assert_allclose(per[q, inv[q, n], k].numpy(), C, rtol=1e-10,
                                           atol=1e-12)
        for t in range(per.shape[1]):
            mass[q] += R[q, :, t, None, None].numpy() * per[q, t].numpy()
    np.testing.assert_allclose(ccov.weighted(R).numpy(), mass, rtol=1e-10, atol=1e-12)


def test_observed_terms_precision_route_keeps_float32_accuracy():
    """An ill-conditioned covariance (condition number 1e5, correlated
    features), rows missing up to half the features, float32: the
    precision route's log densities, conditional means and covariances
    against float64 numpy within the factor route's rounding (its log
    densities by d^T Lambda d - u^T Lambda_mm^-1 u were 0.15 nats off)."""
    D, n = PRECISION_ROUTE_MIN_FEATURES, 400
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    S = (Q * np.logspace(0, -5, D)) @ Q.T
    S /= np.sqrt(np.outer(np.diag(S), np.diag(S)))                  # a correlation matrix
    X = rng.multivariate_normal(np.zeros(D), S, size=n)
    hide = rng.random((n, D)) < 0.45
    hide[np.arange(n), rng.integers(0, D, n)] = True
    for row in hide:
        row[np.flatnonzero(row)[D // 2:]] = False
    family = cm.get("full", D)
    p = MixtureParams(torch.ones(1, 1), torch.zeros(1, 1, D),
                      family.from_covariances(torch.tensor(S)[None, None]).float())
    x = torch.tensor(np.where(hide, 0.0, X), dtype=torch.float32).t()[None]
    logn, y, ccov, inv = observed_terms(x, torch.tensor(~hide).t()[None], p, family)
    assert ccov.parts is not None
    per = ccov.per_pattern()[0, inv[0], 0].double().numpy()
    for i in range(n):
        o, m = ~hide[i], hide[i]
        Soo = S[np.ix_(o, o)]
        assert abs(float(logn[0, 0, i]) - multivariate_normal(np.zeros(o.sum()), Soo).logpdf(
            X[i, o])) < 2e-3
        e = X[i].copy()
        e[m] = S[np.ix_(m, o)] @ np.linalg.solve(Soo, X[i, o])
        np.testing.assert_allclose(y[0, 0, :, i].double().numpy(), e, atol=1e-3)
        C = np.zeros((D, D))
        C[np.ix_(m, m)] = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ np.linalg.solve(Soo, S[np.ix_(o, m)])
        np.testing.assert_allclose(per[i], C, atol=1e-3 * np.abs(C).max())


# ------------------------------------------------------- missing values: fit
def _reference_ecm_step(X, w, weights, means, covs, priors):
    """One MAP-ECM step for a full-covariance mixture with entries missing
    at random, written per row in numpy (the textbook conditional-Gaussian
    form): responsibilities from the observed marginals; E[x | x_o] and
    the conditional covariance of the missing block; then the weights, the
    means given the current covariances and the covariances given the new
    means, under the resolved priors (data units)."""
    N, D = X.shape
    K = len(weights)
    R = np.zeros((N, K))
    xhat = np.zeros((N, K, D))
    Cm = np.zeros((N, K, D, D))
    for n in range(N):
        o = ~np.isnan(X[n])
        m = ~o
        for k in range(K):
            S = covs[k]
            Soo_inv = np.linalg.inv(S[np.ix_(o, o)])
            R[n, k] = np.log(weights[k]) + multivariate_normal(means[k][o], S[np.ix_(o, o)]).logpdf(X[n][o])
            xh = X[n].copy()
            xh[m] = means[k][m] + S[np.ix_(m, o)] @ Soo_inv @ (X[n][o] - means[k][o])
            xhat[n, k] = xh
            Cm[n, k][np.ix_(m, m)] = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ Soo_inv @ S[np.ix_(o, m)]
    R = np.exp(R - logsumexp(R, 1, keepdims=True)) * w[:, None]
    Nk = R.sum(0)
    a = np.broadcast_to(priors.weight_concentration, (K,))
    new_w = (Nk + a - 1) / (Nk + a - 1).sum()
    m0, s0 = np.broadcast_to(priors.mean_loc, (D,)), np.broadcast_to(priors.mean_scale, (D,))
    L0 = np.diag(1 / s0 ** 2)
    psi = np.asarray(priors.covariance_scale)
    psi = np.diag(np.broadcast_to(psi, (D,))) if psi.ndim < 2 else psi
    new_m, new_c = np.zeros_like(means), np.zeros_like(covs)
    for k in range(K):
        Lk = np.linalg.inv(covs[k])
        s1 = (R[:, k, None] * xhat[:, k]).sum(0)
        new_m[k] = np.linalg.solve(Nk[k] * Lk + L0, Lk @ s1 + L0 @ m0)
        d = xhat[:, k] - new_m[k]
        S = (R[:, k, None, None] * (d[:, :, None] * d[:, None, :] + Cm[:, k])).sum(0)
        new_c[k] = (psi + S) / (priors.covariance_dof - D - 1 + Nk[k])
    return new_w, new_m, new_c


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("D", [3, PRECISION_ROUTE_MIN_FEATURES])
def test_marginalize_fit_is_a_fixed_point_of_the_textbook_em(weighted, D):
    """At D = 3 every row takes the factor route of ``observed_terms``; at
    its threshold most take the precision route and the few missing more
    than half the features the factor route, in the same blocks."""
    X, _ = _blobs(n=(60, 80, 50), D=D)
    Xm = _hide(X, 0.3)
    if D > 3:
        assert 0 < (2 * np.isnan(Xm).sum(1) > D).sum() < len(X) / 10
    w = np.random.default_rng(4).integers(1, 4, len(X)).astype(float) if weighted else np.ones(len(X))
    gmm = BayesianGMM(3, missing="marginalize", dtype="float64", tol=1e-12, em_max_iter=5000,
                      max_iter=0, **CPU).fit(Xm, sample_weight=w if weighted else None)
    assert gmm.converged_
    new_w, new_m, new_c = _reference_ecm_step(Xm, w, gmm.weights_, gmm.means_, gmm.covariances_,
                                              gmm.priors_)
    np.testing.assert_allclose(new_w, gmm.weights_, rtol=1e-6)
    np.testing.assert_allclose(new_m, gmm.means_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_c, gmm.covariances_, rtol=1e-5, atol=1e-6)


def _reference_diagonal_ecm_step(X, w, weights, means, scales, spherical, priors):
    """One MAP-ECM step for a diagonal (or spherical) mixture with entries
    missing at random, per row in numpy: responsibilities from the observed
    features' normal densities; a missing coordinate's conditional mean is
    the component's mean, its conditional variance the component's; then
    the weights, each mean coordinate given the current scale, and each
    scale given the new means (InverseGamma on the standard deviation: the
    positive root of (shape + 1 + n) s^2 - rate s - S = 0, n the points
    behind it: N_k per feature, D N_k for a spherical component)."""
    from scipy.stats import norm

    N, D = X.shape
    K = len(weights)
    sd = np.repeat(scales[:, None], D, 1) if spherical else scales
    o = ~np.isnan(X)
    R = np.zeros((N, K))
    for n in range(N):
        for k in range(K):
            R[n, k] = np.log(weights[k]) + norm.logpdf(X[n, o[n]], means[k, o[n]],
                                                       sd[k, o[n]]).sum()
    R = np.exp(R - logsumexp(R, 1, keepdims=True)) * w[:, None]
    Nk = R.sum(0)
    a = np.broadcast_to(priors.weight_concentration, (K,))
    new_w = (Nk + a - 1) / (Nk + a - 1).sum()
    m0 = np.broadcast_to(priors.mean_loc, (D,))
    s0 = np.broadcast_to(priors.mean_scale, (D,))
    new_m = np.zeros_like(means)
    S = np.zeros((K, D))
    for k in range(K):
        xhat = np.where(o, X, means[k])
        lam = 1 / sd[k] ** 2
        new_m[k] = ((lam * (R[:, k, None] * xhat).sum(0) + m0 / s0 ** 2)
                    / (Nk[k] * lam + 1 / s0 ** 2))
        S[k] = (R[:, k, None] * ((xhat - new_m[k]) ** 2 + np.where(o, 0, sd[k] ** 2))).sum(0)
    shape, rate = priors.scale_shape, priors.scale_rate
    if spherical:
        A = shape + 1 + D * Nk
        new_s = (rate + np.sqrt(rate ** 2 + 4 * A * S.sum(1))) / (2 * A)
    else:
        A = (shape + 1 + Nk)[:, None]
        new_s = (rate + np.sqrt(rate ** 2 + 4 * A * S)) / (2 * A)
    return new_w, new_m, new_s


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("D", [3, 12])
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_diagonal_marginalize_fit_is_a_fixed_point_of_the_textbook_em(covariance_type, D,
                                                                      weighted):
    """Diagonal and spherical mixtures with missing entries take the
    expanded route at any D (masks in the products): their fit is a fixed
    point of the per-row textbook ECM step."""
    X, _ = _blobs(n=(60, 80, 50), D=D)
    Xm = _hide(X, 0.3)
    w = np.random.default_rng(4).integers(1, 4, len(X)).astype(float) if weighted \
        else np.ones(len(X))
    assert fitting.expanded_route(cm.get(covariance_type, D), D, torch.device("cpu"), True)
    gmm = BayesianGMM(3, covariance_type=covariance_type, missing="marginalize", dtype="float64",
                      tol=1e-12, em_max_iter=5000, max_iter=0, **CPU).fit(
                          Xm, sample_weight=w if weighted else None)
    assert gmm.converged_
    scales = np.sqrt(gmm.covariances_)
    new_w, new_m, new_s = _reference_diagonal_ecm_step(Xm, w, gmm.weights_, gmm.means_, scales,
                                                       covariance_type == "spherical",
                                                       gmm.priors_)
    np.testing.assert_allclose(new_w, gmm.weights_, rtol=1e-6)
    np.testing.assert_allclose(new_m, gmm.means_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_s, scales, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_marginalize_recovers_truth_better_than_dropping_rows(covariance_type):
    """Half the entries missing: the marginal fit uses every row and
    recovers the means closer than the fit on the complete rows only."""
    X, _ = _blobs(n=(200, 250, 150))
    Xm = _hide(X, 0.4, seed=5)
    full = BayesianGMM(3, covariance_type=covariance_type, **CPU).fit(X)
    marg = BayesianGMM(3, covariance_type=covariance_type, missing="marginalize", **CPU).fit(Xm)
    cc = BayesianGMM(3, covariance_type=covariance_type, **CPU).fit(Xm[~np.isnan(Xm).any(1)])
    err = lambda e: np.abs(_sorted(e)[1] - _sorted(full)[1]).max()
    assert err(marg) < err(cc)
    assert err(marg) < 0.3


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_marginalize_without_nan_equals_default_exactly(Est, covariance_type):
    X, y = _blobs()
    args = (X, y) if Est is GMMClassifier else (X,)
    a = Est(2, covariance_type=covariance_type, **CPU).fit(*args)
    b = Est(2, covariance_type=covariance_type, missing="marginalize", **CPU).fit(*args)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_ == b.loss_


@pytest.mark.parametrize("inference", ["vi", "nuts"])
@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_marginalize_without_nan_equals_default_exactly_beyond_the_map(Est, inference):
    """The same with a posterior: no NaN, so the same model, the same draws."""
    X, y = _blobs(n=(40, 40, 40))
    args = (X, y) if Est is GMMClassifier else (X,)
    kw = dict(covariance_type="diag", inference=inference, n_samples=20, **CPU)
    if inference == "nuts":
        kw.update(n_chains=1, n_warmup=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # short chains
        a = Est(2, **kw).fit(*args)
        b = Est(2, missing="marginalize", **kw).fit(*args)
    for name, draws in a.posterior_samples().items():
        np.testing.assert_array_equal(draws, b.posterior_samples()[name])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_nuts_with_integer_weights_samples_the_repeated_rows_posterior():
    """NUTS on weighted rows and on the rows repeated: the same potential
    (tested exactly against Pyro elsewhere), so the same posterior: the
    draws' means agree within Monte Carlo error, and so do their spreads
    (weights of 1 and 5 triple the data: ignoring them would widen the
    means' posterior by about sqrt(3))."""
    rng = np.random.default_rng(2)
    X = np.r_[rng.normal(0.0, 1.0, (30, 1)), rng.normal(6.0, 1.0, (30, 1))]
    w = np.where(rng.random(len(X)) < 0.5, 1.0, 5.0)
    rep = np.repeat(X, w.astype(int), axis=0)
    kw = dict(covariance_type="diag", inference="nuts", n_samples=200, n_chains=2,
              n_warmup=60, dtype="float64", **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # short chains
        weighted = BayesianGMM(2, **kw).fit(X, sample_weight=w)
        repeated = BayesianGMM(2, **kw).fit(rep)
    a, b = weighted.posterior_samples(), repeated.posterior_samples()
    order = np.argsort(weighted.means_[:, 0]), np.argsort(repeated.means_[:, 0])
    ma, mb = a["means"].mean(0)[order[0]], b["means"].mean(0)[order[1]]
    sa, sb = a["means"].std(0)[order[0]], b["means"].std(0)[order[1]]
    assert np.all(np.abs(ma - mb) < 4 * np.sqrt(sa ** 2 + sb ** 2) / np.sqrt(30)), (ma, mb)
    assert np.all((sa / sb > 0.7) & (sa / sb < 1.4)), (sa, sb)


def test_marginalize_pyro_backend_agrees_with_fused():
    X, _ = _blobs(n=(40, 40, 40))
    Xm = _hide(X, 0.25)
    w = np.random.default_rng(0).integers(1, 3, len(X)).astype(float)
    kw = dict(missing="marginalize", em_max_iter=0, max_iter=30, n_init=1, **CPU)
    fused = BayesianGMM(3, **kw).fit(Xm, sample_weight=w)
    pyro = BayesianGMM(3, backend="pyro", **kw).fit(Xm, sample_weight=w)
    # Same start, same Adam on the same loss: the same path up to rounding.
    np.testing.assert_allclose(pyro.losses_, fused.losses_, rtol=1e-4)


# ------------------------------------------------ missing values: predictions
def test_predictions_marginalise_missing_features():
    X, y = _blobs()
    gmm = BayesianGMM(3, missing="marginalize", **CPU).fit(_hide(X, 0.2))
    Xq = _hide(X[:50], 0.4, seed=9)
    cov = gmm._family().matrices(gmm.covariances_, 3, 3)
    ref = np.array([logsumexp([np.log(gmm.weights_[k]) + multivariate_normal(
        gmm.means_[k][~np.isnan(x)], cov[k][np.ix_(~np.isnan(x), ~np.isnan(x))]).logpdf(
        x[~np.isnan(x)]) for k in range(3)]) for x in Xq])
    np.testing.assert_allclose(gmm.score_samples(Xq), ref, rtol=1e-5)
    proba = gmm.predict_proba(Xq)
    assert np.all(np.isfinite(proba))
    np.testing.assert_array_equal(gmm.predict(Xq), proba.argmax(1))
    # Torch input takes the same path.
    np.testing.assert_allclose(gmm.score_samples(torch.tensor(Xq)).numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("D", [3, fitting.PRECISION_ROUTE_MIN_FEATURES])
def test_classifier_marginalises_in_fit_and_predict(D):
    """At D = 3 by per-pattern factors, at 10 features mostly by the
    precision route (the classes' pairs each with their own rows)."""
    X, y = _blobs(D=D)
    Xm = _hide(X, 0.3)
    clf = GMMClassifier(1, missing="marginalize", discriminative_steps=5, **CPU).fit(Xm, y)
    Xq = _hide(X, 0.3, seed=7)
    assert clf.score(Xq, y) > 0.95
    ll = clf.class_log_likelihood(Xq[:20])
    for c in range(3):
        cov = clf._family().matrices(clf.covariances_[c], 1, D)
        for n in range(20):
            o = ~np.isnan(Xq[n])
            assert ll[n, c] == pytest.approx(multivariate_normal(
                clf.means_[c, 0][o], cov[0][np.ix_(o, o)]).logpdf(Xq[n][o]), rel=1e-5)


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_missing_errors_name_the_remedy(Est):
    X, y = _blobs()
    args = lambda Z: (Z, y) if Est is GMMClassifier else (Z,)
    Xm = _hide(X, 0.1)
    with pytest.raises(ValueError, match="missing='marginalize'"):
        Est(2, **CPU).fit(*args(Xm))
    est = Est(2, missing="marginalize", **CPU).fit(*args(Xm))
    empty = Xm.copy()
    empty[[3, 8]] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\) with every feature missing \(row\(s\) \[3, 8\]"):
        Est(2, missing="marginalize", **CPU).fit(*args(empty))
    col = X.copy()
    col[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"no observed value in feature\(s\) \[1\]"):
        Est(2, missing="marginalize", **CPU).fit(*args(col))
    with pytest.raises(ValueError, match="missing must be one of"):
        Est(2, missing="drop", **CPU).fit(*args(X))
    # A model fitted without marginalisation still names the remedy: the
    # setting (predictions read it), not a refit; with it set, the fitted
    # model marginalises.
    plain = Est(2, **CPU).fit(*args(X))
    with pytest.raises(ValueError, match=r"contains NaN .* set missing='marginalize' to use"):
        plain.predict(Xm)
    np.testing.assert_array_equal(plain.set_params(missing="marginalize").predict(X),
                                  Est(2, **CPU).fit(*args(X)).predict(X))
    assert plain.predict(Xm).shape == (len(Xm),)


# ------------------------------------------------------------------ impute
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_impute_is_the_conditional_mean(covariance_type):
    X, _ = _blobs()
    gmm = BayesianGMM(3, covariance_type=covariance_type, missing="marginalize",
                      **CPU).fit(_hide(X, 0.2))
    Xq = _hide(X[::7], 0.35, seed=3)
    got = gmm.impute(Xq)
    cov = gmm._family().matrices(gmm.covariances_, 3, 3)
    for x, g in zip(Xq, got):
        o, m = ~np.isnan(x), np.isnan(x)
        np.testing.assert_array_equal(g[o], x[o])
        if not m.any():
            continue
        logr = np.array([np.log(gmm.weights_[k]) + multivariate_normal(
            gmm.means_[k][o], cov[k][np.ix_(o, o)]).logpdf(x[o]) for k in range(3)])
        r = np.exp(logr - logsumexp(logr))
        cond = [gmm.means_[k][m] + cov[k][np.ix_(m, o)] @ np.linalg.solve(
            cov[k][np.ix_(o, o)], x[o] - gmm.means_[k][o]) for k in range(3)]
        np.testing.assert_allclose(g[m], np.einsum("k,kd->d", r, cond), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_impute_of_rows_far_out_is_the_conditional_mean(covariance_type):
    """(From an audit.)  Rows observed far beyond the data (1e155, 1e300:
    finite) were filled with NaN, and drawing for them failed inside
    torch.multinomial: the responsibilities squared the standardised
    values.  They take the far-point rule predict_proba takes, and the fill
    is the conditional mean under those responsibilities (computed here in
    float64 numpy: linear in the far value, no square)."""
    rs = np.random.RandomState(0)
    X = np.r_[rs.randn(100, 2), rs.randn(100, 2) @ [[1.0, 0.6], [0.0, 0.8]] + [4, 1]]
    gmm = BayesianGMM(2, covariance_type=covariance_type, missing="marginalize",
                      **CPU).fit(X)
    cov = gmm._family().matrices(gmm.covariances_, 2, 2)
    for v in (1e150, 1e155, 1e300, -1e300):
        for o, m in ((0, 1), (1, 0)):
            row = np.full((1, 2), np.nan)
            row[0, o] = v
            r = gmm.predict_proba(row)[0]
            want = sum(r[k] * (gmm.means_[k, m] + cov[k][m, o] / cov[k][o, o]
                               * (v - gmm.means_[k, o])) for k in range(2) if r[k] > 0)
            got = gmm.impute(row)
            assert got[0, o] == v
            np.testing.assert_allclose(got[0, m], want, rtol=1e-9, atol=1e-9)
            drawn = gmm.impute(row, sample=True, random_state=0)[0, m]
            assert np.isfinite(drawn)
            if covariance_type in ("full", "tied"):   # the conditional spread is O(1)
                np.testing.assert_allclose(drawn, want, rtol=1e-6)
    clf = GMMClassifier(1, covariance_type=covariance_type, missing="marginalize",
                        **CPU).fit(X, np.repeat([0, 1], 100))
    far = np.array([[1e300, np.nan], [np.nan, -1e155]])
    for y in (None, [1, 0]):
        assert np.isfinite(clf.impute(far, y)).all()
        assert np.isfinite(clf.impute(far, y, sample=True)).all()


def test_impute_takes_the_far_point_rule_for_far_rows_only(monkeypatch):
    """(From a review.)  A classifier's padding components (weight 0, where
    classes have different K) sent every row to the far-point rule; it is
    for rows far out only (the answers are the same either way: the rule
    is exact, only slower)."""
    from bayesgmm import _predict
    calls = []
    real_far = _predict.MissingRows.far

    def counted(self, raw):
        calls.append(raw.shape[0])
        return real_far(self, raw)

    monkeypatch.setattr(_predict.MissingRows, "far", counted)
    rs = np.random.RandomState(0)
    X = np.r_[rs.randn(100, 2), rs.randn(100, 2) + [4, 1]]
    clf = GMMClassifier([1, 3], missing="marginalize", **CPU).fit(X, np.repeat([0, 1], 100))
    rows = np.array([[0.5, np.nan], [np.nan, 1.0], [4.0, np.nan]])
    for y in (None, [0, 0, 1]):
        clf.impute(rows, y)
    assert calls == []
    clf.impute(np.array([[1e300, np.nan], [0.5, np.nan]]))
    assert calls == [1]


def test_impute_draws_follow_the_conditional_distribution():
    """Many draws for one row with one component: their mean and covariance
    are the conditional Gaussian's (a simulation with known truth)."""
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    X = rng.multivariate_normal([1.0, -1.0, 2.0], cov, 2000)
    gmm = BayesianGMM(1, dtype="float64", **CPU).fit(X)
    row = np.array([[0.5, np.nan, np.nan]])
    draws = gmm.impute(np.repeat(row, 20000, axis=0), sample=True, random_state=1)
    S, mu = gmm.covariances_[0], gmm.means_[0]
    m, o = [1, 2], [0]
    cond_mean = mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], row[0, o] - mu[o])
    cond_cov = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, m)])
    np.testing.assert_allclose(draws[:, m].mean(0), cond_mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws[:, m].T), cond_cov, atol=0.03)
    np.testing.assert_array_equal(draws[:, 0], 0.5)
    again = gmm.impute(np.repeat(row, 20000, axis=0), sample=True, random_state=1)
    np.testing.assert_array_equal(draws, again)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_impute_draws_of_diagonal_mixtures_follow_the_components(covariance_type):
    """Diagonal precisions (the expanded route): a row's missing features
    are drawn from a component chosen by the observed ones' posterior, then
    independently around its means with its variances (a simulation: two
    components, the row between them, 40,000 draws)."""
    rng = np.random.default_rng(0)
    sd = np.array([[0.5, 1.0, 2.0], [1.0, 0.5, 0.3]]) if covariance_type == "diag" else \
        np.array([[0.7] * 3, [1.2] * 3])
    X = np.r_[rng.normal([0, 0, 0], sd[0], (1500, 3)), rng.normal([3, -4, 5], sd[1], (1500, 3))]
    gmm = BayesianGMM(2, covariance_type=covariance_type, dtype="float64", **CPU).fit(X)
    row = np.array([[1.6, np.nan, np.nan]])
    draws = gmm.impute(np.repeat(row, 40000, axis=0), sample=True, random_state=2)
    var = gmm._family().marginal_scales(gmm.covariances_, 2, 3) ** 2
    logr = [np.log(gmm.weights_[k]) + multivariate_normal(gmm.means_[k][0], var[k][0]).logpdf(1.6)
            for k in range(2)]
    r = np.exp(np.array(logr) - logsumexp(logr))
    mean = r @ gmm.means_[:, 1:]
    second = r @ (var[:, 1:] + gmm.means_[:, 1:] ** 2)
    np.testing.assert_allclose(draws[:, 1:].mean(0), mean, atol=0.05)
    np.testing.assert_allclose(draws[:, 1:].var(0), second - mean ** 2, rtol=0.03)
    # Given the component, the missing features are independent.
    k = np.abs(draws[:, 1] - gmm.means_[0, 1]) < np.abs(draws[:, 1] - gmm.means_[1, 1])
    assert abs(np.corrcoef(draws[k, 1], draws[k, 2])[0, 1]) < 0.05
    np.testing.assert_array_equal(draws[:, 0], 1.6)


def test_impute_draws_are_the_same_by_either_route(monkeypatch):
    """At 10 features, rows missing up to half take the precision route's
    m x m factors for their draws, the others the factor route's (D, D)
    ones: the same draws as every row by the factor route, from the same
    seed (the factor of C_mm is the factor of C with a unit diagonal on
    the observed coordinates, restricted)."""
    D = fitting.PRECISION_ROUTE_MIN_FEATURES
    X, _ = _blobs(n=(60, 80, 50), D=D)
    Xm = _hide(X, 0.35, seed=3)
    heavy = 2 * np.isnan(Xm).sum(1) > D
    assert 0 < heavy.sum() < len(X) / 5                               # both routes in one block
    gmm = BayesianGMM(3, missing="marginalize", dtype="float64", **CPU).fit(Xm)
    draws = gmm.impute(Xm, sample=True, random_state=4)
    monkeypatch.setattr(fitting, "PRECISION_ROUTE_MIN_FEATURES", D + 1)
    np.testing.assert_allclose(gmm.impute(Xm, sample=True, random_state=4), draws,
                               rtol=1e-9, atol=1e-9)
    assert not np.allclose(gmm.impute(Xm, sample=True, random_state=5), draws)


def test_impute_keeps_dataframes_and_beats_mean_imputation():
    X, _ = _blobs()
    gmm = BayesianGMM(3, missing="marginalize", **CPU).fit(_hide(X, 0.3))
    Xq = _hide(X, 0.3, seed=11)
    df = pd.DataFrame(Xq, columns=list("abc"), index=np.arange(len(X)) * 2)
    gmm_df = BayesianGMM(3, missing="marginalize", **CPU).fit(
        pd.DataFrame(_hide(X, 0.3), columns=list("abc")))
    out = gmm_df.impute(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list("abc")
    np.testing.assert_array_equal(out.index, df.index)
    assert not out.isna().any().any()
    miss = np.isnan(Xq)
    rmse = lambda Z: np.sqrt(((Z - X)[miss] ** 2).mean())
    mean_fill = np.where(miss, np.nanmean(Xq, 0), Xq)
    assert rmse(gmm.impute(Xq)) < 0.6 * rmse(mean_fill)


def _conditional_mean_reference(x, comps):
    """E[x_m | x_o] under the mixture ``comps`` [(log weight, mean, covariance)],
    by scipy densities and numpy solves."""
    o, m = ~np.isnan(x), np.isnan(x)
    logr = np.array([lw + multivariate_normal(mu[o], S[np.ix_(o, o)]).logpdf(x[o])
                     for lw, mu, S in comps])
    r = np.exp(logr - logsumexp(logr))
    cond = [mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], x[o] - mu[o])
            for _, mu, S in comps]
    return np.einsum("k,kd->d", r, cond)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_classifier_impute_is_the_conditional_mean(covariance_type):
    """Without y under the whole model (classes weighted by their priors),
    with y under the row's class mixture; against scipy, every type (the
    tied one per class, the classes of different K)."""
    X, y = _blobs()
    clf = GMMClassifier([2, 1, 3], covariance_type=covariance_type, missing="marginalize",
                        **CPU).fit(_hide(X, 0.2), y)
    Xq = _hide(X[::6], 0.4, seed=5)
    yq = y[::6]
    joint, given = clf.impute(Xq), clf.impute(Xq, yq)
    K, D = clf.means_.shape[1:]
    comps = {c: [(np.log(clf.class_prior_[c] * clf.weights_[c, k]), clf.means_[c, k],
                  clf._family().matrices(clf.covariances_[c], K, D)[k])
                 for k in range(clf.n_components_[c])] for c in range(3)}
    rows = np.flatnonzero(np.isnan(Xq).any(1))
    assert rows.size > 20
    for i in rows:
        m = np.isnan(Xq[i])
        everything = [c for cs in comps.values() for c in cs]
        np.testing.assert_allclose(joint[i, m], _conditional_mean_reference(Xq[i], everything),
                                   rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(given[i, m], _conditional_mean_reference(Xq[i], comps[yq[i]]),
                                   rtol=1e-6, atol=1e-8)
    for out in (joint, given):
        np.testing.assert_array_equal(out[~np.isnan(Xq)], Xq[~np.isnan(Xq)])
    # The label helps where the row's observed features leave its class open.
    err = lambda Z: np.sqrt(((Z - X[::6])[np.isnan(Xq)] ** 2).mean())
    assert err(given) <= err(joint)


def test_classifier_impute_draws_labels_and_frames():
    X, y = _blobs()
    Xm = _hide(X, 0.2)
    labels = np.array(["a", "b", "c"])[y]
    clf = GMMClassifier(1, missing="marginalize", dtype="float64", **CPU).fit(Xm, labels)
    # Draws for one row of class "b": the conditional Gaussian of that class.
    row = np.array([[6.5, np.nan, np.nan]])
    draws = clf.impute(np.repeat(row, 20000, 0), np.full(20000, "b"), sample=True,
                       random_state=1)
    S, mu = clf.covariances_[1, 0], clf.means_[1, 0]
    m, o = [1, 2], [0]
    cond_mean = mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], row[0, o] - mu[o])
    cond_cov = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, m)])
    np.testing.assert_allclose(draws[:, m].mean(0), cond_mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws[:, m].T), cond_cov, atol=0.03)
    np.testing.assert_array_equal(draws, clf.impute(np.repeat(row, 20000, 0),
                                                    np.full(20000, "b"), sample=True,
                                                    random_state=1))
    # DataFrames keep their index and columns; y may be a Series.
    df = pd.DataFrame(Xm, columns=list("pqr"), index=np.arange(len(X)) * 3)
    fitted = GMMClassifier(1, missing="marginalize", **CPU).fit(df, labels)
    out = fitted.impute(df, pd.Series(labels, index=df.index))
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list("pqr")
    np.testing.assert_array_equal(out.index, df.index)
    assert not out.isna().any().any()
    with pytest.raises(ValueError, match=r"label\(s\) \['d'\] that the model was not fitted "
                                         r"on \(classes_ \['a', 'b', 'c'\]\)"):
        clf.impute(Xm, np.where(labels == "c", "d", labels))
    with pytest.raises(ValueError, match="sample must be True or False"):
        clf.impute(Xm, sample="yes")


def test_missing_and_dtype_survive_save_and_load(tmp_path):
    X, _ = _blobs()
    Xm = _hide(X, 0.2)
    gmm = BayesianGMM(3, missing="marginalize", dtype="float64", **CPU).fit(Xm)
    gmm.save(tmp_path / "m.bgmm")
    back = BayesianGMM.load(tmp_path / "m.bgmm")
    assert back.missing == "marginalize" and back.dtype == "float64"
    np.testing.assert_array_equal(back.score_samples(Xm), gmm.score_samples(Xm))
    np.testing.assert_array_equal(back.impute(Xm), gmm.impute(Xm))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_sklearn_weight_equivalence_check_for_every_covariance_type(Est, covariance_type):
    """scikit-learn's own check (30 features, 15 rows, integer and zero
    weights, rows shuffled) for every covariance type; float64, as its
    near-singular covariances need (see the README)."""
    from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data

    est = Est(n_components=1 if Est is GMMClassifier else 2, covariance_type=covariance_type,
              n_init=1, max_iter=0, em_max_iter=50, dtype="float64", device="cpu")
    check_sample_weight_equivalence_on_dense_data(Est.__name__, est)


# ------------------------------------------------------------ review fixes
@pytest.mark.parametrize("value", [1e9, 1e30, 1e200, -1e300])
def test_far_rows_with_missing_values_keep_probabilities(value):
    X, y = _blobs()
    gmm = BayesianGMM(3, covariance_type="tied", missing="marginalize", **CPU).fit(X)
    clf = GMMClassifier(1, missing="marginalize", **CPU).fit(X, y)
    q = np.array([[value, 0.0, np.nan], [value, value, np.nan], [np.nan, value, 1.0]])
    for proba in (gmm.predict_proba(q), clf.predict_proba(q)):
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    ll = gmm.score_samples(q)
    assert np.all(ll < -1e10) and not np.any(np.isnan(ll))
    np.testing.assert_array_equal(gmm.predict(q), gmm.predict_proba(q).argmax(1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [1e10, 1e40, 1e160, 1e300])
def test_far_rows_with_missing_values_take_the_heaviest_tail(dtype, value):
    # Along an observed feature, the class (component) with the larger
    # variance there wins far out, on either side, as for complete rows.
    # A float32 model rounded such rows to inf past 3e38 and gave the first
    # class; float64 past 1e155 let the sign decide.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, [3, 1], (100, 2)), rng.normal([1, 1], [1, 1], (100, 2))]
    y = np.r_[np.ones(100, int), np.zeros(100, int)]        # class 1 is wide along feature 0
    clf = GMMClassifier(1, covariance_type="diag", missing="marginalize", dtype=dtype,
                        **CPU).fit(X, y)
    assert clf.covariances_[1, 0, 0] > 4 * clf.covariances_[0, 0, 0]
    q = np.array([[value, np.nan], [-value, np.nan], [value, 0.0], [-value, 0.0]])
    np.testing.assert_array_equal(clf.predict(q), [1, 1, 1, 1])
    np.testing.assert_allclose(clf.predict_proba(q)[:, 1], 1.0)
    gmm = BayesianGMM(2, covariance_type="diag", missing="marginalize", dtype=dtype,
                      **CPU).fit(X)
    wide = int(np.argmax(gmm.covariances_[:, 0]))
    np.testing.assert_array_equal(gmm.predict(q), [wide] * 4)
    # Past float64 once standardised (1e306 at a spread of 1e-3): from the
    # direction, not from z = inf.
    tiny = GMMClassifier(1, covariance_type="diag", missing="marginalize", dtype=dtype,
                         **CPU).fit(X * 1e-3, y)
    np.testing.assert_array_equal(tiny.predict(np.array([[1e306, np.nan], [-1.7e308, np.nan]])),
                                  [1, 1])


def test_classifier_refuses_a_feature_never_observed_in_one_class():
    X, y = _blobs()
    X = X.copy()
    X[y == 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"class 1 has no observed value in feature\(s\) \[2\]"):
        GMMClassifier(1, missing="marginalize", **CPU).fit(X, y)


def test_weights_beyond_float32_are_a_clear_error():
    X, _ = _blobs()
    for w in (np.full(len(X), 1e39), np.full(len(X), 1e-50)):
        with pytest.raises(ValueError, match="sample_weight spans .* rescale the weights"):
            BayesianGMM(2, **CPU).fit(X, sample_weight=w)
    # float64 fits hold them, and the seeding is scale-free in the weights.
    a = BayesianGMM(3, dtype="float64", **CPU).fit(X, sample_weight=np.full(len(X), 1e-50))
    assert np.all(np.isfinite(a.means_))


def test_float64_fit_of_near_singular_data_saves_and_loads(tmp_path):
    from bayesgmm import Priors

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 1))
    X = np.hstack([a, a + 1e-5 * rng.normal(size=(300, 1)), rng.normal(size=(300, 1))])
    gmm = BayesianGMM(1, dtype="float64", priors=Priors(covariance_scale=1e-14), **CPU).fit(X)
    gmm.save(tmp_path / "m.bgmm")
    back = BayesianGMM.load(tmp_path / "m.bgmm")
    np.testing.assert_array_equal(back.score_samples(X), gmm.score_samples(X))


def test_sklearn_tags_say_whether_nan_is_allowed():
    from sklearn.utils import get_tags

    for Est in (BayesianGMM, GMMClassifier):
        assert get_tags(Est(missing="marginalize")).input_tags.allow_nan is True
        assert get_tags(Est()).input_tags.allow_nan is False


def test_errors_name_a_dataframes_index_labels():
    """A DataFrame with its own row labels: the refused row is named by
    position and by label; with the default 0..N-1 index, by position."""
    X, _ = _blobs(n=(10, 10, 10))
    df = pd.DataFrame(X, index=[f"r{i}" for i in range(len(X))])
    df.iloc[7] = np.nan
    with pytest.raises(ValueError, match=r"every feature missing \(row\(s\) \[7\], index "
                                         r"label\(s\) \['r7'\]\)"):
        BayesianGMM(2, missing="marginalize", **CPU).fit(df)
    df.iloc[7] = [1.0, np.inf, 0.0]
    with pytest.raises(ValueError, match=r"inf in column 1 \('1'\), row 7 \(index label 'r7'\)"):
        BayesianGMM(2, **CPU).fit(df)
    plain = df.reset_index(drop=True)
    plain.iloc[7] = np.nan
    with pytest.raises(ValueError, match=r"every feature missing \(row\(s\) \[7\]\): drop"):
        BayesianGMM(2, missing="marginalize", **CPU).fit(plain)


def test_classifier_names_a_class_whose_rows_all_have_weight_zero():
    # Before, the message said "y has only one class", though y had two.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    y = np.array(["a"] * 60 + ["b"] * 60)
    with pytest.raises(ValueError, match=r"every row of class\(es\) \['a'\] has sample_weight 0, "
                                         r"which leaves only class 'b'"):
        GMMClassifier(1, device="cpu").fit(X, y, sample_weight=np.r_[np.zeros(60), np.ones(60)])


def _dense_covariances(gmm) -> np.ndarray:
    K, D = gmm.means_.shape
    c = np.asarray(gmm.covariances_, dtype=np.float64)
    if gmm.covariance_type == "tied":
        return np.broadcast_to(c, (K, D, D))
    if gmm.covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    if gmm.covariance_type == "spherical":
        return np.stack([v * np.eye(D) for v in c])
    return c


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_rows_with_missing_values_agree_with_scipy_and_keep_linear_terms(covariance_type):
    """Rows with a missing feature, from the data out to 1e6 sds (across
    the far-point threshold): densities and responsibilities equal scipy's
    float64 marginal over the observed features.  Past ~1e16 sds the direct
    float64 form lost the linear term that separates components sharing a
    covariance ("tied"): [nan, nan, -t] got 0.5/0.5 for t >= 3e16 where the
    exact log-odds is linear in t; now the component that wins the linear
    term, out to 1e300."""
    X, _ = _blobs()
    gmm = BayesianGMM(2, covariance_type=covariance_type, missing="marginalize",
                      dtype="float64", **CPU).fit(X)
    rng = np.random.default_rng(0)
    pts = X.mean(0) + rng.normal(size=(40, 3)) * np.geomspace(1.0, 1e6, 40)[:, None]
    pts[np.arange(40), rng.integers(0, 3, 40)] = np.nan
    cov = _dense_covariances(gmm)
    ref = np.empty((40, 2))
    for i, x in enumerate(pts):
        o = ~np.isnan(x)
        ref[i] = [np.log(gmm.weights_[k]) + multivariate_normal(
            gmm.means_[k, o], cov[k][np.ix_(o, o)]).logpdf(x[o]) for k in range(2)]
    np.testing.assert_allclose(gmm.score_samples(pts), logsumexp(ref, 1), rtol=1e-9)
    np.testing.assert_allclose(gmm.predict_proba(pts),
                               np.exp(ref - logsumexp(ref, 1, keepdims=True)), atol=1e-9)
    if covariance_type == "tied":
        # Along feature 2 alone the log-odds of component 0 is b t + c.
        mu, s2 = gmm.means_[:, 2], cov[0, 2, 2]
        for t in (1e17, 1e18, 1e100, 1e300):
            q = np.array([[np.nan, np.nan, -t], [np.nan, np.nan, t]])
            b = (mu[0] - mu[1]) / s2
            winner = np.where(b * np.array([-t, t]) > 0, 0, 1)
            np.testing.assert_array_equal(gmm.predict(q), winner)
            np.testing.assert_allclose(gmm.predict_proba(q)[np.arange(2), winner], 1.0)


def test_float64_fit_takes_a_total_weight_beyond_float32s_range():
    """(From an audit.) The divergence guard held the float64 loss in a
    float32 tensor: totals from 3e38 on (300 rows of 1e36) were refused as
    'diverged', though check_weight_range admits 1.8e300 in float64."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(100, 2)) + c for c in ([0, 0], [8, 0], [0, 8])])
    kw = dict(dtype="float64", random_state=0, device="cpu")
    big = BayesianGMM(3, **kw).fit(X, sample_weight=np.full(len(X), 1e36))
    ref = BayesianGMM(3, **kw).fit(X, sample_weight=np.full(len(X), 1e30))
    assert np.isfinite(big.loss_) and big.loss_ > 3.4e38
    np.testing.assert_allclose(np.sort(big.means_, 0), np.sort(ref.means_, 0), rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize("inference", ["map", "vi"])
@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_float32_fit_takes_weights_up_to_the_admitted_total(covariance_type, inference):
    """(From a numerical-extremes audit.) check_weight_range admits totals
    to finfo(float32).max x 1e-8 (3.4e30), but the diagonal and spherical
    M-step squared the weight behind a component (b^2 + 4 a S): from a
    total of ~1e17 (spherical) or ~1e20 (diag) every restart 'diverged',
    an error blaming the covariance prior; variational inference lost its
    scale factor's quadrature from ~1e27.  Now the fit at 1e28 per row
    equals the float64 fit with the same weights."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 1, (150, 2)), rng.normal(3, 1, (150, 2))])
    w = np.full(len(X), 1e28)
    kw = dict(covariance_type=covariance_type, inference=inference, random_state=0,
              device="cpu")
    f32 = BayesianGMM(2, **kw).fit(X, sample_weight=w)
    f64 = BayesianGMM(2, dtype="float64", **kw).fit(X, sample_weight=w)
    order32, order64 = np.argsort(f32.means_[:, 0]), np.argsort(f64.means_[:, 0])
    np.testing.assert_allclose(f32.means_[order32], f64.means_[order64], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f32.covariances_[order32] if covariance_type != "tied"
                               else f32.covariances_,
                               f64.covariances_[order64] if covariance_type != "tied"
                               else f64.covariances_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(f32.weights_[order32], f64.weights_[order64], atol=1e-5)


def test_inverse_gamma_root_holds_float32_range():
    """The scale M-step's root, against the float64 textbook formula, where
    a x S passes float32's range (the weight behind a component ~1e19+),
    and where h^2 or S/a underflows it (a ~1e23 halved the root of S = 0;
    from an independent review)."""
    from bayesgmm.covariance import _inverse_gamma_root

    a = np.array([3.0, 1e10, 1e20, 1e30, 1e30, 1e23, 1e30, 1e20])
    b = np.array([0.5, 0.5, 2.0, 0.1, 1e28, 1.0, 0.1, 1.0])
    S = np.array([2.0, 3e9, 7e19, 2e30, 0.0, 0.0, 1e-31, 1e-21])
    got = _inverse_gamma_root(*(torch.tensor(v, dtype=torch.float32) for v in (a, b, S)))
    want = (b + np.sqrt(b * b + 4 * a * S)) / (2 * a)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_one_row_outweighing_the_rest_by_1e24_names_float64_when_float32_fails():
    """A row of weight 1e24 beside rows of weight 1 puts the others ~1e10
    standardised units from the weighted centre; the float32 full fit
    leaves the range.  The error names the weights and dtype='float64',
    with which the same fit succeeds."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 1, (150, 2)), rng.normal(3, 1, (150, 2))])
    w = np.ones(len(X))
    w[0] = 1e25
    kw = dict(covariance_type="full", random_state=0, device="cpu")
    with pytest.raises(ValueError, match=r"check the data and any sample weights for extreme "
                                         r"values, or fit with dtype='float64'"):
        BayesianGMM(2, **kw).fit(X, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # one component carries the data
        gmm = BayesianGMM(2, dtype="float64", **kw).fit(X, sample_weight=w)
    assert np.isfinite(gmm.means_).all()
    np.testing.assert_allclose(gmm.means_[np.argmax(gmm.weights_)], X[0], rtol=1e-9)


def test_seeds_start_apart_in_features_no_seed_observes():
    """(From an audit.) Two clusters at 0 and 5 in three features, each row
    observing one feature.  The seeds' missing coordinates were set at 0,
    the feature's mean, so where no seed observed a feature both components
    started equal in it and EM kept them so: every restart of every init
    ended with the clusters unsplit in that feature (0.06 nats per point
    below a start at the true means), and the default prior's spread, whose
    partition then hung on exact ties, differed between float32 and
    float64 (feature 0's covariance scale 10.1 against 66.5).  The seeds
    now take observed values there: every init splits every feature, and
    both dtypes get the same prior."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(80, 3)), rng.normal(size=(80, 3)) + 5])
    keep = rng.integers(0, 3, len(X))
    X[np.arange(3)[None, :] != keep[:, None]] = np.nan
    kw = dict(missing="marginalize", n_init=4, **CPU)
    for init in ("kmeans++", "kmeans", "random"):
        gmm = BayesianGMM(2, covariance_type="diag", dtype="float64", init=init, **kw).fit(X)
        assert np.all(np.abs(gmm.means_[0] - gmm.means_[1]) > 4), init
    fits = [BayesianGMM(2, covariance_type="full", dtype=d, **kw).fit(X)
            for d in ("float32", "float64")]
    np.testing.assert_allclose(fits[0].priors_.covariance_scale,
                               fits[1].priors_.covariance_scale, rtol=1e-5)
    assert all(np.all(np.abs(g.means_[0] - g.means_[1]) > 4) for g in fits)
    # Complete data draw nothing more: their seeds are scikit-learn's
    # k-means++ seeds of the sorted points, as before.
    from sklearn.cluster import kmeans_plusplus
    full = np.where(np.isnan(X), 0.0, X)
    ours = fitting.seed_centres([torch.as_tensor(full)], 3, 2, "kmeans++", [1, 2])
    for r, s in enumerate((1, 2)):
        c, _ = kmeans_plusplus(full[fitting.canonical_order(full)], 3,
                               random_state=int(np.random.default_rng(s).integers(2 ** 31 - 1)))
        np.testing.assert_array_equal(ours[r, 0], c)


@pytest.mark.parametrize("init", ["kmeans++", "kmeans"])
def test_integer_weights_equal_repeated_rows_with_missing_entries(init):
    """(From the review.) The seeds' missing coordinates, drawn from rows
    that observe them, took other draws for a weighted row than for its
    repeated copies, so the seeds, the default prior and the fit differed
    (scores 0.09 apart); they are drawn by explicit probabilities, which
    give a row of weight w the draws of w copies."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 4])
    X[rng.random(X.shape) < 0.2] = np.nan
    X = X[~np.isnan(X).all(1)]
    w = np.random.default_rng(1).integers(1, 4, len(X))
    R = np.repeat(X, w, axis=0)
    np.testing.assert_allclose(      # Lloyd's sums round differently: 1e-16
        fitting.seed_centres([X], 3, 2, init, [1, 2], [w.astype(float)]),
        fitting.seed_centres([R], 3, 2, init, [1, 2]), rtol=1e-12, atol=1e-14)
    kw = dict(init=init, dtype="float64", tol=1e-9, missing="marginalize", **CPU)
    a = BayesianGMM(3, **kw).fit(X, sample_weight=w)
    b = BayesianGMM(3, **kw).fit(R)
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-12)
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_rows_with_every_feature_missing_get_the_priors_answer(covariance_type):
    """(From an audit.) A row with every feature missing was refused by
    predict, score_samples and impute, so permutation_importance on data
    with NaN (a shuffled column empties rows that observed only it) failed;
    scikit-learn's HistGradientBoostingClassifier answers such a row.  With
    nothing observed the density is 1: BayesianGMM assigns it by the
    weights and scores it 0; the classifier gives the class prior (its
    class log-likelihoods 0); impute fills in the mixture's mean (with y,
    that class's; for the classifier without y, the prior-weighted mean of
    the classes').  The other rows' answers are those without it; a fit
    still refuses such a row."""
    from sklearn.inspection import permutation_importance
    X, y = _blobs()
    Xm = _hide(X, 0.3)
    kw = dict(CPU, covariance_type=covariance_type, missing="marginalize", dtype="float64")
    gmm = BayesianGMM(3, **kw).fit(Xm)
    clf = GMMClassifier(2, **kw).fit(Xm, y)
    Q = Xm[:6].copy()
    Q[[1, 4]] = np.nan
    rest = [0, 2, 3, 5]
    np.testing.assert_allclose(gmm.predict_proba(Q)[[1, 4]], gmm.weights_[None].repeat(2, 0),
                               rtol=1e-12)
    np.testing.assert_array_equal(gmm.predict(Q)[[1, 4]], np.argmax(gmm.weights_))
    np.testing.assert_allclose(gmm.score_samples(Q)[[1, 4]], 0.0, atol=1e-12)
    np.testing.assert_allclose(gmm.predict_proba(Q)[rest], gmm.predict_proba(Q[rest]),
                               rtol=1e-12)
    np.testing.assert_allclose(gmm.impute(Q)[[1, 4]], np.tile(gmm.weights_ @ gmm.means_, (2, 1)),
                               rtol=1e-10)
    np.testing.assert_allclose(clf.predict_proba(Q)[[1, 4]], clf.class_prior_[None].repeat(2, 0),
                               rtol=1e-12)
    np.testing.assert_allclose(clf.class_log_likelihood(Q)[[1, 4]], 0.0, atol=1e-12)
    np.testing.assert_allclose(clf.score_samples(Q)[[1, 4]], 0.0, atol=1e-12)
    class_means = np.einsum("ck,ckd->cd", clf.weights_, np.nan_to_num(clf.means_))
    np.testing.assert_allclose(clf.impute(Q)[[1, 4]],
                               np.tile(clf.class_prior_ @ class_means, (2, 1)), rtol=1e-10)
    np.testing.assert_allclose(clf.impute(Q, y[:6])[[1, 4]], class_means[y[[1, 4]]], rtol=1e-10)
    # The audit's case runs: a shuffled column empties rows.
    permutation_importance(clf, Xm, y, n_repeats=2, random_state=0)
    with pytest.raises(ValueError, match=r"every feature missing \(row\(s\) \[1, 4\]"):
        BayesianGMM(3, **kw).fit(np.r_[Q, Xm])
