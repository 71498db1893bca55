"""Posterior inference (``inference="nuts"`` and ``"vi"``): draws checked
against an independent numerical integration of the same posterior, label
alignment, the posterior predictive against scipy densities, convergence
diagnostics against the textbook formulas, persistence, and the refused
combinations.

The NUTS runs are tiny (two chains of tens to a hundred draws), shared by
module-scoped fixtures; their tolerances are Monte Carlo errors computed
from the draws' own effective sample sizes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from bayesgmm import BayesianGMM, GMMClassifier, Priors
from bayesgmm import posterior as P
from bayesgmm.covariance import COVARIANCE_TYPES

CPU = dict(device="cpu")
# Tiny runs: the ESS/plateau warnings are expected and not what these test.
quiet = pytest.mark.filterwarnings("ignore:NUTS draws may not:UserWarning",
                                   "ignore:the variational fit was still:UserWarning")


def _two_clusters(n_per: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-4.0, 1.0, n_per), rng.normal(4.0, 1.0, n_per)])[:, None]


@pytest.fixture(scope="module")
def k1_data():
    rng = np.random.default_rng(1)
    X = rng.normal(1.0, 1.5, size=(25, 1))
    priors = Priors(mean_loc=0.0, mean_scale=3.0, scale_shape=2.0, scale_rate=2.0)
    return X, priors


@pytest.fixture(scope="module")
def k1_nuts(k1_data):
    X, priors = k1_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return BayesianGMM(1, covariance_type="diag", priors=priors, inference="nuts",
                           n_samples=240, n_chains=2, n_warmup=50, random_state=0, **CPU).fit(X)


@pytest.fixture(scope="module")
def k2_nuts():
    X = _two_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gmm = BayesianGMM(2, covariance_type="diag", inference="nuts", n_samples=120,
                          n_chains=2, n_warmup=40, random_state=0, **CPU).fit(X)
    return X, gmm


# ------------------------------------------------------------------ NUTS
def test_nuts_matches_numerical_integration_of_the_posterior(k1_data, k1_nuts):
    """K = 1, one feature: the posterior of (mean, standard deviation) on a
    float64 grid from the model's log joint written out by hand (Normal
    prior on the mean, InverseGamma on the standard deviation, Gaussian
    likelihood, all in the data's units), against NUTS's draws."""
    X, p = k1_data
    x = X[:, 0]
    mu = np.linspace(-3.0, 5.0, 801)[:, None]
    sd = np.linspace(0.3, 5.0, 941)[None, :]
    n, xbar = len(x), x.mean()
    # sum_i log N(x_i | mu, sd) from the sufficient statistics.
    loglik = (-n * np.log(sd) - 0.5 * n * np.log(2 * np.pi)
              - (((x - xbar) ** 2).sum() + n * (xbar - mu) ** 2) / (2 * sd ** 2))
    logp = (stats.norm.logpdf(mu, p.mean_loc, p.mean_scale)
            + stats.invgamma.logpdf(sd, p.scale_shape, scale=p.scale_rate) + loglik)
    post = np.exp(logp - logp.max())
    post /= post.sum()
    assert post[[0, -1], :].sum() + post[:, [0, -1]].sum() < 1e-8       # the grid holds it all
    exact = {"means": (post * mu).sum(), "covariances": (post * sd ** 2).sum()}
    exact_sd = {"means": np.sqrt((post * (mu - exact["means"]) ** 2).sum()),
                "covariances": np.sqrt((post * (sd ** 2 - exact["covariances"]) ** 2).sum())}
    draws = k1_nuts.posterior_samples()
    assert draws["weights"].shape == (240, 1) and np.all(draws["weights"] == 1.0)
    for name in ("means", "covariances"):
        d = draws[name].ravel()
        ess = float(k1_nuts.ess_[name].min())
        assert ess > 50
        # Monte Carlo error of the posterior mean from the draws' own ESS.
        assert abs(d.mean() - exact[name]) < 4 * exact_sd[name] / np.sqrt(ess), name
        assert d.std() == pytest.approx(exact_sd[name], rel=0.25), name


def test_nuts_rhat_and_ess_reported(k1_nuts, k2_nuts):
    for gmm, K in ((k1_nuts, 1), (k2_nuts[1], 2)):
        assert set(gmm.rhat_) == set(gmm.ess_) == {"weights", "means", "covariances"}
        assert gmm.rhat_["means"].shape == (K, 1) and gmm.rhat_["weights"].shape == (K,)
        assert gmm.rhat_["covariances"].shape == gmm.covariances_.shape
        for name, r in gmm.rhat_.items():
            assert np.all(r < 1.05), (name, r)
        assert gmm.n_divergent_ == 0
    # A single component's weight is the constant 1: R-hat 1, every draw effective.
    assert k1_nuts.rhat_["weights"][0] == 1.0 and k1_nuts.ess_["weights"][0] == 240


def test_effective_sample_size_is_bounded_as_stan_bounds_it():
    """Anticorrelated draws (alternating about the mean): Pyro's estimate is
    negative; reported as Stan reports it, N log10 N.  Independent draws
    keep Pyro's estimate (near N); too few draws stay NaN."""
    rng = np.random.default_rng(0)
    alternating = np.array([[(-1) ** t + 0.01 * rng.normal() for t in range(20)]
                            for _ in range(2)])
    raw = float(P.effective_sample_size(torch.as_tensor(alternating), chain_dim=0,
                                        sample_dim=1))
    assert raw < 0                                 # what is bounded
    white = rng.normal(size=(2, 200))
    _, ess = P.diagnostics({"alt": alternating[:, :, None], "white": white[:, :, None],
                            "short": white[:, :3, None]})
    np.testing.assert_allclose(ess["alt"], [40 * np.log10(40)])
    expected = float(P.effective_sample_size(torch.as_tensor(white), chain_dim=0, sample_dim=1))
    assert 200 < expected < 600
    np.testing.assert_allclose(ess["white"], [expected])
    assert np.isnan(ess["short"]).all()


def test_nuts_draws_aligned_to_the_map(k2_nuts):
    """Well-separated clusters: every draw's component k sits at the MAP's
    component k (a label switch would put it at the other cluster, 8 apart)."""
    _, gmm = k2_nuts
    d = gmm.posterior_samples()
    assert d["means"].shape == (120, 2, 1) and d["covariances"].shape == (120, 2, 1)
    assert np.all(np.abs(d["means"][:, :, 0] - gmm.means_[:, 0]) < 1.0)
    assert np.all(np.abs(d["weights"] - gmm.weights_) < 0.25)


def test_credible_intervals_cover_the_truth(k2_nuts):
    _, gmm = k2_nuts
    order = np.argsort(gmm.means_[:, 0])
    lo, hi = gmm.credible_interval("means", level=0.95)
    assert lo.shape == gmm.means_.shape
    truth = np.array([-4.0, 4.0])
    assert np.all((lo[order, 0] < truth) & (truth < hi[order, 0]))
    lo, hi = gmm.credible_interval("covariances", level=0.95)
    assert np.all((lo < 1.0) & (1.0 < hi))
    lo, hi = gmm.credible_interval("weights", level=0.95)
    assert np.all((lo < 0.5) & (0.5 < hi))
    # A wider level gives a wider interval, around the MAP.
    lo50, hi50 = gmm.credible_interval("means", level=0.5)
    lo95, hi95 = gmm.credible_interval("means", level=0.95)
    assert np.all(lo95 <= lo50) and np.all(hi50 <= hi95)


def test_posterior_samples_subsets(k2_nuts):
    _, gmm = k2_nuts
    all_ = gmm.posterior_samples()
    sub = gmm.posterior_samples(10, random_state=3)
    assert {k: v.shape[0] for k, v in sub.items()} == {k: 10 for k in all_}
    again = gmm.posterior_samples(10, random_state=3)
    for k in all_:
        np.testing.assert_array_equal(sub[k], again[k])
        # The same draws in every array: rows of the stored draws.
        rows = [int(np.flatnonzero((all_["means"] == m).all((1, 2)))[0]) for m in sub["means"]]
        np.testing.assert_array_equal(sub[k], all_[k][rows])
    all_["means"][:] = 0         # copies: the stored draws are untouched
    assert not np.all(gmm.posterior_samples()["means"] == 0)
    with pytest.raises(ValueError, match="only 120 posterior draws"):
        gmm.posterior_samples(121)


def test_chains_differ(k2_nuts):
    """Chains differ from each other (each from its own Laplace draw)."""
    _, gmm = k2_nuts
    m = gmm.posterior_samples()["means"]
    assert not np.allclose(m[:60], m[60:])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_potential_is_the_log_joint_in_unconstrained_coordinates(covariance_type):
    """What NUTS samples: Pyro's potential of gmm_model (assignments
    enumerated, the positive definite reparametrisation for Wishart sites)
    equals the closed-form negative log joint of bayesgmm.fitting minus the
    log Jacobian of the map from unconstrained coordinates, the Jacobian
    taken by autograd, at random points."""
    from bayesgmm.covariance import get
    from bayesgmm.fitting import Groups, negative_log_joint
    from bayesgmm.priors import MixtureParams, Standardizer

    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(-2, 1, (15, 2)), rng.normal(2, 0.7, (15, 2))])
    gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    family = get(covariance_type, 2)
    std = Standardizer(center=X.mean(0), scale=X.std(0))
    f64 = torch.float64
    start = std.params_to_std(gmm.weights_, gmm.means_, gmm.covariances_, family, "cpu", f64)
    pt = std.priors(gmm.priors_, "cpu", f64)
    Xt = torch.as_tensor((X - std.center) / std.scale)
    target = P._Target(Xt, pt, family, start, None)
    init, potential, transforms = P._potential(target.model, target.init_values, jit=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        z = {k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=f64) for k, v in init.items()}
        # Constrained values, and the log Jacobian of each map by autograd:
        # the simplex by its first K - 1 coordinates, a positive definite
        # matrix by its lower triangle.
        logdet, values = 0.0, {}
        for name, u in z.items():
            inv = transforms[name].inv
            values[name] = inv(u)
            if name == "means":
                continue

            def f(v, inv=inv, name=name):
                if name == "weights":
                    return inv(v)[:-1]
                if target.transform is not None:      # the positive definite vector site
                    r, c = torch.tril_indices(2, 2)
                    return target.transform(v)[..., r, c].reshape(-1)
                return inv(v).reshape(-1)
            J = torch.autograd.functional.jacobian(f, u).reshape(u.numel(), u.numel())
            logdet += float(torch.slogdet(J)[1])
        cov = (values[family.site] if target.transform is None
               else target.transform(z[target.cov_site]))
        params = MixtureParams(values["weights"], values["means"], cov).map(lambda t: t[None])
        nlj = float(negative_log_joint(Groups.single(Xt), params,
                                       torch.zeros(1, dtype=torch.long), pt, family)[0])
        assert float(potential(z)) == pytest.approx(nlj - logdet, rel=1e-10, abs=1e-8)


def test_process_potential_is_the_stick_breaking_log_joint():
    """What NUTS samples with the Dirichlet-process prior: the potential of
    gmm_model with the ``sticks`` site equals the log joint written out by
    hand (the flat-Dirichlet negative log joint of bayesgmm.fitting, whose
    weight term is log Gamma(K), with that term swapped for scipy's Beta(1,
    alpha) densities of the sticks that break into the weights) minus the
    log Jacobian of the sigmoid of each stick."""
    from dataclasses import replace
    from scipy.special import gammaln
    from bayesgmm.covariance import get
    from bayesgmm.fitting import Groups, negative_log_joint
    from bayesgmm.models import stick_breaking, sticks_from_weights
    from bayesgmm.priors import MixtureParams, Standardizer

    rng = np.random.default_rng(6)
    X = np.concatenate([rng.normal(-2, 1, (15, 2)), rng.normal(2, 0.7, (15, 2)),
                        rng.normal([0, 4], 0.5, (10, 2))])
    K, alpha = 3, 0.7
    gmm = BayesianGMM(K, covariance_type="diag", random_state=0, **CPU).fit(X)
    family = get("diag", 2)
    std = Standardizer(center=X.mean(0), scale=X.std(0))
    f64 = torch.float64
    start = std.params_to_std(gmm.weights_, gmm.means_, gmm.covariances_, family, "cpu", f64)
    pt_dp = std.priors(replace(gmm.priors_, weight_concentration=np.full(K, alpha)), "cpu", f64)
    pt_flat = std.priors(replace(gmm.priors_, weight_concentration=np.ones(K)), "cpu", f64)
    Xt = torch.as_tensor((X - std.center) / std.scale)
    target = P._Target(Xt, pt_dp, family, start, None, "dirichlet_process")
    assert target.latent == ("sticks", "means", "scales")
    # The start's sticks break into the start's weights; sticks_from_weights
    # inverts stick_breaking.
    torch.testing.assert_close(stick_breaking(target.start["sticks"]), start.weights)
    v = torch.rand(5, 3, dtype=f64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sticks_from_weights(stick_breaking(v)), v)
    init, potential, transforms = P._potential(target.model, target.init_values, jit=False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = {k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=f64) for k, v in init.items()}
        v = transforms["sticks"].inv(z["sticks"])
        scales = transforms["scales"].inv(z["scales"])
        params = MixtureParams(stick_breaking(v), transforms["means"].inv(z["means"]),
                               scales).map(lambda t: t[None])
        nlj_flat = float(negative_log_joint(Groups.single(Xt), params,
                                            torch.zeros(1, dtype=torch.long), pt_flat, family)[0])
        vn = v.numpy()
        log_sticks = stats.beta.logpdf(vn, 1.0, alpha).sum()
        nlj = nlj_flat + gammaln(K) - log_sticks
        # log Jacobians: sigmoid per stick, exp per scale.
        logdet = float(np.log(vn * (1 - vn)).sum() + z["scales"].sum())
        assert float(potential(z)) == pytest.approx(nlj - logdet, rel=1e-10, abs=1e-8)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_positive_definite_vector_is_a_bijection_with_its_jacobian(D):
    t = P.PositiveDefiniteVector(D)
    u = torch.randn(4, D * (D + 1) // 2, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(D))
    M = t(u)
    assert M.shape == (4, D, D)
    assert bool((torch.linalg.eigvalsh(M) > 0).all())
    torch.testing.assert_close(t.inv(M), u)
    r, c = torch.tril_indices(D, D)
    for i in range(4):
        J = torch.autograd.functional.jacobian(lambda v: t(v)[r, c], u[i])
        assert float(t.log_abs_det_jacobian(u[i], M[i])) == pytest.approx(
            float(torch.slogdet(J)[1]), rel=1e-10)


# ------------------------------------------------------------- diagnostics
def _split_rhat(a: np.ndarray) -> np.ndarray:
    """Gelman et al.'s split R-hat, written out: a (chains, draws, ...)."""
    h = a.shape[1] // 2
    s = np.concatenate([a[:, :h], a[:, h:2 * h]], 0)        # 2C chains of h draws
    W = s.var(1, ddof=1).mean(0)
    B = h * s.mean(1).var(0, ddof=1)
    var = (h - 1) / h * W + B / h
    return np.sqrt(var / W)


def test_diagnostics_against_the_textbook_split_rhat():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 200, 3))
    bad = good + np.array([0.0, 0.0, 0.0, 1.0])[:, None, None]    # one chain shifted by 1 sd
    rhat, ess = P.diagnostics({"good": good, "bad": bad})
    np.testing.assert_allclose(rhat["good"], _split_rhat(good), rtol=1e-6)
    np.testing.assert_allclose(rhat["bad"], _split_rhat(bad), rtol=1e-6)
    assert np.all(rhat["good"] < 1.01) and np.all(rhat["bad"] > 1.05)
    assert np.all(ess["good"] > 400)          # independent draws: ESS near 800


def test_diagnostics_with_too_few_draws_per_chain_say_so():
    rhat, ess = P.diagnostics({"means": np.random.default_rng(2).normal(size=(2, 3, 1))})
    assert np.isnan(rhat["means"]).all() and np.isnan(ess["means"]).all()
    with pytest.warns(UserWarning, match="R-hat of 'means' could not be computed"):
        problems = P.check_convergence(rhat, ess, 2)
    # Said once (not also as "effective sample size ... is nan"); an ESS
    # alone that cannot be computed is said as such.
    assert problems == ["R-hat of 'means' could not be computed (fewer than 4 draws per chain, "
                        "or draws that never moved from the start)"]
    assert P.check_convergence({}, ess, 2, warn=False) == [
        "effective sample size of 'means' could not be computed (fewer than 4 draws per chain)"]


def test_a_sampler_that_never_moved_is_not_reported_as_converged():
    # One chain whose every draw is its start: pyro.ops.stats gives NaN
    # (0 / 0); it must not pass as R-hat 1 with an effective sample size
    # of every draw, as an element fixed by the model does (K = 1 weight).
    stuck = {"weights": np.full((1, 50, 2), 0.5), "means": np.full((1, 50, 2, 1), 3.0)}
    rhat, ess = P.diagnostics(stuck)
    assert all(np.isnan(r).all() for r in rhat.values())
    assert all((e == 1.0).all() for e in ess.values())
    problems = P.check_convergence(rhat, ess, 1, warn=False)
    assert "never moved" in problems[0] and any("is 1 < 100" in p for p in problems)
    # Fewer than 4 draws: stuck draws are still one draw, not 3.
    _, ess3 = P.diagnostics({k: v[:, :3] for k, v in stuck.items()})
    assert all((e == 1.0).all() for e in ess3.values())
    # A weight fixed by the model beside means that move keeps R-hat 1 and
    # every draw; NaN elements (a class's padded components) stay NaN.
    rng = np.random.default_rng(3)
    fixed = {"weights": np.ones((2, 50, 1)),
             "means": np.concatenate([rng.normal(size=(2, 50, 1, 1)),
                                      np.full((2, 50, 1, 1), np.nan)], 2)}
    rhat, ess = P.diagnostics(fixed)
    assert rhat["weights"].tolist() == [1.0] and ess["weights"].tolist() == [100.0]
    assert np.isfinite(rhat["means"][0]).all() and np.isnan(rhat["means"][1]).all()
    assert np.isnan(ess["means"][1]).all()


def test_a_stuck_chain_beside_a_moving_one_has_rhat_inf_and_still_saves(tmp_path):
    # (From an independent audit.) Half-chains that each stand still but
    # differ have no within-chain spread: split R-hat is +inf (Pyro's, and
    # the warning says so).  save() refused such a fit ("holds inf, which
    # no chain gives") with a remedy that could not help.
    a = np.zeros((2, 8, 1))
    a[1] = 1.0
    a[1, 4:] = 2.0
    rhat, _ = P.diagnostics({"x": a})
    assert np.isposinf(rhat["x"]).all()
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, 160)
    X = np.c_[6.0 * z, 6.0 * z] + rng.normal(size=(160, 2)) * [1.0, 1.3]
    with pytest.warns(UserWarning, match="R-hat of 'means' is inf"):
        gmm = BayesianGMM(1, covariance_type="spherical", inference="nuts", n_warmup=0,
                          n_samples=16, n_chains=2, n_init=1, random_state=6,
                          device="cpu").fit(X)
    assert np.isposinf(gmm.rhat_["means"]).all()
    gmm.save(tmp_path / "stuck.bgmm")
    back = BayesianGMM.load(tmp_path / "stuck.bgmm")
    for site in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(back.rhat_[site], gmm.rhat_[site])
    np.testing.assert_array_equal(back.predict_proba(X), gmm.predict_proba(X))


def test_elements_the_model_fixes_are_not_reported_as_a_low_sample_size():
    # A K = 1 weight is 1 in every draw: its effective sample size is the
    # number of draws (ArviZ's convention), which says nothing of the
    # chains; with fewer draws than the check's 100 per chain it must not
    # be reported, while the means, that move, still are.
    rng = np.random.default_rng(4)
    draws = {"weights": np.ones((2, 60, 1)), "means": rng.normal(size=(2, 60, 1, 1))}
    rhat, ess = P.diagnostics(draws)
    fixed = P.fixed_elements(draws)
    assert fixed["weights"].all() and not fixed["means"].any()
    problems = P.check_convergence(rhat, ess, 2, warn=False, fixed=fixed)
    assert [p for p in problems if "'means'" in p] and not [p for p in problems if "'weights'" in p]
    assert any("'weights' is 120 < 200" in p for p in
               P.check_convergence(rhat, ess, 2, warn=False))      # what it said before
    # Nothing moves: a stuck sampler, reported whatever the mask.
    stuck = {"weights": np.ones((2, 60, 1)), "means": np.zeros((2, 60, 1, 1))}
    assert not any(v.any() for v in P.fixed_elements(stuck).values())
    # An effective sample size a hair below the bar reads below it.
    assert P.check_convergence({"means": np.ones(2)}, {"means": np.array([199.97, 900.0])}, 2,
                               warn=False) == ["effective sample size of 'means' is 199 < 200"]


def test_divergences_counted_with_fewer_than_four_draws(monkeypatch):
    # n_divergent_ is Pyro's own record of divergent transitions after
    # warmup, also when R-hat cannot be computed (3 draws); this short run
    # diverges once.
    recorded = []

    class Recording(P.MCMC):
        def run(self, *args, **kwargs):
            out = super().run(*args, **kwargs)
            recorded.append(sum(len(d["divergences"]) for d in self._diagnostics))
            return out

    monkeypatch.setattr(P, "MCMC", Recording)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-3, 1, 60), rng.normal(3, 1, 60)][:, None]
    with pytest.warns(UserWarning, match="divergent transition") as caught:
        g = BayesianGMM(2, inference="nuts", n_samples=3, n_chains=1, n_warmup=20,
                        random_state=1, device="cpu").fit(X)
    # Only a Dirichlet-process fit's warning speaks of the number of components.
    assert not any("n_effective_components_" in str(w.message) for w in caught)
    assert recorded[0] >= 1
    assert g.n_divergent_ == sum(recorded)


def test_convergence_warning_names_the_site_and_the_remedy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 300, 2))
    a[1] += 2.0
    rhat, ess = P.diagnostics({"covariances": a})
    with pytest.warns(UserWarning, match=r"R-hat of 'covariances' \(Pyro site 'scales'\) is "
                                         r"\d\.\d+ > 1\.01.*raise n_warmup and n_samples"):
        problems = P.check_convergence(rhat, ess, 2, sites={"covariances": "scales"})
    assert problems
    with pytest.warns(UserWarning, match="effective sample size of 'means' is"):
        P.check_convergence({"means": np.ones(2)}, {"means": np.array([150.0, 800.0])}, 2)
    with pytest.warns(UserWarning, match="3 divergent"):
        P.check_convergence({}, {}, 2, n_divergent=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = rng.normal(size=(2, 400, 2))
        assert P.check_convergence(*P.diagnostics({"means": good}), 2) == []


# ------------------------------------------------------------------- VI
@quiet
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vi_shapes_elbo_and_predictive_against_scipy(covariance_type):
    """Every covariance type: draws in scikit-learn's layouts, a finite
    ELBO, and the posterior predictive score_samples / predict_proba equal
    to scipy's densities averaged over the draws."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal([-3, 0], [1.0, 0.5], (40, 2)),
                        rng.normal([3, 1], [0.7, 1.0], (40, 2))])
    gmm = BayesianGMM(2, covariance_type=covariance_type, inference="vi", n_samples=15,
                      max_iter=150, random_state=0, **CPU).fit(X)
    d = gmm.posterior_samples()
    shapes = {"full": (15, 2, 2, 2), "tied": (15, 2, 2), "diag": (15, 2, 2), "spherical": (15, 2)}
    assert d["weights"].shape == (15, 2) and d["means"].shape == (15, 2, 2)
    assert d["covariances"].shape == shapes[covariance_type]
    assert np.isfinite(gmm.elbo_) and not hasattr(gmm, "rhat_")
    np.testing.assert_allclose(d["weights"].sum(1), 1.0, rtol=1e-12)

    Xt = rng.normal(0, 3, (7, 2))
    def matrix(c: np.ndarray, k: int) -> np.ndarray:
        """Component k's covariance matrix from one draw's covariances."""
        if covariance_type == "full":
            return c[k]
        if covariance_type == "tied":
            return c
        if covariance_type == "diag":
            return np.diag(c[k])
        return c[k] * np.eye(2)

    joint = np.empty((15, 7, 2))
    for s in range(15):
        for k in range(2):
            cov = matrix(d["covariances"][s], k)
            joint[s, :, k] = (np.log(d["weights"][s, k])
                              + stats.multivariate_normal(d["means"][s, k], cov).logpdf(Xt))
    want = logsumexp(joint, axis=(0, 2)) - np.log(15)
    # float32 predictions (the fit's dtype) against float64 scipy.
    np.testing.assert_allclose(gmm.score_samples(Xt), want, rtol=1e-5, atol=1e-4)
    assert gmm.score(Xt) == pytest.approx(want.mean(), rel=1e-5, abs=1e-4)
    resp = np.exp(logsumexp(joint, axis=0) - logsumexp(joint, axis=(0, 2))[:, None])
    np.testing.assert_allclose(gmm.predict_proba(Xt), resp, atol=1e-4)
    np.testing.assert_array_equal(gmm.predict(Xt), resp.argmax(1))
    # plug_in=True is the MAP's answer, that of an inference="map" fit.
    mapfit = BayesianGMM(2, covariance_type=covariance_type, random_state=0, **CPU).fit(X)
    np.testing.assert_allclose(gmm.score_samples(Xt, plug_in=True), mapfit.score_samples(Xt),
                               rtol=1e-6)
    np.testing.assert_allclose(gmm.means_, mapfit.means_)


@quiet
def test_nuts_with_the_dirichlet_process():
    """NUTS on the stick-breaking model, started from the variational
    posterior: the surplus components keep negligible weight in every
    draw's average, the point attributes are the draws' means, and the
    posterior predictive agrees with VI's on easy data."""
    from bayesgmm.datasets import make_mixture
    X, y, _ = make_mixture(300, 2, 2, separation=6, random_state=0)
    kw = dict(covariance_type="diag", weight_prior="dirichlet_process", random_state=0, **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # tiny run: ESS warnings expected
        nuts = BayesianGMM(4, inference="nuts", n_samples=80, n_chains=2, n_warmup=60,
                           **kw).fit(X)
    vi = BayesianGMM(4, inference="vi", **kw).fit(X)
    draws = nuts.posterior_samples()
    assert draws["weights"].shape == (80, 4)
    np.testing.assert_allclose(draws["weights"].sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(nuts.weights_, draws["weights"].mean(0), rtol=1e-12)
    np.testing.assert_allclose(nuts.means_, draws["means"].mean(0), rtol=1e-12)
    assert nuts.n_effective_components_ == vi.n_effective_components_ == 2
    big = np.sort(nuts.weights_)[::-1]
    assert big[:2].sum() > 0.97 and np.all(big[2:] < 0.02)
    # The two clusters' means, one per heavy component: near their sample
    # means (where the posterior concentrates; its sd here is 0.07-0.2, and
    # the sample means are up to 0.25 from the generator's).
    from scipy.optimize import linear_sum_assignment
    centres = np.stack([X[y == k].mean(0) for k in range(2)])
    heavy = nuts.means_[np.argsort(nuts.weights_)[-2:]]
    _, match = linear_sum_assignment(((centres[:, None] - heavy[None]) ** 2).sum(-1))
    np.testing.assert_allclose(heavy[match], centres, atol=0.15)
    assert nuts.rhat_["weights"].shape == (4,) and nuts.priors_.weight_concentration.tolist() \
        == [1.0] * 4
    assert nuts.score(X) == pytest.approx(vi.score(X), abs=0.05)


def test_process_nuts_start_is_checked():
    """The variational start of DP NUTS: max_iter=0 refused, and a start
    that stopped short warns at the caller's line."""
    X = _two_clusters(20)
    kw = dict(covariance_type="diag", weight_prior="dirichlet_process", inference="nuts",
              n_samples=4, n_chains=1, n_warmup=5, random_state=0, **CPU)
    with pytest.raises(ValueError, match="starts NUTS from the variational posterior.*"
                                         "max_iter=0: set max_iter > 0"):
        BayesianGMM(3, max_iter=0, **kw).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BayesianGMM(3, max_iter=1, **kw).fit(X)
    short = [w for w in caught if "still improving after" in str(w.message)]
    assert len(short) == 1 and short[0].filename == __file__
    # Its draws (4 of one chain) cannot be trusted: the warning says so, at
    # the caller's line, and that the number of components rests on them.
    nuts = [w for w in caught if "NUTS draws may not represent" in str(w.message)]
    assert len(nuts) == 1 and nuts[0].filename == __file__
    assert str(nuts[0].message).endswith("(n_effective_components_) and the weights rest on "
                                         "these draws: until they converge, inference='vi' "
                                         "chooses it more reliably")
    # tol=0 asks for every iteration: reaching max_iter is not warned about
    # (as for the MAP fit).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BayesianGMM(3, max_iter=1, tol=0.0, **kw).fit(X)
    assert not [w for w in caught if "still improving after" in str(w.message)]


def test_vi_close_to_nuts_on_easy_data(k2_nuts):
    X, nuts = k2_nuts
    vi = BayesianGMM(2, covariance_type="diag", inference="vi", n_samples=400, max_iter=600,
                     random_state=0, **CPU).fit(X)
    np.testing.assert_allclose(vi.means_, nuts.means_)                # the same MAP first
    a, b = vi.posterior_samples(), nuts.posterior_samples()
    for name, tol in (("means", 0.1), ("covariances", 0.1), ("weights", 0.03)):
        assert np.all(np.abs(a[name].mean(0) - b[name].mean(0)) < tol), name
        np.testing.assert_allclose(a[name].std(0), b[name].std(0), rtol=0.5)
    assert np.all(np.abs(a["means"].mean(0) - vi.means_) < 0.1)


def test_vi_elbo_against_the_log_evidence():
    """K = 1, one feature: log p(X) integrated numerically (the mean
    analytically: x ~ N(m0, s^2 I + s0^2 11'); the standard deviation s on a
    fine grid against its InverseGamma prior), all in the data's units.  The
    ELBO (``elbo_``, shifted from the standardised frame to the data's
    units) is below it, and close: the posterior is near Gaussian in
    (mean, log s), the guide's family."""
    rng = np.random.default_rng(2)
    X = rng.normal(0.5, 1.0, (30, 1))
    p = Priors(mean_loc=0.0, mean_scale=2.0, scale_shape=20.0, scale_rate=21.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gmm = BayesianGMM(1, covariance_type="diag", inference="vi", n_samples=50,
                          max_iter=700, priors=p, random_state=0, **CPU).fit(X)
    x = X[:, 0]
    n = len(x)
    log_s = np.linspace(np.log(0.3), np.log(4.0), 4001)
    s = np.exp(log_s)
    # log N(x; m0 1, s^2 I + s0^2 11') in closed form (matrix determinant lemma
    # and Sherman-Morrison), per s.
    d = x - p.mean_loc
    var0 = p.mean_scale ** 2
    quad = (d @ d) / s ** 2 - var0 * d.sum() ** 2 / (s ** 2 * (s ** 2 + n * var0))
    logdet = (n - 1) * np.log(s ** 2) + np.log(s ** 2 + n * var0)
    loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    integrand = loglik + stats.invgamma.logpdf(s, p.scale_shape, scale=p.scale_rate) + log_s
    log_evidence = logsumexp(integrand) + np.log(log_s[1] - log_s[0])
    assert integrand[[0, -1]].max() < integrand.max() - 30          # the grid holds it all
    assert np.isfinite(gmm.elbo_)
    assert log_evidence - 0.05 < gmm.elbo_ < log_evidence


@quiet
def test_vi_with_missing_values_and_weights():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    X[::7, 1] = np.nan
    with pytest.warns(UserWarning, match=r"feature\(s\) 1 \(missing in 1\d% of the rows\)"):
        gmm = BayesianGMM(2, covariance_type="full", inference="vi", missing="marginalize",
                          n_samples=20, max_iter=100, random_state=0, **CPU).fit(
            X, sample_weight=rng.integers(1, 3, len(X)).astype(float))
    assert np.isfinite(gmm.elbo_)
    assert np.all(np.isfinite(gmm.score_samples(X)))
    assert gmm.posterior_samples()["covariances"].shape == (20, 2, 2, 2)


# ------------------------------------------------------------- alignment
def test_align_draws_undoes_known_permutations():
    rng = np.random.default_rng(4)
    K, D, S = 3, 2, 50
    ref_w = np.array([0.2, 0.3, 0.5])
    ref_m = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    ref_c = np.stack([np.eye(D) * v for v in (0.5, 1.0, 2.0)])
    perms = np.stack([rng.permutation(K) for _ in range(S)])
    m = ref_m[perms] + rng.normal(0, 0.1, (S, K, D))
    w = ref_w[perms]
    c = ref_c[perms]
    from bayesgmm.covariance import get
    out = P.align_draws({"weights": w, "means": m, "covariances": c}, (ref_w, ref_m, ref_c),
                        get("full", D))
    np.testing.assert_allclose(out["weights"], np.broadcast_to(ref_w, (S, K)))
    assert np.all(np.abs(out["means"] - ref_m) < 0.5)
    np.testing.assert_allclose(out["covariances"], np.broadcast_to(ref_c, (S, K, D, D)))
    # A tied covariance has no component axis: left as it is.
    tied = np.broadcast_to(np.eye(D), (S, D, D))
    out = P.align_draws({"weights": w, "means": m, "covariances": tied},
                        (ref_w, ref_m, np.eye(D)), get("tied", D))
    np.testing.assert_allclose(out["weights"], np.broadcast_to(ref_w, (S, K)))
    assert out["covariances"] is tied


@quiet
def test_run_aligns_draws_of_a_permuted_start():
    """Chains (here VI's guide) that run in another labelling than the
    reference come back in the reference's."""
    from bayesgmm.covariance import get
    from bayesgmm.priors import Standardizer

    X = _two_clusters(40)
    gmm = BayesianGMM(2, covariance_type="diag", random_state=0, **CPU).fit(X)
    family = get("diag", 1)
    std = Standardizer(center=X.mean(0), scale=X.std(0))
    f64 = torch.float64
    flip = lambda a: np.ascontiguousarray(a[::-1])
    start = std.params_to_std(flip(gmm.weights_), flip(gmm.means_), flip(gmm.covariances_),
                              family, "cpu", f64)
    pt = std.priors(gmm.priors_, "cpu", f64)
    Xt = torch.as_tensor((X - std.center) / std.scale)
    settings = P.PosteriorSettings("vi", n_samples=50, max_steps=50)
    post = P.run(Xt, pt, family, start, std, (gmm.weights_, gmm.means_, gmm.covariances_),
                 settings, 0)
    assert np.all(np.abs(post.samples["means"][:, :, 0] - gmm.means_[:, 0]) < 1.0)


# ------------------------------------------------------------ persistence
def test_save_load_keeps_the_draws(tmp_path, k2_nuts):
    X, gmm = k2_nuts
    gmm.save(tmp_path / "m.bgmm")
    back = BayesianGMM.load(tmp_path / "m.bgmm")
    for k, v in gmm.posterior_samples().items():
        np.testing.assert_array_equal(back.posterior_samples()[k], v)
    for k, v in gmm.rhat_.items():
        np.testing.assert_array_equal(back.rhat_[k], v)
    np.testing.assert_allclose(back.score_samples(X), gmm.score_samples(X), rtol=1e-12)
    assert back.inference == "nuts" and back.n_divergent_ == gmm.n_divergent_


def test_load_refuses_damaged_draws(tmp_path, k2_nuts, monkeypatch):
    import copy

    from bayesgmm import persistence

    _, gmm = k2_nuts
    bad = copy.deepcopy(gmm)
    for name, draws, why in (
            ("bad", dict(bad._posterior, weights=bad._posterior["weights"] * 2),
             "posterior weights are not probability vectors"),
            ("bad2", dict(gmm._posterior, means=gmm._posterior["means"][:, :1]),
             "posterior means")):
        bad._posterior = draws
        # save refuses what load would (nothing is written) ...
        with pytest.raises(ValueError, match=f"cannot save to .*{why}"):
            bad.save(tmp_path / f"{name}.bgmm")
        assert not (tmp_path / f"{name}.bgmm").exists()
        # ... and a file damaged otherwise is refused by load.
        with monkeypatch.context() as m:
            m.setattr(persistence, "_check_loadable", lambda *args: None)
            bad.save(tmp_path / f"{name}.bgmm")
        with pytest.raises(ValueError, match=why):
            BayesianGMM.load(tmp_path / f"{name}.bgmm")


# ------------------------------------------------------------------ errors
def test_map_fit_has_no_draws():
    gmm = BayesianGMM(2, random_state=0, **CPU).fit(_two_clusters(20))
    for call in (lambda: gmm.posterior_samples(), lambda: gmm.credible_interval("means")):
        with pytest.raises(ValueError, match="inference='map'.*inference='vi'.*inference='nuts'"):
            call()
    # Predictions of a MAP fit are the same with and without plug_in.
    X = _two_clusters(5, seed=9)
    np.testing.assert_array_equal(gmm.score_samples(X), gmm.score_samples(X, plug_in=True))
    with pytest.raises(ValueError, match="plug_in must be True or False"):
        gmm.score_samples(X, plug_in="yes")


def test_bad_settings_and_combinations(tmp_path):
    X = _two_clusters(20)
    with pytest.raises(ValueError, match="inference must be one of"):
        BayesianGMM(2, inference="mcmc", **CPU).fit(X)
    with pytest.raises(ValueError, match="n_chains"):
        BayesianGMM(2, inference="nuts", n_chains=0, **CPU).fit(X)
    with pytest.raises(ValueError, match="n_samples"):
        BayesianGMM(2, inference="vi", n_samples=0, **CPU).fit(X)
    with pytest.raises(ValueError, match="n_warmup"):
        BayesianGMM(2, inference="nuts", n_warmup=-1, **CPU).fit(X)
    with pytest.raises(ValueError, match=r"batch_size=10 .*does not apply to inference='nuts'"
                                         r".*batch_size=None"):
        BayesianGMM(2, inference="nuts", batch_size=10, **CPU).fit(X)
    with pytest.raises(ValueError, match="max_iter=0: set max_iter > 0"):
        BayesianGMM(2, inference="vi", max_iter=0, **CPU).fit(X)
    path = tmp_path / "x.npy"
    np.save(path, X)
    with pytest.raises(ValueError, match="out-of-core row source: load X"):
        BayesianGMM(2, inference="vi", **CPU).fit(np.load(path, mmap_mode="r"))
    with pytest.raises(ValueError, match="partial_fit .* stale"):
        BayesianGMM(2, inference="vi", **CPU).partial_fit(X)
    gmm = BayesianGMM(2, covariance_type="diag", inference="vi", n_samples=5, max_iter=20,
                      random_state=0, **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gmm.fit(X)
    for name in ("scales", np.array("means"), ["means"]):
        with pytest.raises(ValueError, match="name must be one of"):
            gmm.credible_interval(name)
    assert np.array_equal(gmm.credible_interval(np.str_("means"))[0],
                          gmm.credible_interval("means")[0])
    for level in (0.0, 1.0, 1.5, float("nan"), float("inf"), "0.9", True):
        with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\), got .*"
                                             r"e\.g\. 0\.9"):
            gmm.credible_interval("means", level)
    for bad in (-1, 2 ** 32, "abc", 1.5, True, np.False_):
        with pytest.raises(ValueError, match=r"random_state must be None, an integer from 0 to "
                                             r"2\*\*32 - 1 or a numpy.random.RandomState"):
            gmm.posterior_samples(2, random_state=bad)
        with pytest.raises(ValueError, match=r"random_state must be None"):
            gmm.posterior_samples(random_state=bad)     # checked when all draws are asked too
    with pytest.raises(ValueError, match=r"random_state must be .*got -1"):
        BayesianGMM(2, random_state=-1, **CPU).fit(X)
    # A model holding draws refuses partial_fit even with inference set back to "map".
    # Its message names the held draws, not draws "of inference='map'".
    with pytest.raises(ValueError, match=r"partial_fit .*holds the posterior draws of its last "
                                         r"fit.* stale: refit with fit") as err:
        gmm.set_params(inference="map").partial_fit(X)
    assert "draws of inference='map'" not in str(err.value)
    # A MAP refit drops the draws.
    gmm.fit(X)
    with pytest.raises(ValueError, match="inference='map'"):
        gmm.posterior_samples()


def test_process_group_refused(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        with pytest.raises(ValueError, match="process_group splits them over processes"):
            BayesianGMM(2, inference="nuts", **CPU).fit(_two_clusters(20),
                                                        process_group=dist.group.WORLD)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------- classifier NUTS
@pytest.fixture(scope="module")
def clf_nuts(k1_data):
    """Class "a": the K = 1 data of k1_data; class "b": two clusters (K = 2),
    so class "a"'s second component is padding."""
    from bayesgmm import GMMClassifier
    Xa, priors = k1_data
    rng = np.random.default_rng(5)
    Xb = np.concatenate([rng.normal(8.0, 1.0, 40), rng.normal(14.0, 1.0, 40)])[:, None]
    X, y = np.concatenate([Xa, Xb]), np.repeat(["a", "b"], [len(Xa), len(Xb)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clf = GMMClassifier([1, 2], covariance_type="diag", priors=priors, inference="nuts",
                            n_samples=240, n_chains=2, n_warmup=50, random_state=0,
                            **CPU).fit(X, y)
    return X, y, clf


def test_classifier_nuts_matches_numerical_integration(k1_data, clf_nuts):
    """Each class's posterior is its own: class "a"'s draws against the
    same float64 grid posterior as BayesianGMM's (the classes share the
    priors, given in the data's units)."""
    X1, p = k1_data
    x = X1[:, 0]
    mu = np.linspace(-3.0, 5.0, 801)[:, None]
    sd = np.linspace(0.3, 5.0, 941)[None, :]
    n, xbar = len(x), x.mean()
    logp = (stats.norm.logpdf(mu, p.mean_loc, p.mean_scale)
            + stats.invgamma.logpdf(sd, p.scale_shape, scale=p.scale_rate)
            - n * np.log(sd) - (((x - xbar) ** 2).sum() + n * (xbar - mu) ** 2) / (2 * sd ** 2))
    post = np.exp(logp - logp.max())
    post /= post.sum()
    exact = {"means": (post * mu).sum(), "covariances": (post * sd ** 2).sum()}
    exact_sd = {"means": np.sqrt((post * (mu - exact["means"]) ** 2).sum()),
                "covariances": np.sqrt((post * (sd ** 2 - exact["covariances"]) ** 2).sum())}
    _, _, clf = clf_nuts
    d = clf._posterior
    assert d["weights"].shape == (2, 240, 2) and d["means"].shape == (2, 240, 2, 1)
    np.testing.assert_array_equal(d["weights"][0, :, 0], 1.0)
    np.testing.assert_array_equal(d["weights"][0, :, 1], 0.0)             # padding
    for name in ("means", "covariances"):
        draws = d[name][0, :, 0].ravel()
        ess = float(clf.ess_[name][0, 0].min())
        assert ess > 50
        assert abs(draws.mean() - exact[name]) < 4 * exact_sd[name] / np.sqrt(ess), name
        assert draws.std() == pytest.approx(exact_sd[name], rel=0.25), name
    # Class "b"'s draws keep its MAP's labels (two clusters 6 apart).
    np.testing.assert_allclose(d["means"][1].mean(0), clf.means_[1], atol=0.5)


def test_classifier_nuts_diagnostics_and_predictive(clf_nuts, tmp_path):
    from bayesgmm import GMMClassifier
    X, y, clf = clf_nuts
    assert set(clf.rhat_) == set(clf.ess_) == {"weights", "means", "covariances"}
    assert clf.rhat_["means"].shape == (2, 2, 1) and clf.rhat_["weights"].shape == (2, 2)
    assert np.isnan(clf.rhat_["means"][0, 1]).all() and np.isfinite(clf.rhat_["means"][1]).all()
    assert clf.rhat_["covariances"].shape == clf.covariances_.shape
    assert clf.n_divergent_.shape == (2,)
    assert float(np.nanmax(clf.rhat_["means"])) < 1.1
    # The posterior predictive, from the draws by scipy.
    d = clf._posterior
    Xt = np.linspace(-4, 18, 12)[:, None]
    ll = np.empty((12, 2))
    for c in range(2):
        k = clf.n_components_[c]
        terms = [np.log(d["weights"][c, s, j]) + stats.norm.logpdf(
            Xt[:, 0], d["means"][c, s, j, 0], np.sqrt(d["covariances"][c, s, j, 0]))
            for s in range(240) for j in range(k)]
        ll[:, c] = logsumexp(np.stack(terms), axis=0) - np.log(240)
    np.testing.assert_allclose(clf.class_log_likelihood(Xt), ll, rtol=1e-5, atol=1e-4)
    joint = ll + np.log(clf.class_prior_)
    np.testing.assert_allclose(clf.predict_proba(Xt),
                               np.exp(joint - logsumexp(joint, axis=1, keepdims=True)),
                               atol=1e-5)
    mapfit = GMMClassifier([1, 2], covariance_type="diag", priors=clf.priors, random_state=0,
                           **CPU).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(Xt, plug_in=True), mapfit.predict_proba(Xt),
                               rtol=1e-6, atol=1e-9)
    # Saved and loaded with the draws and diagnostics.
    clf.save(tmp_path / "c.bgmm")
    back = GMMClassifier.load(tmp_path / "c.bgmm")
    np.testing.assert_array_equal(back.predict_proba(Xt), clf.predict_proba(Xt))
    np.testing.assert_array_equal(back.rhat_["means"], clf.rhat_["means"])
    np.testing.assert_array_equal(back.n_divergent_, clf.n_divergent_)
    # A MAP refit drops them.
    back.set_params(inference="map").fit(X, y)
    for name in ("_posterior", "rhat_", "ess_", "n_divergent_"):
        assert not hasattr(back, name)


def test_classifier_nuts_warning_names_the_classes():
    """Too few draws for R-hat: one warning, naming each class, with the
    remedy once, at the caller's line."""
    from bayesgmm import GMMClassifier
    X = np.concatenate([_two_clusters(15), _two_clusters(15, seed=1) + 20])
    y = np.repeat([3, 7], 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GMMClassifier(1, covariance_type="spherical", inference="nuts", n_samples=4,
                      n_chains=2, n_warmup=5, random_state=0, **CPU).fit(X, y)
    nuts = [w for w in caught if "NUTS draws" in str(w.message)]
    assert len(nuts) == 1 and nuts[0].filename == __file__
    text = str(nuts[0].message)
    assert "class 3: R-hat" in text and "class 7: R-hat" in text
    assert text.count("Remedy") == 1


def test_classifier_draws_by_default_enough_for_the_nuts_checks_and_vi_fewer():
    """n_samples="auto": 1000 NUTS draws per class (BayesianGMM's default),
    enough for ArviZ's 100 effective draws per chain that the warning asks
    of 4 chains (200, the VI default, could never pass it); a K = 1 class's
    weight, fixed at 1, is not reported.  Separated classes: no warning at
    the default warmup (at n_warmup=100 one class's means had 377 effective
    draws of 1,000 on an AMD EPYC, 579-642 with other seeds and on the
    Xeon: the CPU's rounding moves the chains).
    VI keeps 200 independent draws, and n_iter_ counts the MAP's
    iterations only, as BayesianGMM's does (not the VI's)."""
    from bayesgmm import GMMClassifier
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (30, 1)), rng.normal(5, 1, (30, 1))]
    y = np.repeat([0, 1], 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nuts = GMMClassifier(1, covariance_type="diag", inference="nuts", random_state=0,
                             **CPU).fit(X, y)
    assert nuts.n_samples == "auto"
    assert nuts.posterior_samples()["means"].shape == (2, 1000, 1, 1)
    assert (nuts.ess_["weights"] == 1000).all() and (nuts.rhat_["weights"] == 1).all()
    vi = GMMClassifier(1, inference="vi", random_state=0, **CPU).fit(X, y)
    assert vi.posterior_samples()["means"].shape == (2, 200, 1, 1)
    assert vi.n_iter_ == GMMClassifier(1, random_state=0, **CPU).fit(X, y).n_iter_
    # score takes plug_in as the other prediction methods do: with 4 points
    # in a class its predictive is wider than its MAP, and far points change
    # class (61 of these 400), so the two accuracies differ.
    few = GMMClassifier(1, inference="vi", random_state=0, **CPU).fit(
        np.r_[X[:30], X[30:34]], np.repeat([0, 1], [30, 4]))
    Xs = np.linspace(-6, 10, 400)[:, None]
    ys = (Xs[:, 0] > 1.5).astype(int)
    scores = {p: few.score(Xs, ys, plug_in=p) for p in (False, True)}
    for plug_in, score in scores.items():
        assert score == np.mean(few.predict(Xs, plug_in=plug_in) == ys)
    assert scores[False] != scores[True]
    for bad in ("many", 2.5, True):
        with pytest.raises(ValueError, match=r"n_samples must be a positive integer or 'auto', "
                                             r"got " + repr(bad).replace(".", r"\.")):
            GMMClassifier(1, inference="vi", n_samples=bad, **CPU).fit(X, y)


def test_classifier_nuts_refusals():
    from bayesgmm import GMMClassifier
    X, y = _two_clusters(20), np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match="inference must be one of"):
        GMMClassifier(1, inference="hmc", **CPU).fit(X, y)
    with pytest.raises(ValueError, match="n_chains must be >= 1, got 0"):
        GMMClassifier(1, inference="nuts", n_chains=0, **CPU).fit(X, y)
    with pytest.raises(ValueError, match="n_warmup must be >= 0, got -1"):
        GMMClassifier(1, inference="nuts", n_warmup=-1, **CPU).fit(X, y)
    with pytest.raises(ValueError, match="inference='nuts' gives .* discriminative_steps=3"):
        GMMClassifier(1, inference="nuts", discriminative_steps=3, **CPU).fit(X, y)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_nuts_with_a_constant_feature_is_refused_before_any_work(covariance_type):
    """A constant feature's variance sits at the prior's floor: NUTS ran
    50-100x longer there (diag: 158 s against 3 s; the classifier 215 s
    against 4.4 s) and returned draws with R-hat ~1e6 and intervals 100x too
    narrow.  Refused by name, before the MAP fit, and a fitted model is
    kept; spherical mixtures, whose one variance the constant does not pin,
    still sample."""
    from bayesgmm import GMMClassifier
    x = _two_clusters(20)[:, 0]
    X = pd.DataFrame({"a": x, "b": np.full(x.size, 2.5)})
    y = np.repeat([0, 1], 20)
    kw = dict(covariance_type=covariance_type, inference="nuts", n_chains=1, n_warmup=20,
              n_samples=20, random_state=0, **CPU)
    for est, args in ((BayesianGMM(2, **kw), (X,)), (GMMClassifier(1, **kw), (X, y))):
        name = type(est).__name__
        if covariance_type == "spherical":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(*args)
            assert np.isfinite(est.predict_proba(X)).all()
            continue
        est.set_params(inference="map").fit(X[["a"]], *args[1:])
        before = est.predict_proba(X[["a"]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")       # refused before the constant's warning
            with pytest.raises(ValueError, match=(
                    rf"^{name}: inference='nuts' cannot sample a '{covariance_type}' mixture in "
                    rf"which feature\(s\) \['b'\] hold one value in every row that observes "
                    rf"them: .*drop those features .*or use covariance_type='spherical' or "
                    rf"inference='vi'$")):
                est.set_params(inference="nuts").fit(*args)
        np.testing.assert_array_equal(est.predict_proba(X[["a"]]), before)


# ------------------------------------- draws and imputation from the predictive
@pytest.fixture(scope="module")
def small_vi():
    """A VI fit on 20 points in 1-D: a wide posterior, so the predictive
    differs visibly from the plug-in MAP."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2, 1, 12), rng.normal(2, 0.5, 8)][:, None]
    return X, BayesianGMM(2, inference="vi", n_samples=400, random_state=0,
                          device="cpu").fit(X)


def test_sample_assignments_follow_predict_proba_after_vi(small_vi):
    # They were drawn from the MAP's responsibilities, so their frequencies
    # disagreed with predict_proba's default (the predictive) and predict.
    _, gmm = small_vi
    q = np.linspace(-1, 1, 5)[:, None]
    n = 20000
    for plug_in in (False, True):
        z = gmm.sample_assignments(q, n, random_state=0, plug_in=plug_in)
        freq = (z == 1).mean(0)
        p = gmm.predict_proba(q, plug_in=plug_in)[:, 1]
        np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(0.25 / n))
    assert np.abs(gmm.predict_proba(q)[:, 1] - gmm.predict_proba(q, plug_in=True)[:, 1]).max() > 0.2


def test_sample_after_vi_draws_the_posterior_predictive(small_vi):
    # Kolmogorov-Smirnov against each CDF, built from posterior_samples with
    # scipy: the default draws follow the predictive (not the plug-in
    # mixture), plug_in=True the plug-in one.
    _, gmm = small_vi
    d = gmm.posterior_samples()
    sd = np.sqrt(d["covariances"][:, :, 0, 0])

    def predictive(x):
        return (d["weights"][:, :, None] * stats.norm.cdf(x, d["means"][:, :, 0, None],
                                                          sd[:, :, None])).sum(1).mean(0)

    def plug(x):
        return (gmm.weights_[:, None] * stats.norm.cdf(
            x, gmm.means_[:, 0, None], np.sqrt(gmm.covariances_[:, 0, 0, None]))).sum(0)

    x, z = gmm.sample(20000, random_state=1)
    assert stats.kstest(x[:, 0], predictive).pvalue > 0.01
    assert stats.kstest(x[:, 0], plug).pvalue < 1e-8
    np.testing.assert_allclose(np.bincount(z) / z.size, d["weights"].mean(0), atol=0.015)
    x, z = gmm.sample(20000, random_state=1, plug_in=True)
    assert stats.kstest(x[:, 0], plug).pvalue > 0.01
    assert set(np.unique(z)) == {0, 1}


def test_impute_after_vi_uses_the_posterior_predictive():
    # E[x_1 | x_0] under the predictive mixture of the draws, by hand:
    # sum_j p(j | x_0) (mu_j1 + S_j10 / S_j00 (x_0 - mu_j0)), p(j | x_0) from
    # w_sj / S N(x_0 | mu_j0, S_j00).
    rng = np.random.default_rng(1)
    X = np.r_[rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 15),
              rng.multivariate_normal([4, 1], [[1, -0.5], [-0.5, 1]], 10)]
    gmm = BayesianGMM(2, inference="vi", n_samples=300, random_state=0, device="cpu").fit(X)
    rows = np.array([[-1.0, np.nan], [2.0, np.nan], [5.0, np.nan]])

    def by_hand(w, m, c):
        logp = np.log(w)[None] + stats.norm.logpdf(rows[:, :1], m[None, :, 0],
                                                  np.sqrt(c[None, :, 0, 0]))
        r = np.exp(logp - logp.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        cond = m[None, :, 1] + c[None, :, 1, 0] / c[None, :, 0, 0] * (rows[:, :1] - m[None, :, 0])
        return (r * cond).sum(1)

    d = gmm.posterior_samples()
    S, K = d["weights"].shape
    expected = by_hand(d["weights"].reshape(-1) / S, d["means"].reshape(S * K, 2),
                       d["covariances"].reshape(S * K, 2, 2))
    np.testing.assert_allclose(gmm.impute(rows)[:, 1], expected, rtol=1e-6, atol=1e-8)
    plug = by_hand(gmm.weights_, gmm.means_, gmm.covariances_)
    np.testing.assert_allclose(gmm.impute(rows, plug_in=True)[:, 1], plug, rtol=1e-6, atol=1e-8)
    assert np.abs(expected - plug).max() > 1e-3
    # A draw: observed entries kept, the missing ones finite.
    drawn = gmm.impute(rows, sample=True, random_state=0)
    np.testing.assert_array_equal(drawn[:, 0], rows[:, 0])
    assert np.isfinite(drawn).all()


def test_classifier_impute_after_vi_uses_the_posterior_predictive():
    # As above, per class: E[x_1 | x_0, c] under class c's predictive (its S
    # draws, w / S each) with y; without y the classes' predictives weighted
    # by the class priors.
    rng = np.random.default_rng(1)
    X = np.r_[rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 15),
              rng.multivariate_normal([4, 1], [[1, -0.5], [-0.5, 1]], 10)]
    y = np.repeat([0, 1], [15, 10])
    clf = GMMClassifier(1, inference="vi", n_samples=300, random_state=0, device="cpu").fit(X, y)
    rows = np.array([[-1.0, np.nan], [2.0, np.nan], [5.0, np.nan]])
    d = clf.posterior_samples()
    C, S = d["weights"].shape[:2]

    def by_hand(logw, m, c):
        logp = logw[None] + stats.norm.logpdf(rows[:, :1], m[None, :, 0], np.sqrt(c[None, :, 0, 0]))
        r = np.exp(logp - logp.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        cond = m[None, :, 1] + c[None, :, 1, 0] / c[None, :, 0, 0] * (rows[:, :1] - m[None, :, 0])
        return (r * cond).sum(1)

    logw = np.log(d["weights"][..., 0] / S) + np.log(clf.class_prior_)[:, None]    # (C, S)
    m, c = d["means"][:, :, 0], d["covariances"][:, :, 0]
    for k in range(C):
        np.testing.assert_allclose(clf.impute(rows, np.full(3, k))[:, 1],
                                   by_hand(logw[k], m[k], c[k]), rtol=1e-6, atol=1e-8)
    expected = by_hand(logw.reshape(-1), m.reshape(C * S, 2), c.reshape(C * S, 2, 2))
    np.testing.assert_allclose(clf.impute(rows)[:, 1], expected, rtol=1e-6, atol=1e-8)
    plug = by_hand(np.log(clf.class_prior_), clf.means_[:, 0], clf.covariances_[:, 0])
    np.testing.assert_allclose(clf.impute(rows, plug_in=True)[:, 1], plug, rtol=1e-6, atol=1e-8)
    assert np.abs(expected - plug).max() > 1e-3


def test_sample_after_vi_of_a_one_feature_tied_fit():
    # (From a review.) The predictive of a tied fit is per component, whose
    # 1-D prior fields a tied fit never resolved: sample() raised inside torch.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2, 1, 15), rng.normal(2, 0.5, 10)][:, None]
    gmm = BayesianGMM(2, covariance_type="tied", inference="vi", n_samples=200, random_state=0,
                      device="cpu").fit(X)
    x, z = gmm.sample(4000, random_state=0)
    np.testing.assert_allclose(np.bincount(z) / z.size,
                               gmm.posterior_samples()["weights"].mean(0), atol=0.03)
    assert np.isfinite(x).all()


@pytest.mark.parametrize("lead", [(), (2,)])
def test_predictive_mixture_of_a_shared_covariance_is_a_writable_copy(lead):
    """One full matrix per draw and component from a tied draw, each the
    draw's; with K = 1 the reshape kept numpy's read-only broadcast view,
    which torch warned about on the first prediction after a tied VI fit."""
    from bayesgmm import covariance as cm
    rng = np.random.default_rng(0)
    S, D = 3, 2
    for K in (1, 3):
        c = rng.normal(size=lead + (S, D, D))
        samples = {"weights": np.full(lead + (S, K), 1.0 / K),
                   "means": rng.normal(size=lead + (S, K, D)), "covariances": c}
        w, m, full, family = P.predictive_mixture(samples, cm.get("tied", D))
        assert family.name == "full" and full.flags.writeable and full.shape == lead + (S * K, D, D)
        np.testing.assert_array_equal(full, np.repeat(c, K, axis=-3))
        np.testing.assert_allclose(w.sum(-1), 1.0)


def test_a_truncation_below_the_clusters_is_said():
    """(From an audit.) Four separated clusters under a Dirichlet-process
    truncation of 3: two are merged, every component carries data, and the
    fit says so at the caller's line; with room to spare it says nothing."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.5, (80, 2)) for c in ([0, 0], [8, 0], [0, 8], [8, 8])])
    kw = dict(inference="vi", weight_prior="dirichlet_process", random_state=0, device="cpu")
    with pytest.warns(UserWarning, match=r"every one of the n_components=3 components of the "
                                         r"Dirichlet-process truncation carries data.*raise "
                                         r"n_components") as caught:
        small = BayesianGMM(3, **kw).fit(X)
    assert small.n_effective_components_ == 3
    assert [w.filename for w in caught if "truncation" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BayesianGMM(6, **kw).fit(X).n_effective_components_ == 4


def test_nuts_progress_is_one_bar_over_every_chain(capsys):
    """progress=True with NUTS draws one bar over every chain's warmup and
    draws, named by chain, ending full (Pyro's own bars, one per chain and
    unnumbered, piled up in a notebook's output); the draws are those of a
    fit without the bar."""
    import re
    X = np.random.default_rng(0).normal(size=(60, 1))
    kw = dict(inference="nuts", n_samples=8, n_warmup=6, n_chains=2, random_state=0, **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # R-hat of so short chains
        quiet = BayesianGMM(2, **kw).fit(X)
        capsys.readouterr()
        shown = BayesianGMM(2, progress=True, **kw).fit(X)
    err = capsys.readouterr().err
    renders = [r for r in err.replace("\n", "\r").split("\r") if "NUTS chain" in r]
    assert renders and "NUTS chain 1/2" in renders[0] and "NUTS chain 2/2" in renders[-1]
    done, total = map(int, re.search(r"(\d+)/(\d+) ", renders[-1]).groups())
    assert done == total == 2 * (6 + 4)
    assert "Warmup" not in err and "Sample:" not in err        # no Pyro bar
    for name in ("means", "weights"):
        np.testing.assert_array_equal(shown.posterior_samples()[name],
                                      quiet.posterior_samples()[name])


def test_nuts_leaves_pyros_mcmc_logger_as_it_was():
    """(From an audit.) Pyro's MCMC.run gives the 'pyro.infer.mcmc' logger a
    handler of its own and propagate=False for good: after a NUTS fit its
    messages no longer reached the user's handlers.  A fit (and one that
    raises inside the run) leaves the logger's handlers, propagation,
    level and disabled flag as they were."""
    import logging
    log = logging.getLogger("pyro.infer.mcmc")
    before = (list(log.handlers), log.propagate, log.level, log.disabled)
    X = np.random.default_rng(0).normal(size=(40, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # R-hat of so short chains
        BayesianGMM(1, inference="nuts", n_samples=4, n_warmup=4, n_chains=1,
                    random_state=0, **CPU).fit(X)
    assert (list(log.handlers), log.propagate, log.level, log.disabled) == before
    from bayesgmm import posterior
    with pytest.raises(RuntimeError, match="inside"):
        with posterior._kept_logger():
            log.propagate = False
            log.addHandler(logging.NullHandler())
            raise RuntimeError("inside")
    assert (list(log.handlers), log.propagate, log.level, log.disabled) == before
