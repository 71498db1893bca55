"""Reliability: finite answers far from the data (one far-point rule for
both estimators), thread safety of prediction and sampling, Pyro's global
state never corrupted, and the closed-form assignments checked against
``infer_discrete`` on the Pyro model."""

from __future__ import annotations

import os
import re
import threading
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from scipy import stats
from scipy.special import logsumexp

from bayesgmm import BayesianGMM, GMMClassifier, Priors, _predict
from bayesgmm.covariance import COVARIANCE_TYPES
from bayesgmm.fitting import pyro_session
from bayesgmm.models import gmm_model

CPU = {"device": "cpu"}


def _blobs():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(50, 2), rng.randn(50, 2) * [2.0, 0.5] + 5])
    return X, np.array([0] * 50 + [1] * 50)


@pytest.fixture(scope="module")
def fitted():
    X, y = _blobs()
    out = {}
    for ct in COVARIANCE_TYPES:
        out[ct] = (BayesianGMM(2, covariance_type=ct, random_state=0, **CPU).fit(X),
                   GMMClassifier([1, 2], covariance_type=ct, random_state=0, **CPU).fit(X, y))
    return out


def _full_covariances(est) -> np.ndarray:
    """(..., K, D, D) covariance matrices from the scikit-learn-shaped arrays."""
    cov, (K, D) = est.covariances_, est.means_.shape[-2:]
    ct = est.covariance_type_
    if ct == "full":
        return cov
    if ct == "tied":
        return np.broadcast_to(cov[..., None, :, :], cov.shape[:-2] + (K, D, D))
    if ct == "diag":
        return cov[..., :, None] * np.eye(D)
    return cov[..., None, None] * np.eye(D)


def _scipy_log_joint(est, X, c=None):
    """log w_k + log N(x | mu_k, Sigma_k) in float64 by scipy, (N, K)."""
    w = est.weights_ if c is None else est.weights_[c]
    m = est.means_ if c is None else est.means_[c]
    cov = _full_covariances(est) if c is None else _full_covariances(est)[c]
    k_real = range(w.size) if c is None else range(int(est.n_components_[c]))
    return np.stack([np.log(w[k]) + stats.multivariate_normal(m[k], cov[k]).logpdf(X)
                     for k in k_real], axis=1)


def _limit_component(est, direction, c=None):
    """The component that wins along ``direction`` as the distance grows,
    derived by hand: the smallest u^T Sigma^-1 u (heaviest tail), then the
    largest u^T Sigma^-1 mu (the linear term), over the real components."""
    m = est.means_ if c is None else est.means_[c]
    cov = _full_covariances(est) if c is None else _full_covariances(est)[c]
    k = m.shape[0] if c is None else int(est.n_components_[c])
    u = np.asarray(direction, dtype=np.float64)
    prec = np.linalg.inv(cov[:k])
    q = np.einsum("d,kde,e->k", u, prec, u)
    lin = np.einsum("d,kde,ke->k", u, prec, m[:k])
    best = q.min()
    # Ties in the quadratic term are exact for tied covariances.
    tie = np.isclose(q, best, rtol=1e-6, atol=0)
    return int(np.flatnonzero(tie)[np.argmax(lin[tie])]), q


FAR_POINTS = np.array([[2e19, 0.0], [1e19, 0.0], [-2e19, 0.0], [0.0, 1e300], [1e300, 1e300],
                       [-1.7e308, 1.7e308], [3e5, -4e5]])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_points_get_the_limiting_answer_never_nan(fitted, covariance_type):
    gmm, clf = fitted[covariance_type]
    proba = gmm.predict_proba(FAR_POINTS)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1)
    labels = gmm.predict(FAR_POINTS)
    np.testing.assert_array_equal(labels, proba.argmax(1))
    for x, p in zip(FAR_POINTS, proba):
        k, q = _limit_component(gmm, x / np.abs(x).max())
        if np.sum(np.isclose(q, q.min(), rtol=1e-6)) == 1 or covariance_type == "tied":
            assert p[k] == pytest.approx(1.0), (x, p, k)
    dens = gmm.score_samples(FAR_POINTS)
    assert not np.any(np.isnan(dens))
    # In the float64 range the density is a number: at 2e19 about -x^2 / (2 sigma^2).
    assert np.all(np.isfinite(dens[:3])) and np.all(dens[:3] < -1e35)
    assert np.all(dens[3:6] == -np.inf)     # below the float64 range: its limit

    cp = clf.predict_proba(FAR_POINTS)
    assert np.all(np.isfinite(cp)) and np.allclose(cp.sum(1), 1)
    np.testing.assert_array_equal(clf.predict(FAR_POINTS), clf.classes_[cp.argmax(1)])
    assert not np.any(np.isnan(clf.decision_function(FAR_POINTS)))
    assert not np.any(np.isnan(clf.class_log_likelihood(FAR_POINTS)))
    # The label does not flip along a ray once the points are far.
    ray = np.outer([1e4, 1e8, 1e12, 1e19, 2e19, 1e100, 1e300], [1.0, 0.3])
    assert len(set(clf.predict(ray)[1:].tolist())) == 1
    assert len(set(gmm.predict(ray)[1:].tolist())) == 1


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_rule_agrees_with_scipy_where_float64_is_exact(fitted, covariance_type):
    """Points from the data out to 1e6 sds, on both sides of the far-point
    threshold: the densities and responsibilities of the far-point rule
    equal scipy's float64 ones (the fitted parameters are float32 in the
    model's frame, hence rtol 1e-6)."""
    gmm, clf = fitted[covariance_type]
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(40, 2))
    radii = np.geomspace(1.0, 1e6, 40)
    pts = 2.5 + dirs * radii[:, None]
    ref = _scipy_log_joint(gmm, pts)
    np.testing.assert_allclose(gmm.score_samples(pts), logsumexp(ref, 1), rtol=1e-6)
    resp = np.exp(ref - logsumexp(ref, 1, keepdims=True))
    np.testing.assert_allclose(gmm.predict_proba(pts), resp, atol=1e-5)
    for c in range(2):
        np.testing.assert_allclose(clf.class_log_likelihood(pts)[:, c],
                                   logsumexp(_scipy_log_joint(clf, pts, c), 1), rtol=1e-6)


def test_points_just_inside_and_outside_the_far_threshold_agree(fitted):
    gmm, clf = fitted["full"]
    std = gmm._prepare(np.zeros((1, 2)))[2]
    # Two points a hair apart, one on each side of FAR in the model's frame.
    base = std.center + np.array([_predict.FAR, 0.0]) * std.scale
    pts = np.array([base * (1 - 1e-9) + std.center * 1e-9, base * (1 + 1e-9)])
    d = gmm.score_samples(pts)
    assert d[0] == pytest.approx(d[1], rel=1e-5)
    np.testing.assert_allclose(gmm.predict_proba(pts)[0], gmm.predict_proba(pts)[1], atol=1e-6)


def _infer_discrete_labels(est, X, temperature=0, seed=0):
    """The assignments ``infer_discrete`` gives on the Pyro model
    conditioned on the fitted parameters (the independent reference)."""
    Xa, _, std, params, device, family, _ = est._prepare(X)
    pt = std.priors(est.priors_, device)
    z = ((torch.as_tensor(Xa) - torch.as_tensor(std.center)) / torch.as_tensor(std.scale)).float()
    K = params.weights.shape[-1]
    conditioned = poutine.condition(
        lambda data: gmm_model(data, pt, K, family),
        data={"weights": params.weights, "means": params.means, family.site: params.cov})
    with pyro_session(seed), torch.no_grad():
        fn = infer_discrete(conditioned, first_available_dim=-2, temperature=temperature)
        trace = poutine.trace(fn).get_trace(z)
    return torch.broadcast_to(trace.nodes["assignment"]["value"].reshape(-1), (len(X),)).numpy()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_is_infer_discretes_map_assignment(fitted, covariance_type):
    gmm, _ = fitted[covariance_type]
    X, _ = _blobs()
    pts = np.r_[X, np.random.default_rng(1).normal(2.5, 3, (300, 2))]
    proba = gmm.predict_proba(pts)
    clear = np.abs(proba[:, 0] - 0.5) > 1e-4
    np.testing.assert_array_equal(gmm.predict(pts)[clear],
                                  _infer_discrete_labels(gmm, pts)[clear])


def test_sampled_assignments_follow_infer_discretes_draws(fitted):
    """Temperature-1 draws: the closed-form sampler and infer_discrete's
    give the same frequencies (both are p(z | x))."""
    gmm, _ = fitted["full"]
    pts = np.array([[2.5, 2.5], [1.0, 1.0], [3.5, 3.0], [2.0, 4.0]])
    S = 3000
    ours = gmm.sample_assignments(pts, S, random_state=0)
    theirs = np.stack([_infer_discrete_labels(gmm, pts, 1, seed) for seed in range(400)])
    f_ours = (ours[..., None] == [0, 1]).mean(0)
    f_theirs = (theirs[..., None] == [0, 1]).mean(0)
    p = gmm.predict_proba(pts)
    assert np.all(np.abs(f_ours - p) <= 4 * np.sqrt(p * (1 - p) / S) + 1e-3)
    assert np.all(np.abs(f_theirs - p) <= 4 * np.sqrt(p * (1 - p) / 400) + 1e-3)


def _hammer(calls, n_threads=8, reps=50):
    """Run every call ``reps`` times from each of ``n_threads`` threads at
    once; return the results per call and the errors."""
    results = {name: [] for name in calls}
    errors = []
    barrier = threading.Barrier(n_threads)

    def work():
        barrier.wait()
        for _ in range(reps):
            for name, fn in calls.items():
                try:
                    results[name].append(fn())
                except Exception as exc:  # noqa: BLE001 - collected and reported
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _equal(a, b):
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def test_prediction_and_sampling_are_thread_safe(fitted):
    gmm, clf = fitted["full"]
    X, y = _blobs()
    calls = {
        "predict": lambda: gmm.predict(X),
        "predict_proba": lambda: gmm.predict_proba(X),
        "score_samples": lambda: gmm.score_samples(X),
        "sample": lambda: gmm.sample(20, random_state=3),
        "sample_assignments": lambda: gmm.sample_assignments(X, 2, random_state=4),
        "clf_predict": lambda: clf.predict(X),
        "clf_predict_proba": lambda: clf.predict_proba(X),
        "clf_score": lambda: clf.score(X, y),
    }
    sequential = {name: fn() for name, fn in calls.items()}
    rng_before = torch.get_rng_state()
    results, errors = _hammer(calls)
    assert errors == []
    for name, got in results.items():
        assert len(got) == 8 * 50
        assert all(_equal(r, sequential[name]) for r in got), name
    # No global state disturbed: torch's RNG as it was, Pyro's handler stack
    # empty, and a Pyro-backed fit works afterwards.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert pyro.poutine.runtime._PYRO_STACK == []
    BayesianGMM(2, backend="pyro", em_max_iter=5, max_iter=20, n_init=1, **CPU).fit(X)


def test_concurrent_fits_equal_sequential_fits():
    X, y = _blobs()
    makers = [lambda: BayesianGMM(2, backend="pyro", em_max_iter=5, max_iter=15, n_init=1,
                                  random_state=1, **CPU).fit(X),
              lambda: BayesianGMM(3, random_state=2, **CPU).fit(X),
              lambda: GMMClassifier(2, max_iter=20, random_state=3, **CPU).fit(X, y)]
    sequential = [m().means_ for m in makers]
    rng_before = torch.get_rng_state()
    results, errors = _hammer({i: m for i, m in enumerate(makers)}, n_threads=4, reps=1)
    assert errors == []
    for i, got in results.items():
        for est in got:
            np.testing.assert_array_equal(est.means_, sequential[i])
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_concurrent_variational_fits_draw_as_sequential_fits():
    """The variational draws seed torch's global generator under the Pyro
    lock, as every other seeded use: two "vi" fits in threads drew from each
    other's seeding (18 of 20 runs differed from the same fit alone)."""
    X, y = _blobs()
    makers = [lambda: BayesianGMM(2, inference="vi", n_samples=50, random_state=1,
                                  **CPU).fit(X),
              lambda: GMMClassifier(2, inference="vi", n_samples=50, random_state=2,
                                    **CPU).fit(X, y)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sequential = [m().posterior_samples()["means"] for m in makers]
        rng_before = torch.get_rng_state()
        results, errors = _hammer({i: m for i, m in enumerate(makers)}, n_threads=4, reps=2)
    assert errors == []
    for i, got in results.items():
        for est in got:
            np.testing.assert_array_equal(est.posterior_samples()["means"], sequential[i])
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert pyro.poutine.runtime._PYRO_STACK == []


# ----------------------------------------------------------------------------
# The other reproductions, each pinned
# ----------------------------------------------------------------------------
def test_unequal_k_per_class_on_large_magnitude_data_is_finite():
    X, y = _blobs()
    clf = GMMClassifier([1, 2], random_state=0, **CPU).fit(X * 1e45, y)
    assert np.all(np.isfinite(clf.predict_proba(X * 1e45))) and clf.score(X * 1e45, y) == 1.0
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 2))
    Z[0] = [1e50, 0.0]
    auto = GMMClassifier("auto", random_state=0, **CPU).fit(Z, np.repeat([0, 1], 100))
    assert np.all(np.isfinite(auto.predict_proba(Z)))


def test_diverged_discriminative_fine_tuning_keeps_the_generative_fit(tmp_path):
    X, y = _blobs()
    kw = dict(max_iter=0, random_state=0, **CPU)
    generative = GMMClassifier(2, **kw).fit(X, y)
    with pytest.warns(RuntimeWarning, match="discriminative fine-tuning diverged.*learning_rate"):
        clf = GMMClassifier(2, learning_rate=10.0, discriminative_steps=100, **kw).fit(X, y)
    np.testing.assert_array_equal(clf.means_, generative.means_)
    np.testing.assert_array_equal(clf.covariances_, generative.covariances_)
    clf.save(tmp_path / "m.bgmm")
    loaded = GMMClassifier.load(tmp_path / "m.bgmm")
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_huge_class_priors_are_normalised_not_overflowed():
    X, y = _blobs()
    clf = GMMClassifier(2, class_prior=[1e308, 1e308], max_iter=0, **CPU).fit(X, y)
    np.testing.assert_array_equal(clf.class_prior_, [0.5, 0.5])
    np.testing.assert_allclose(
        GMMClassifier(2, class_prior=[3e307, 1e308], max_iter=0, **CPU).fit(X, y).class_prior_,
        [3 / 13, 10 / 13])


def test_negative_strides_half_precisions_and_meta_tensors():
    X, _ = _blobs()
    kw = dict(n_init=1, random_state=0, **CPU)
    ref = BayesianGMM(2, **kw).fit(X[::-1].copy())
    np.testing.assert_array_equal(BayesianGMM(2, **kw).fit(X[::-1]).means_, ref.means_)
    bf = torch.tensor(X).bfloat16()
    got = BayesianGMM(2, **kw).fit(bf)
    np.testing.assert_array_equal(got.means_, BayesianGMM(2, **kw).fit(bf.float().numpy()).means_)
    np.testing.assert_array_equal(got.predict(bf), got.predict(bf.float()))
    meta = torch.zeros(30, 2, device="meta")
    with pytest.raises(ValueError, match="'meta' device"):
        BayesianGMM(2, **kw).fit(meta)
    with pytest.raises(ValueError, match="'meta' device"):
        got.predict(meta)


def test_auto_tries_only_k_a_class_can_estimate():
    """60 points per class, D=2, full: K = 10 has 59 free parameters, K = 11
    has 65, so K > 10 is never fitted, however large max_components."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (60, 2))]
    clf = GMMClassifier("auto", max_components=1000, random_state=0, **CPU).fit(
        X, np.repeat([0, 1], 60))
    # One column per K up to the largest class's rows (60), not 1000.
    assert clf.bic_.shape == (2, 60)
    np.testing.assert_array_equal(np.isfinite(clf.bic_).sum(1), [10, 10])
    np.testing.assert_array_equal(clf.n_components_, [1, 1])


@pytest.mark.parametrize("field,value", [("covariance_scale", 1e300), ("covariance_dof", 1e300),
                                         ("scale_rate", 1e300), ("mean_scale", 1e-300),
                                         ("weight_concentration", 1e300)])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_priors_beyond_float32_are_refused_by_name(field, value, covariance_type):
    """Both estimators, the same clear error (no LinAlgError or Pyro
    constraint dump), before any fitting."""
    from bayesgmm import Priors
    if (field in ("covariance_scale", "covariance_dof")) != (covariance_type == "full"):
        pytest.skip("a field the family does not use is ignored")
    X, y = _blobs()
    p = Priors(**{field: value})
    kw = dict(covariance_type=covariance_type, priors=p, n_init=1, **CPU)
    # A count or a shape (concentration, dof) is not in the data's units:
    # its message says float32's range and dtype="float64" (which fits it).
    unitless = field in ("covariance_dof", "weight_concentration")
    said = (f"Priors.{field}=.*beyond what the fit's float32 arithmetic holds .*give a "
            f"smaller value .*, or fit with dtype='float64'" if unitless else
            f"Priors.{field}=.*too far from the data's scale")
    for est, args in ((BayesianGMM(2, **kw), (X,)), (GMMClassifier(2, **kw), (X, y))):
        with pytest.raises(ValueError, match=said):
            est.fit(*args)
        if unitless and field == "weight_concentration":
            est.set_params(dtype="float64").fit(*args)


def test_default_fits_leave_torchs_global_rng_alone():
    X, y = _blobs()
    before = torch.get_rng_state()
    GMMClassifier(**CPU).fit(X, y)
    BayesianGMM(2, **CPU).fit(X)
    BayesianGMM(2, backend="pyro", em_max_iter=3, max_iter=5, n_init=1, **CPU).fit(X)
    assert torch.equal(torch.get_rng_state(), before)


def test_classifier_explains_huge_data_and_learning_rates():
    """The issue's classifier cases that dumped Pyro's constraint errors."""
    X, y = _blobs()
    with pytest.raises(ValueError, match=r"too large to fit in float64 arithmetic in "
                                         r"feature\(s\) \[0, 1\].*rescale them"):
        GMMClassifier(2, **CPU).fit(X * 1e160, y)
    with pytest.warns(RuntimeWarning, match="SVI diverged.*keeping the EM solution"):
        clf = GMMClassifier(2, learning_rate=1e6, em_max_iter=3, max_iter=50, random_state=0,
                            **CPU).fit(X, y)
    assert clf.score(X, y) == 1.0 and np.all(np.isfinite(clf.means_))
    # Pure SVI has no EM solution to fall back to: an error, as for BayesianGMM.
    with pytest.raises(ValueError, match="SVI diverged.*lower learning_rate"):
        GMMClassifier(2, learning_rate=1e6, em_max_iter=0, max_iter=50, **CPU).fit(X, y)


def test_object_arrays_of_numbers_fit_and_non_numbers_are_both_error_kinds():
    """scikit-learn's check_dtype_object: numbers in an object array are
    numbers; a dict among them is refused as a ValueError (the project's
    rule) that is also the TypeError scikit-learn code expects."""
    from bayesgmm._validation import NonNumericError
    X, y = _blobs()
    obj = X.astype(object)
    np.testing.assert_array_equal(BayesianGMM(2, n_init=1, random_state=0, **CPU).fit(obj).means_,
                                  BayesianGMM(2, n_init=1, random_state=0, **CPU).fit(X).means_)
    obj[0, 0] = {"foo": "bar"}
    for exc in (ValueError, TypeError):
        with pytest.raises(exc, match=r"must contain numbers.*argument must be .* string.* number"):
            GMMClassifier(2, **CPU).fit(obj, y)
    assert issubclass(NonNumericError, ValueError) and issubclass(NonNumericError, TypeError)


@pytest.mark.parametrize("bad, message", [
    ({"a": [1.0, 2.0]}, "2-D array-like of numbers .*got dict"),
    (None, "2-D array-like of numbers .*got NoneType"),
    ([[1.0, 2.0], [3.0]], "same number of values in every row"),
    (np.array([["2020-01-01", "2020-02-01"]] * 4, dtype="datetime64[D]"),
     r"dates or times \(datetime64\[D\]\), not numbers.*np.timedelta64"),
    (np.arange(8).reshape(4, 2).astype("timedelta64[s]"), r"time spans \(timedelta64\[s\]\)"),
])
def test_input_that_is_not_an_array_of_numbers_is_named(bad, message):
    # Dates were taken as integers in their own unit (days here,
    # nanoseconds there: scores of -1e34 without a word); a dict, None or
    # ragged rows ended in numpy's or float()'s own words.
    from bayesgmm._validation import NonNumericError
    X, y = _blobs()
    gmm = BayesianGMM(2, n_init=1, random_state=0, **CPU).fit(X)
    clf = GMMClassifier(1, n_init=1, **CPU).fit(X, y)
    means = gmm.means_.copy()
    for call in (lambda: BayesianGMM(2, **CPU).fit(bad), lambda: gmm.predict(bad),
                 lambda: gmm.score_samples(bad), lambda: clf.predict_proba(bad)):
        with pytest.raises(ValueError, match=message) as info:
            call()
        if "every row" not in message:
            assert isinstance(info.value, NonNumericError)
    np.testing.assert_array_equal(gmm.means_, means)


def test_n_threads_sets_the_fits_threads_and_restores_them(monkeypatch):
    """n_threads=None leaves torch's setting alone; an int sets it for the
    fit; the caller's setting comes back after the fit, even one that
    fails.  (A spy records the setting inside the real EM.)"""
    import bayesgmm.mixture
    seen = []
    real = bayesgmm.mixture.em_fit
    monkeypatch.setattr(bayesgmm.mixture, "em_fit",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        X, y = _blobs()
        BayesianGMM(2, n_init=1, **CPU).fit(X)
        BayesianGMM(2, n_init=1, n_threads=1, **CPU).fit(X)
        assert seen == [2, 1] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="n_threads must be >= 1"):
            BayesianGMM(2, n_threads=0, **CPU).fit(X)
        # Far more threads than cores crashed the process inside OpenMP
        # (100,000: a segmentation fault) or overflowed torch's int (2**31).
        cap = max(256, 4 * (os.cpu_count() or 1))
        for est in (BayesianGMM(2, **CPU), GMMClassifier(2, **CPU)):
            for n in (cap + 1, 100_000, 2 ** 31):
                with pytest.raises(ValueError, match=rf"^n_threads must be in \[1, {cap}\], "
                                                     rf"got {n}: this machine has"):
                    est.set_params(n_threads=n).fit(X, y)
            est.set_params(n_threads=cap).fit(X, y)      # the cap itself is taken
        with pytest.raises(ValueError):
            BayesianGMM(2, n_init=1, n_threads=1, **CPU).fit(np.c_[X[:, 0], X[:, 1] * np.nan])
        assert torch.get_num_threads() == 2
        GMMClassifier(2, n_threads=1, **CPU).fit(X, y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_warm_start_refuses_other_columns():
    import pandas as pd
    X, _ = _blobs()
    df = pd.DataFrame(X, columns=["a", "b"])
    gmm = BayesianGMM(2, n_init=1, warm_start=True, random_state=0, **CPU).fit(df)
    means = gmm.means_.copy()
    for other in (df[["b", "a"]], df.rename(columns={"a": "x"}), X):
        with pytest.raises(ValueError, match="warm_start=True continues the previous fit on "
                                             "columns"):
            gmm.fit(other)
        np.testing.assert_array_equal(gmm.means_, means)


def test_converged_and_svi_follow_the_kept_restart():
    """Another restart reaching em_max_iter neither marks the fit
    unconverged nor starts SVI when the kept restart converged (review
    repro: 3 overlapping 1-D blobs, n_init=6; em_max_iter=20 under
    accelerated EM, 40 before it)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, 200), rng.normal(2, 1, 200), rng.normal(4, 1, 200)][:, None]
    gmm = BayesianGMM(3, n_init=6, em_max_iter=20, max_iter=200, random_state=2, **CPU).fit(X)
    iterations = [len(h) - 1 for h in gmm.restart_losses_]
    kept = iterations[gmm.best_restart_]
    # The situation: another restart ran into the budget, the kept one stopped before it.
    assert max(iterations) == 20 and kept < 20
    assert gmm.converged_ and len(gmm.losses_) == kept + 1      # no SVI steps appended


def test_a_dataframe_column_named_twice_is_named_as_such():
    """Not "non-numeric" (``df['a']`` of a duplicated name is a DataFrame):
    the duplicated name and how to keep one of each, for both estimators."""
    import pandas as pd
    X, y = _blobs()
    df = pd.DataFrame(X[:, :2], columns=["a", "a"])
    for fit in (lambda: BayesianGMM(2, **CPU).fit(df), lambda: GMMClassifier(2, **CPU).fit(df, y)):
        with pytest.raises(ValueError, match=r"named more than once: \['a'\].*"
                                             r"df\.loc\[:, ~df\.columns\.duplicated\(\)\]"):
            fit()
    fitted = BayesianGMM(2, n_init=1, random_state=0, **CPU).fit(X[:, :2])
    with pytest.raises(ValueError, match="named more than once"):
        fitted.predict(df)


@pytest.mark.parametrize("budget, stage", [
    (dict(em_max_iter=3, max_iter=0), r"EM used its em_max_iter=3 iterations, 3 in all.*"
                                      r"raise em_max_iter, or loosen tol"),
    (dict(em_max_iter=0, max_iter=5), r"SVI used its max_iter=5 steps, 5 in all.*"
                                      r"raise max_iter, or loosen tol"),
    (dict(em_max_iter=3, max_iter=5), r"EM used its em_max_iter=3 iterations, then the SVI "
                                      r"that continues it its max_iter=5 steps, 8 in all.*"
                                      r"raise em_max_iter"),
])
def test_a_fit_out_of_budget_warns_as_scikit_learn_does(budget, stage):
    """scikit-learn's ConvergenceWarning (GaussianMixture's), naming the
    stage whose budget ran out and the remedy, pointing at the user's fit
    line, for both estimators; converged_ False.  tol=0 (every step asked
    for, as Pyro's tutorial) and minibatch SVI (max_iter steps by design)
    are not warned about."""
    from sklearn.exceptions import ConvergenceWarning
    X, y = _blobs()
    for name, fit in (("BayesianGMM", lambda **kw: BayesianGMM(2, **kw).fit(X)),
                      ("GMMClassifier", lambda **kw: GMMClassifier(2, **kw).fit(X, y))):
        with pytest.warns(ConvergenceWarning, match=f"^{name}: the fit stopped before "
                                                    f"converging \\({stage}") as caught:
            est = fit(random_state=0, **budget, **CPU)
        assert not est.converged_
        assert [w.filename for w in caught] == [__file__]
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            assert not fit(random_state=0, tol=0.0, **budget, **CPU).converged_
    # Minibatch SVI runs its max_iter steps by design: not warned either
    # (EM's budget, without SVI, still is).
    minibatch = BayesianGMM(2, batch_size=32, random_state=0, **budget, **CPU)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not minibatch.fit(X).converged_
    assert len([w for w in caught if w.category is ConvergenceWarning]) == \
        (budget["max_iter"] == 0)


def test_default_fits_converge_without_a_warning():
    from sklearn.exceptions import ConvergenceWarning
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for ct in COVARIANCE_TYPES:
            assert BayesianGMM(2, covariance_type=ct, random_state=0, **CPU).fit(X).converged_
            assert GMMClassifier(2, covariance_type=ct, random_state=0, **CPU).fit(X, y) \
                .converged_


def test_svi_that_converges_after_em_ran_out_makes_the_fit_converged():
    """EM stopped at em_max_iter=2, SVI continued it to its own rule: the
    fit converged (no warning), SVI's steps in the history (the first
    release's bookkeeping called it unconverged whatever SVI did)."""
    from sklearn.exceptions import ConvergenceWarning
    from bayesgmm.datasets import load_iris
    iris = load_iris()
    X, y = iris.select_dtypes("number").to_numpy(), iris.iloc[:, -1].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gmm = BayesianGMM(3, em_max_iter=2, max_iter=3000, random_state=0, **CPU).fit(X)
        clf = GMMClassifier(2, em_max_iter=2, max_iter=3000, random_state=0, **CPU).fit(X, y)
    assert gmm.converged_ and 2 < gmm.n_iter_ < 2 + 3000 and len(gmm.losses_) > 10
    assert clf.converged_ and 2 < clf.n_iter_ < 2 + 3000


def test_a_feature_observed_in_one_row_is_said_as_such():
    """(From an audit.) With missing="marginalize", a feature observed in
    one row of 160 holds one value where observed and gets the constant
    feature's floor variance; the warning said it held one value "in every
    row".  It says where observed, and in how many rows (or how much
    weight), for that feature only."""
    rng = np.random.default_rng(5)
    X = np.c_[np.r_[rng.normal(size=(80, 2)), rng.normal(size=(80, 2)) + 5],
              np.full(160, np.nan), np.full(160, 2.0)]
    X[0, 2] = 0.25
    kw = dict(n_init=1, random_state=0, missing="marginalize", **CPU)
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 0.25, observed in 1 of 160 rows\), "
                                         r"3 \(= 2\) hold one value in every row where observed: "):
        BayesianGMM(2, **kw).fit(X)
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 0.25, observed in 0.5 of 80 total "
                                         r"weight\), 3 \(= 2\) hold one value in every row where"):
        BayesianGMM(2, **kw).fit(X, sample_weight=np.full(160, 0.5))
    # (From the review.) A feature observed in every row is not said to be
    # partly observed when the two sums of the weights round apart (seed 2:
    # 542.2475934006596 against 542.2475934006594).
    rng = np.random.default_rng(2)
    Z = np.c_[rng.normal(size=(1000, 2)), np.full(1000, 2.0)]
    Z[:, 0] += np.where(np.arange(1000) < 500, 0, 5)
    Z[rng.random(1000) < 0.1, 1] = np.nan
    w = rng.uniform(0.1, 1.0, 1000)
    assert (~np.isnan(Z) * w[:, None]).sum(0)[2] < w.sum()          # the rounding
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 2\) hold one value in every "
                                         r"row: ") as rec, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*components ended with weight below")
        BayesianGMM(2, **kw).fit(Z, sample_weight=w)
    assert "observed in" not in str(rec[0].message)


def test_a_constant_feature_is_warned_about_naming_it():
    """(From an independent new-user walkthrough.) A constant column was
    fitted without a word: its variance ends at the prior's floor, and the
    log-likelihood per point went from -1.2 to +13 (a point off the constant
    by 1e-4 scored about -2500 nats).  Said once, naming the column."""
    import pandas as pd
    rng = np.random.default_rng(0)
    X = np.c_[np.r_[rng.normal(0, 1, (30, 2)), rng.normal(6, 1, (30, 2))], np.full(60, 5.0)]
    frame = pd.DataFrame(X, columns=["a", "b", "const"])
    y = np.repeat([0, 1], 30)
    kw = dict(n_init=1, random_state=0, **CPU)
    for fit, name in ((lambda: BayesianGMM(2, **kw).fit(frame), "BayesianGMM"),
                      (lambda: GMMClassifier(1, **kw).fit(frame, y), "GMMClassifier")):
        with pytest.warns(UserWarning, match=rf"{name}: feature\(s\) 'const' \(= 5\) hold one "
                                             rf"value in every row: .*drop it") as rec:
            fit()
        assert sum("hold one value" in str(w.message) for w in rec) == 1
        assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 5\) hold one value"):
        BayesianGMM(2, **kw).fit(X)
    # What it warns of: the constant feature's density dominates the scores.
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 0\) hold one value"):
        fitted = BayesianGMM(2, **kw).fit(np.c_[X[:, :2], np.zeros(60)])
    assert fitted.score(np.c_[X[:, :2], np.zeros(60)]) > 5 + BayesianGMM(2, **kw).fit(
        X[:, :2]).score(X[:, :2])
    # A feature that varies, however little against its magnitude, is not
    # constant (1e8 + 1e-7 is a few float64 steps: still two values, each
    # component on one of them, which the discrete-feature check says).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.warns(UserWarning, match=r"single value of feature\(s\) 2 \(2 distinct"):
            BayesianGMM(2, **kw).fit(np.c_[X[:, :2], 1e8 + 1e-7 * (np.arange(60) % 2)])
        BayesianGMM(1, **kw).fit(np.c_[X[:, :2], np.full(60, 0.1)][:1])  # one row: nothing said
    # Out of core (a memmap read in chunks), and with rows of weight 0 that
    # hold another value: the kept rows decide.
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/x.npy"
        np.save(path, np.r_[X, [[0.0, 0.0, 9.0]]])
        w = np.r_[np.ones(60), 0.0]
        with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 5\) hold one value"):
            BayesianGMM(2, **kw).fit(np.load(path, mmap_mode="r"), sample_weight=w)
        with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 5\) hold one value"):
            BayesianGMM(2, **kw).fit(np.load(path), sample_weight=w)


def _blobs_and_a_constant(seed: int, n: int = 300):
    """Two blobs at +-1.5 (D = 2) and a constant third column 0.1."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-1.5, 1, (n // 2, 2)), rng.normal(1.5, 1, (n - n // 2, 2))])
    return X, np.c_[X, np.full(n, 0.1)]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_constant_feature_warning_says_what_it_does_to_the_clustering(covariance_type):
    """(From an independent numerical audit.)  A constant column's MAP
    variance is the prior's scale over the component's weight, b / (a + 1 +
    N_k): with a variance per component (diag, full) the heavier component
    scores higher on every row, and here one component takes them all where
    the same fit without the column finds both blobs.  The warning said only
    that scores are dominated; it now says the clustering changes, for the
    types where it does, and this test holds it to the fits."""
    from sklearn.metrics import adjusted_rand_score
    X, Xc = _blobs_and_a_constant(1)
    kw = dict(covariance_type=covariance_type, random_state=0, **CPU)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with_column = BayesianGMM(2, **kw).fit(Xc)
    said = [str(w.message) for w in rec if "hold one value" in str(w.message)]
    assert len(said) == 1 and said[0].endswith("drop it")
    without = BayesianGMM(2, **kw).fit(X)
    agree = adjusted_rand_score(without.predict(X), with_column.predict(Xc))
    if covariance_type in ("diag", "full"):
        assert f"with covariance_type='{covariance_type}' it also changes the clustering" \
            in said[0]
        assert with_column.weights_.min() < 1e-3 and with_column.n_effective_components_ == 1
        assert agree < 0.1 and without.weights_.min() > 0.4
    else:                              # one shared variance on it: the clustering kept
        assert "changes the clustering" not in said[0]
        assert agree == 1.0
    # Spherical: no floor, so no claim that scores are dominated (a point
    # 0.5 off the value costs a fraction of a nat, from an independent review).
    if covariance_type == "spherical":
        assert "prior's floor" not in said[0] and "zero spread" in said[0]
        off = Xc[:1].copy()
        off[0, 2] += 0.5
        assert abs(with_column.score_samples(off)[0]
                   - with_column.score_samples(Xc[:1])[0]) < 1.0
    else:
        assert "prior's floor" in said[0]
    # One component: nothing to change.
    with pytest.warns(UserWarning, match="hold one value") as rec:
        BayesianGMM(1, **kw).fit(Xc)
    assert not any("changes the clustering" in str(w.message) for w in rec)


def test_a_feature_constant_within_one_class_is_warned_about_naming_the_class():
    """The classifier fits one mixture per class: a feature constant in one
    class (not in the others) collapses that class's diag or full mixture as
    above.  Said once, naming the class and feature, where the class has
    several components of those types; not for one component, tied or
    spherical covariances, or a feature constant in every class (the other
    warning names that one)."""
    import pandas as pd
    X, Xc = _blobs_and_a_constant(0)
    rng = np.random.default_rng(5)
    XX = pd.DataFrame(np.r_[Xc, np.c_[X + 10, rng.normal(size=len(X))]], columns=["a", "b", "c"])
    y = np.repeat(["flat", "round"], len(X))

    def said(n_components, covariance_type="diag", data=XX):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            clf = GMMClassifier(n_components, covariance_type=covariance_type, random_state=0,
                                **CPU).fit(data, y)
        found = [w for w in rec if "hold one observed value in every row of a class"
                 in str(w.message)]
        assert all(w.filename == __file__ for w in found)
        return clf, [str(w.message) for w in found]

    for covariance_type in ("diag", "full"):
        clf, message = said(2, covariance_type)
        assert len(message) == 1 and "(class 'flat': 'c')" in message[0], message
        assert f"covariance_type='{covariance_type}'" in message[0]
        assert clf.weights_[0].min() < 1e-3 and clf.weights_[1].min() > 0.4   # as it says
    assert said({"flat": 1, "round": 2})[1] == []
    # A missing entry in the class's constant column: still one observed value.
    holes = XX.copy()
    holes.iloc[3, 2] = np.nan
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        GMMClassifier(2, missing="marginalize", random_state=0, **CPU).fit(holes, y)
    assert any("(class 'flat': 'c')" in str(w.message) for w in rec)
    # One component everywhere (as a dict or numpy ints): no clustering
    # clause in the all-classes warning either.
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        GMMClassifier({"flat": np.int64(1), "round": 1}, random_state=0, **CPU).fit(
            XX.assign(c=0.1), y)
    assert any("hold one value" in str(w.message) for w in rec)
    assert not any("changes the clustering" in str(w.message) for w in rec)
    assert said(2, "tied")[1] == [] and said(2, "spherical")[1] == []
    everywhere = XX.assign(c=0.1)
    assert said(2, data=everywhere)[1] == []


def test_a_constant_feature_fits_alike_with_weights_missing_values_and_out_of_core(tmp_path):
    """(From an independent numerical audit.)  The weighted and missing-value
    moments divide sums, so a constant column's mean is off by a rounding and
    its computed spread was that rounding: the column was standardised by
    ~1e-17 of its magnitude and its fitted standard deviation came out
    ~1e-21 of it (against ~1e-8 unweighted), so that a new row holding
    0.3 - 0.2 instead of 0.1 scored about -4e4 nats lower.  Every path now
    takes the constant's spread as exactly 0."""
    rng = np.random.default_rng(0)
    n = 300
    X = np.c_[rng.normal(size=(n, 2)), np.full(n, 0.1)]
    w = rng.uniform(0.5, 2.0, n)
    holes = X.copy()
    holes[0, 0] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, X)
    kw = dict(covariance_type="diag", random_state=0, **CPU)
    fits = {"unweighted": lambda: BayesianGMM(1, **kw).fit(X),
            "weighted": lambda: BayesianGMM(1, **kw).fit(X, sample_weight=w),
            "missing": lambda: BayesianGMM(1, missing="marginalize", **kw).fit(holes),
            "out of core": lambda: BayesianGMM(1, **kw).fit(np.load(path, mmap_mode="r"),
                                                            sample_weight=w),
            "classifier": lambda: GMMClassifier(1, **kw).fit(X, np.arange(n) % 2,
                                                             sample_weight=w)}
    rounded = X.copy()
    rounded[:, 2] = 0.3 - 0.2                  # 0.09999999999999998
    assert rounded[0, 2] != 0.1
    sds = {}
    for name, fit in fits.items():
        with pytest.warns(UserWarning, match="hold one value"):
            est = fit()
        sds[name] = np.sqrt(np.asarray(est.covariances_)[..., 2].ravel()) / 0.1
        drift = np.abs(est.score_samples(rounded) - est.score_samples(X)).max()
        assert drift < 1e-3, (name, drift)
    for name, sd in sds.items():             # the prior's floor, as unweighted
        assert np.all((sd > 1e-9) & (sd < 1e-7)), (name, sd)


def test_a_float32_fit_beyond_its_precision_says_so():
    """(From an audit.) A float32 full covariance of condition number
    1.2e6 (its correlation matrix's) scored 21% off a float64 evaluation
    of the same parameters, silently; one of 1.2e5 1%.  A float32 fit whose
    covariance passes 1e5 warns, naming the component (and class) and
    dtype='float64'; the float64 fit, and ordinary fits, do not."""
    from scipy.stats import multivariate_normal
    rng = np.random.default_rng(0)
    t = rng.normal(size=400)
    X = np.c_[t, t + 1e-4 * rng.normal(size=400), rng.normal(size=400)]   # nearly on a plane
    w = np.full(400, 3000.0)        # heavy rows: the data outweigh the covariance prior
    kw = dict(covariance_type="full", n_init=1, random_state=0, **CPU)
    with pytest.warns(UserWarning, match=r"BayesianGMM: the fitted covariance of component 0 has "
                                         r"condition number 1\.\de\+06 .*fit with "
                                         r"dtype='float64'") as rec:
        f32 = BayesianGMM(1, **kw).fit(X, sample_weight=w)
    assert rec[0].filename == __file__
    ref = multivariate_normal(f32.means_[0], f32.covariances_[0]).logpdf(X)
    assert np.max(np.abs(f32.score_samples(X) - ref) / np.abs(ref)) > 0.05   # what it warns of
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The plane is said as features dependent to 1e-4 (a warning of its own).
        warnings.filterwarnings("ignore", message=".*linear combinations of earlier ones")
        f64 = BayesianGMM(1, dtype="float64", **kw).fit(X, sample_weight=w)
        np.testing.assert_allclose(f64.score_samples(X),
                                   multivariate_normal(f64.means_[0], f64.covariances_[0]).logpdf(X),
                                   rtol=1e-8)
        BayesianGMM(1, **kw).fit(X)                       # unweighted: condition 4e2
    y = np.arange(400) % 2
    with pytest.warns(UserWarning, match=r"GMMClassifier: the fitted covariance of class 1, "
                                         r"component 0 has condition number"):
        GMMClassifier({0: 1, 1: 1}, **kw).fit(np.where(y[:, None] == 1, X, rng.normal(size=X.shape)),
                                              y, sample_weight=w)


def _ratings(n: int = 500, seed: int = 0) -> np.ndarray:
    """Two clusters of whole-number ratings (rounded N(3, 1) and N(7, 1))."""
    rng = np.random.default_rng(seed)
    return np.r_[np.round(rng.normal(3, 1, n)), np.round(rng.normal(7, 1, n))][:, None]


def test_components_on_one_value_of_a_discrete_feature_are_warned_about():
    """(From an audit.) Ratings 1..10 from two clusters: "auto" chose K = 10
    with every variance about 1e-4, one spike per value, with no word
    (scikit-learn's GaussianMixture does the same).  The fit says which
    components sit on one value, of which feature, and the remedy; the
    remedy (uniform noise of one gap's width) gives K = 2 at the clusters'
    centres."""
    import pandas as pd
    X = _ratings()
    frame = pd.DataFrame(X, columns=["rating"])
    kw = dict(random_state=0, **CPU)
    with pytest.warns(UserWarning, match=r"sit on a single value of feature\(s\) 'rating' \(\d+ "
                                         r"distinct values, gap 1\).*add uniform noise") as rec:
        gmm = BayesianGMM("auto", **kw).fit(frame)
    said = [str(w.message) for w in rec if "single value" in str(w.message)]
    assert len(said) == 1
    # Independently: the components the message names have variance below
    # 1/12 and integer means; the others not.
    named = [int(k) for k in said[0].split(" of the fit")[0].split("components ")[1]
             .replace(" and more", "").split(", ")]
    spikes = np.flatnonzero((gmm.covariances_.ravel() < 1 / 12)
                            & (np.abs(gmm.means_.ravel() - np.round(gmm.means_.ravel())) < 1e-3))
    assert gmm.n_components_ > 2 and named == spikes[:8].tolist()
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = BayesianGMM("auto", **kw).fit(X + rng.uniform(-0.5, 0.5, X.shape))
    assert fixed.n_components_ == 2
    np.testing.assert_allclose(np.sort(fixed.means_.ravel()), [3, 7], atol=0.15)


def test_discrete_feature_check_spares_continuous_and_resolved_data():
    """No false alarm: iris (measured to 0.1 cm) at K = 3 under every
    covariance type, two tight clusters 2e5 of their sds apart (variance
    1e-11 of the data's, far above the gaps between their values), and
    ratings fitted with two components (each spread over several values)."""
    from bayesgmm.datasets import load_iris
    iris = load_iris().select_dtypes("number").to_numpy()
    rng = np.random.default_rng(0)
    far = np.r_[rng.normal(0, 1, (200, 1)), rng.normal(2e5, 1, (200, 1))]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*single value")
        for ct in COVARIANCE_TYPES:
            BayesianGMM(3, covariance_type=ct, random_state=0, **CPU).fit(iris)
        BayesianGMM(2, random_state=0, **CPU).fit(far)
        BayesianGMM(2, random_state=0, **CPU).fit(_ratings())


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_classifier_names_the_class_of_a_component_on_one_value(covariance_type):
    """The classifier's check is per class: a class whose first feature
    takes two values (0 and 1, a 90/10 split) has its components on them,
    named with the class; under "tied" the shared matrix of each class is
    checked the same way.  A NaN entry (marginalised) does not stop it."""
    rng = np.random.default_rng(0)
    n = 400
    flag = (rng.random(n) < 0.1).astype(float)
    X = np.r_[np.c_[flag, rng.normal(size=n)], np.c_[rng.normal(size=(n, 2)) + 3]]
    X[5, 1] = np.nan
    y = np.repeat(["a", "b"], n)
    clf = GMMClassifier(2, covariance_type=covariance_type, random_state=0,
                        missing="marginalize", **CPU)
    with pytest.warns(UserWarning, match=r"GMMClassifier: class 'a': components? [01].* sits? "
                                         r"on a single value of feature\(s\) 0 "):
        clf.fit(X, y)
    var = np.diagonal(clf.covariances_, axis1=-2, axis2=-1) if covariance_type != "diag" \
        else clf.covariances_
    assert np.nanmin(var[0][..., 0]) < 1 / 12 and np.nanmin(var[1][..., 0]) > 0.3


def test_discrete_check_merges_roundings_and_names_point_masses():
    """(From a second audit.) Likert answers 1..5 with five of the 3s
    stored as 3 - 1e-7: the gap measured at 3 was 1e-7 and the component on
    3 went unnamed; values within a rounding are one value now.  A value
    repeated in a continuous feature (40% of the rows spend exactly 0) is
    said as such, with its share of the rows and the remedy of modelling it
    apart, not jitter; a DataFrame's remedy is written for a DataFrame."""
    import pandas as pd
    rng = np.random.default_rng(5)
    n = 1000
    z = rng.integers(0, 2, n)
    c = rng.normal(0, 1, (n, 2)) + 3 * z[:, None]
    lik = np.clip(np.rint(rng.normal(np.where(z == 1, 4.2, 2.0), 0.8)), 1, 5)
    lik[np.flatnonzero(lik == 3)[:5]] = 3 - 1e-7
    kw = dict(covariance_type="diag", max_components=8, random_state=0, **CPU)
    with pytest.warns(UserWarning, match=r"single value of feature\(s\) 2 \(5 distinct values, "
                                         r"gap 1\)") as rec:
        gmm = BayesianGMM("auto", **kw).fit(np.c_[c, lik])
    said = next(str(w.message) for w in rec if "single value" in str(w.message))
    spikes = np.flatnonzero(gmm.covariances_[:, 2] < 1 / 12)
    assert ("component" + ("s " if spikes.size > 1 else " ") + ", ".join(map(str, spikes))
            + " of the fit") in said
    assert np.any(np.abs(gmm.means_[spikes, 2] - 3) < 1e-3)      # the one on 3 is named
    assert "X[:, j] + rng.uniform(-gap / 2, gap / 2, len(X))" in said
    spend = np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(4, 0.5, n))
    frame = pd.DataFrame(np.c_[c, spend, lik], columns=["a", "b", "spend", "likert"])
    with pytest.warns(UserWarning, match=r"'spend' \(the value 0 held by 4\d% of the rows, among "
                                         r"\d+ distinct values\)") as rec:
        BayesianGMM("auto", **kw).fit(frame)
    said = next(str(w.message) for w in rec if "single value" in str(w.message))
    assert "fit the rows at that value apart" in said
    assert "below 0.01 of the feature's variance" in said
    if "'likert'" in said:
        assert "df[col] + rng.uniform(-gap / 2, gap / 2, len(df))" in said
    else:
        assert "add uniform noise" not in said


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_linearly_dependent_features_are_warned_about_under_full_and_tied(covariance_type):
    """(From an audit.) Two clusters 5.2 sd apart with a duplicated column
    (or one in other units, or a sum of two others) fitted with
    n_components="auto" gave K = 1 under full covariances, silently: across
    the dependent direction the variance sits at the prior's floor, which
    narrows as a component's weight grows (scikit-learn's BIC chose 2).
    Full and tied fits say which features are dependent and the remedy;
    dropping the copy gives K = 2.  Diag and spherical fits, and data with
    no dependence (iris, the clusters alone), are not warned about."""
    import pandas as pd
    rng = np.random.default_rng(3)
    z = rng.integers(0, 2, 600)
    A = rng.normal(0, 1, (600, 3)) + 3 * z[:, None]
    frame = pd.DataFrame(np.c_[A, 2.54 * A[:, 0], A[:, 1] + A[:, 2]],
                         columns=["a", "b", "c", "a_in", "b_plus_c"])
    kw = dict(covariance_type=covariance_type, max_components=4, random_state=0, **CPU)
    if covariance_type in ("full", "tied"):
        with pytest.warns(UserWarning, match=r"feature\(s\) that are linear combinations of "
                                             r"earlier ones \(up to rounding\): 'a_in' of "
                                             r"\['a'\]; 'b_plus_c' of \['b', 'c'\] \(") as rec:
            gmm = BayesianGMM("auto", **kw).fit(frame)
        said = [str(w.message) for w in rec if "linear combinations" in str(w.message)]
        assert len(said) == 1 and ("leave out ['a_in', 'b_plus_c'] (for features only nearly"
                                   in said[0]) and said[0].endswith(
            "(covariance_type='diag' has no such floor, but counts a copied column twice: with "
            "n_components='auto' it splits the clusters into many)")
        assert ("K = 1 for two clusters" in said[0]) == (covariance_type == "full")
        if covariance_type == "full":
            assert gmm.n_components_ == 1                # what it warns of
        with pytest.warns(UserWarning, match=r"earlier ones \(to within 0.000\d of its spread\): "
                                             r"3 of \[0\] \(.*leave out \[3\] \(for features"):
            BayesianGMM(2, **kw).fit(np.c_[A, A[:, 0] + 1e-3 * rng.normal(size=600)])
        with pytest.warns(UserWarning, match=r"GMMClassifier: feature\(s\) that are linear "
                                             r"combinations of earlier ones \(up to rounding\): "
                                             r"'a_in' of \['a'\]"):
            GMMClassifier(1, **kw).fit(frame, z)
        # The user's own prior scale resolves features only nearly dependent,
        # never an exact dependence (from a review).
        with pytest.warns(UserWarning, match=r"\(up to rounding\): 'a_in' of \['a'\]"):
            BayesianGMM(2, priors=Priors(covariance_scale=0.5), **kw).fit(frame)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*linear combinations")
            BayesianGMM(2, priors=Priors(covariance_scale=0.5), **kw).fit(
                np.c_[A, A[:, 0] + 1e-3 * rng.normal(size=600)])
    from bayesgmm.datasets import load_iris
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*linear combinations")
        if covariance_type not in ("full", "tied"):
            BayesianGMM("auto", **kw).fit(frame)
        assert BayesianGMM("auto", **kw).fit(A).n_components_ == 2
        BayesianGMM(3, **kw).fit(load_iris().select_dtypes("number"))


def test_discrete_check_from_a_review(tmp_path):
    """(From a review.)  1. Past 16,384 rows a value seen once in the
    sample counted as many rows, so a small tight cluster of continuous
    data (100 rows of 1,000,100) was called a point mass "held by 0% of the
    rows": it is not.  2. Weights count as repeated rows (a duplicated row
    given once with its count as weight collapsed the same way, unsaid).
    3. A float32 fit out of core rebuilt the value 0 as 4e-7 from its
    standardised sample; a classifier out of core was not checked."""
    rng = np.random.default_rng(0)
    big = np.r_[rng.normal(0, 1, (1_000_000, 2)), rng.normal(10, 0.05, (100, 2))]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*single value")
        BayesianGMM(2, covariance_type="diag", n_init=1, random_state=0, **CPU).fit(big)
    X = rng.normal(0, 1, (1000, 2))
    X[:500] = [0.3, -0.2]
    kw = dict(covariance_type="diag", random_state=0, **CPU)
    with pytest.warns(UserWarning, match=r"the value 0.3 held by 50% of the rows") as rec:
        BayesianGMM(2, **kw).fit(X)
    said = next(str(w.message) for w in rec if "single value" in str(w.message))
    assert "sample_weight" not in said and "fit the rows at that value apart" in said
    with pytest.warns(UserWarning, match=r"the value 0.3 held by 50% of the rows"):
        BayesianGMM(2, **kw).fit(X[499:], sample_weight=np.r_[500.0, np.ones(500)])
    n = 1000
    spend = np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(3, 0.7, n))
    r = np.r_[np.round(rng.normal(3, 1, n // 2)), np.round(rng.normal(7, 1, n // 2))]
    Z = np.c_[rng.normal(0, 1, n), spend, r]
    np.save(tmp_path / "z.npy", Z)
    mm = np.load(tmp_path / "z.npy", mmap_mode="r")
    with pytest.warns(UserWarning, match=r"feature\(s\) 1 \(the value 0 held by [34]\d% of the rows"):
        BayesianGMM("auto", dtype="float32", **kw).fit(mm)
    y = (r > 5).astype(int)
    for data in (Z, mm):
        with pytest.warns(UserWarning, match=r"GMMClassifier: class 0: components? [\d, ]+; "
                                             r"class 1: .*sit on a single value"):
            GMMClassifier("auto", **kw).fit(data, y)


def test_dependent_check_from_a_review(tmp_path):
    """(From a review.)  One row holding a code (999999) in two independent
    columns made them look dependent; the check is confirmed without rows
    over 8 sds out.  Fitted out of core, a mixture is checked on the rows
    its priors' spread is measured on, a classifier on its seeding sample."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3))
    X[7, :2] = 999999.0
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*linear combinations")
        BayesianGMM(2, random_state=0, **CPU).fit(X)
    a = rng.normal(size=1000)
    D = np.c_[a, rng.normal(size=1000), 2.54 * a]
    np.save(tmp_path / "d.npy", D)
    # A mixture out of core, on the rows its priors' spread is measured on.
    with pytest.warns(UserWarning, match=r"BayesianGMM: feature\(s\) that are linear "
                                         r"combinations of earlier ones \(up to rounding\): 2 of "
                                         r"\[0\]"):
        BayesianGMM(2, n_init=1, random_state=0, **CPU).fit(
            np.load(tmp_path / "d.npy", mmap_mode="r"))
    with pytest.warns(UserWarning, match=r"GMMClassifier: feature\(s\) that are linear "
                                         r"combinations of earlier ones \(up to rounding\): 2 of "
                                         r"\[0\]"):
        GMMClassifier(2, random_state=0, **CPU).fit(np.load(tmp_path / "d.npy", mmap_mode="r"),
                                                    (a > 0).astype(int))


def _single_value_reference(groups, narrow, M, V, W, sd):
    """The single-value test written plainly, one (group, feature) and one
    component at a time, from warn_discrete_features' docstring (the loop
    the library ran before it read every feature at once)."""
    from bayesgmm import _base as B

    on, told = np.zeros_like(narrow), {}
    for g, X, w in groups:
        for j in np.flatnonzero(narrow[g].any(0)):
            seen = ~np.isnan(X[:, j])
            order = np.argsort(X[seen, j], kind="stable")
            col = X[seen, j][order]
            wc = np.ones(col.size) if w is None else w[seen][order]
            if col.size < 2:
                continue
            values, held_by = [], []            # runs within a rounding of each other
            for x, wx in zip(col, wc):
                if values and x - values[-1][-1] <= B.DISCRETE_VALUE_RTOL * sd[j]:
                    values[-1].append(x)
                    held_by[-1].append(wx)
                else:
                    values.append([x])
                    held_by.append([wx])
            if len(values) < 2:
                continue
            ties = np.array([np.sum(h) for h in held_by])
            u = np.array([np.sum(np.multiply(v, h)) for v, h in zip(values, held_by)]) / ties
            total = float(wc.sum())
            counts = w is None or bool(np.all(wc == np.round(wc)))
            one_row = 1.0 if counts else total / col.size
            few = u.size <= B.DISCRETE_MAX_SHARE * (total if counts else col.size)
            for k in np.flatnonzero(narrow[g][:, j]):
                mu, v = M[g][k, j], V[g][k, j]
                inside = np.flatnonzero((u >= mu - 2 * np.sqrt(v)) & (u <= mu + 2 * np.sqrt(v)))
                near = inside[np.argmax(ties[inside])] if inside.size else \
                    int(np.argmin(np.abs(u - mu)))      # the nearest; the lower on a tie
                gap = min(u[near] - u[near - 1] if near > 0 else np.inf,
                          u[near + 1] - u[near] if near < u.size - 1 else np.inf)
                held = ties[near]
                slack = held * (1 + B._WEIGHT_RTOL)    # sums of equal weights: roundings
                shared = slack >= 2 * one_row and slack >= 0.5 * W[g][k] * total
                mass = not few and slack >= B.POINT_MASS_MIN_SHARE * total and \
                    v < B.POINT_MASS_RATIO * sd[j] ** 2
                if shared and (v < gap ** 2 / 12 or mass):
                    on[g + (k, j)] = True
                    if j not in told:
                        told[j] = (u.size, gap, g, few, u[near], held / total)
                    elif told[j][2] == g:
                        told[j] = told[j][:1] + (min(told[j][1], gap),) + told[j][2:]
    return on, told


def test_the_single_value_test_of_all_features_at_once_is_the_plain_one():
    """_single_value_hits (every class and feature in one pass) against the
    plain loop above on random mixtures and data: lattices, repeated
    values, values within a rounding, missing entries, whole and fractional
    weights, classes without rows, NaN-padded components."""
    from bayesgmm._base import _single_value_hits

    rng = np.random.default_rng(0)
    found = 0
    for _ in range(300):
        C, K, D, n = rng.choice([0, 1, 3]), rng.integers(1, 5), rng.integers(1, 5), \
            rng.integers(1, 200)
        kind = rng.integers(0, 4)
        X = (rng.integers(0, rng.integers(1, 8), size=(n, D)).astype(float) if kind == 0 else
             rng.normal(size=(n, D)))
        if kind == 2:
            X[rng.random((n, D)) < 0.5] = 2.0
        if kind == 3:
            X = np.round(X * 3) + rng.normal(size=(n, D)) * 1e-8
        X[rng.random((n, D)) < rng.choice([0, 0.1])] = np.nan
        w = None if rng.random() < 0.4 else (
            rng.integers(1, 4, n).astype(float) if rng.random() < 0.5 else rng.random(n) + 0.1)
        shape = (K, D) if C == 0 else (C, K, D)
        M = rng.normal(size=shape) * 2
        if kind in (0, 3):
            M = np.round(M) + rng.normal(size=shape) * rng.choice([0, 1e-3, 0.3])
        V = 10 ** rng.uniform(-6, 0, size=shape)
        W = rng.dirichlet(np.ones(K), size=shape[:-2] or None)
        if C:
            W[rng.random(W.shape) < 0.1] = np.nan
        sd = np.nan_to_num(np.nanstd(np.vstack([X, np.zeros((1, D))]), 0), nan=1.0) + 0.1
        narrow = rng.random(shape) < 0.7
        labels = None if C == 0 else rng.integers(0, C, n)
        groups = [(g, X if labels is None else X[labels == g[0]],
                   None if w is None else (w if labels is None else w[labels == g[0]]))
                  for g in ([()] if C == 0 else [(c,) for c in range(C)]) if narrow[g].any()]
        on, told = _single_value_hits(groups, narrow, M, V, W, sd)
        on_ref, told_ref = _single_value_reference(groups, narrow, M, V, W, sd)
        np.testing.assert_array_equal(on, on_ref)
        assert told.keys() == told_ref.keys()
        for j in told:
            (n_u, gap, g, few, value, share), ref = told[j], told_ref[j]
            assert (n_u, g, few) == (ref[0], ref[2], ref[3])
            np.testing.assert_allclose([gap, share], [ref[1], ref[5]], rtol=1e-12)
            assert abs(value - ref[4]) <= 1e-6 * sd[j]          # _snap rounds to this
        found += bool(on.any())
    assert found > 80          # the cases find components on values, not only none


def test_equal_weights_find_what_no_weights_find():
    """Every row at one weight (0.3, or 1/n) is the unweighted data for the
    single-value test: a value held by two of n rows is two rows' worth,
    whatever order its sums were taken in (at n = 29, weight 0.3, 0.6
    fell short of 0.6000000000000001 and the component went unsaid: from a
    review)."""
    from bayesgmm._base import _single_value_hits

    for n in range(3, 200):
        X = np.r_[0.0, 0.0, np.linspace(5, 50, n - 2)][:, None]    # two rows on 0
        M, V, W = np.zeros((1, 1)), np.full((1, 1), 1e-4), np.full(1, 2.0 / n)
        narrow = np.ones((1, 1), bool)
        sd = X.std(0)
        base, _ = _single_value_hits([((), X, None)], narrow, M, V, W, sd)
        assert base[0, 0], n
        for weight in (0.3, 0.1, 0.7, 1.0 / n):
            on, _ = _single_value_hits([((), X, np.full(n, weight))], narrow, M, V, W, sd)
            np.testing.assert_array_equal(on, base, err_msg=f"n={n}, weight={weight}")


def test_partial_fit_chunks_are_checked_for_components_on_single_values():
    """(From an audit.)  Later partial_fit calls ran no end-of-fit check: a
    stream of ratings (whole numbers, two clusters) after a continuous first
    chunk ended with components on single values (variance 1e-4 on the
    value 2), unsaid.  Each call checks its chunk at the updated components;
    a finding already said (by the fit or an earlier chunk) is not repeated,
    so twenty chunks say it a few times, not twenty."""
    rng = np.random.default_rng(0)
    first = np.r_[rng.normal(3, 1, 200), rng.normal(7, 1, 200)][:, None]
    chunks = [np.round(np.r_[rng.normal(3, 1, 200), rng.normal(7, 1, 200)])[:, None]
              for _ in range(20)]

    def labels(X):
        return (X[:, 0] > 5).astype(int)

    def named(message):            # the (class, component) pairs a warning names
        head = message.split(" of the fit ")[0]
        parts = re.findall(r"class (\d+): components? ([\d, ]+)", head) or \
            [("", re.search(r"components? ([\d, ]+)$", head).group(1))]
        return {(c, int(k)) for c, ks in parts for k in ks.split(",")}

    kw = dict(dtype="float64", random_state=0, **CPU)
    for est, extra in ((BayesianGMM(6, **kw), {}),
                       (GMMClassifier(6, **kw), {"classes": [0, 1]})):
        y = () if isinstance(est, BayesianGMM) else (labels(first),)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            est.partial_fit(first, *y, **extra)
            assert not [w for w in rec if "single value" in str(w.message)]
            for X in chunks:
                est.partial_fit(X, *(() if not y else (labels(X),)))
        said = [str(w.message) for w in rec if "single value" in str(w.message)]
        assert 1 <= len(said) <= 6, said
        for i in range(1, len(said)):  # each names a component newly on a value
            assert not named(said[i]) <= set().union(*map(named, said[:i])), said
        assert all(w.filename == __file__ for w in rec      # the user's line
                   if "single value" in str(w.message))
        # A fit's finding counts as said: after a fit on ratings, three
        # checked rating chunks (the same components on the same values) say
        # nothing new (each said it again without the de-duplication).
        est = type(est)(6, **kw)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            est.fit(chunks[0], *(() if not y else (labels(chunks[0]),)))
            for X in chunks[:3]:
                est.partial_fit(X, *(() if not y else (labels(X),)))
        assert len([w for w in rec if "single value" in str(w.message)]) == 1
    # Checked on the calls that bring n_partial_fits_ to 1..16, then once 16
    # calls have passed since the last check, on chunks of 50 rows or more: a
    # small chunk on call 32 hands its check to the next large one (from a
    # review: the next check was at 48).
    from bayesgmm._base import checked_call

    def schedule(sizes):
        last, done = 0, []
        for n, rows in enumerate(sizes, 1):
            if checked_call(n, rows, last):
                last = n
                done.append(n)
        return done

    assert schedule([400] * 49) == list(range(1, 17)) + [32, 48]
    small = [400] * 49
    small[31] = small[32] = 30
    assert schedule(small) == list(range(1, 17)) + [34]
    assert not checked_call(3, 49) and checked_call(20, 400, 100)   # (an earlier stream's)
    # At most 2,048 rows of each class are read: a rare class keeps its rows
    # (from a review: 2 of 50 were left in a sample over the whole chunk).
    from bayesgmm._base import chunk_data
    big = rng.normal(size=(50_000, 2))
    rare = (np.arange(50_000) % 1000 == 7).astype(int)
    data, kept = chunk_data(big, None, rare)
    assert np.bincount(kept).tolist() == [2048, 50] and data.X.shape == (2098, 2)
    assert chunk_data(big, None)[0].X.shape == (2048, 2)
    # (From a review.)  A shallow copy keeps its own findings: the copy's
    # warnings do not silence the original's.
    import copy
    fresh = BayesianGMM(6, **kw).partial_fit(first)
    twin = copy.copy(fresh)
    for est in (twin, fresh):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for X in chunks[:8]:
                est.partial_fit(X)
        assert [w for w in rec if "single value" in str(w.message)]
    # (From a review.)  Chunks of a few continuous rows with whole-number
    # weights are not values repeated: no warning (said for 2-5 rows of
    # weight 2 or 3, the chunk's few values cluster-sized gaps apart; such
    # chunks are too small to show a feature's values, and not checked).
    centres = np.array([-6.0, 0.0, 6.0])
    g = BayesianGMM(3, **kw).fit(np.concatenate([rng.normal(c, 0.5, 200) for c in centres])[:, None])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for i in range(32):
            n = 2 + i % 4
            g.partial_fit(rng.normal(centres[rng.integers(0, 3, n)], 0.5)[:, None],
                          sample_weight=np.full(n, 2.0 + i % 2))
    assert not [w for w in rec if "single value" in str(w.message)]


def test_discrete_check_from_a_second_review():
    """(From a second review.)  1. A component on 150 repeated rows (1.5%)
    among continuous ones had its mean pulled 2e-4 off the value by the
    prior, where one other row's value was nearer: the check read that
    value, held once, and said nothing; it reads the value holding the most
    weight within two of the component's sds.  2. A rating given as its
    distinct values with their counts as weights is as many rows: said as
    a feature of few values (jitter), like the repeated rows, not a point
    mass."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        rng.normal(0, 1, (10_000, 2))
    X = rng.normal(0, 1, (10_000, 2))
    X[:150] = [0.7, -0.4]
    with pytest.warns(UserWarning, match=r"feature\(s\) 0 \(the value 0.7 held by 2% of the rows"):
        BayesianGMM(6, covariance_type="diag", random_state=0, **CPU).fit(X)
    # (From a third review.) Weights that are not whole numbers leave the
    # rows as they are: one light row, or survey-like weights, had made the
    # continuous features "few values" and hid the point mass.
    light = np.ones(len(X))
    light[-1] = 1e-3
    for w in (light, np.random.default_rng(5).uniform(0.5, 2.0, len(X))):
        with pytest.warns(UserWarning, match=r"feature\(s\) 0 \(the value 0.7 held by 2% of "):
            BayesianGMM(6, covariance_type="diag", random_state=0, **CPU).fit(X, sample_weight=w)
    counts = np.array([100, 300, 1000, 300, 100])
    vals = np.arange(1.0, 6.0)[:, None]
    kw = dict(covariance_type="diag", random_state=0, **CPU)
    for data, w in ((np.repeat(vals, counts, axis=0), None), (vals, counts.astype(float))):
        with pytest.warns(UserWarning, match=r"feature\(s\) 0 \(5 distinct values, gap 1\).*add "
                                             r"uniform noise"):
            BayesianGMM(5, **kw).fit(data, sample_weight=w)
