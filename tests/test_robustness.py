"""Hostile and awkward input, numerical health, interrupted refits,
determinism and chunked prediction."""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import warnings

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import bayesgmm
import bayesgmm._predict
import bayesgmm.mixture
from bayesgmm import BayesianGMM
from bayesgmm import covariance
from bayesgmm.covariance import COVARIANCE_TYPES
from bayesgmm.fitting import Groups, initial_params, pyro_svi_fit, seed_centres, svi_fit
from bayesgmm.priors import Standardizer, resolve_priors

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "scales_",
          "covariance_type_", "priors_", "loss_", "losses_", "restart_losses_", "best_restart_",
          "n_iter_", "converged_", "device_", "n_features_in_")


def _two_blobs(n: int = 80, d: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, (n // 2, d)), rng.normal(6, 1, (n - n // 2, d))]


def _cov_matrices(est: BayesianGMM) -> np.ndarray:
    """(K, D, D) covariance matrices from ``covariances_``, by type."""
    cov, (K, D) = est.covariances_, est.means_.shape
    return {"full": lambda: cov, "tied": lambda: np.repeat(cov[None], K, axis=0),
            "diag": lambda: cov[:, :, None] * np.eye(D),
            "spherical": lambda: cov[:, None, None] * np.eye(D)}[est.covariance_type_]()


def _check_healthy(est: BayesianGMM, X) -> None:
    """Finite parameters on the simplex, valid probabilities, consistent labels."""
    K = est.n_components
    assert est.covariance_type_ == est.covariance_type
    assert np.all(np.isfinite(est.weights_)) and abs(est.weights_.sum() - 1) < 1e-9
    assert np.all(est.weights_ >= 0)
    assert np.all(np.isfinite(est.means_)) and np.all(np.isfinite(est.scales_))
    assert np.all(est.scales_ > 0)
    # Symmetric positive definite covariances, whose diagonals are scales_ ** 2.
    mats = _cov_matrices(est)
    assert np.all(np.isfinite(mats)) and np.all(np.isfinite(est.precisions_cholesky_))
    np.testing.assert_array_equal(mats, np.swapaxes(mats, -1, -2))
    np.testing.assert_allclose(np.diagonal(mats, axis1=-2, axis2=-1), est.scales_ ** 2,
                               rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(mats / est.scales_[:, :, None] / est.scales_[:, None, :]) > 0)
    assert math.isfinite(est.loss_)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), K) and np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert np.all(np.isfinite(est.score_samples(X)))
    labels = est.predict(X)
    assert labels.shape == (len(X),) and set(labels.tolist()) <= set(range(K))
    # infer_discrete's MAP label is a most probable component (ties allowed:
    # duplicated points can give identical components).
    assert np.all(proba[np.arange(len(X)), labels] >= proba.max(1) - 1e-6)


# ----------------------------------------------------------------------------
# Property: any finite input of reasonable size fits cleanly
# ----------------------------------------------------------------------------
@st.composite
def finite_problems(draw):
    K = draw(st.integers(1, 3))
    n = max(K, draw(st.sampled_from([K, K + 1, 12, 30])))      # includes n_samples == K
    D = draw(st.sampled_from([1, 2, 3, 50]))
    if draw(st.booleans()):
        X = draw(hnp.arrays(np.int64, (n, D), elements=st.integers(-1000, 1000)))
    else:
        X = draw(hnp.arrays(np.float64, (n, D), elements=st.floats(-10, 10)))
        # Values around 1e-8 and 1e8, offsets that dwarf the spread, and
        # magnitudes whose squares overflow float64 (a clear error expected).
        X = X * 10.0 ** draw(st.sampled_from([-8, 0, 8, 160])) + draw(st.sampled_from([0.0, 1e8, -1e-8]))
    if draw(st.booleans()):
        X[:, 0] = X[0, 0]                     # a constant feature
    if draw(st.booleans()):
        X[n // 2:] = X[: n - n // 2]          # duplicated points
    return X, K, draw(st.sampled_from([0, 3])), draw(st.sampled_from(COVARIANCE_TYPES))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(finite_problems())
def test_any_finite_input_fits_with_finite_params_and_valid_probabilities(problem):
    X, K, max_iter, covariance_type = problem
    # EM only (max_iter=0) or EM then a few SVI steps, any covariance type:
    # the property is about numerical health, not convergence.
    est = BayesianGMM(K, covariance_type=covariance_type, n_init=2, em_max_iter=20,
                      max_iter=max_iter, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. k-means++ on duplicated points
        try:
            est.fit(X)
        except ValueError as exc:
            # The legitimate refusals, each with its own remedy, which must
            # work: a float32 full or tied fit that diverged where float64
            # finds correlation matrices beyond float32 (condition above
            # FLOAT32_MAX_CONDITION: 12 rows x 50 features, about half of
            # them constant), naming dtype="float64"; one common scale
            # over features of spreads 1e-30 apart, naming "diag".
            if "diverged" in str(exc) and "dtype='float64'" in str(exc):
                remedy = dict(dtype="float64")
            elif "one scale for all" in str(exc) and "covariance_type='diag'" in str(exc):
                remedy = dict(covariance_type="diag")
            else:
                remedy = None
            if remedy is not None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        again = BayesianGMM(**{**est.get_params(), **remedy}).fit(X)
                except ValueError as refit:
                    # The remedy's fit refuses only as any fit may, below.
                    assert "too small" in str(refit) and _squares_leave_float64(X), str(refit)
                    return
                _check_healthy(again, X)
                if "dtype" in remedy:
                    from bayesgmm._base import FLOAT32_MAX_CONDITION
                    assert covariance_type in ("full", "tied") and (np.ptp(X, 0) == 0).any()
                    cov = np.asarray(again.covariances_).reshape(-1, X.shape[1], X.shape[1])
                    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
                    cond = np.linalg.cond(cov / sd[:, :, None] / sd[:, None, :])
                    assert cond.max() > FLOAT32_MAX_CONDITION, cond
                return
            # Else: spreads whose squares leave float64 (overflow, or below
            # its normal range).
            assert re.search(r"rescale (X|them)\b", str(exc)), str(exc)
            assert (np.abs(X).max() > 1e154 and "too large" in str(exc)) or \
                (_squares_leave_float64(X) and "too small" in str(exc)), (str(exc), X)
            return
        _check_healthy(est, X)


@pytest.mark.parametrize("name, X, K", [
    ("duplicated points", np.repeat(_two_blobs(10), 5, axis=0), 2),
    ("all points identical", np.full((20, 2), 3.25), 2),
    ("constant feature", np.c_[_two_blobs(40, 1), np.full(40, 7.0)], 2),
    ("n_samples == n_components", _two_blobs(4), 4),
    ("values around 1e-8", _two_blobs(40) * 1e-8, 2),
    ("values around 1e8", _two_blobs(40) * 1e8, 2),
    ("1e8 offset, 1e-7 separation", 1e8 + _two_blobs(40, 1) * 1e-8, 2),
    ("integer input", np.round(_two_blobs(40) * 10).astype(np.int32), 2),
    ("one feature", _two_blobs(40, 1), 2),
    ("D = 50", _two_blobs(30, 50), 3),
])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_awkward_inputs(name, X, K, covariance_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = BayesianGMM(K, covariance_type=covariance_type, n_init=2, em_max_iter=50,
                          max_iter=5, device="cpu", random_state=0).fit(X)
        _check_healthy(est, X)


# Data whose per-feature variances are not normal float64 numbers.
_SQUARE_CASES = {
    "constant 1e160": np.full((20, 2), 1e160),
    "one constant feature at 1e160": np.c_[np.full(20, 1e160), _two_blobs(20, 1)],
    "blobs at 1e-200": _two_blobs(20) * 1e-200,
    "constant 1e-250": np.full((20, 2), 1e-250),
    "one constant feature at 1e-200": np.c_[np.full(20, 1e-200), _two_blobs(20, 1)],
    # (Fitted as healthy until the audit found it one component of weight 1:
    # float32 held every value as 0.  Refused now.)
    "subnormal values": _two_blobs(20) * 1e-310,
}


def _squares_leave_float64(X: np.ndarray) -> bool:
    """Whether X is in the region test_spreads_whose_squares_leave_float64
    covers (coarsely, erring on the side of inclusion): a feature whose values or spread are
    tiny (positive, below 1e-150: squares below float64's normal range), or a
    constant feature beyond 1e150.  Spreads that overflow outright are not
    included: those are refused with the "too large" error."""
    with np.errstate(all="ignore"):
        X = X.astype(np.float64)
        ptp, big = np.ptp(X, axis=0), np.abs(X).max(axis=0)
        tiny = lambda v: (v > 0) & (v < 1e-150)
        return bool(np.any(tiny(big) | tiny(ptp) | ((ptp == 0) & (big > 1e150))))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("case", list(_SQUARE_CASES))
def test_spreads_whose_squares_leave_float64(case, covariance_type):
    """Data whose variances are not float64 numbers (spreads beyond ~1e154 or
    below ~1e-154) fit cleanly or are refused with the "rescale X" error:
    never a fit with zero or infinite covariances, an unrelated error or a
    crash at prediction.  Found by the property test above."""
    X = _SQUARE_CASES[case]
    assert _squares_leave_float64(X)
    est = BayesianGMM(2, covariance_type=covariance_type, n_init=1, em_max_iter=20, max_iter=0,
                      device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X)
        except ValueError as exc:
            assert re.search(r"rescale (X|them)\b", str(exc)), str(exc)
            assert not hasattr(est, "weights_")
            return
        _check_healthy(est, X)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_values_around_zero_below_1e_290_are_refused_not_fitted_as_constant(covariance_type,
                                                                             tmp_path):
    """(From an independent numerical audit.)  Two blobs centred at 0 and
    scaled by 1e-300: the squared deviations underflow, so the computed
    spread and mean were both below the constant-feature threshold and the
    feature got the all-zero feature's scale 1; float32 then held it as 0
    and the fit returned one component of weight 1, silently.  Now refused
    as data of too small a spread are, with a factor that works (the
    rescaled data fit as the unscaled ones do); in memory and out of core,
    alone or next to ordinary features; for both estimators.  A constant
    feature of such values still fits (with its warning)."""
    from sklearn.metrics import adjusted_rand_score
    B = _two_blobs(80) - 3.0
    y = np.repeat([0, 1], 40)
    kw = dict(covariance_type=covariance_type, n_init=1, random_state=0, device="cpu")
    for X, remedy in ((B * 1e-300, r"multiply it by 1e\+300\b"),
                      (np.c_[_two_blobs(80, 1), B[:, :1] * 1e-305], r"multiply it by 1e\+305"),
                      (B * 1e-310, r"multiply it by 1e\+300 and then by 1e\+10")):
        path = tmp_path / "x.npy"
        np.save(path, X)
        for fit in (lambda: BayesianGMM(2, **kw).fit(X),
                    lambda: BayesianGMM(2, **kw).fit(np.load(path, mmap_mode="r")),
                    lambda: GMMClassifier(2, **kw).fit(X, y)):
            with pytest.raises(ValueError, match=r"spread too small for float64 variances "
                                                 r"\(feature \d: values within .*" + remedy):
                fit()
    fitted = BayesianGMM(2, **kw).fit(B * 1e-300 * 1e300)
    assert adjusted_rand_score(fitted.predict(B * 1e-300 * 1e300), y) == 1.0
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(= 1e-300\) hold one value"):
        BayesianGMM(2, **kw).fit(np.c_[_two_blobs(80), np.full(80, 1e-300)])
    # A constant of 1e-200 (refused: its fallback spread's square underflows)
    # is sized by its magnitude, weighted or not, not by its weighted mean's
    # rounding (which said "multiply it by 1e+216"), and dropping it comes
    # first (rescaling X for it would overflow the other features).
    w = np.random.default_rng(1).uniform(0.5, 2.0, 80)
    for weights in ((None, w) if covariance_type == "diag" else ()):   # spherical: its own
        with pytest.raises(ValueError, match=r"\(feature 0: 1e-200, one value in every row; "
                                             r".*drop that feature \(a constant carries nothing "
                                             r"to cluster on\) or rescale X, .*by 1e\+200$"):
            BayesianGMM(2, **kw).fit(np.c_[np.full(80, 1e-200), _two_blobs(80, 1)],
                                     sample_weight=weights)


def test_a_spread_made_tiny_by_the_weights_names_the_weights():
    """A feature of zeros and one 1 whose row weighs 1e-320: the weighted
    spread underflows though the values are 1 apart, so "multiply X by
    1e+0" fixed nothing (from an independent review): the weights are
    named."""
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=40), np.r_[np.zeros(39), 1.0]]
    w = np.r_[np.ones(39), 1e-320]
    with pytest.raises(ValueError, match=r"feature 1 has a weighted spread too small .* rescale "
                                         r"the sample weights .* or drop the rows of negligible"):
        BayesianGMM(2, covariance_type="diag", n_init=1, random_state=0,
                    device="cpu").fit(X, sample_weight=w)


def test_spherical_fits_next_to_a_tiny_constant_feature():
    X = np.c_[np.full(40, 1e-20), _two_blobs(40, 1)]
    with pytest.warns(UserWarning, match=r"feature\(s\) 0 \(= 1e-20\) hold one value"):
        est = BayesianGMM(2, covariance_type="spherical", n_init=1, em_max_iter=20, max_iter=0,
                          device="cpu", random_state=0).fit(X)
    _check_healthy(est, X)


def test_tiny_spread_next_to_a_huge_offset_is_clustered_correctly():
    """Regression: predictions used E[x^2] - E[x]^2 for the frame's variance,
    which cancelled to -2 here and gave NaN probabilities."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 50)
    X = 1e8 + (truth * 1e-7 + rng.normal(0, 1e-9, 100))[:, None]
    est = BayesianGMM(2, n_init=2, max_iter=10, device="cpu", random_state=0).fit(X)
    _check_healthy(est, X)
    labels = est.predict(X)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]


def test_pandas_nan_and_inf_are_clear_errors():
    df = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=r"NaN in column 0 \('a'\).*dropna"):
        BayesianGMM(2, device="cpu").fit(df)
    with pytest.raises(ValueError, match=r"inf in column 1.*clip"):
        BayesianGMM(2, device="cpu").fit(np.array([[0.0, 1.0], [1.0, np.inf]]))
    # The finiteness check's fast path (a sum) overflows here; NaN is still found.
    with pytest.raises(ValueError, match=r"NaN in column 0"):
        BayesianGMM(2, device="cpu").fit(np.array([[1e308, 1e308], [1e308, 1e308], [np.nan, 0]]))



def test_integers_beyond_float64_are_clear_errors():
    """Python ints past float64's range (10**400) in X, weights and integer
    settings: a ValueError naming the place and the remedy, never numpy's
    bare OverflowError (from an audit), and a fitted model left as it was."""
    big = 10 ** 400
    X = np.random.default_rng(0).normal(size=(40, 2))
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [-big, 1.0]]
    framed = pd.DataFrame(rows, columns=["a", "b"], index=list("pqrs"), dtype=object)
    for data, place in ((np.array(rows, dtype=object), r"row 3, column 0"),
                         (rows, r"row 3, column 0"),
                         (np.ma.array(rows, mask=[[0, 1], [0, 0], [0, 0], [0, 0]]),
                          r"row 3, column 0"),
                         (pd.DataFrame(rows, columns=["a", "b"], dtype=object), r"column 'a', row 3"),
                         (framed, r"column 'a', row 3 \(index label 's'\)")):
        with pytest.raises(ValueError, match=rf"beyond float64's range .*\({place}: a negative "
                                             rf"integer of 401 digits\).*rescale"):
            BayesianGMM(2, random_state=0, missing="marginalize").fit(data)
    m = BayesianGMM(2, random_state=0).fit(X)
    before = m.means_.copy()
    with pytest.raises(ValueError, match=r"row 0, column 1: an integer of 401 digits"):
        m.score_samples(np.array([[0.0, big]], dtype=object))
    # Past Python's 4,300-digit limit of int -> str too.
    with pytest.raises(ValueError, match=r"row 0, column 1: an integer of 5001 digits"):
        m.predict([[0.0, 10 ** 5000]])
    np.testing.assert_array_equal(m.means_, before)
    with pytest.raises(ValueError, match=r"sample_weight must be finite .* got inf at row 39"):
        BayesianGMM(1, random_state=0).fit(X, sample_weight=[1] * 39 + [big])
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0.0, got inf"):
        BayesianGMM(1, random_state=0, tol=big).fit(X)
    # Sizes are computed in Python ints: the memory check names the setting.
    with pytest.raises(ValueError, match=r"n_init=10{400} asks for about 1e3\d\d GiB.*fewer "
                                         r"restarts"):
        BayesianGMM(1, random_state=0, n_init=big).fit(X)
    with pytest.raises(ValueError, match=r"n_samples=10{400} asks for about 1e3\d\d GiB"):
        m.sample(big)
    # The plots convert their data themselves; scikit-learn's make_circles
    # took noise=10**400 and overflowed.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bayesgmm import plotting
    from bayesgmm.datasets import make_circles
    for data, place in ((np.array(rows, dtype=object), r"row 3, column 0"),
                        (framed, r"column 'a', row 3 \(index label 's'\)")):
        for draw in (lambda d: plotting.plot_clusters_2d(m, d),
                     lambda d: plotting.plot_density_1d(m, d),
                     lambda d: plotting.plot_assignments(d, [0, 0, 1, 1])):
            with pytest.raises(ValueError, match=rf"beyond float64's range .*\({place}: a "
                                                 rf"negative integer of 401 digits\)"):
                draw(data)
    plt.close("all")
    with pytest.raises(ValueError, match=r"noise must be a finite number >= 0.0, got inf"):
        make_circles(10, noise=big)


# ----------------------------------------------------------------------------
# Non-finite losses
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("backend", ["fused", "pyro"])
def test_svi_divergence_falls_back_to_the_start_point(backend, covariance_type):
    """A learning rate of 1e4 sends the covariances to overflow within a few
    steps: SVI (fused, or Pyro's own) must report an infinite final loss and
    hand back its start point."""
    X = _two_blobs()
    family = covariance.get(covariance_type, X.shape[1])
    std, Xt, moments = Standardizer.fit_to(X, "cpu", family.isotropic)
    pt = std.priors(resolve_priors(None, family, 2, moments), "cpu")
    groups = Groups.single(Xt)
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    centres = torch.as_tensor(seed_centres([Xt], 2, 1, "kmeans++", [0]), dtype=Xt.dtype)
    start = initial_params(groups, centres, mask, pt, family)          # batch (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro's "Encountered NaN" warnings
        if backend == "fused":
            trace = svi_fit(groups, start, mask, pt, family, max_iter=50, tol=0.0,
                            learning_rate=1e4)
            want = start
        else:
            want = start.select((0, 0))
            trace = pyro_svi_fit(Xt, want, pt, family, max_iter=50, tol=0.0, learning_rate=1e4)
    assert trace.losses[..., -1].flatten().tolist() == [math.inf] and not trace.converged
    for got, ref in zip((trace.params.weights, trace.params.means, trace.params.cov),
                        (want.weights, want.means, want.cov)):
        assert torch.equal(got, ref)


def _backends():
    return ["fused", "pyro"] if "backend" in BayesianGMM().get_params() else [None]


@pytest.mark.parametrize("backend", _backends())
def test_pure_svi_that_diverges_raises_a_clear_error(backend):
    kw = {} if backend is None else {"backend": backend}
    est = BayesianGMM(2, em_max_iter=0, max_iter=50, learning_rate=1e4, n_init=2, device="cpu",
                      random_state=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="diverged.*lower learning_rate"):
            est.fit(_two_blobs())
    assert not hasattr(est, "weights_")


@pytest.mark.parametrize("backend", _backends())
def test_svi_that_diverges_after_em_keeps_the_em_solution(backend):
    kw = {} if backend is None else {"backend": backend}
    X = _two_blobs()
    # SVI runs after EM where EM stopped short: a 1-iteration EM budget.
    em_only = BayesianGMM(2, max_iter=0, em_max_iter=1, n_init=2, device="cpu", random_state=0,
                          **kw).fit(X)
    with pytest.warns(RuntimeWarning, match="SVI diverged.*lower learning_rate"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            est = BayesianGMM(2, max_iter=50, em_max_iter=1, learning_rate=1e4, n_init=2,
                              device="cpu", random_state=0, **kw).fit(X)
    np.testing.assert_array_equal(est.means_, em_only.means_)
    np.testing.assert_array_equal(est.covariances_, em_only.covariances_)
    np.testing.assert_array_equal(est.scales_, em_only.scales_)
    assert est.loss_ == em_only.loss_ and not est.converged_
    _check_healthy(est, X)


# ----------------------------------------------------------------------------
# Failed and interrupted refits keep the previous model
# ----------------------------------------------------------------------------
@pytest.fixture
def first_fit():
    X = pd.DataFrame(_two_blobs(60), columns=["x", "y"])
    est = BayesianGMM(2, n_init=1, em_max_iter=30, max_iter=5, device="cpu", random_state=0).fit(X)
    return est, X


def _snapshot(est) -> dict:
    return dict(vars(est))


def _assert_unchanged(est, before: dict, X) -> None:
    assert list(vars(est)) == list(before)
    for k, v in before.items():
        assert vars(est)[k] is v, k
    np.testing.assert_array_equal(est.feature_names_in_, ["x", "y"])
    assert est.predict(X).shape == (len(X),)


@pytest.mark.parametrize("bad", ["nan", "too_few_samples", "diverges"])
def test_failed_refit_keeps_the_previous_model(first_fit, bad):
    est, X = first_fit
    before = _snapshot(est)
    labels = est.predict(X)
    other = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 3)), columns=["p", "q", "r"])
    if bad == "nan":
        other.iloc[3, 1] = np.nan
    elif bad == "too_few_samples":
        other = other.iloc[:1]     # fails after validation set n_features_in_ = 3
    else:
        est.set_params(em_max_iter=0, learning_rate=1e4, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            est.fit(other)
    before.update({k: vars(est)[k] for k in est.get_params()})  # set_params is the user's doing
    _assert_unchanged(est, before, X)
    np.testing.assert_array_equal(est.predict(X), labels)


def _interrupt_after(seconds: float, fit, *args) -> None:
    """Run ``fit(*args)``, deliver a real SIGINT after ``seconds`` (as
    Jupyter's interrupt does) and check it surfaces as KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            fit(*args)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_during_refit_keeps_the_previous_model(first_fit):
    """A real SIGINT (as Jupyter's interrupt sends) lands mid-fit."""
    est, X = first_fit
    before = _snapshot(est)
    store_before = dict(pyro.get_param_store().items())
    other = pd.DataFrame(np.random.default_rng(2).normal(size=(200, 3)), columns=["p", "q", "r"])
    # Pure SVI with tol=0 and a huge step budget: runs until interrupted.
    est.set_params(em_max_iter=0, max_iter=10 ** 7, tol=0.0, n_init=1)
    before.update({k: vars(est)[k] for k in est.get_params()})
    _interrupt_after(0.5, est.fit, other)
    _assert_unchanged(est, before, X)
    assert dict(pyro.get_param_store().items()) == store_before  # no leaked SVI params
    # Autograd is on again, wherever the interrupt landed, and a refit works.
    assert torch.is_grad_enabled()
    est.set_params(max_iter=5, em_max_iter=5)
    assert est.fit(other).n_features_in_ == 3


def test_fit_works_under_no_grad():
    """SVI needs autograd; a caller's torch.no_grad() must not break fit."""
    X = _two_blobs()
    with torch.no_grad():
        est = BayesianGMM(2, n_init=1, em_max_iter=0, max_iter=20, device="cpu",
                          random_state=0).fit(X)
        assert not torch.is_grad_enabled()
    ref = BayesianGMM(2, n_init=1, em_max_iter=0, max_iter=20, device="cpu", random_state=0).fit(X)
    np.testing.assert_array_equal(est.means_, ref.means_)


_CONTEXT_FITS = {
    "svi": dict(n_init=1, em_max_iter=0, max_iter=20),
    "pyro": dict(n_init=1, em_max_iter=0, max_iter=20, backend="pyro"),
    "nuts": dict(n_init=1, inference="nuts", n_samples=6, n_warmup=4, n_chains=1),
}


def _context_fit(kind: str, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # so short a chain's R-hat
        return BayesianGMM(2, device="cpu", random_state=0, **_CONTEXT_FITS[kind]).fit(X)


@pytest.mark.parametrize("kind", sorted(_CONTEXT_FITS))
def test_fit_under_a_callers_inference_mode_or_pyro_handlers_is_the_plain_fit(kind):
    """Inside torch.inference_mode() SVI and NUTS raised torch's 'element 0
    of tensors does not require grad' and the pyro backend fitted something
    else; inside a user's poutine.trace or pyro.plate the pyro backend and
    NUTS raised ('Multiple sample sites named weights', colliding plates).
    Each is now the fit made outside, and the user's handlers see none of
    its sites."""
    X = _two_blobs()
    ref = _context_fit(kind, X)
    with torch.inference_mode():
        est = _context_fit(kind, X)
        assert torch.is_inference_mode_enabled()
    np.testing.assert_array_equal(est.means_, ref.means_)
    with pyro.poutine.trace() as tr, pyro.plate("user", 5):
        est = _context_fit(kind, X)
        # ... and the user's handlers are theirs again after it.
        z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
    np.testing.assert_array_equal(est.means_, ref.means_)
    assert z.shape == (5,) and set(tr.trace.nodes) == {"user", "z"}
    if kind == "nuts":
        np.testing.assert_array_equal(est.posterior_samples()["means"],
                                      ref.posterior_samples()["means"])


# ----------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------
def _fit_twice(device: str):
    X = _two_blobs(100, 3)
    kw = dict(n_init=2, em_max_iter=30, max_iter=10, device=device, init="random")
    a = BayesianGMM(3, random_state=11, **kw).fit(X)
    b = BayesianGMM(3, random_state=11, **kw).fit(X)
    c = BayesianGMM(3, random_state=12, **kw).fit(X)
    return X, a, b, c


def _assert_identical(X, a, b):
    for name in ("weights_", "means_", "covariances_", "scales_", "losses_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for ra, rb in zip(a.restart_losses_, b.restart_losses_):
        np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.sample_assignments(X, 4), b.sample_assignments(X, 4))
    np.testing.assert_array_equal(a.sample(10)[0], b.sample(10)[0])


def test_same_random_state_same_result_on_cpu():
    X, a, b, c = _fit_twice("cpu")
    _assert_identical(X, a, b)
    # The seed matters (random init): another seed starts elsewhere.
    assert not np.array_equal(a.restart_losses_[0], c.restart_losses_[0])
    # And a refit of the same object repeats itself.
    np.testing.assert_array_equal(a.fit(X).means_, b.means_)


@pytest.mark.cuda
@needs_cuda
def test_same_random_state_same_result_on_cuda():
    X, a, b, _ = _fit_twice("cuda")
    _assert_identical(X, a, b)


# ----------------------------------------------------------------------------
# Bounded memory: chunked prediction equals unchunked
# ----------------------------------------------------------------------------
def test_chunked_prediction_equals_unchunked(monkeypatch):
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0, 1, (500, 2)), rng.normal(3, 1, (500, 2))]
    est = BayesianGMM(3, n_init=1, em_max_iter=30, max_iter=0, device="cpu", random_state=0).fit(X)
    sizes = []
    real_blocks = bayesgmm._predict.blocks

    def blocks(X, rows, *args):
        for a, b, z, raw in real_blocks(X, rows, *args):
            sizes.append(b - a)
            yield a, b, z, raw

    monkeypatch.setattr(bayesgmm._predict, "blocks", blocks)
    whole = (est.predict_proba(X), est.score_samples(X), est.predict(X))
    assert sizes == [len(X)] * 3          # one block each by default
    # 70 rows per chunk: 15 chunks, the last one partial.
    monkeypatch.setattr(bayesgmm._predict, "CHUNK_ELEMENTS", 3 * 2 * 70)
    sizes.clear()
    chunked = (est.predict_proba(X), est.score_samples(X), est.predict(X))
    assert sizes == 3 * ([70] * 14 + [20])
    # Equal to float32 rounding (the precision of the fit): a BLAS matrix
    # product may block its rows differently for 70 rows than for 1,000
    # (AVX-512 kernels do), so the last bits need not agree.
    np.testing.assert_allclose(chunked[0], whole[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6)
    np.testing.assert_array_equal(chunked[2], whole[2])
    draws = est.sample_assignments(X, 3)     # (n_draws, N), filled chunk by chunk
    assert draws.shape == (3, 1000) and draws.dtype == np.int64
    assert set(np.unique(draws).tolist()) <= {0, 1, 2}
    # Posterior draws follow the responsibilities: points the model is sure
    # about get the same label in every draw.
    sure = whole[0].max(1) > 1 - 1e-4
    assert sure.sum() > 100 and np.all(draws[:, sure] == whole[2][sure])


# ----------------------------------------------------------------------------
# GMMClassifier: the same guarantees
# ----------------------------------------------------------------------------
from bayesgmm import GMMClassifier  # noqa: E402


def test_classifier_tiny_spread_next_to_a_huge_offset():
    """Regression: the prediction frame's variance cancelled (NaN probabilities)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    X = 1e8 + (y * 1e-7 + rng.normal(0, 1e-9, 100))[:, None]
    clf = GMMClassifier(n_components=1, n_init=1, max_iter=0, device="cpu", random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert np.array_equal(clf.predict(X), y)


@pytest.mark.parametrize("bad", ["one_class", "interrupt"])
def test_classifier_failed_or_interrupted_refit_keeps_the_previous_model(bad):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(_two_blobs(60), columns=["x", "y"])
    y = np.repeat(["a", "b"], 30)
    clf = GMMClassifier(n_components=1, n_init=1, max_iter=0, device="cpu", random_state=0).fit(X, y)
    before = _snapshot(clf)
    proba = clf.predict_proba(X)
    other = pd.DataFrame(rng.normal(size=(300, 3)), columns=["p", "q", "r"])
    if bad == "one_class":
        with pytest.raises(ValueError, match="only one class"):
            clf.fit(other, np.zeros(300))
    else:
        clf.set_params(em_max_iter=0, max_iter=10 ** 7, tol=0.0)   # runs until interrupted
        before.update({k: vars(clf)[k] for k in clf.get_params()})
        _interrupt_after(0.5, clf.fit, other, rng.integers(0, 2, 300))
        assert torch.is_grad_enabled()
    assert list(vars(clf)) == list(before)
    for k, v in before.items():
        assert vars(clf)[k] is v, k
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_classifier_discriminative_steps_work_under_no_grad():
    X = _two_blobs(60)
    y = np.repeat([0, 1], 30)
    kw = dict(n_components=2, n_init=1, max_iter=0, discriminative_steps=3, device="cpu",
              random_state=0)
    with torch.no_grad():
        clf = GMMClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(clf.means_, GMMClassifier(**kw).fit(X, y).means_)


def test_classifier_chunked_prediction_equals_unchunked(monkeypatch):
    import bayesgmm.classifier

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 900)
    X = rng.normal(size=(900, 2)) + np.array([[0, 0], [3, 0], [0, 3]])[y]
    clf = GMMClassifier(n_components=2, n_init=1, max_iter=0, device="cpu", random_state=0).fit(X, y)
    whole = (clf.predict_proba(X), clf.class_log_likelihood(X), clf.predict(X))
    # 3 classes x 2 components x 2 features x 50 rows: 18 chunks.
    monkeypatch.setattr(bayesgmm._predict, "CHUNK_ELEMENTS", 3 * 2 * 2 * 50)
    chunked = (clf.predict_proba(X), clf.class_log_likelihood(X), clf.predict(X))
    # To float32 rounding, as for BayesianGMM above.
    np.testing.assert_allclose(chunked[0], whole[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6)
    np.testing.assert_array_equal(chunked[2], whole[2])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_classifier_with_padded_components_at_extreme_scales(covariance_type, scale):
    """Regression: a class with fewer components than another is padded, and
    the padded components' stand-in covariance (unit, in the data's units)
    overflowed float32 in the standardised prediction frame at data scales
    like 1e20, making every class log-likelihood NaN without an error."""
    X, y = _two_blobs(120), np.repeat([0, 1], 60)
    clf = GMMClassifier({0: 2, 1: 1}, covariance_type=covariance_type, max_iter=0,
                        device="cpu", random_state=0).fit(X * scale, y)
    ll = clf.class_log_likelihood(X * scale)
    assert np.all(np.isfinite(ll))
    ref = GMMClassifier({0: 2, 1: 1}, covariance_type=covariance_type, max_iter=0,
                        device="cpu", random_state=0).fit(X, y)
    # The same fit in other units: log-likelihoods shift by D log(scale).
    np.testing.assert_allclose(ll, ref.class_log_likelihood(X) - 2 * np.log(scale),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(clf.predict(X * scale), ref.predict(X))


def test_masked_arrays_are_missing_values_and_path_or_name_types_are_named(tmp_path, monkeypatch):
    # A masked entry was silently used as its underlying value; now it is
    # missing: refused with missing="error", marginalised as a NaN is.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (60, 2))]
    M = np.ma.masked_array(X.copy(), mask=np.zeros_like(X, dtype=bool))
    M.mask[0, 0], M.data[0, 0] = True, 1e6
    with pytest.raises(ValueError, match="missing='marginalize'"):
        BayesianGMM(2, device="cpu").fit(M)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    kw = dict(missing="marginalize", n_init=1, device="cpu", random_state=0)
    np.testing.assert_array_equal(BayesianGMM(2, **kw).fit(M).means_,
                                  BayesianGMM(2, **kw).fit(Xn).means_)
    # Column names of mixed types: a ValueError that is also scikit-learn's
    # TypeError (from an independent audit: only a ValueError, so code
    # written for scikit-learn with `except TypeError` missed it).
    for kind in (ValueError, TypeError):
        with pytest.raises(kind, match="Feature names are only supported if all input"):
            BayesianGMM(2, device="cpu").fit(pd.DataFrame(X, columns=[0, "a"]))
    fitted = BayesianGMM(2, **kw).fit(X)
    for bad in (None, 3):
        with pytest.raises(ValueError, match=f"path must be a file path .*got {type(bad).__name__}"):
            bayesgmm.load(bad)
        with pytest.raises(ValueError, match="path must be a file path"):
            fitted.save(bad)
    # A draw beyond this machine's memory is refused before any work; where
    # the OS does not say its memory, torch's allocator error from inside
    # Pyro (a RuntimeError) becomes a MemoryError naming the size.
    with pytest.raises(ValueError, match=r"^n_samples=1000000000000 asks for about .* GiB, more "
                                         r"than this machine's .* GiB of memory: draw fewer"):
        fitted.sample(10 ** 12)
    with monkeypatch.context() as m:
        m.setattr(bayesgmm._validation, "physical_memory", lambda: None)
        with pytest.raises(MemoryError, match=r"sample\(n_samples=1000000000000\) needs about "
                                              r".* GiB"):
            fitted.sample(10 ** 12)


def test_results_beyond_the_machines_memory_are_refused_before_any_work():
    """Draws a machine cannot hold were numpy's MemoryError (873 TiB of
    assignments) or torch's allocator error after a whole MAP fit (10**9
    variational draws): refused up front, naming the setting; a fitted
    model is left as it was."""
    from bayesgmm import GMMClassifier
    X = _two_blobs(60)
    y = np.repeat([0, 1], 30)
    kw = dict(n_init=1, device="cpu", random_state=0)
    gmm = BayesianGMM(2, **kw).fit(X)
    means = gmm.means_.copy()
    with pytest.raises(ValueError, match=r"^n_samples=10000000000000 asks for about 4.47e\+06 "
                                         r"GiB, .*draw fewer assignments per row"):
        gmm.sample_assignments(X, 10 ** 13)
    for inference in ("vi", "nuts"):
        for est in (gmm, GMMClassifier(2, **kw)):
            est.set_params(inference=inference, n_samples=10 ** 13)
            default = (r"n_samples='auto', 200 draws" if isinstance(est, GMMClassifier)
                       else r"n_samples=1000\)$")        # (BayesianGMM takes no 'auto')
            with pytest.raises(ValueError, match=r"^n_samples=10000000000000 asks for about .* "
                                                 r"GiB, more than this machine's .*keep fewer "
                                                 r"posterior draws \(the default: " + default):
                est.fit(X, y)
    # With K="auto" the check waits for the chosen K (after the MAP fit).
    with pytest.raises(ValueError, match=r"^n_samples=10000000000000 asks for about .* GiB"):
        BayesianGMM("auto", inference="vi", n_samples=10 ** 13, **kw).fit(X)
    np.testing.assert_array_equal(gmm.means_, means)
    assert not hasattr(gmm, "_posterior")


def test_range_and_missing_refusals_name_the_features_by_column(tmp_path):
    """The refusals of values beyond float64's range and of an always-missing
    feature name the features concerned: by column name for a DataFrame, by
    index for an array, on both estimators; the remedy for an overflow is
    for those features (the others are fine as they are)."""
    from bayesgmm import GMMClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.arange(60) % 2
    big = X.copy()
    big[:, 1] *= 1e200
    tiny = X.copy()
    tiny[:, 2] *= 1e-300
    gone = X.copy()
    gone[:, 0] = np.nan
    kw = dict(n_init=1, random_state=0, device="cpu")
    for wrap, name in ((lambda A: A, lambda j: str(j)),
                       (lambda A: pd.DataFrame(A, columns=["a", "b", "c"]),
                        lambda j: repr("abc"[j]))):
        for fit in (lambda A: BayesianGMM(2, **kw).fit(A),
                    lambda A: BayesianGMM(2, covariance_type="spherical", **kw).fit(A),
                    lambda A: GMMClassifier(2, **kw).fit(A, y)):
            with pytest.raises(ValueError) as exc:
                fit(wrap(big))
            assert str(exc.value) == (
                f"X has values too large to fit in float64 arithmetic in feature(s) "
                f"[{name(1)}] (largest magnitude {np.abs(big).max():.3g}): rescale them, "
                f"e.g. divide them by 1e+200")
            with pytest.raises(ValueError, match=r"spread too small for float64 variances "
                                                 rf"\(feature {name(2)}: values within"):
                fit(wrap(tiny))
        faint = X.copy()
        faint[:, 2] *= 1e-40
        with pytest.raises(ValueError, match=rf"uses one scale for all features, but the spread "
                                             rf"of feature {name(2)} is 1.*e-40 times"):
            BayesianGMM(2, covariance_type="spherical", **kw).fit(wrap(faint))
        with pytest.raises(ValueError, match=rf"^X has no observed value in feature\(s\) "
                                             rf"\[{name(0)}\]: "):
            BayesianGMM(2, missing="marginalize", **kw).fit(wrap(gone))
        half = X.copy()
        half[y == 1, 2] = np.nan
        with pytest.raises(ValueError, match=rf"^class 1 has no observed value in feature\(s\) "
                                             rf"\[{name(2)}\]: "):
            GMMClassifier(2, missing="marginalize", **kw).fit(wrap(half), y)


# One rule for every numeric setting and argument that takes an array
# (bayesgmm._validation.real_array): numbers, arrays and tensors in; text,
# even "0.5", booleans (but for sample_weight, where True/False are a mask
# as scikit-learn takes it), complex numbers, None and ragged lists out,
# each refused by its own name.
_NOT_NUMBERS = {"text": ["0.5", "0.5"], "none": [0.5, None], "complex": [0.5 + 0j, 0.5],
                "ragged": [[0.5], [0.5, 0.5]], "boolean": [True, True],
                # (From the review.) Elements that are 0-d arrays or tensors.
                "0-d text": [np.array("0.5"), np.array("0.5")],
                "0-d boolean": [torch.tensor(True), torch.tensor(True)]}


def _four_callers(X, value):
    from bayesgmm import GMMClassifier, Priors
    from bayesgmm.alignment import match_components
    y = (X[:, 0] > 3).astype(int)
    return {
        "Priors.mean_scale": lambda: BayesianGMM(
            2, n_init=1, priors=Priors(mean_scale=value), random_state=0,
            device="cpu").fit(X),
        "class_prior": lambda: GMMClassifier(1, class_prior=value, n_init=1, random_state=0,
                                             device="cpu").fit(X, y),
        "means": lambda: match_components([[0.0], [1.0]], [[v] for v in value]),
        "sample_weight": lambda: BayesianGMM(1, n_init=1, random_state=0, device="cpu").fit(
            X[:2, :1], sample_weight=value),
        # (From the review: these two still took "0.5" and True.)
        "init": lambda: BayesianGMM(2, init=[[v, v] for v in value], random_state=0,
                                    device="cpu").fit(X),
        "Priors.weight_concentration": lambda: BayesianGMM(
            2, inference="vi", n_samples=10, max_iter=20, random_state=0, device="cpu",
            priors=Priors(weight_concentration=value)).fit(X),
    }


@pytest.mark.parametrize("kind", sorted(_NOT_NUMBERS))
@pytest.mark.parametrize("caller", ["Priors.mean_scale", "class_prior", "means", "sample_weight",
                                    "init", "Priors.weight_concentration"])
def test_every_numeric_argument_refuses_what_is_no_number_by_its_name(kind, caller):
    X = _two_blobs(40, 2)
    value = _NOT_NUMBERS[kind]
    call = _four_callers(X, value)[caller]
    if "boolean" in kind and caller == "sample_weight":
        call()                                    # a mask of rows, as scikit-learn takes it
        return
    with pytest.raises(ValueError, match=re.escape(caller)):
        call()


@pytest.mark.parametrize("caller", ["Priors.mean_scale", "class_prior", "means", "sample_weight"])
def test_every_numeric_argument_takes_lists_arrays_and_tensors_alike(caller):
    """The same numbers as a list, an ndarray and a tensor give the same
    result (checked on what each returns)."""
    X = _two_blobs(40, 2)
    out = []
    for value in ([0.5, 2.0], np.array([0.5, 2.0]), torch.tensor([0.5, 2.0])):
        r = _four_callers(X, value)[caller]()
        out.append(r if isinstance(r, np.ndarray) else
                   np.concatenate([np.ravel(getattr(r, a)) for a in ("weights_", "means_")]))
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


# ------------------------------------------------------ stop 49 fuzz findings
_ONE_POINT = r"got a scalar .*pass \[\[value\]\] for one point of one feature"
_THREE_D = r"must be 2-D \(n_samples, n_features\), got a 3-D array of shape \(3, 2, 2\).*reshape"
_NOT_ARRAY = r"X must be a 2-D array-like of numbers .*got "


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_x_that_is_no_table_is_refused_by_name_at_fit_and_predict(Est):
    """An arbitrary object, a generator, a scalar, a 3-D array or a
    structured array is refused with the project's words and a remedy, at
    fit and at predict (scikit-learn's 'float() argument must be...' named
    neither X nor a fix; a structured array at predict was told to reshape,
    which led to a second error)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), np.repeat([0, 1], 20)
    est = Est(1, n_init=1, device="cpu", random_state=0)
    fitted = est.fit(X, y) if Est is GMMClassifier else est.fit(X)
    before = {k: v for k, v in vars(fitted).items() if isinstance(v, np.ndarray)}
    record = np.zeros(3, dtype=[("a", "f8"), ("b", "f8")])
    cases = [(object(), _NOT_ARRAY + "object"), ((v for v in range(3)), _NOT_ARRAY + "generator"),
             (1.5, _ONE_POINT), (np.array(2.0), _ONE_POINT), (np.ones((3, 2, 2)), _THREE_D),
             (record, r"structured array \(fields \['a', 'b'\]\).*structured_to_unstructured")]
    for bad, message in cases:
        fresh = Est(1, n_init=1, device="cpu")
        with pytest.raises(ValueError, match=message):
            fresh.fit(bad, y[:3]) if Est is GMMClassifier else fresh.fit(bad)
        for method in (fitted.predict, fitted.score_samples, fitted.predict_proba):
            with pytest.raises(ValueError, match=message):
                method(bad)
    for name, value in before.items():        # the fitted model is untouched
        np.testing.assert_array_equal(getattr(fitted, name), value)
    # Sequences numpy converts still work, as before: a deque of rows, a
    # memoryview, a one-field structured array (one feature).
    import collections
    one = np.zeros(40, dtype=[("a", "f8")])
    one["a"] = X[:, 0]
    if Est is BayesianGMM:
        for ok in (collections.deque(X.tolist()), memoryview(np.ascontiguousarray(X))):
            np.testing.assert_array_equal(fitted.predict(ok), fitted.predict(X))
        np.testing.assert_allclose(Est(1, n_init=1, device="cpu").fit(one).means_,
                                   Est(1, n_init=1, device="cpu").fit(X[:, :1]).means_,
                                   rtol=1e-6)
    # Sparse input keeps scikit-learn's own refusal, which gives the remedy.
    import scipy.sparse
    with pytest.raises(TypeError, match=r"toarray"):
        fitted.predict(scipy.sparse.csr_matrix(X))


def test_a_huge_max_components_costs_nothing_beyond_the_rows():
    """n_components="auto" with max_components far beyond the data: the K
    tried stop where the data's weight does, and the BIC table has one
    column per possible K (a row count), not max_components columns (1e8
    gave an 800 MB table; 1e10 never finished)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 2)), np.repeat([0, 1], 40)
    rows = BayesianGMM("auto", max_components=80, device="cpu", random_state=0).fit(X)
    tried = np.isfinite(rows.bic_).sum()
    assert 1 < tried < 80
    for huge in (10 ** 8, 10 ** 30):
        g = BayesianGMM("auto", max_components=huge, device="cpu", random_state=0).fit(X)
        np.testing.assert_array_equal(g.bic_, rows.bic_)    # the same scan, the same table
        c = GMMClassifier("auto", max_components=huge, device="cpu", random_state=0).fit(X, y)
        assert c.bic_.shape == (2, 40)
    small = BayesianGMM("auto", max_components=10, device="cpu", random_state=0).fit(X)
    assert small.bic_.shape == (10,)
    # Few heavy rows: the table is as wide as the rows, and no warning says
    # the fit chose the largest K (max_components) when it did not.  (Each of
    # the 5 components sits on one of the 5 rows, which whole-number weights
    # count as 100 repeats each: that is said, by the discrete-value check.)
    rows5 = X[:5] * 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=r".*sit on a single value of feature")
        few = BayesianGMM("auto", max_components=10, device="cpu", random_state=0).fit(
            rows5, sample_weight=np.full(5, 100.0))
    assert few.bic_.shape == (5,)


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
@pytest.mark.parametrize("weight, message", [(1e-300, "sample_weight spans 1e-300 to 1e-300"),
                                             (1e300, "sample_weight spans 1e\\+300")])
def test_partial_fit_checks_the_chunk_weights_as_fit_does(Est, weight, message):
    """partial_fit refuses weights the fit's float32 arithmetic cannot hold,
    with fit's message (1e-300, rounded to 0, was taken silently; 1e300 said
    only that the update diverged), and the model is unchanged."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), np.repeat([0, 1], 30)
    est = Est(2, n_init=1, device="cpu", random_state=0)
    args = (X, y) if Est is GMMClassifier else (X,)
    est.fit(*args, sample_weight=np.ones(60))
    with pytest.raises(ValueError, match=message):
        est.fit(*args, sample_weight=np.full(60, weight))          # fit's own refusal
    means = est.means_.copy()
    with pytest.raises(ValueError, match=message + r".*rescale the weights"):
        est.partial_fit(*args, sample_weight=np.full(60, weight))
    np.testing.assert_array_equal(est.means_, means)
    est.partial_fit(*args, sample_weight=np.full(60, 2.0))         # ordinary weights still go


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_nuts_memory_refusal_names_the_chains(Est):
    """With NUTS each chain keeps at least one draw: a huge n_chains is
    what asks for the memory, and the refusal says so (it named only
    n_samples=5 and advised fewer draws)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), np.repeat([0, 1], 20)
    est = Est(2, inference="nuts", n_chains=10 ** 15, n_samples=5, n_warmup=5, device="cpu")
    with pytest.raises(ValueError, match=r"n_samples=5 over n_chains=1000000000000000 "
                                         r"\(1000000000000000 draws kept\) asks for about .*"
                                         r"or run fewer chains"):
        est.fit(X, y) if Est is GMMClassifier else est.fit(X)
    # A single chain, or VI, keeps the plain wording.
    with pytest.raises(ValueError, match=r"n_samples=1000000000000000 asks for about .* "
                                         r"draws \(the default: [^)]*\)$"):
        Est(2, inference="vi", n_samples=10 ** 15, device="cpu").fit(
            *((X, y) if Est is GMMClassifier else (X,)))


@pytest.mark.parametrize("Est", [BayesianGMM, GMMClassifier])
def test_huge_iteration_counts_restarts_and_steps_are_refused_by_name(Est):
    """Settings beyond what the fit can hold are refused by name before any
    work (numpy's 'Maximum allowed dimension exceeded', an 8 TiB
    MemoryError, torch's 'int too big to convert' and Adam's float overflow
    named none of them)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), np.repeat([0, 1], 20)
    args = (X, y) if Est is GMMClassifier else (X,)
    cases = [(dict(n_init=2 ** 40), r"^n_init=1099511627776 asks for about .* GiB.*fewer restarts"),
             (dict(n_init=10 ** 30), r"^n_init=10{30} asks for about"),
             (dict(em_max_iter=10 ** 30), r"em_max_iter must be in \[0, 9223372036854775807\]"),
             (dict(max_iter=2 ** 63), r"max_iter must be in \[0, 9223372036854775807\]"),
             (dict(learning_rate=1e300), r"learning_rate must be at most 1e\+30 .*got 1e\+300")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            Est(2, device="cpu", **kwargs).fit(*args)
    # At the fit's K and D the restarts' batch is checked again.
    wide = rng.normal(size=(40, 200))
    with pytest.raises(ValueError, match=r"^n_init=10000000 asks for about .* GiB"):
        Est(20, covariance_type="diag", n_init=10 ** 7, device="cpu").fit(
            *((wide, y) if Est is GMMClassifier else (wide,)))
    Est(1, device="cpu", learning_rate=1e4, em_max_iter=2 ** 63 - 1, n_init=1).fit(*args)


def test_squarem_takes_no_step_where_a_covariance_has_no_coordinates():
    """An EM update whose float32 rounding leaves a full covariance not
    positive definite has no unconstrained coordinates: SQUAREM's step
    raised torch's LinAlgError from the Cholesky transform (a far-mean
    prior's thin component, in one seeding of ten). It now takes no step
    that cycle (alpha = -1, plain EM's update), for every pair."""
    from bayesgmm.fitting import _squarem_jump
    from bayesgmm.priors import MixtureParams
    family = covariance.get("full", 2)
    eye = torch.eye(2).expand(2, 3, 2, 2)
    w = torch.full((2, 3), 1 / 3)
    means = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0))
    theta0 = MixtureParams(w, means, eye.clone())
    theta1 = MixtureParams(w, means + 0.1, eye * 1.1)
    bad = (eye * 1.2).clone()
    bad[1, 2] = torch.tensor([[1.0, 2.0], [2.0, 1.0]])          # not positive definite
    theta2 = MixtureParams(w, means + 0.15, bad)
    mask = torch.ones(2, 3, dtype=torch.bool)
    alpha, jump = _squarem_jump(theta0, theta1, theta2, mask, family,
                                torch.full((2,), 4.0, dtype=torch.float64))
    assert alpha.tolist() == [-1.0, -1.0]
    for name in ("weights", "means", "cov"):
        assert torch.equal(getattr(jump, name), getattr(theta2, name))
    # With every covariance positive definite the step is taken.
    good = MixtureParams(w, means + 0.15, eye * 1.2)
    alpha, _ = _squarem_jump(theta0, theta1, good, mask, family,
                             torch.full((2,), 4.0, dtype=torch.float64))
    assert (alpha < -1.0).all()


READ_ONLY_SCRIPT = r'''
import os, sys, tempfile, warnings
import numpy as np
from bayesgmm import BayesianGMM, GMMClassifier
# After the imports: the oldest admitted Pyro deprecates at import.
warnings.simplefilter("error", UserWarning)
rs = np.random.RandomState(0)
X = np.r_[rs.randn(100, 2), rs.randn(100, 2) + 4]
Xm = X.copy()
Xm[::7, 1] = np.nan
y, w = np.repeat([0, 1], 100), np.ones(200)
for a in (X, Xm, y, w):
    a.flags.writeable = False       # as pandas 3 hands them out
path = os.path.join(tempfile.mkdtemp(), "m.bgmm")
for ct in ("full", "tied", "diag", "spherical"):
    for Est in (BayesianGMM, GMMClassifier):
        for k in (1, 2):
            args = (X,) if Est is BayesianGMM else (X, y)
            m = Est(k, covariance_type=ct, missing="marginalize", device="cpu",
                    random_state=0).fit(*args, sample_weight=w)
            for v in vars(m).values():     # fitted attributes made read-only too
                if isinstance(v, np.ndarray):
                    v.flags.writeable = False
            m.predict(Xm), m.score_samples(Xm), m.impute(Xm), m.impute(Xm, sample=True)
            m.sample(5), m.partial_fit(*args)
            m.save(path)
            Est.load(path).impute(Xm)
print("quiet")
'''


def test_read_only_inputs_and_models_warn_nothing():
    """(From a review.)  A tied classifier of one component per class warned
    torch's "The given NumPy array is not writable" at impute: the shared
    covariance broadcast to the components is a read-only view.  Read-only
    data (pandas 3's) through fit, predictions, impute, sampling,
    partial_fit and a saved and loaded model, every covariance type, K = 1
    and 2, both estimators, the fitted attributes made read-only too (a
    third review: weights_ warned through Standardizer._t): no warning.  In a fresh process: torch says it
    once per process, so an earlier test could have used it up."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", READ_ONLY_SCRIPT], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0 and out.stdout.strip() == "quiet", out.stderr[-3000:]
