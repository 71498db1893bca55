"""Tests of the BayesianGMM estimator (the foundation issue)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy import stats
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score

from bayesgmm.priors import SPREAD_FACTOR
from bayesgmm import BayesianGMM, GMMClassifier, Priors
from bayesgmm.alignment import align
from bayesgmm.datasets import load_iris, make_mixture

CPU = dict(device="cpu")
TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def iris():
    return load_iris()


@pytest.fixture(scope="module")
def petal(iris):
    return iris[["petal_length"]]


@pytest.fixture(scope="module")
def petal_fit(petal):
    return BayesianGMM(2, random_state=0, **CPU).fit(petal)


def _sorted(gmm):
    order = np.argsort(gmm.means_[:, 0])
    return gmm.weights_[order], gmm.means_[order], gmm.scales_[order]


# ----------------------------------------------------------------- iris study
@pytest.mark.parametrize("seed", range(10))
def test_iris_petal_length_every_seed_finds_setosa(iris, petal, seed):
    gmm = BayesianGMM(2, random_state=seed, **CPU).fit(petal)
    w, m, s = _sorted(gmm)
    # Setosa's 50 petals are the small cluster; the other 100 the large one.
    np.testing.assert_allclose(w, [1 / 3, 2 / 3], atol=0.02)
    np.testing.assert_allclose(m[:, 0], [1.46, 4.9], atol=0.05)
    setosa = (iris["species"] == "setosa").to_numpy()
    assert adjusted_rand_score(setosa, gmm.predict(petal)) >= 0.98
    assert gmm.converged_


@pytest.mark.parametrize("backend", ["pyro", "fused"])
def test_pure_svi_reference_path_finds_the_same_mode(iris, petal, petal_fit, backend):
    # EM switched off: AutoDelta + TraceEnum_ELBO alone, from the k-means++ start.
    gmm = BayesianGMM(2, em_max_iter=0, n_init=1, max_iter=3000, random_state=1, backend=backend,
                      **CPU).fit(petal)
    w, m, s = _sorted(gmm)
    w0, m0, s0 = _sorted(petal_fit)
    np.testing.assert_allclose(m, m0, atol=0.03)
    np.testing.assert_allclose(w, w0, atol=0.01)
    # Adam stops near, not exactly at, the optimum EM reaches.
    assert gmm.loss_ == pytest.approx(petal_fit.loss_, abs=0.05)
    assert gmm.loss_ >= petal_fit.loss_ - 1e-3
    assert len(gmm.losses_) == gmm.n_iter_ + 1


def test_jit_elbo_gives_the_same_fit(petal):
    a = BayesianGMM(2, em_max_iter=0, n_init=1, max_iter=300, random_state=3, backend="pyro",
                    **CPU).fit(petal)
    b = BayesianGMM(2, em_max_iter=0, n_init=1, max_iter=300, random_state=3, jit=True,
                    backend="pyro", **CPU).fit(petal)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-3)
    np.testing.assert_allclose(a.losses_[:20], b.losses_[:20], rtol=1e-5)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_fused_backend_follows_the_pyro_svi_trajectory(iris, covariance_type):
    # Same start, same Adam, tol=0 so both run every step: the fused loss is
    # TraceEnum_ELBO's loss, so the two trajectories agree step by step.
    X = iris.iloc[:, :4].to_numpy()
    kw = dict(em_max_iter=0, n_init=1, max_iter=40, tol=0.0, random_state=2,
              covariance_type=covariance_type, **CPU)
    pyro_fit = BayesianGMM(3, backend="pyro", **kw).fit(X)
    fused_fit = BayesianGMM(3, backend="fused", **kw).fit(X)
    assert len(pyro_fit.losses_) == len(fused_fit.losses_) == 41
    np.testing.assert_allclose(fused_fit.losses_, pyro_fit.losses_, rtol=2e-5)
    np.testing.assert_allclose(fused_fit.means_, pyro_fit.means_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fused_fit.scales_, pyro_fit.scales_, rtol=1e-3)
    np.testing.assert_allclose(fused_fit.covariances_, pyro_fit.covariances_, rtol=1e-3, atol=1e-5)
    # The k-means++ start puts the weights at the Dirichlet mode of the hard
    # counts, where their gradient is ~1e-6 (diag: a component of 1.3e-6),
    # i.e. float32 rounding; Adam's first step moves every coordinate by
    # about lr whatever the gradient's size, so that coordinate's sign is a
    # coin flip between the two float32 evaluations.  The weights then agree
    # to a fraction of one step (lr = 0.01; diag differed by 4e-3 after one
    # step, 1e-4 after 40), not to rounding; the exact agreement of loss and
    # gradient is checked in float64 in test_covariance.py.
    np.testing.assert_allclose(fused_fit.weights_, pyro_fit.weights_, atol=5e-3)


def test_pyro_iris_hyperparameters_are_expressible(petal, petal_fit):
    gmm = BayesianGMM(2, priors=Priors.pyro_iris(), random_state=0, **CPU).fit(petal)
    p = gmm.priors_
    np.testing.assert_array_equal(p.weight_concentration, [1.0, 1.0])
    np.testing.assert_array_equal(p.mean_loc, [0.0])
    np.testing.assert_array_equal(p.mean_scale, [10.0])
    assert p.scale_shape == 1.0
    np.testing.assert_array_equal(p.scale_rate, [1.0])
    np.testing.assert_allclose(_sorted(gmm)[1], _sorted(petal_fit)[1], atol=0.02)


def test_default_priors_resolved_from_data_and_results_unit_free(petal, petal_fit):
    x = petal.to_numpy()
    np.testing.assert_allclose(petal_fit.priors_.mean_loc, x.mean(0))
    np.testing.assert_allclose(petal_fit.priors_.mean_scale, 2 * x.std(0))
    # The scale prior follows the seeding's within-cluster spread (1-D:
    # "full" is the diagonal model): well below the data's.
    assert np.all(petal_fit.priors_.scale_rate / (2 * SPREAD_FACTOR) < 0.5 * x.std(0))
    # Millimetres offset by 1000: the same clusters, parameters in the new units.
    gmm = BayesianGMM(2, random_state=0, **CPU).fit(10 * x + 1000)
    w, m, s = _sorted(gmm)
    w0, m0, s0 = _sorted(petal_fit)
    np.testing.assert_allclose(w, w0, rtol=1e-4)
    np.testing.assert_allclose(m, 10 * m0 + 1000, rtol=1e-5)
    np.testing.assert_allclose(s, 10 * s0, rtol=1e-3)
    assert np.array_equal(gmm.predict(10 * x + 1000), petal_fit.predict(petal))


# --------------------------------------------------------- synthetic recovery
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("n_features,n_components", [(1, 2), (1, 3), (2, 2), (2, 4), (5, 3),
                                                     (5, 5), (2, 5)])
def test_recovers_known_parameters(n_features, n_components, covariance_type):
    # make_mixture's components are axis-aligned: the diagonal model is
    # exact, and the full one (the default) must find zero correlations.
    n = 3000
    X, labels, truth = make_mixture(n, n_components, n_features, random_state=n_features * 10 + n_components)
    gmm = BayesianGMM(n_components, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    # Match fitted to true components (label switching) by mean distance.
    cost = ((gmm.means_[:, None, :] - truth.means[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    w, m, s = gmm.weights_[rows], gmm.means_[rows], gmm.scales_[rows]
    tw, tm, ts = truth.weights[cols], truth.means[cols], truth.scales[cols]
    nk = tw * n
    # Standard errors: mean sigma/sqrt(n_k), scale sigma/sqrt(2 n_k); weights
    # are exact counts here, so only misassigned overlap points move them.
    # 5 standard errors leaves room for the prior and finite-sample noise.
    assert np.all(np.abs(m - tm) <= 5 * ts / np.sqrt(nk)[:, None])
    assert np.all(np.abs(s - ts) <= 5 * ts / np.sqrt(2 * nk)[:, None])
    np.testing.assert_allclose(w, tw, atol=0.01)
    assert adjusted_rand_score(labels, gmm.predict(X)) > 0.99


# ------------------------------------------------------ cross-checks of math
def _matrices(gmm):
    """(K, D, D) covariance matrices from covariances_ in any sklearn shape."""
    K, D = gmm.means_.shape
    c = gmm.covariances_
    return {"full": lambda: c, "tied": lambda: np.repeat(c[None], K, 0),
            "diag": lambda: np.einsum("kd,de->kde", c, np.eye(D)),
            "spherical": lambda: c[:, None, None] * np.eye(D)}[gmm.covariance_type_]()


def _hand_component_log_joint(gmm, X):
    """log w_k + log N(x | mu_k, Sigma_k) with scipy, shape (N, K)."""
    mats = _matrices(gmm)
    return np.stack([np.log(gmm.weights_[k])
                     + np.atleast_1d(stats.multivariate_normal(gmm.means_[k], mats[k]).logpdf(X))
                     for k in range(gmm.weights_.size)], axis=1)


def _hand_negative_log_joint(gmm, X):
    """-log p(X, weights, means, covariances) with scipy, in the data's units:
    InverseGamma on the standard deviations (diag, spherical, 1-D full) or
    Wishart(nu, Psi^-1) on the precision matrices (full, tied)."""
    p = gmm.priors_
    comp = _hand_component_log_joint(gmm, X)
    lp = stats.dirichlet(p.weight_concentration).logpdf(gmm.weights_)
    lp += stats.norm(p.mean_loc, p.mean_scale).logpdf(gmm.means_).sum()
    if p.scale_rate is not None:
        sd = np.sqrt(gmm.covariances_ if gmm.covariance_type_ != "full"
                     else np.diagonal(gmm.covariances_, axis1=-2, axis2=-1))
        lp += stats.invgamma(p.scale_shape, scale=p.scale_rate).logpdf(sd).sum()
    else:
        W = stats.wishart(df=p.covariance_dof, scale=np.linalg.inv(p.covariance_scale))
        covs = gmm.covariances_[None] if gmm.covariance_type_ == "tied" else gmm.covariances_
        lp += sum(W.logpdf(np.linalg.inv(c)) for c in covs)
    return -(logsumexp(comp, axis=1).sum() + lp)


def _n_parameters(covariance_type, K, D):
    cov = {"full": K * D * (D + 1) // 2, "tied": D * (D + 1) // 2, "diag": K * D,
           "spherical": K}[covariance_type]
    return (K - 1) + K * D + cov


@pytest.mark.parametrize("em", [True, False])
def test_final_loss_is_the_negative_log_joint(petal, em):
    X = petal.to_numpy()
    kw = {} if em else dict(em_max_iter=0, n_init=1, max_iter=200)
    gmm = BayesianGMM(2, random_state=0, **kw, **CPU).fit(X)
    assert gmm.loss_ == pytest.approx(_hand_negative_log_joint(gmm, X), rel=1e-4)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_loss_is_negative_log_joint_multivariate(iris, covariance_type):
    X = iris.iloc[:, :4].to_numpy()
    gmm = BayesianGMM(3, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    assert gmm.loss_ == pytest.approx(_hand_negative_log_joint(gmm, X), rel=1e-4)
    # The loss history never increases during EM (an ECM algorithm).
    em = gmm.restart_losses_[gmm.best_restart_]
    assert np.all(np.diff(em) <= 1e-6 * np.abs(em[:-1]))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_predict_proba_and_score_samples_match_scipy(iris, covariance_type):
    X = iris.iloc[:, :4].to_numpy()
    gmm = BayesianGMM(3, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    comp = _hand_component_log_joint(gmm, X)
    if covariance_type == "diag":   # independent per-feature normals, as in the first release
        ind = np.stack([np.log(gmm.weights_[k])
                        + stats.norm(gmm.means_[k], gmm.scales_[k]).logpdf(X).sum(1)
                        for k in range(3)], axis=1)
        np.testing.assert_allclose(comp, ind, rtol=1e-10)
    np.testing.assert_allclose(gmm.score_samples(X), logsumexp(comp, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gmm.predict_proba(X), np.exp(comp - logsumexp(comp, 1, keepdims=True)),
                               atol=1e-5)
    assert gmm.score(X) == pytest.approx(logsumexp(comp, axis=1).mean(), rel=1e-6)
    # weights, means, covariances: (K-1) + K D + {K D(D+1)/2, D(D+1)/2, K D, K}.
    n_params = {"full": 2 + 12 + 30, "tied": 2 + 12 + 10, "diag": 2 + 12 + 12,
                "spherical": 2 + 12 + 3}[covariance_type]
    assert n_params == _n_parameters(covariance_type, 3, 4)
    ll = logsumexp(comp, axis=1).sum()
    assert gmm.bic(X) == pytest.approx(-2 * ll + n_params * np.log(150), rel=1e-6)
    assert gmm.aic(X) == pytest.approx(-2 * ll + 2 * n_params, rel=1e-6)


def test_bic_prefers_the_true_number_of_components():
    X, _, _ = make_mixture(1500, 3, 2, random_state=7)
    bics = [BayesianGMM(k, random_state=0, **CPU).fit(X).bic(X) for k in (1, 2, 3, 4, 5)]
    assert int(np.argmin(bics)) + 1 == 3


def test_predict_is_argmax_of_predict_proba_on_overlapping_data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (400, 2)), rng.normal(1.2, 1, (400, 2))])
    gmm = BayesianGMM(2, random_state=0, **CPU).fit(X)
    proba = gmm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    labels = gmm.predict(X)
    clear = np.abs(proba[:, 0] - 0.5) > 1e-4   # exact ties may break either way
    assert clear.sum() > 790
    np.testing.assert_array_equal(labels[clear], proba.argmax(1)[clear])


def test_sampled_assignments_match_predict_proba_in_frequency():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (300, 1)), rng.normal(2, 1, (300, 1))])
    gmm = BayesianGMM(2, random_state=0, **CPU).fit(X)
    pts = np.array([[-1.0], [0.5], [1.0], [1.5], [3.0]])
    S = 4000
    draws = gmm.sample_assignments(pts, n_samples=S)
    assert draws.shape == (S, 5)
    freq = (draws[:, :, None] == np.arange(2)).mean(0)
    p = gmm.predict_proba(pts)
    se = np.sqrt(p * (1 - p) / S)
    assert np.all(np.abs(freq - p) <= 4 * se + 1e-3)
    # Seeded by random_state: the same draws again.
    np.testing.assert_array_equal(draws, gmm.sample_assignments(pts, n_samples=S))


def test_sample_draws_from_the_fitted_mixture(petal_fit):
    X, labels = petal_fit.sample(20000)
    assert X.shape == (20000, 1) and labels.shape == (20000,)
    freq = np.bincount(labels, minlength=2) / 20000
    np.testing.assert_allclose(freq, petal_fit.weights_, atol=0.015)
    for k in range(2):
        np.testing.assert_allclose(X[labels == k].mean(0), petal_fit.means_[k],
                                   atol=5 * petal_fit.scales_[k].max() / np.sqrt((labels == k).sum()))
        np.testing.assert_allclose(X[labels == k].std(0), petal_fit.scales_[k], rtol=0.05)


def test_sample_draws_large_requests_in_blocks(monkeypatch):
    """Above SAMPLE_BLOCK_ELEMENTS the model runs block by block (its
    working set was 133 times the draws at D = 30: 3.2 GB for 1e5 of them):
    the same mixture in every block, full covariances checked against the
    fitted ones, and the same seed the same draws; below one block the
    draws are those of one run, as before."""
    import bayesgmm._base
    rng = np.random.default_rng(0)
    X = np.r_[rng.multivariate_normal([0, 0, 0], [[1, .8, 0], [.8, 1, 0], [0, 0, 1]], 300),
              rng.normal(5, 0.5, (200, 3))]
    gmm = BayesianGMM(2, covariance_type="full", n_init=1, device="cpu", random_state=0).fit(X)
    whole = gmm.sample(300, random_state=1)
    monkeypatch.setattr(bayesgmm._base, "SAMPLE_BLOCK_ELEMENTS", 13 * 1000)   # 1000 rows a block
    blocked = gmm.sample(300, random_state=1)
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)                # one block: one run, as before
    x, z = gmm.sample(40_000, random_state=2)              # 40 blocks
    x2, z2 = gmm.sample(40_000, random_state=2)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_allclose(np.bincount(z) / z.size, gmm.weights_, atol=0.01)
    for k in range(2):
        np.testing.assert_allclose(np.cov(x[z == k].T), gmm.covariances_[k], atol=0.05)
    # Blocks are not repeats of one another.
    assert not np.array_equal(x[:1000], x[1000:2000])


# The site each covariance family adds, its shape for K=4, D=3, and its prior.
_SITES = {"full": ("precisions", (4, 3, 3), "Wishart"), "tied": ("precision", (3, 3), "Wishart"),
          "diag": ("scales", (4, 3), "InverseGamma"), "spherical": ("scales", (4,), "InverseGamma")}


def _prepared(covariance_type, X, K):
    from bayesgmm import covariance
    from bayesgmm.priors import Standardizer, resolve_priors
    family = covariance.get(covariance_type, X.shape[1])
    std, Xt, moments = Standardizer.fit_to(X, "cpu", family.isotropic)
    pt = std.priors(resolve_priors(None, family, K, moments), "cpu")
    return family, Xt, pt


# Tracing the unconditioned model draws the global sites from their priors;
# torch's Wishart sampler warns when a draw fails its float32 positive
# definiteness check (and redraws it): irrelevant to the site shapes.
@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_model_trace_has_the_documented_sites(covariance_type):
    from bayesgmm.models import gmm_model
    X = np.random.default_rng(0).normal(size=(30, 3))
    family, Xt, pt = _prepared(covariance_type, X, 4)
    site, shape, prior = _SITES[covariance_type]
    tr = pyro.poutine.trace(gmm_model).get_trace(Xt, pt, 4, family)
    shapes = {k: tuple(v["value"].shape) for k, v in tr.nodes.items()
              if v["type"] == "sample" and not k.startswith(("components", "data"))}
    assert shapes == {"weights": (4,), "means": (4, 3), site: shape, "assignment": (30,),
                      "obs": (30, 3)}
    assert tr.nodes["assignment"]["infer"].get("enumerate") == "parallel"
    fn = tr.nodes[site]["fn"]
    if isinstance(fn, pyro.distributions.Independent):   # diag: features as an event dim
        fn = fn.base_dist
    assert isinstance(fn, getattr(pyro.distributions, prior))
    # One prior draw per component (a plate over K), the shared precision once.
    assert tuple(tr.nodes[site]["fn"].batch_shape) == (() if covariance_type == "tied" else (4,))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_elbo_loss_matches_the_vectorised_negative_log_joint(covariance_type):
    from bayesgmm.fitting import Groups, elbo_loss, negative_log_joint
    from bayesgmm.priors import MixtureParams
    X = np.random.default_rng(0).normal(size=(50, 2))
    family, Xt, pt = _prepared(covariance_type, X, 3)
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 2, 2, generator=gen)
    precisions = A @ A.transpose(-1, -2) + 0.5 * torch.eye(2)
    cov = {"full": precisions, "tied": precisions[0],
           "diag": torch.tensor([[0.5, 1.0], [1.5, 0.7], [1.0, 1.0]]),
           "spherical": torch.tensor([0.5, 1.5, 1.0])}[covariance_type]
    params = MixtureParams(torch.tensor([0.2, 0.3, 0.5]), torch.randn(3, 2, generator=gen), cov)
    fused = negative_log_joint(Groups.single(Xt), params.map(lambda t: t[None]),
                               torch.zeros(1, dtype=torch.long), pt, family)
    assert elbo_loss(Xt, params, pt, family) == pytest.approx(float(fused[0]), rel=1e-5)


# -------------------------------------------------------- estimator contract
def test_fit_predict_equals_fit_then_predict(petal):
    a = BayesianGMM(2, random_state=5, **CPU).fit_predict(petal)
    b = BayesianGMM(2, random_state=5, **CPU).fit(petal).predict(petal)
    np.testing.assert_array_equal(a, b)


def test_same_seed_same_fit_and_global_rng_untouched(petal):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = BayesianGMM(2, random_state=11, **CPU).fit(petal)
    after = torch.rand(3)
    np.testing.assert_array_equal(expected.numpy(), after.numpy())
    b = BayesianGMM(2, random_state=11, **CPU).fit(petal)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.losses_, b.losses_)


def test_two_estimators_do_not_interfere(petal, iris):
    store = pyro.get_param_store()
    store.clear()
    pyro.param("user_param", torch.tensor(3.0))
    a = BayesianGMM(2, em_max_iter=0, n_init=1, max_iter=50, random_state=0, **CPU).fit(petal)
    snapshot = (a.weights_.copy(), a.means_.copy())
    b = BayesianGMM(3, em_max_iter=0, n_init=1, max_iter=50, random_state=0, **CPU).fit(
        iris.iloc[:, :2])
    # a's state is its own, b did not pick up a's parameters (shapes differ,
    # which would crash if b's guide read a's), and the user's store is intact.
    np.testing.assert_array_equal(a.weights_, snapshot[0])
    np.testing.assert_array_equal(a.means_, snapshot[1])
    assert b.means_.shape == (3, 2)
    assert list(store.keys()) == ["user_param"]
    again = BayesianGMM(2, em_max_iter=0, n_init=1, max_iter=50, random_state=0, **CPU).fit(petal)
    np.testing.assert_array_equal(again.means_, a.means_)
    store.clear()


def test_input_types_give_the_same_fit(iris):
    df = iris[["petal_length", "petal_width"]]
    ref = BayesianGMM(2, random_state=0, **CPU).fit(df)
    assert ref.n_features_in_ == 2
    assert list(ref.feature_names_in_) == ["petal_length", "petal_width"]
    for X in (df.to_numpy(), torch.tensor(df.to_numpy()), df.to_numpy().tolist(),
              df.to_numpy().astype(np.float32)):
        gmm = BayesianGMM(2, random_state=0, **CPU).fit(X)
        # float32 input rounds the data, which may reorder the components.
        np.testing.assert_allclose(_sorted(gmm)[1], _sorted(ref)[1], rtol=1e-5)
        assert not hasattr(gmm, "feature_names_in_")
    # A Series and a 1-D array are one feature.
    s = BayesianGMM(2, random_state=0, **CPU).fit(iris["petal_length"])
    v = BayesianGMM(2, random_state=0, **CPU).fit(iris["petal_length"].to_numpy())
    assert s.means_.shape == (2, 1)
    np.testing.assert_allclose(s.means_, v.means_)
    np.testing.assert_array_equal(s.predict(iris["petal_length"]), v.predict(iris["petal_length"].to_numpy()))


def test_progress_bar_runs_and_changes_nothing(petal, petal_fit, capsys):
    gmm = BayesianGMM(2, random_state=0, progress=True, **CPU).fit(petal)
    np.testing.assert_array_equal(gmm.means_, petal_fit.means_)
    err = capsys.readouterr().err
    assert "BayesianGMM" in err
    # The bar's total was EM's budget (500) while it ran; a fit that ends by
    # convergence ends the bar full, at the passes it ran.
    renders = [r for r in err.replace("\n", "\r").split("\r") if "BayesianGMM" in r]
    assert "/500 " in renders[0] or "/500 " in renders[1]
    import re
    done, total = map(int, re.search(r"(\d+)/(\d+) ", renders[-1]).groups())
    assert "100%" in renders[-1] and done == total < 500


def test_progress_bar_shows_the_best_restarts_loss_in_the_datas_units(iris, capsys):
    # (From an independent audit of the CLI.) With n_init=4 the bar showed
    # the sum over the restarts still running: 1184 for a fit whose loss_
    # is 308.8.
    import re
    X = iris.drop(columns="species")
    gmm = BayesianGMM(3, n_init=4, random_state=0, progress=True, **CPU).fit(X)
    err = capsys.readouterr().err
    shown = [float(v) for v in re.findall(r"loss=([-0-9.e+]+)", err)]
    assert shown, err
    # Shown (to 4 significant digits) every 10 iterations while the loss
    # falls: the last shown is the final loss or a little above, not a
    # multiple of it.
    assert gmm.loss_ - 1e-3 * abs(gmm.loss_) <= shown[-1] <= gmm.loss_ + 0.02 * abs(gmm.loss_)


def test_user_given_initial_means(petal):
    gmm = BayesianGMM(2, init=[[1.0], [5.0]], n_init=2, random_state=0, **CPU).fit(petal)
    np.testing.assert_allclose(_sorted(gmm)[1][:, 0], [1.46, 4.9], atol=0.05)


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_other_initialisations(petal, init):
    gmm = BayesianGMM(2, init=init, random_state=0, **CPU).fit(petal)
    np.testing.assert_allclose(_sorted(gmm)[1][:, 0], [1.46, 4.9], atol=0.05)


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("X,match", [
    (np.array([[1.0], [np.nan], [2.0]]), r"NaN in column 0"),
    (np.array([[1.0, np.inf], [0.0, 2.0]]), r"inf in column 1"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, None, 2.0]}), r"NaN in column 1 \('b'\).*impute"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "s": ["x", "y", "z"]}),
     r"non-numeric column\(s\) \['s'\]: select the numeric columns \(df\[\['a'\]\]\) or "
     r"encode the others as numbers"),
    (pd.DataFrame({"s": ["x", "y", "z"]}), r"non-numeric column\(s\) \['s'\]: encode them as "
                                            r"numbers$"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "s": pd.Categorical(["x", "y", "x"])}),
     r"non-numeric column\(s\) \['s'\]"),
    (np.array([["a", "b"], ["c", "d"]]), r"must contain numbers"),
    # numbers as text in a DataFrame (read with the wrong decimal mark, or
    # astype(str)): named as such, with the conversion
    (pd.DataFrame({"a": ["1.5", "2", "3"], "b": ["1e3", None, "4"]}),
     r"X's column\(s\) \['a', 'b'\] hold numbers written as text \(a: '1.5'\): convert them, "
     r"e.g. df.astype\(\{'a': float\}\) or df.apply\(pd.to_numeric\)$"),
    (pd.DataFrame({"a": ["1.5", "2", "3"], "s": ["x", "y", "z"]}),
     r"non-numeric column\(s\) \['a', 's'\]: encode them as numbers$"),
    (np.empty((0, 2)), r"0 sample"),
])
def test_bad_input_is_rejected_with_a_clear_message(X, match):
    with pytest.raises(ValueError, match=match):
        BayesianGMM(2, **CPU).fit(X)


def test_an_object_column_of_numbers_is_numbers(petal):
    # As scikit-learn takes it (after astype(object) or a concat); it was
    # refused as non-numeric, though the same values as an array were taken.
    from decimal import Decimal

    a = petal.to_numpy().ravel()
    df = pd.DataFrame({"a": a, "b": np.arange(a.size) % 7 / 10})
    obj = df.astype({"a": object})
    dec = df.assign(b=[Decimal(str(v)) for v in df["b"]])
    kw = dict(n_init=1, random_state=0, dtype="float64", **CPU)
    ref = BayesianGMM(2, **kw).fit(df)
    for other in (obj, dec):
        fit = BayesianGMM(2, **kw).fit(other)
        np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-12)
        np.testing.assert_array_equal(fit.predict(other), ref.predict(df))
    # A categorical column of numbers is its numbers (its values, not its
    # codes), as scikit-learn reads it; one with NaN is missing there.
    cat = df.assign(b=pd.Categorical(df["b"]))
    fit = BayesianGMM(2, **kw).fit(cat)
    np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-12)
    np.testing.assert_array_equal(fit.predict(cat), ref.predict(df))
    # pandas' missing value pd.NA (or None) among numbers held as objects
    # is a missing value, as NaN is (it was a TypeError from numpy's float
    # conversion: from an audit); the user's frame is left as it was.
    holes = df.astype(object)
    holes.loc[3, "a"], holes.loc[5, "b"] = pd.NA, None
    kept = holes.copy()
    nan = df.copy()
    nan.loc[3, "a"], nan.loc[5, "b"] = np.nan, np.nan
    mkw = dict(kw, missing="marginalize")
    fit = BayesianGMM(2, **mkw).fit(holes)
    ref = BayesianGMM(2, **mkw).fit(nan)
    np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-12)
    np.testing.assert_array_equal(fit.predict_proba(holes), ref.predict_proba(nan))
    np.testing.assert_array_equal(fit.impute(holes).to_numpy(), ref.impute(nan).to_numpy())
    pd.testing.assert_frame_equal(holes, kept)
    mixed = df.astype({"a": object})
    mixed.loc[3, "a"] = "x"
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['a'\]"):
        BayesianGMM(2, **kw).fit(mixed)


@pytest.mark.parametrize("params,match", [
    (dict(n_components=0), r"n_components must be >= 1, got 0"),
    (dict(n_components="3"), r"n_components must be an integer, got '3'"),
    (dict(n_components=5), r"n_components=5 but only 4 sample\(s\): use n_components <= 4"),
    (dict(n_init=0), r"n_init must be >= 1, got 0"),
    # posterior settings are checked under the default inference="map" too
    (dict(n_samples=-1), r"n_samples must be >= 1, got -1"),
    (dict(n_chains=0), r"n_chains must be >= 1, got 0"),
    (dict(n_warmup=-3), r"n_warmup must be >= 0, got -3"),
    (dict(tol=-1.0), r"tol must be >= 0.0, got -1.0"),
    (dict(learning_rate=0), r"learning_rate must be > 0.0, got 0.0"),
    (dict(init="kmeanz"), r"init must be one of .* got 'kmeanz'"),
    (dict(init=np.zeros((3, 1))), r"shape \(n_components, n_features\) = \(2, 1\), got an array of shape \(3, 1\)"),
    (dict(device="tpu"), r"device must be .* got 'tpu'"),
    (dict(device="mps"), r"device='mps': Apple's MPS backend is not supported.*float64.*"
                         r"use device='cpu'"),
    (dict(priors={"mean_loc": 0}), r"priors must be a bayesgmm.Priors"),
    (dict(priors=Priors(weight_concentration=0.5)), r"weight_concentration must be >= 1"),
    (dict(priors=Priors(mean_scale=-1.0)), r"mean_scale must be > 0, got \[-1.0\]"),
    (dict(priors=Priors(scale_rate=[1.0, 2.0])), r"scale_rate must be a scalar or have shape \(1,\)"),
    # (From an audit.) Strings and booleans converted silently; a spherical
    # rate given per feature did not say why one float is needed.
    (dict(priors=Priors(scale_shape="1.5")), r"scale_shape must be a number .*got '1.5'"),
    (dict(priors=Priors(weight_concentration=True)), r"weight_concentration must be a number"),
    (dict(priors=Priors(scale_rate=[1.0]), covariance_type="spherical"),
     r"scale_rate must be a positive float \(covariance_type 'spherical' has one scale per "
     r"component"),
    (dict(priors=Priors(mean_scale=np.nan)), r"mean_scale must be finite.*or None for the default"),
    (dict(priors=Priors(mean_scale=[[1.0], [1.0, 2.0]])),      # ragged: numpy's error before
     r"mean_scale must be a number or an array of numbers, got \[\[1.0\], \[1.0, 2.0\]\]"),
    # (From an audit.) A field the type does not use was never checked: one
    # Priors serves a sweep over types, but a value no type takes is refused.
    (dict(priors=Priors(covariance_scale=-1.0)),
     r"covariance_scale must be a finite symmetric positive definite"),
    (dict(priors=Priors(covariance_dof=1.0)), r"covariance_dof must exceed n_features \+ 1 = 2"),
    (dict(jit="yes"), r"jit must be True or False"),
    (dict(jit=True), r"jit=True applies to backend='pyro'"),
    (dict(backend="numba"), r"backend must be one of \['fused', 'pyro'\], got 'numba'"),
    (dict(max_iter=0, em_max_iter=0), r"nothing to fit"),
])
def test_invalid_hyperparameters_are_checked_at_fit(params, match):
    est = BayesianGMM(**{"n_components": 2, "device": "cpu", **params})
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    with pytest.raises(ValueError, match=match):
        est.fit(X)


def test_a_priors_fields_unused_by_the_type_are_checked_and_otherwise_ignored():
    """One Priors serves a sweep over covariance types (each uses its own
    fields), but a value that no type could use is an error whatever the
    type: scale_rate=-1 passed with full covariances, unchecked."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    sweep = Priors(scale_shape=2.0, scale_rate=[0.5, 1.0], covariance_dof=5.0,
                   covariance_scale=[0.5, 1.0])
    for covariance_type in ("full", "tied", "diag"):
        fitted = BayesianGMM(2, covariance_type=covariance_type, priors=sweep, n_init=1,
                             device="cpu").fit(X)
        own = ("covariance_dof", "covariance_scale") if covariance_type in ("full", "tied") \
            else ("scale_shape", "scale_rate")
        assert all((getattr(fitted.priors_, f) is None) != (f in own)
                   for f in ("scale_shape", "scale_rate", "covariance_dof", "covariance_scale"))
    for covariance_type, bad, match in [
            ("full", Priors(scale_rate=-1.0), r"scale_rate must be > 0, got \[-1.0, -1.0\]"),
            ("tied", Priors(scale_shape=0.0), r"scale_shape must be a positive float, got 0.0"),
            ("spherical", Priors(covariance_dof=2.0), r"covariance_dof must exceed"),
            ("diag", Priors(covariance_scale=[[1.0, 2.0], [2.0, 1.0]]),
             r"covariance_scale must be a finite symmetric positive definite")]:
        with pytest.raises(ValueError, match=match):
            BayesianGMM(2, covariance_type=covariance_type, priors=bad, device="cpu").fit(X)


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        BayesianGMM(2, device="cuda").fit(np.arange(10.0))


def test_predict_errors(petal_fit):
    with pytest.raises(NotFittedError):
        BayesianGMM(2).predict(np.ones((3, 1)))
    with pytest.raises(ValueError, match="X has 2 features, but BayesianGMM is expecting 1"), \
            pytest.warns(UserWarning, match="X does not have valid feature names"):
        petal_fit.predict(np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        petal_fit.predict_proba(pd.DataFrame({"petal_length": [np.nan]}))
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        petal_fit.sample(0)


# ------------------------------------------------------------------- GPU
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fit_matches_cpu(iris):
    X = iris.iloc[:, :4].to_numpy()
    cpu = BayesianGMM(3, random_state=0, device="cpu").fit(X)
    gpu = BayesianGMM(3, random_state=0, device="cuda").fit(X)
    assert gpu.device_.type == "cuda"
    assert isinstance(gpu.means_, np.ndarray)
    np.testing.assert_allclose(gpu.means_, cpu.means_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-4)
    np.testing.assert_array_equal(gpu.predict(X), cpu.predict(X))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_device_this_machine_lacks_is_refused_by_name(iris):
    """cuda:N past the machine's GPUs failed at the first allocation with
    "CUDA error: invalid device ordinal" (the GPU-path review of stop 50)."""
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"device='cuda:{n}' but this machine has {n} CUDA "
                                         rf"device\(s\)"):
        BayesianGMM(2, device=f"cuda:{n}").fit(iris.iloc[:, :1].to_numpy())


def test_predict_when_every_point_falls_in_one_component(petal_fit):
    # infer_discrete returns a value without the data dimension when the
    # assignment is constant across points; predict must still give (N,).
    far = pd.DataFrame({"petal_length": np.full(7, 6.0)})     # the fit's feature name
    np.testing.assert_array_equal(petal_fit.predict(far), np.full(7, np.argmax(petal_fit.means_[:, 0])))
    assert petal_fit.predict(far.iloc[:1]).shape == (1,)
    assert petal_fit.sample_assignments(far, n_samples=3).shape == (3, 7)


def test_one_dimensional_input_for_a_multivariate_fit_says_reshape(iris):
    gmm = BayesianGMM(2, random_state=0, **CPU).fit(iris.iloc[:, :4].to_numpy())
    with pytest.raises(ValueError, match=r"Reshape your data with X.reshape\(1, -1\)"):
        gmm.predict(np.ones(4))


def test_svi_stopping_rule_follows_the_best_loss():
    from bayesgmm.fitting import svi_converged
    # A rise over the window is not convergence while the best still improves.
    assert not svi_converged([10, 9, 8, 9, 7.5, 9], window=2, n_samples=1, tol=0.1)
    assert svi_converged([10, 9, 8, 7, 7.5, 7.01], window=2, n_samples=1, tol=0.1)
    # tol=0 never stops early; a short history never converges.
    assert not svi_converged([5, 5, 5, 5, 5], window=2, n_samples=1, tol=0.0)
    # ... not even where the last window's best rose above the earlier best
    # (Adam circling a float32 optimum): the interrupt tests rely on this.
    assert not svi_converged([5, 4, 4, 6, 6], window=2, n_samples=1, tol=0.0)
    assert svi_converged([5, 4, 4, 6, 6], window=2, n_samples=1, tol=1e-9)
    assert not svi_converged([5, 4], window=2, n_samples=1, tol=1.0)
    # A window that rose and is still spread (Adam overshooting) is not
    # convergence: that stopped a fit 0.27 nats short, converged_ True.
    assert not svi_converged([5, 4, 4, 6, 9], window=2, n_samples=1, tol=0.1)


def test_pure_svi_with_a_large_step_reaches_the_em_optimum():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 3))
    X = np.concatenate([rng.normal(size=(100, 3)) @ A + 2.5, rng.normal(size=(100, 3)) * 0.7 - 2])
    start = X[[1, 199]]                   # a start from which Adam at 0.02 overshoots early
    kw = dict(covariance_type="diag", dtype="float64", init=start, n_init=1,
              random_state=0, **CPU)
    em = BayesianGMM(2, tol=1e-10, max_iter=0, **kw).fit(X)
    svi = BayesianGMM(2, em_max_iter=0, max_iter=8000, tol=1e-10, learning_rate=0.02,
                      **kw).fit(X)
    assert svi.converged_
    assert svi.loss_ - em.loss_ < 1e-3          # it stopped 0.27 nats above at step 45


def test_single_component_predicts_zeros_without_warnings(recwarn):
    X = np.random.default_rng(0).normal(size=(50, 2))
    gmm = BayesianGMM(1, random_state=0, **CPU).fit(X)
    np.testing.assert_array_equal(gmm.predict(X), np.zeros(50, dtype=np.int64))
    assert not [w for w in recwarn if "enumeration" in str(w.message)]


# ----------------------------------------------------------------------------
# Restarts screened on a subsample; SVI only where EM stopped short
# ----------------------------------------------------------------------------
def test_restarts_screened_on_a_subsample_reach_the_whole_data_optimum(monkeypatch):
    """40,000 points (more than 4 x 8,192): the restarts run on a subsample,
    the best continues on all the data, and the fit ends where running
    every restart on all the data ends (same optimum), in fewer passes."""
    import bayesgmm.fitting
    from bayesgmm.datasets import make_mixture

    X, _, _ = make_mixture(40000, 4, 2, separation=2.0, random_state=3)
    kw = dict(covariance_type="full", n_init=4, random_state=0, **CPU)
    screened = BayesianGMM(4, **kw).fit(X)
    assert bayesgmm.fitting.screen_rows(len(X), 4) == 8192
    monkeypatch.setattr(bayesgmm.fitting, "SCREEN_ROWS", 10 ** 9)   # screening off
    whole = BayesianGMM(4, **kw).fit(X)
    assert screened.loss_ == pytest.approx(whole.loss_, rel=1e-6)
    assert screened.score(X) >= whole.score(X) - 1e-6
    # The histories: the kept one ends with loss_ and counts n_iter_; every
    # other restart ends with its screened parameters' loss on all the data.
    kept = screened.restart_losses_[screened.best_restart_]
    assert kept[-1] == screened.loss_ and len(kept) == screened.n_iter_ + 1
    finals = [h[-1] for h in screened.restart_losses_]
    assert int(np.argmin(finals)) == screened.best_restart_


def test_same_optimum_groups_restarts_by_their_final_loss():
    from bayesgmm.mixture import same_optimum

    losses = np.array([10.0 + 1e-12, 10.0, 9.0, np.inf, 9.0 + 1e-3, 10.0, np.nan])
    np.testing.assert_array_equal(same_optimum(losses), [1, 1, 2, 3, 4, 1, 6])
    np.testing.assert_array_equal(same_optimum(np.array([5.0])), [0])


def test_the_first_of_restarts_tied_to_the_last_bits_is_kept():
    # Two restarts at one optimum: a distributed fit summed their losses to
    # ...778 and ...775, one process to ...775 and ...780, and the two kept
    # different restarts (the same mixture with its components permuted).
    from bayesgmm.fitting import first_best

    for losses in ([1969.1471673203778, 1969.1471673203775],
                   [1969.1471673203775, 1969.147167320378]):
        assert int(first_best(losses)) == 0
    assert int(first_best([3.0, 2.0, 2.0 + 1e-6])) == 1          # a real difference
    assert int(first_best([np.nan, 5.0, np.inf])) == 1             # NaN is no optimum
    cols = torch.tensor([[2.0, 7.0], [1.0, 7.0 * (1 + 1e-13)], [1.0, 6.0]], dtype=torch.float64)
    assert first_best(cols).tolist() == [1, 2]


def test_restarts_at_one_optimum_are_not_scored_again(monkeypatch):
    """Well-separated data: every screened restart reaches the same optimum
    (screen losses equal to ~1e-12), so none is scored on all the data
    before the continuation (one whole-data evaluation, the continuation's
    final loss, instead of n_init + 1), and the fit is the one that scores
    them all (screening off) reaches."""
    import bayesgmm.fitting
    import bayesgmm.mixture
    from bayesgmm.datasets import make_mixture

    X, _, _ = make_mixture(40000, 4, 2, separation=6.0, random_state=1)
    kw = dict(covariance_type="diag", n_init=4, random_state=0, **CPU)
    calls = []
    real = bayesgmm.mixture.negative_log_joint
    monkeypatch.setattr(bayesgmm.mixture, "negative_log_joint",
                        lambda *a, **k: calls.append(a[1].weights.shape[0]) or real(*a, **k))
    screened = BayesianGMM(4, **kw).fit(X)
    assert calls == []
    # Each other restart ends with the kept one's first loss on all the data
    # (the continuation's start: the same point).
    kept = screened.restart_losses_[screened.best_restart_]
    others = [h[-1] for r, h in enumerate(screened.restart_losses_) if r != screened.best_restart_]
    assert len(set(others)) == 1 and others[0] in kept and others[0] >= kept[-1]
    monkeypatch.setattr(bayesgmm.fitting, "SCREEN_ROWS", 10 ** 9)   # screening off
    whole = BayesianGMM(4, **kw).fit(X)
    assert screened.loss_ == pytest.approx(whole.loss_, rel=1e-7)
    # The same mixture, its components possibly in another order (every
    # restart ends at it, each with its own labelling).
    perm = align(whole, screened)
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(screened.means_[perm], whole.means_, atol=1e-4)


@pytest.mark.parametrize("seed, groups", [(0, 4), (2, 3)])
def test_restarts_at_distinct_points_are_each_scored_on_all_the_data(monkeypatch, seed, groups):
    """Overlapping data: the screened restarts end at distinct points (all
    four, or three with two at one point); each distinct point is scored on
    all the data, and the choice and the fit are those of scoring every
    restart (the grouping turned off)."""
    import bayesgmm.mixture
    from bayesgmm.datasets import make_mixture

    X, _, _ = make_mixture(40000, 6, 2, separation=1.5, random_state=seed)
    kw = dict(covariance_type="diag", n_init=4, random_state=0, **CPU)
    real, seen = bayesgmm.mixture.same_optimum, []
    monkeypatch.setattr(bayesgmm.mixture, "same_optimum",
                        lambda losses: seen.append(real(losses)) or seen[-1])
    grouped = BayesianGMM(6, **kw).fit(X)
    assert np.unique(seen[0]).size == groups
    monkeypatch.setattr(bayesgmm.mixture, "same_optimum", lambda losses: np.arange(losses.size))
    every = BayesianGMM(6, **kw).fit(X)
    assert grouped.best_restart_ == every.best_restart_
    assert grouped.loss_ == every.loss_
    # A restart at another's point ends with that one's loss on all the data
    # (equal to its own to 1e-7); the others' histories are unchanged.
    for r, (a, b) in enumerate(zip(grouped.restart_losses_, every.restart_losses_)):
        np.testing.assert_allclose(a, b, rtol=1e-12 if seen[0][r] == r else 1e-7)


def test_svi_runs_only_where_em_stopped_short(petal):
    X = petal
    converged = BayesianGMM(2, random_state=0, **CPU).fit(X)          # default max_iter=1000
    em_only = BayesianGMM(2, max_iter=0, random_state=0, **CPU).fit(X)
    assert converged.converged_ and converged.n_iter_ == em_only.n_iter_
    np.testing.assert_array_equal(converged.losses_, em_only.losses_)
    short = BayesianGMM(2, em_max_iter=2, max_iter=300, random_state=0, **CPU).fit(X)
    assert short.n_iter_ > 2          # SVI continued from the unconverged EM
    assert short.loss_ <= BayesianGMM(2, em_max_iter=2, max_iter=0, random_state=0,
                                      **CPU).fit(X).loss_


def test_warm_start_continues_the_previous_fit(petal):
    from bayesgmm.datasets import make_mixture

    X, _, _ = make_mixture(3000, 3, 2, separation=2.0, random_state=1)
    kw = dict(n_init=1, max_iter=0, tol=0.0, random_state=0, **CPU)
    once = BayesianGMM(3, em_max_iter=30, **kw).fit(X)
    warm = BayesianGMM(3, em_max_iter=3, warm_start=True, **kw)
    losses = [warm.fit(X).loss_ for _ in range(10)]          # 10 x 3 EM iterations
    assert np.all(np.diff(losses) <= 1e-9 * abs(losses[0]))  # each call continues (EM ascent)
    assert warm.loss_ == pytest.approx(once.loss_, rel=1e-7)
    np.testing.assert_allclose(np.sort(warm.means_, 0), np.sort(once.means_, 0), atol=1e-4)
    # Another shape of problem: a clear error, and the fitted model kept.
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit.*"
                                         "set warm_start=False"):
        warm.set_params(n_components=2).fit(X)
    assert warm.means_.shape == (3, 2)
    # Without warm_start every fit starts afresh.
    cold = BayesianGMM(3, em_max_iter=3, **kw)
    assert cold.fit(X).loss_ == cold.fit(X).loss_


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_warm_start_keeps_the_previous_covariance_prior_whole(covariance_type):
    """(From an audit.) A warm start continues the previous fit's
    objective: its covariance prior, scale and degrees of freedom together.
    After a fit on data with 40% missing (whose default Wishart counts 1/q
    points), a warm fit on complete data took the old scale with a new
    dof, a prior neither fit had.  A field given now replaces the old one;
    warm_start=False returns to the data's defaults (also after
    set_params(priors=None), which leaves the previous prior in force)."""
    from bayesgmm import GMMClassifier, Priors
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (150, 3)), rng.normal(5, 1, (150, 3))]
    Xn = X.copy()
    Xn[rng.random(X.shape) < 0.4] = np.nan
    Xn[np.isnan(Xn).all(1), 0] = 0.0
    y = np.arange(300) % 2
    kw = dict(n_init=1, missing="marginalize", covariance_type=covariance_type, **CPU)
    fields = ("covariance_scale", "covariance_dof") if covariance_type == "full" \
        else ("scale_shape", "scale_rate")
    for make, args in ((lambda **k: BayesianGMM(2, **k), ()), (lambda **k: GMMClassifier(2, **k), (y,))):
        est = make(warm_start=True, **kw).fit(Xn, *args)
        first = est.priors_ if isinstance(est, BayesianGMM) else est.priors_[0]
        warm = est.fit(X, *args)
        got = warm.priors_ if isinstance(warm, BayesianGMM) else warm.priors_[0]
        for f in fields:
            np.testing.assert_array_equal(getattr(got, f), getattr(first, f))
        fresh = make(**kw).fit(X, *args)
        p_fresh = fresh.priors_ if isinstance(fresh, BayesianGMM) else fresh.priors_[0]
        if covariance_type == "full":      # the missing share moved the default dof
            assert first.covariance_dof > p_fresh.covariance_dof
        # A field given now wins; warm_start=False gives the data's defaults.
        given = {"covariance_scale": 0.5} if covariance_type == "full" else {"scale_rate": 0.5}
        warm = est.set_params(priors=Priors(**given)).fit(X, *args)
        got = warm.priors_ if isinstance(warm, BayesianGMM) else warm.priors_[0]
        np.testing.assert_array_equal(np.diag(got.covariance_scale) if covariance_type == "full"
                                      else got.scale_rate, [0.5] * 3)
        cold = est.set_params(priors=None, warm_start=False).fit(X, *args)
        got = cold.priors_ if isinstance(cold, BayesianGMM) else cold.priors_[0]
        for f in fields:
            np.testing.assert_array_equal(getattr(got, f), getattr(p_fresh, f))


def test_partial_fit_on_a_shallow_copy_leaves_the_original_stream():
    """(From an audit.) partial_fit updated its running statistics in
    place, so a call on copy.copy(g) advanced g's stream too."""
    import copy
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(5, 1, (200, 2))]
    g = BayesianGMM(2, n_init=1, **CPU).fit(X[:200]).partial_fit(X[200:250])
    reference = copy.deepcopy(g)
    copy.copy(g).partial_fit(X[250:300])
    g.partial_fit(X[300:])
    reference.partial_fit(X[300:])
    np.testing.assert_array_equal(g.means_, reference.means_)
    assert g.n_partial_fits_ == reference.n_partial_fits_


def test_shape_errors_keep_scikit_learns_words_and_add_the_remedy(tmp_path):
    """No rows, no columns, or another number of features than the fit's:
    scikit-learn's message (its checks match it) and then what to do, for
    arrays, tensors and memmaps alike."""
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["a", "b"])
    gmm = BayesianGMM(2, n_init=1, device="cpu", random_state=0).fit(X)
    np.save(tmp_path / "three.npy", np.zeros((5, 3)))
    np.save(tmp_path / "none.npy", np.zeros((0, 2)))
    wrong = [np.zeros((5, 3)), torch.zeros(5, 3), np.load(tmp_path / "three.npy", mmap_mode="r")]
    empty = [np.zeros((0, 2)), torch.zeros(0, 2), np.load(tmp_path / "none.npy", mmap_mode="r")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # unnamed columns
        for Z in wrong:
            with pytest.raises(ValueError, match=r"X has 3 features, but BayesianGMM is "
                                                 r"expecting 2 features as input: give the 2 "
                                                 r"feature\(s\) the model was fitted on "
                                                 r"\['a', 'b'\], in that order$"):
                gmm.predict(Z)
        for Z in empty:
            with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\).*: X needs at "
                                                 r"least one row"):
                gmm.score_samples(Z)
    # Other columns than the fit's (renamed, reordered, one more): scikit-
    # learn's lists of names, then the selection to pass.
    clf = GMMClassifier(1, n_init=1, device="cpu", random_state=0).fit(X, np.arange(60) % 2)
    for Z in (X[["b", "a"]], X.rename(columns={"a": "x"}), X.assign(c=1.0)):
        for call in (gmm.predict, gmm.score_samples, clf.predict_proba):
            with pytest.raises(ValueError) as exc:
                call(Z)
            lines = str(exc.value).splitlines()
            assert lines[0] == "The feature names should match those that were passed during fit."
            assert lines[-1] == ("Pass the columns the model was fitted on, in that order: "
                                 "X[['a', 'b']] (a DataFrame's columns are matched by name)")
    for est in (BayesianGMM(2), GMMClassifier(1)):
        with pytest.raises(ValueError, match=r"0 feature\(s\).*: X needs at least one column"):
            est.fit(np.zeros((6, 0)), *([np.arange(6) % 2] if isinstance(est, GMMClassifier)
                                        else []))
