"""The closed-form variational engine (bayesgmm.variational) against
independent computations: scipy quadrature for the scale factor, Pyro's own
``TraceEnum_ELBO`` for the bound, perturbations for the optimality of each
update, and simulations with a known number of clusters for the
Dirichlet-process prior."""

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import pyro
from scipy import integrate, stats

from bayesgmm import BayesianGMM, GMMClassifier, Priors
from bayesgmm import covariance as cov_module
from bayesgmm.fitting import Groups
from bayesgmm.models import gmm_model
from bayesgmm.priors import MixtureParams, Standardizer
from bayesgmm.variational import (InverseScale, cavi, elbo, prune,
                                  pyro_guide)

F64 = torch.float64


def blobs(n_per, centres, sd=0.4, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float64)
    X = np.concatenate([c + sd * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    return X[rng.permutation(len(X))]


def problem(covariance_type, K=2, n_per=30, seed=0, weight_prior="dirichlet", D=2, k_fit=None):
    """Standardised data (K clusters), priors and a MAP start of a small
    fit with ``k_fit`` (default K) components."""
    centres = [[0.0] * D, [4.0] * D, [-4.0, 4.0] + [0.0] * (D - 2)][:K]
    X = blobs(n_per, centres, seed=seed)
    gmm = BayesianGMM(k_fit or K, covariance_type=covariance_type, random_state=seed,
                      device="cpu").fit(X)
    family = cov_module.get(covariance_type, D)
    std = Standardizer(center=X.mean(0), scale=X.std(0))
    if family.isotropic:
        std = Standardizer(center=X.mean(0), scale=np.full(D, np.sqrt(np.mean(X.var(0)))))
    pt = std.priors(gmm.priors_, "cpu", F64)
    start = std.params_to_std(gmm.weights_, gmm.means_, gmm.covariances_, family, "cpu", F64)
    Xt = torch.as_tensor((X - std.center) / std.scale)
    return Xt, pt, family, start.map(lambda t: t[None])


# ----------------------------------------------------------------------------
# q(u) of a diagonal / spherical scale
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("p,b,c", [(1.0, 1.0, 0.0), (3.5, 0.2, 7.0), (41.0, 2.0, 30.0),
                                   (1.5, 3.0, 1e-3), (2001.0, 2.8, 1850.0), (0.05, 1.0, 0.0),
                                   (0.2, 0.5, 3.0), (0.01, 2.0, 0.0), (1.0, 0.3, 1.0),
                                   (0.5, 3.0, 0.5), (0.05, 0.01, 5.0),
                                   (10.0, 0.01, 10.0), (1.0, 1.0, 1e-3), (3.5, 0.3, 350.0)])
def test_inverse_scale_moments_against_scipy_quadrature(p, b, c):
    q = InverseScale(torch.tensor(p, dtype=F64), torch.tensor(b, dtype=F64),
                     torch.tensor(c, dtype=F64))
    # Integrate in log u about the mode (scipy's quad on (0, inf) in u misses
    # the narrow peak of the large-p cases).
    t0, sd = float(q.t0), float(q.sd)
    logf = lambda t: p * t - b * math.exp(t) - 0.5 * c * math.exp(2 * t)
    f0 = logf(t0)
    low = t0 - max(40 * sd, 40 / p)         # the left tail falls like exp(p t)
    quad = lambda g: integrate.quad(lambda t: g(t) * math.exp(logf(t) - f0), low,
                                    t0 + min(40 * sd, 50.0), points=[t0], epsabs=0,
                                    epsrel=1e-12, limit=400)[0]
    Z = quad(lambda t: 1.0)
    assert float(q.log_z) == pytest.approx(math.log(Z) + f0, rel=1e-10, abs=1e-10)
    assert float(q.mean_log) == pytest.approx(quad(lambda t: t) / Z, rel=1e-9, abs=1e-10)
    assert float(q.mean_sq) == pytest.approx(quad(lambda t: math.exp(2 * t)) / Z, rel=1e-8)
    if c == 0.0:     # the Gamma(p, b) itself
        assert float(q.mean_sq) == pytest.approx(p * (p + 1) / b ** 2, rel=1e-10)
        assert float(q.mean_log) == pytest.approx(
            float(torch.digamma(torch.tensor(p, dtype=F64))) - math.log(b), rel=1e-9, abs=1e-12)



def test_inverse_scale_batched_as_one_by_one_and_its_grid_ends():
    """The batch shares one or two grid lengths (the longest any element with
    data in the group needs): each element's answers are those of it alone,
    an element with c = 0 (closed forms) does not lengthen the grid, and the
    grid ends where the log density is _TAIL below the mode's, not far
    beyond."""
    from bayesgmm import variational as V
    g = torch.Generator().manual_seed(0)
    n = torch.rand(40, generator=g, dtype=F64)
    p = torch.cat([1 + 1e-3 * n[:10], 1 + 50 * n[10:30], 1e4 * (1 + n[30:])])
    b = 0.05 + 3 * torch.rand(40, generator=g, dtype=F64)
    c = p * torch.rand(40, generator=g, dtype=F64) ** 3
    q = InverseScale(p, b, c)
    for i in range(40):
        one = InverseScale(p[i], b[i], c[i])
        for name in ("log_z", "mean_log", "mean_sq"):
            assert float(getattr(q, name)[i]) == pytest.approx(float(getattr(one, name)),
                                                               rel=1e-12, abs=1e-12)
    points = lambda q: sum((len(q.p) if idx is None else len(idx)) * n
                           for idx, n in q._plan()[2])
    plan = q._plan()[2]
    assert len(plan) == 2 and plan[0][1] < 150 < plan[1][1] < 400    # 1142 each before
    assert sorted(torch.cat([idx for idx, _ in plan]).tolist()) == list(range(40))
    with_empty = InverseScale(torch.cat([p, T1(1e-3)]), torch.cat([b, T1(2.0)]),
                              torch.cat([c, T1(0.0)]))
    assert points(with_empty) <= points(q) + plan[0][1]
    assert float(with_empty.mean_log[-1]) == pytest.approx(
        float(torch.digamma(T1(1e-3))) - math.log(2.0), rel=1e-12)
    lo, hi = q._ends()
    for d in (lo, hi):
        u0 = torch.exp(q.t0)
        logf = V._logf_rel(d.unsqueeze(-1), q.b * u0, q.c * u0 * u0).squeeze(-1)
        assert (logf <= -V._TAIL + 1e-9).all()
        assert (logf >= -V._TAIL - 1.0).all()       # Newton closed in from the bounds


def test_inverse_scale_grid_ends_close_in_over_a_wide_sweep():
    """Each end of the grid lies where the log density is _TAIL below the
    mode's, to 1e-6 nats, and never inside it, over (p, b, c) of every
    scale (p 1e-2..1e30, b 1e-6..1e6, c 0..1e6 p).  Where c u0^2 e^(2d)
    rules the right tail, Newton's steps from the old bounds moved the end
    by ~1/2 in d each: after 10 steps ends were up to 3e15 nats beyond."""
    from bayesgmm import variational as V
    g = torch.Generator().manual_seed(1)
    n = 20000
    u = lambda: torch.rand(n, generator=g, dtype=F64)
    p = 10 ** (32 * u() - 2)
    b = 10 ** (12 * u() - 6)
    c = torch.where(u() < 0.2, torch.zeros(n, dtype=F64), 10 ** (12 * u() - 6) * p)
    q = InverseScale(p, b, c)
    u0 = torch.exp(q.t0)
    for d in q._ends():
        logf = V._logf_rel(d.unsqueeze(-1), q.b * u0, q.c * u0 * u0).squeeze(-1)
        assert (logf <= -V._TAIL + 1e-9).all()
        assert (logf >= -V._TAIL - 1e-6).all()


def T1(v):
    return torch.tensor([v], dtype=F64)


def test_inverse_scale_of_an_empty_component_with_a_tiny_shape():
    """c = 0 (no data) and p < ~1e-3: the grid's long left tail reached
    where e^(2d) overflows, and 0 x inf made log_z, E[log u] and E[u^2]
    NaN (from an independent review).  q is Gamma(p, b), given by its
    closed forms, which hold where p (p + 1) / b^2 itself would overflow
    (from a later review: float32 p = 1e20, b = 100 gave inf)."""
    from scipy import special
    T = lambda v: torch.tensor(v, dtype=torch.float64)
    for p, b in ((1e-3, 1.0), (1e-2, 2.0)):
        q = InverseScale(T(p), T(b), T(0.0))
        assert float(q.log_z) == pytest.approx(special.gammaln(p) - p * math.log(b), rel=1e-6)
        assert float(q.mean_log) == pytest.approx(special.digamma(p) - math.log(b), rel=1e-6)
        assert float(q.mean_sq) == pytest.approx(p * (p + 1) / b ** 2, rel=1e-6)
    for p, b, dtype in ((1e20, 100.0, torch.float32), (1e300, 1e300, torch.float64),
                        (1e-300, 1e-300, torch.float64)):
        q = InverseScale(*(torch.tensor(v, dtype=dtype) for v in (p, b, 0.0)))
        assert float(q.mean_sq) == pytest.approx((p / b) * ((p + 1) / b), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inverse_scale_near_the_gamma_takes_its_shifted_closed_forms(monkeypatch, dtype):
    """Elements whose c is so small that the Gamma's moments shifted to
    first order in c are exact to rounding (a Dirichlet process's surplus
    components) take those and no grid; on both sides of the gate they
    agree with the trapezoid rule run on them (the gate switched off)."""
    from bayesgmm import variational as V
    g = torch.Generator().manual_seed(2)
    n = 600
    p = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(1e-2), math.log(1e4), generator=g))
    b = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(1e-3), math.log(1e3), generator=g))
    gate = 1e-2 * math.sqrt(torch.finfo(dtype).eps)
    frac = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(1e-6), math.log(3.0),
                                                         generator=g))
    c = frac * gate * b * b / (2 * p + 3)            # r = frac x the gate
    p, b, c = (v.to(dtype) for v in (p, b, c))
    q = InverseScale(p, b, c)
    near = q._near_gamma()[0]
    assert near.any() and not near.all()
    # A NaN c gives NaN moments (neither the grid nor the closed forms).
    nan = InverseScale(p[:2], b[:2], torch.tensor([math.nan, 0.0], dtype=dtype))
    assert nan.mean_sq[0].isnan() and nan.log_z[0].isnan() and nan.mean_log[0].isnan()
    assert torch.isfinite(nan.mean_sq[1])
    assert torch.equal(near, (frac < 0.999).to(near.dtype) | near)    # r below the gate
    covered = torch.cat([idx for idx, _ in q._plan()[2]])        # the grids' elements
    assert sorted(covered.tolist()) == torch.nonzero(~near).reshape(-1).tolist()
    monkeypatch.setattr(V.InverseScale, "_near_gamma",
                        lambda self: (self.c == 0, torch.zeros_like(self.c)))
    grid = InverseScale(*(v.double() for v in (p, b, c)))      # float64, same inputs
    near_tol, grid_tol = (1e-12, 1e-14) if dtype == F64 else (2e-7, 2e-6)
    for name in ("log_z", "mean_log", "mean_sq"):
        w = getattr(grid, name)
        scale = w.abs() if name == "mean_sq" else w.abs().clamp_min(1.0)
        err = (getattr(q, name).double() - w).abs() / scale
        assert float(err[near].max()) < near_tol, name
        # The others are the grid's (float64: on grids grouped differently).
        assert float(err[~near].max()) < grid_tol, name


def test_inverse_scale_in_float32_at_small_shapes():
    """float32 (the estimators' default dtype) within 5e-6 of float64 where p
    is small and the grid long: the points near the mode carried the
    rounding of the far left end, the step was a difference of two rounded
    points and E[u^2] a sum that cancels (from a review: up to 1e-3 off).
    What is left is the float32 sums' rounding, which moves with the grid
    a batch shares: over 3,000 random (p 1e-3..10) in one batch E[log u]
    was off by 3e-7 (median) and up to 6-7e-6 (before and after the grid's
    right end was tightened), these seven cases by up to 2.05e-6."""
    cases = [(1e-3, 1e-6, 0.1), (0.01, 1e-6, 1.0), (0.1, 0.01, 10.0), (0.05, 0.01, 5.0),
             (0.01, 1.0, 0.01), (1.0, 0.3, 1.0), (41.0, 2.0, 30.0)]
    p, b, c = (torch.tensor(v, dtype=F64) for v in zip(*cases))
    want = InverseScale(p, b, c)
    got = InverseScale(p.float(), b.float(), c.float())
    for name in ("log_z", "mean_log", "mean_sq"):
        w = getattr(want, name)
        scale = w.abs() if name == "mean_sq" else w.abs().clamp_min(1.0)
        err = ((getattr(got, name).double() - w).abs() / scale).max()
        assert float(err) < 5e-6, name


def test_inverse_scale_refuses_inputs_that_require_grad():
    p = torch.tensor([2.0], dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"without gradients.*p.detach\(\)"):
        InverseScale(p, torch.ones(1, dtype=F64), torch.ones(1, dtype=F64))
    q = InverseScale(p.detach(), torch.ones(1, dtype=F64), torch.ones(1, dtype=F64))
    assert not q.log_z.requires_grad


@pytest.mark.parametrize("p,b,c", [(1e12, 3.0, 2e12), (1.5e29, 0.87, 1.4e28), (1e29, 2.0, 0.0),
                                   (1e15, 1e-3, 1e15), (1e5, 0.01, 1e5)])
def test_inverse_scale_of_a_component_carrying_a_huge_weight(p, b, c):
    """(From a numerical-extremes audit.) p ~ the weight a component
    carries: with sample weights of 1e27 per row the grid about the mode
    (sd ~ 1e-15 in t) collapsed onto one float64 value and log_z was -inf,
    and from p ~ 1e12 on the direct log density (~p) kept only ~4 digits
    of its O(1) variation.  Against 50-digit quadrature (mpmath)."""
    import mpmath
    q = InverseScale(torch.tensor(p, dtype=F64), torch.tensor(b, dtype=F64),
                     torch.tensor(c, dtype=F64))
    with mpmath.workdps(50):
        P, B, C = mpmath.mpf(p), mpmath.mpf(b), mpmath.mpf(c)
        logf = lambda t: P * t - B * mpmath.exp(t) - C * mpmath.exp(2 * t) / 2
        u0 = 2 * P / (B + mpmath.sqrt(B * B + 4 * C * P))
        t0, sd = mpmath.log(u0), 1 / mpmath.sqrt(P + C * u0 * u0)
        f0 = logf(t0)
        quad = lambda g: mpmath.quad(lambda t: g(t) * mpmath.exp(logf(t) - f0),
                                     [t0 - 40 * sd, t0, t0 + 40 * sd])
        Z = quad(lambda t: 1)
        log_z = f0 + mpmath.log(Z)
        mean_log = quad(lambda t: t) / Z
        mean_sq = quad(lambda t: mpmath.exp(2 * t)) / Z
    assert np.isfinite([float(q.log_z), float(q.mean_log), float(q.mean_sq)]).all()
    assert float(q.log_z) == pytest.approx(float(log_z), rel=1e-14)
    assert float(q.mean_log) == pytest.approx(float(mean_log), rel=1e-14)
    assert float(q.mean_sq) == pytest.approx(float(mean_sq), rel=1e-12)
    torch.manual_seed(0)
    draws = q.sample(100).numpy()
    assert np.isfinite(draws).all()
    np.testing.assert_allclose(draws, math.exp(float(mean_log)), rtol=50 / math.sqrt(p))


def test_inverse_scale_draws_follow_the_density():
    p, b, c = 3.5, 0.7, 5.0
    q = InverseScale(torch.tensor(p, dtype=F64), torch.tensor(b, dtype=F64),
                     torch.tensor(c, dtype=F64))
    torch.manual_seed(0)
    u = q.sample(4000).numpy()
    Z = math.exp(float(q.log_z))
    density = lambda x: x ** (p - 1) * math.exp(-b * x - 0.5 * c * x * x) / Z
    grid = np.linspace(0, 12, 4001)
    cdf_grid = np.concatenate([[0.0], np.cumsum([integrate.quad(density, a, z)[0]
                                                 for a, z in zip(grid[:-1], grid[1:])])])
    ks = stats.kstest(u, lambda x: np.interp(x, grid, cdf_grid))
    assert ks.pvalue > 0.01
    np.testing.assert_allclose(float(q.log_prob(torch.tensor(1.3, dtype=F64))),
                               math.log(density(1.3)), rtol=1e-10)


# ----------------------------------------------------------------------------
# The bound
# ----------------------------------------------------------------------------
CASES = [("full", "dirichlet"), ("tied", "dirichlet"), ("diag", "dirichlet"),
         ("spherical", "dirichlet"), ("full", "dirichlet_process"),
         ("diag", "dirichlet_process")]


@pytest.mark.parametrize("covariance_type,weight_prior", CASES)
def test_elbo_is_what_pyro_trace_enum_elbo_estimates(covariance_type, weight_prior):
    """The closed-form ELBO of q equals Pyro's Monte Carlo estimate for
    gmm_model with the guide of q (TraceEnum_ELBO sums the assignments out),
    within 4 standard errors of 300 particles."""
    X, pt, family, start = problem(covariance_type, K=3 if weight_prior != "dirichlet" else 2,
                                   n_per=12)
    q = cavi(Groups.single(X), start, pt, family, weight_prior, max_iter=30).q
    exact = float(elbo(Groups.single(X), q, pt, family)[0])
    K = q.mean.shape[-2]
    model = lambda: gmm_model(X, pt, K, family, weight_prior=weight_prior)
    guide = pyro_guide(q, family)
    pyro.set_rng_seed(0)
    loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.array([-loss.loss(model, guide) for _ in range(300)])
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert abs(values.mean() - exact) < 4 * se + 1e-6, (values.mean(), exact, se)


@pytest.mark.parametrize("covariance_type,weight_prior", CASES)
def test_cavi_never_lowers_the_elbo_and_each_factor_is_optimal(covariance_type, weight_prior):
    X, pt, family, start = problem(covariance_type, K=3, n_per=15, seed=1)
    groups = Groups.single(X)
    res = cavi(groups, start, pt, family, weight_prior, max_iter=500, tol=1e-10)
    q = res.q
    h = res.history[:, 0].numpy()
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:])), np.diff(h).min()
    best = float(elbo(groups, q, pt, family)[0])
    assert best == pytest.approx(float(res.elbo[0]), rel=1e-12) and best == h[-1]

    def perturbed(**changes):
        return float(elbo(groups, replace(q, **changes), pt, family)[0])
    worse = [perturbed(mean=q.mean + 0.05),
             perturbed(mean_cov=q.mean_cov * 1.2), perturbed(mean_cov=q.mean_cov * 0.8),
             perturbed(weight_a=q.weight_a * 1.1), perturbed(weight_a=q.weight_a * 0.9)]
    if q.weight_b is not None:
        worse += [perturbed(weight_b=q.weight_b * 1.1), perturbed(weight_b=q.weight_b * 0.9)]
    if family.full_moments:
        worse += [perturbed(dof=q.dof + 0.5), perturbed(dof=q.dof - 0.5),
                  perturbed(wishart_inv=q.wishart_inv * 1.05),
                  perturbed(wishart_inv=q.wishart_inv * 0.95)]
    else:
        s = q.scale
        worse += [perturbed(scale=InverseScale(s.p, s.b, s.c * 1.05)),
                  perturbed(scale=InverseScale(s.p, s.b, s.c * 0.95)),
                  perturbed(scale=InverseScale(s.p + 0.3, s.b, s.c)),
                  perturbed(scale=InverseScale(s.p * 0.97, s.b, s.c))]
    assert all(w < best for w in worse), (best, worse)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
@pytest.mark.parametrize("case", ["weights", "missing"])
def test_elbo_with_weights_or_missing_values_against_pyro(covariance_type, case):
    """Sample weights (the model's weighted factor): the closed form equals
    Pyro's estimate (Trace_ELBO: the weighted model sums the assignments out
    itself).  Missing entries, "diag" and "spherical": the likelihood
    factorises over features, and the exact bound (each point scored and
    counted by its observed coordinates) equals Pyro's estimate for the
    model that masks them.  "full": the engine keeps each point's missing
    coordinates in its variational family (q(x_mis | z), independent of the
    parameters: what keeps the updates closed-form), so its bound is below
    the one Pyro estimates for the same q of the parameters, where the model
    integrates them out exactly; below, and close."""
    X, pt, family, start = problem(covariance_type, K=2, n_per=12, seed=3)
    w = None
    if case == "missing":
        X = X.clone()
        X[::5, 1] = float("nan")
        X[3, 0] = float("nan")
    else:
        w = torch.as_tensor(np.random.default_rng(0).integers(1, 4, X.shape[0]), dtype=F64)
    groups = Groups.single(X, w)
    q = cavi(groups, start, pt, family, max_iter=30).q
    exact = float(elbo(groups, q, pt, family)[0])
    model = lambda: gmm_model(X, pt, 2, family, weight=w)
    guide = pyro_guide(q, family)
    pyro.set_rng_seed(1)
    loss = (pyro.infer.Trace_ELBO() if w is not None
            else pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.array([-loss.loss(model, guide) for _ in range(300)])
    se = values.std(ddof=1) / math.sqrt(values.size)
    if case == "weights" or covariance_type != "full":
        assert abs(values.mean() - exact) < 4 * se + 1e-6, (values.mean(), exact, se)
    else:
        assert values.mean() - 1.5 < exact < values.mean() + 4 * se, (values.mean(), exact, se)


def test_integer_weights_give_the_fit_of_repeated_rows():
    X, pt, family, start = problem("full", K=2, n_per=10, seed=6)
    w = torch.as_tensor(np.random.default_rng(1).integers(0, 4, X.shape[0]), dtype=F64)
    rep = X.repeat_interleave(w.long(), 0)
    qa = cavi(Groups.single(X, w), start, pt, family, max_iter=40, tol=0).q
    qb = cavi(Groups.single(rep), start, pt, family, max_iter=40, tol=0).q
    for name in ("weight_a", "mean", "mean_cov", "dof", "wishart_inv"):
        torch.testing.assert_close(getattr(qa, name), getattr(qb, name), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------
# The Dirichlet-process prior
# ----------------------------------------------------------------------------
CENTRES = [[0, 0], [8, 0], [0, 8], [8, 8], [-8, 4], [4, -8]]


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("k_true", [1, 3])
def test_dirichlet_process_switches_surplus_components_off(covariance_type, k_true):
    X = blobs(60, CENTRES[:k_true], sd=0.8, seed=k_true)
    gmm = BayesianGMM(8, covariance_type=covariance_type, inference="vi", n_samples=100,
                      weight_prior="dirichlet_process", random_state=0, device="cpu").fit(X)
    assert gmm.n_effective_components_ == k_true
    w = np.sort(gmm.weights_)[::-1]
    assert np.all(w[:k_true] > 0.2) and np.all(w[k_true:] < 0.01)
    assert len(np.unique(gmm.predict(X))) == k_true
    # The MAP with a Dirichlet prior keeps more.
    plain = BayesianGMM(8, covariance_type=covariance_type, random_state=0, device="cpu").fit(X)
    assert plain.n_effective_components_ > k_true


def test_dirichlet_process_point_is_the_variational_mean():
    X = blobs(50, CENTRES[:2], seed=5)
    gmm = BayesianGMM(5, covariance_type="diag", inference="vi", n_samples=4000,
                      weight_prior="dirichlet_process", random_state=0, device="cpu").fit(X)
    draws = gmm.posterior_samples()
    np.testing.assert_allclose(draws["weights"].mean(0), gmm.weights_, atol=0.01)
    live = gmm.weights_ > 0.1
    np.testing.assert_allclose(draws["means"].mean(0)[live], gmm.means_[live], atol=0.02)
    assert gmm.priors_.weight_concentration.tolist() == [1.0] * 5


def test_dirichlet_process_concentration_and_refusals(tmp_path):
    X = blobs(40, CENTRES[:2], seed=2)
    small = BayesianGMM(6, inference="vi", weight_prior="dirichlet_process", n_samples=50,
                        priors=Priors(weight_concentration=0.1), random_state=0,
                        device="cpu").fit(X)
    assert small.n_effective_components_ == 2
    assert small.priors_.weight_concentration.tolist() == [0.1] * 6
    small.save(tmp_path / "dp.bgmm")
    back = BayesianGMM.load(tmp_path / "dp.bgmm")
    assert back.weight_prior == "dirichlet_process" and back.n_effective_components_ == 2
    np.testing.assert_array_equal(back.predict_proba(X), small.predict_proba(X))
    kw = dict(weight_prior="dirichlet_process", device="cpu")
    with pytest.raises(ValueError, match="inference='vi'.*inference='nuts'.*got "
                                         "inference='map'.*no Occam factor"):
        BayesianGMM(4, **kw).fit(X)
    with pytest.raises(ValueError, match="truncation.*not 'auto'"):
        BayesianGMM("auto", inference="vi", **kw).fit(X)
    with pytest.raises(ValueError, match="concentration alpha.*got \\[1.0, 2.0\\]"):
        BayesianGMM(2, inference="vi", priors=Priors(weight_concentration=[1.0, 2.0]),
                    **kw).fit(X)
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match=f"must be finite and > 0, got {bad}"):
            BayesianGMM(2, inference="vi", priors=Priors(weight_concentration=bad), **kw).fit(X)
    with pytest.raises(ValueError, match="weight_prior must be one of"):
        BayesianGMM(2, weight_prior="pitman-yor", device="cpu").fit(X)


def test_prune_removes_split_clusters():
    """Two clusters, a MAP start with five components: coordinate ascent
    keeps clusters split between components (local optima of the bound);
    the delete moves remove the surplus, and the bound rises."""
    X, pt, family, start = problem("full", K=2, n_per=40, seed=4, k_fit=5)
    groups = Groups.single(X)
    pt = replace(pt, concentration=torch.ones(5, dtype=F64))
    res = cavi(groups, start, pt, family, "dirichlet_process", tol=1e-9)
    assert int((res.counts[0] >= 1).sum()) > 2           # the splits survive
    q2, after, counts, _, _ = prune(groups, res.q, pt, family, tol=1e-9)
    assert float(after[0]) > float(res.elbo[0]) + 1.0
    assert float(after[0]) == pytest.approx(float(elbo(groups, q2, pt, family)[0]), rel=1e-12)
    np.testing.assert_allclose(np.sort(counts[0].numpy())[-2:], [40, 40], atol=0.5)
    assert int((counts[0] >= 1).sum()) == 2


def test_delete_moves_that_stop_at_max_iter_warn():
    """(From an independent posterior audit.)  Under the Dirichlet process
    (or a sparse Dirichlet) the fit runs delete moves after the first
    coordinate ascent, and only the first run's convergence was reported.
    ``prune`` now says whether the run it kept met the tolerance (judged on
    that run's own last step: the batch stops only when every start met
    it), the fit's ``converged`` takes it in, and the warning says the
    iterations are those of several runs of at most max_iter each."""
    from sklearn.exceptions import ConvergenceWarning
    from bayesgmm.datasets import load_iris
    X, pt, family, start = problem("full", K=2, n_per=40, seed=4, k_fit=5)
    groups = Groups.single(X)
    pt = replace(pt, concentration=torch.ones(5, dtype=F64))
    res = cavi(groups, start, pt, family, "dirichlet_process", tol=1e-9)
    assert prune(groups, res.q, pt, family, tol=1e-9)[4] is True
    cut = prune(groups, res.q, pt, family, max_iter=1, tol=1e-9)
    assert cut[3] > 0 and cut[4] is False        # a deletion kept, one iteration: unjudged
    X = load_iris()[["petal_length", "petal_width"]].to_numpy()
    for prior in (dict(weight_prior="dirichlet_process"),
                  dict(priors=Priors(weight_concentration=0.1))):
        kw = dict(inference="vi", random_state=0, device="cpu", **prior)
        with pytest.warns(ConvergenceWarning, match=r"delete-move runs, each of at most "
                                                    r"max_iter.*raise max_iter"):
            BayesianGMM(6, max_iter=5, **kw).fit(X)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            BayesianGMM(6, max_iter=1000, **kw).fit(X)


def test_prune_with_a_sparse_dirichlet_keeps_component_places():
    """The delete moves under a Dirichlet prior (concentration below 1):
    the surplus of a five-component start on two clusters is switched
    off, the bound rises to its exact value, and the components that carry
    the data stay where they were (a Dirichlet's components have no
    order)."""
    X, pt, family, start = problem("full", K=2, n_per=40, seed=4, k_fit=5)
    groups = Groups.single(X)
    pt = replace(pt, concentration=torch.full((5,), 0.1, dtype=F64))
    res = cavi(groups, start, pt, family, "dirichlet", tol=1e-9)
    assert int((res.counts[0] >= 1).sum()) > 2
    q2, after, counts, _, _ = prune(groups, res.q, pt, family, tol=1e-9)
    assert q2.weight_prior == "dirichlet"
    assert float(after[0]) > float(res.elbo[0]) + 1.0
    assert float(after[0]) == pytest.approx(float(elbo(groups, q2, pt, family)[0]), rel=1e-12)
    live = np.flatnonzero(counts[0].numpy() >= 1)
    assert live.size == 2
    np.testing.assert_allclose(counts[0].numpy()[live], [40, 40], atol=0.5)
    # each surviving component still sits where the coordinate ascent had it
    before = res.q.mean[0].numpy()[live]
    np.testing.assert_allclose(q2.mean[0].numpy()[live], before, atol=0.5)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_sparse_dirichlet_posterior_switches_surplus_components_off(tmp_path,
                                                                   covariance_type):
    """Priors(weight_concentration=0.05) with inference="vi": no MAP exists
    (the MAP stage that starts the posterior uses a flat Dirichlet), the
    posterior's delete moves leave the three clusters' components, and the
    point estimates are the posterior's; the fit saves and loads.  At
    concentration 1 the same fit keeps surplus components (no delete
    moves: the behaviour of the Dirichlet prior as before)."""
    X = blobs(60, CENTRES[:3], sd=0.8, seed=3)
    sparse = BayesianGMM(8, covariance_type=covariance_type, inference="vi", n_samples=50,
                         priors=Priors(weight_concentration=0.05), random_state=0,
                         device="cpu").fit(X)
    assert sparse.n_effective_components_ == 3
    assert sparse.priors_.weight_concentration.tolist() == [0.05] * 8
    big = np.sort(sparse.weights_)[::-1]
    np.testing.assert_allclose(big[:3], [1 / 3] * 3, atol=0.01)
    assert big[3:].sum() < 0.01
    np.testing.assert_allclose(sparse.posterior_samples()["weights"].mean(0), sparse.weights_,
                               atol=0.01)
    flat = BayesianGMM(8, covariance_type=covariance_type, inference="vi", n_samples=50,
                       random_state=0, device="cpu").fit(X)
    assert flat.n_effective_components_ > 3          # surplus components keep points
    sparse.save(tmp_path / "sparse.bgmm")
    back = BayesianGMM.load(tmp_path / "sparse.bgmm")
    np.testing.assert_array_equal(back.predict_proba(X), sparse.predict_proba(X))
    assert back.priors_.weight_concentration.tolist() == [0.05] * 8
    # The file holds the fitted state: a posterior fit whose inference was
    # set to "map" since (no refit) still saves, and loads to the same
    # answers, once its settings are ones a fit takes (a concentration
    # below 1 has no MAP: refused as the next fit would refuse it).
    with pytest.raises(ValueError, match=r"cannot save to .*Priors.weight_concentration must "
                                         r"be >= 1, got \[0.05"):
        sparse.set_params(inference="map").save(tmp_path / "set.bgmm")
    assert not (tmp_path / "set.bgmm").exists()
    sparse.set_params(priors=None).save(tmp_path / "set.bgmm")
    back = BayesianGMM.load(tmp_path / "set.bgmm")
    np.testing.assert_array_equal(back.predict_proba(X), sparse.predict_proba(X))
    assert back.priors_.weight_concentration.tolist() == [0.05] * 8     # the fit's


def test_sparse_dirichlet_with_nuts_and_refusals():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-4, 1, (60, 1)), rng.normal(4, 1, (60, 1))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # short chains: R-hat / ESS warnings
        # (40 draws per chain were too few: a surplus component averaging
        # 1.5 points' worth in one seed of five; 100 held 2 in five of five.)
        gmm = BayesianGMM(4, covariance_type="diag", inference="nuts", n_samples=100,
                          n_chains=2, n_warmup=100, priors=Priors(weight_concentration=0.1),
                          random_state=0, device="cpu").fit(X)
    assert gmm.n_effective_components_ == 2
    np.testing.assert_allclose(np.sort(gmm.weights_)[-2:], [0.5, 0.5], atol=0.05)
    np.testing.assert_allclose(np.sort(gmm.means_[gmm.weights_ > 0.1, 0]), [-4, 4], atol=0.5)
    kw = dict(inference="vi", device="cpu")
    with pytest.raises(ValueError, match="below 1 switches surplus components off.*not 'auto'"):
        BayesianGMM("auto", priors=Priors(weight_concentration=0.1), **kw).fit(X)
    with pytest.raises(ValueError, match=r"shape \(3,\).*got shape \(2,\)"):
        BayesianGMM(3, priors=Priors(weight_concentration=[0.1, 0.2]), **kw).fit(X)
    with pytest.raises(ValueError, match=r"must be > 0, got \[0.1, -0.2, 1.0\]"):
        BayesianGMM(3, priors=Priors(weight_concentration=[0.1, -0.2, 1.0]), **kw).fit(X)
    with pytest.raises(ValueError, match="no MAP estimate exists.*inference=.vi. or "
                                         "inference=.nuts."):
        BayesianGMM(3, priors=Priors(weight_concentration=0.1), device="cpu").fit(X)
    with pytest.raises(ValueError, match="starts NUTS from the variational posterior.*"
                                         "max_iter=0"):
        BayesianGMM(3, inference="nuts", max_iter=0, priors=Priors(weight_concentration=0.1),
                    device="cpu").fit(X)
    with pytest.raises(ValueError, match="GMMClassifier takes Priors.weight_concentration >= 1"
                                         ".*BayesianGMM\\(inference='vi'\\)"):
        GMMClassifier(2, priors=Priors(weight_concentration=0.1), **kw).fit(
            X, (X[:, 0] > 0).astype(int))


def test_dirichlet_process_with_one_component():
    X = blobs(30, CENTRES[:1], seed=3)
    gmm = BayesianGMM(1, covariance_type="diag", inference="vi", n_samples=20,
                      weight_prior="dirichlet_process", random_state=0, device="cpu").fit(X)
    assert gmm.n_effective_components_ == 1 and gmm.weights_.tolist() == [1.0]
    plain = BayesianGMM(1, covariance_type="diag", inference="vi", n_samples=20,
                        random_state=0, device="cpu").fit(X)
    assert gmm.elbo_ == pytest.approx(plain.elbo_, rel=1e-12)    # the same model at K = 1


# ----------------------------------------------------------------------------
# The classifier: one variational posterior per class, batched
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("tol", [0.0, 1e-9])
def test_batched_classes_with_padding_equal_separate_fits(tol):
    """Classes of different K in one padded batch (the classifier's layout)
    give each class's own fit: the masks keep padded components out."""
    X1, pt, family, s1 = problem("full", K=2, n_per=15, seed=7)
    X2, _, _, s3 = problem("full", K=3, n_per=15, seed=8)
    # Class 2 starts away from its MAP: it needs more iterations.
    s3 = MixtureParams(s3.weights, s3.means + 0.8 * torch.randn(
        s3.means.shape, generator=torch.Generator().manual_seed(0), dtype=F64), s3.cov)
    # One prior (pt of the first problem) for both; class 1 padded to K = 3.
    pad = MixtureParams(torch.cat([s1.weights, torch.zeros(1, 1, dtype=F64)], -1),
                        torch.cat([s1.means, torch.zeros(1, 1, 2, dtype=F64)], 1),
                        torch.cat([s1.cov, torch.eye(2, dtype=F64)[None, None]], 1))
    start = MixtureParams(*(torch.cat([getattr(pad, f), getattr(s3, f)])
                            for f in ("weights", "means", "cov")))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    X = torch.cat([X1, X2])
    labels = torch.cat([torch.zeros(len(X1), dtype=torch.long), torch.ones(len(X2), dtype=torch.long)])
    pt3 = replace(pt, concentration=torch.ones(3, dtype=F64))
    both = cavi(Groups.from_labels(X, labels, 2), start, pt3, family, max_iter=60, tol=tol,
                mask=mask)
    one = cavi(Groups.single(X1), s1, replace(pt, concentration=torch.ones(2, dtype=F64)),
               family, max_iter=60, tol=tol)
    three = cavi(Groups.single(X2), s3, pt3, family, max_iter=60, tol=tol)
    # With a tolerance, each class stops when it meets it (its ELBO then
    # stays); with tol = 0 every iteration runs, as the MAP's EM.
    assert both.n_iter == max(one.n_iter, three.n_iter)
    if tol == 0:
        assert both.n_iter == 60 and not both.converged and not both.stopped.any()
    else:
        assert one.n_iter != three.n_iter and both.stopped.all()
        for i, r in enumerate((one, three)):
            torch.testing.assert_close(both.history[:r.n_iter, i], r.history[:, 0], rtol=1e-13,
                                       atol=0)
            assert (both.history[r.n_iter:, i] == r.history[-1, 0]).all()
    assert float(both.elbo[0]) == pytest.approx(float(one.elbo[0]), rel=1e-10)
    assert float(both.elbo[1]) == pytest.approx(float(three.elbo[0]), rel=1e-10)
    torch.testing.assert_close(both.q.mean_weights()[0, :2], one.q.mean_weights()[0])
    assert float(both.q.mean_weights()[0, 2]) == 0.0
    torch.testing.assert_close(both.q.mean[1], three.q.mean[0])


@pytest.mark.parametrize("covariance_type,weight_prior", [("diag", "dirichlet_process"),
                                                        ("spherical", "dirichlet"),
                                                        ("full", "dirichlet_process")])
def test_each_mixture_of_a_batch_stops_on_its_own_as_if_alone(covariance_type, weight_prior):
    """A batch of starts that meet the tolerance at different iterations:
    each leaves the batch when it does, so its q, ELBO, counts and ELBO
    history are those of its run alone (the history then repeats its last
    value); the batch runs as long as its slowest."""
    X, pt, family, s = problem(covariance_type, K=3, n_per=20, seed=3,
                               weight_prior=weight_prior)
    g = torch.Generator().manual_seed(1)
    shifts = [0.0, 1.0, 2.5]
    starts = [MixtureParams(s.weights, s.means + h * torch.randn(s.means.shape, generator=g,
                                                                  dtype=F64), s.cov)
              for h in shifts]
    batch = MixtureParams(*(torch.cat([getattr(x, f) for x in starts])
                            for f in ("weights", "means", "cov")))
    groups = Groups.single(X)
    both = cavi(groups, batch, pt, family, weight_prior, max_iter=400, tol=1e-8)
    alone = [cavi(groups, x, pt, family, weight_prior, max_iter=400, tol=1e-8) for x in starts]
    iters = [r.n_iter for r in alone]
    assert len(set(iters)) > 1          # they do stop at different iterations
    assert both.n_iter == max(iters) and both.converged and all(r.converged for r in alone)
    assert both.history.shape == (max(iters), 3)
    for i, r in enumerate(alone):
        torch.testing.assert_close(both.elbo[i], r.elbo[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(both.counts[i], r.counts[0], rtol=1e-10, atol=1e-10)
        h = both.history[:, i]
        torch.testing.assert_close(h[:r.n_iter], r.history[:, 0], rtol=1e-12, atol=0)
        assert (h[r.n_iter:] == h[r.n_iter - 1]).all()
        for name in ("weight_a", "weight_b", "mean", "mean_cov", "dof", "wishart_inv"):
            a, b = getattr(both.q, name), getattr(r.q, name)
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a[i], b[0], rtol=1e-10, atol=1e-12)
        if r.q.scale is not None:
            for name in InverseScale._FIELDS:
                torch.testing.assert_close(getattr(both.q.scale, name)[i],
                                           getattr(r.q.scale, name)[0], rtol=1e-10, atol=1e-12)
        # The moments kept by select/cat are those of the parameters.
        again = InverseScale(both.q.scale.p, both.q.scale.b, both.q.scale.c) \
            if r.q.scale is not None else None
        if again is not None:
            torch.testing.assert_close(again.mean_sq, both.q.scale.mean_sq, rtol=1e-12, atol=0)
    torch.testing.assert_close(elbo(groups, both.q, pt, family), both.elbo, rtol=1e-12, atol=0)
    # A start whose ELBO is not finite leaves at once, not having converged,
    # and the others are as before (with the sticks' Beta, a NaN is refused
    # by torch's argument checks first).
    if weight_prior != "dirichlet":
        return
    nan = MixtureParams(*(torch.cat([getattr(batch, f), getattr(s, f)])
                          for f in ("weights", "means", "cov")))
    nan.means[-1, 0, 0] = math.nan
    res = cavi(groups, nan, pt, family, weight_prior, max_iter=400, tol=1e-8)
    assert res.stopped.tolist() == [True, True, True, False] and not res.converged
    assert res.n_iter == both.n_iter and not torch.isfinite(res.history[2:, 3]).any()
    torch.testing.assert_close(res.elbo[:3], both.elbo, rtol=1e-12, atol=0)


def test_classifier_posterior_predictive_against_scipy(tmp_path):
    from scipy.special import logsumexp
    from bayesgmm import GMMClassifier
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal([0, 0], 1.0, (40, 2)), rng.normal([2.5, 1], 0.8, (30, 2)),
                        rng.normal([-2, 3], 0.6, (20, 2))])
    y = np.repeat(["a", "b", "c"], [40, 30, 20])
    clf = GMMClassifier([2, 1, 1], covariance_type="tied", inference="vi", n_samples=30,
                        random_state=0, device="cpu").fit(X, y)
    d = clf._posterior
    assert d["weights"].shape == (3, 30, 2) and d["covariances"].shape == (3, 30, 2, 2)
    np.testing.assert_array_equal(d["weights"][1:, :, 1], 0.0)     # padded components
    Xt = rng.normal(0, 3, (9, 2))
    ll = np.empty((9, 3))
    for c in range(3):
        k = clf.n_components_[c]
        terms = [np.log(d["weights"][c, s, j]) + stats.multivariate_normal(
            d["means"][c, s, j], d["covariances"][c, s]).logpdf(Xt)
            for s in range(30) for j in range(k)]
        ll[:, c] = logsumexp(np.stack(terms), axis=0) - np.log(30)
    np.testing.assert_allclose(clf.class_log_likelihood(Xt), ll, rtol=1e-5, atol=1e-4)
    joint = ll + np.log(clf.class_prior_)
    proba = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(Xt), proba, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(Xt), clf.classes_[proba.argmax(1)])
    # The whole model's predictive density: the classes' summed with their priors.
    np.testing.assert_allclose(clf.score_samples(Xt), logsumexp(joint, axis=1), rtol=1e-6,
                               atol=1e-4)
    # plug_in=True is the MAP's answer, that of an inference="map" fit.
    mapfit = GMMClassifier([2, 1, 1], covariance_type="tied", random_state=0,
                           device="cpu").fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(Xt, plug_in=True), mapfit.predict_proba(Xt),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(clf.score_samples(Xt, plug_in=True), mapfit.score_samples(Xt),
                               rtol=1e-6, atol=1e-6)
    # sample() draws from the same predictive: each class's mean is the
    # draws' average of their mixture means (within 5 standard errors).
    Xs, ys = clf.sample(20000, random_state=2)
    for c, label in enumerate(clf.classes_):
        pts = Xs[ys == label]
        mean = np.einsum("sk,skd->d", d["weights"][c], np.nan_to_num(d["means"][c])) / 30
        assert np.all(np.abs(pts.mean(0) - mean) < 5 * pts.std(0) / np.sqrt(len(pts)))
    Xp, _ = clf.sample(20000, random_state=2, plug_in=True)
    assert not np.array_equal(Xp, Xs)
    assert clf.elbo_.shape == (3,) and np.all(np.isfinite(clf.elbo_))
    assert clf.n_effective_components_.tolist() == [2, 1, 1]
    clf.save(tmp_path / "c.bgmm")
    back = GMMClassifier.load(tmp_path / "c.bgmm")
    np.testing.assert_array_equal(back.predict_proba(Xt), clf.predict_proba(Xt))
    # A map refit drops the draws.
    clf.set_params(inference="map").fit(X, y)
    assert not hasattr(clf, "_posterior") and not hasattr(clf, "elbo_")


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full"])
def test_classifier_vi_every_type(covariance_type):
    from bayesgmm import GMMClassifier
    X = np.concatenate([blobs(30, CENTRES[:2], seed=1), blobs(25, CENTRES[2:3], seed=2)])
    y = np.repeat([0, 1], [60, 25])
    clf = GMMClassifier([2, 1], covariance_type=covariance_type, inference="vi", n_samples=20,
                        random_state=0, device="cpu").fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert clf.score(X, y) == 1.0 and clf.n_effective_components_.tolist() == [2, 1]
    assert np.all(np.isfinite(clf.elbo_))
    assert not np.allclose(clf.class_log_likelihood(X), clf.class_log_likelihood(X, plug_in=True))


def test_classifier_vi_refusals():
    from bayesgmm import GMMClassifier
    X = blobs(20, CENTRES[:2], seed=0)
    y = np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match="discriminative_steps=5"):
        GMMClassifier(1, inference="vi", discriminative_steps=5, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="inference must be one of"):
        GMMClassifier(1, inference="hmc", device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="max_iter=0"):
        GMMClassifier(1, inference="vi", max_iter=0, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="n_samples must be"):
        GMMClassifier(1, inference="vi", n_samples=0, device="cpu").fit(X, y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weight_prior", ["dirichlet", "dirichlet_process"])
def test_vi_on_cuda_matches_cpu(weight_prior):
    """The engine on the GPU: the same bound and point as on the CPU (the
    MAP start and the coordinate ascent in float64 on either device)."""
    X = blobs(80, CENTRES[:3], seed=9)
    kw = dict(covariance_type="full", inference="vi", n_samples=50, random_state=0,
              weight_prior=weight_prior)
    cpu = BayesianGMM(6 if weight_prior != "dirichlet" else 3, device="cpu", **kw).fit(X)
    gpu = BayesianGMM(6 if weight_prior != "dirichlet" else 3, device="cuda", **kw).fit(X)
    assert gpu.elbo_ == pytest.approx(cpu.elbo_, rel=1e-4)
    assert gpu.n_effective_components_ == cpu.n_effective_components_
    np.testing.assert_allclose(np.sort(gpu.weights_), np.sort(cpu.weights_), atol=1e-3)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_classifier_posterior_samples_and_credible_intervals(covariance_type):
    """The classifier's posterior API, as BayesianGMM's behind a class
    axis: the stored draws (padded components at weight 0, NaN means and
    covariances, as weights_ and means_), a seeded subset of the same draws
    of every array, and 95% intervals on the means of well-separated
    clusters (50 points of sd 0.4 each) that hold each cluster's sample
    mean and are about as wide as the conjugate posterior's, 2 x 1.96 x
    0.4 / sqrt(50)."""
    from bayesgmm import GMMClassifier
    centres = np.array(CENTRES[:3], dtype=float)
    X = np.concatenate([blobs(50, centres[:2], seed=1), blobs(50, centres[2:3], seed=2)])
    y = np.repeat([0, 1], [100, 50])
    clf = GMMClassifier([2, 1], covariance_type=covariance_type, inference="vi", n_samples=40,
                        random_state=0, device="cpu").fit(X, y)
    d = clf.posterior_samples()
    assert d["weights"].shape == (2, 40, 2) and d["means"].shape == (2, 40, 2, 2)
    assert d["covariances"].shape[:2] == (2, 40)
    np.testing.assert_array_equal(d["weights"][1, :, 1], 0.0)
    assert np.isnan(d["means"][1, :, 1]).all() and np.isfinite(d["means"][0]).all()
    if covariance_type != "tied":
        assert np.isnan(d["covariances"][1, :, 1]).all()
    sub = clf.posterior_samples(7, random_state=3)
    again = clf.posterior_samples(7, random_state=3)
    for name in d:
        np.testing.assert_array_equal(sub[name], again[name])
        assert sub[name].shape[1] == 7
    # the subset's draws are stored draws, the same ones in every array
    rows = [int(np.flatnonzero((d["weights"][0] == w).all(1))[0]) for w in sub["weights"][0]]
    np.testing.assert_array_equal(sub["means"][0], d["means"][0, rows])
    lo, hi = clf.credible_interval("means", level=0.95)
    assert lo.shape == clf.means_.shape and np.isnan(lo[1, 1]).all()
    np.testing.assert_allclose(lo[0], np.quantile(d["means"][0], 0.025, axis=0))
    for c, truth in ((0, centres[:2]), (1, centres[2:3])):
        Xc = X[y == c]
        near = np.argmin(((Xc[:, None, :] - truth[None]) ** 2).sum(-1), 1)
        sample = np.stack([Xc[near == j].mean(0) for j in range(len(truth))])
        k = clf.n_components_[c]
        order = [int(np.argmin(np.abs(clf.means_[c, :k] - t).sum(1))) for t in truth]
        assert np.all((lo[c, order] < sample) & (sample < hi[c, order]))
        width = hi[c, order] - lo[c, order]
        np.testing.assert_allclose(width, 2 * 1.96 * 0.4 / np.sqrt(50), rtol=0.5)
    lw, hw = clf.credible_interval("weights")
    assert np.all(lw <= clf.weights_ + 1e-12) and np.all(clf.weights_ <= hw + 1e-12)
    with pytest.raises(ValueError, match="n_samples=41 but only 40 posterior draws"):
        clf.posterior_samples(41)
    with pytest.raises(ValueError, match="this GMMClassifier was fitted with inference='map'"):
        GMMClassifier([2, 1], device="cpu").fit(X, y).credible_interval("means")


def _mostly_missing(seed=0):
    """Two clusters of 100 points in 3-D, feature 2 missing in ~90% of rows."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (100, 3)), rng.normal(6, 1, (100, 3))])
    X[rng.random(200) < 0.9, 2] = np.nan
    return X


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_vi_with_a_mostly_missing_feature_counts_its_observed_entries(covariance_type):
    """"diag"/"spherical" fit the exact observed-data bound: a mean's 90%
    interval widens with 1/sqrt(its feature's observed entries), about
    sqrt(10) times the fully observed features' here (the latent-coordinates
    family, still used for full and tied, gave intervals no wider than the
    observed features': 0.34 where NUTS gives 1.5-1.8, README), and no
    warning; for both estimators; the CAVI never lowers the exact bound."""
    X = _mostly_missing()
    kw = dict(missing="marginalize", covariance_type=covariance_type, random_state=0,
              device="cpu", inference="vi", n_samples=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vi = BayesianGMM(2, **kw).fit(X)
        clf = GMMClassifier(1, **kw).fit(X, np.repeat([0, 1], 100))
    for lo, hi in (vi.credible_interval("means", 0.9), clf.credible_interval("means", 0.9)):
        width = (hi - lo).reshape(2, 3)
        ratio = width[:, 2] / width[:, :2].mean(1)
        assert np.all((ratio > 2.2) & (ratio < 4.5)), ratio
    # The exact bound rises at every CAVI iteration (tol=0: all of them).
    Xt, pt, family, start = problem(covariance_type, K=2, n_per=40, seed=5, D=3)
    Xt = Xt.clone()
    Xt[torch.as_tensor(np.random.default_rng(1).random(Xt.shape[0]) < 0.8), 2] = float("nan")
    res = cavi(Groups.single(Xt), start, pt, family, max_iter=60, tol=0.0)
    h = res.history[:, 0].numpy()
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:])), np.diff(h).min()


def test_vi_full_with_a_mostly_missing_feature_warns_that_its_intervals_are_too_narrow():
    # For full (and tied) the mean-field family makes missing entries latent
    # values independent of the parameters: with feature 2 missing in 90% of
    # the rows its mean's 90% interval comes out no wider than those of the
    # observed features, where NUTS (and the 1/sqrt(n_observed) rule) give
    # one several times wider.  The warning names NUTS and the diag type.
    X = _mostly_missing()
    kw = dict(missing="marginalize", covariance_type="full", random_state=0, device="cpu")
    with pytest.warns(UserWarning, match=r"feature\(s\) 2 \(missing in 9\d% of the rows\): "
                                         r"with covariance_type='full'.* too narrow.*"
                                         r"inference='nuts'.*covariance_type='diag'") as rec:
        vi = BayesianGMM(2, inference="vi", **kw).fit(X)
    assert rec[0].filename == __file__
    lo, hi = vi.credible_interval("means", 0.9)
    width = hi - lo
    # What the warning says: no wider than the fully observed features'.
    assert width[:, 2].max() < 2 * width[:, :2].max()
    with pytest.warns(UserWarning, match=r"GMMClassifier with inference='vi': feature\(s\) 2"):
        GMMClassifier(1, inference="vi", **kw).fit(X, np.repeat([0, 1], 100))
    # Fitted on named columns, the warning names the column (it said "2").
    import pandas as pd
    with pytest.warns(UserWarning, match=r"feature\(s\) 'z' \(missing in 9\d% of the rows\)"):
        BayesianGMM(2, inference="vi", **kw).fit(pd.DataFrame(X, columns=["x", "y", "z"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BayesianGMM(2, inference="vi", **kw).fit(np.where(np.isnan(X), 0.0, X))


@pytest.mark.parametrize("D", [1, 2, 7])
@pytest.mark.parametrize("weighted", [False, True])
def test_observed_data_e_step_against_a_float64_reference(D, weighted):
    """The exact bound's E-step with missing entries ("diag"/"spherical"),
    by the MAP E-step's masked products: against numpy's float64 sums over
    each point's observed features of c_kd + log lambda_kd / 2 - log(2 pi) / 2
    - lambda_kd (x_nd - m_kd)^2 / 2, two groups, one narrow component far
    from the data (its p m^2 past the products' float64 bound: taken by
    differences, which the test fails without), a second one past the
    float64 bound but not float32's (p m^2 = 9e6: fails with float32's
    bound), weights with zeros; then one group shared by two pairs."""
    from bayesgmm.variational import _observed_stats
    rng = np.random.default_rng(D)
    G, n, K = 2, 300, 3
    X = rng.normal(size=(G * n, D))
    X[rng.random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(1), 0] = 0.5
    labels = np.repeat(np.arange(G), n)
    w = rng.integers(0, 3, size=G * n).astype(float) if weighted else np.ones(G * n)
    m = rng.normal(size=(G, K, D))
    m[1, 2] = 1e3                                  # far ...
    lam = rng.uniform(0.5, 2.0, size=(G, K, D))
    lam[1, 2] = 1e4                                # ... and narrow: 1e4 * 1e6 >> 1e2
    X[n:n + 20] = np.where(np.isnan(X[n:n + 20]), np.nan,
                           1e3 + rng.normal(scale=1e-2, size=(20, D)))   # its points
    m[0, 1], lam[0, 1] = 3e3, 1.0                  # p m^2 = 9e6: past float64 bound, not float32
    X[:30] = np.where(np.isnan(X[:30]), np.nan, 3e3 + rng.normal(size=(30, D)))
    c = rng.normal(scale=0.1, size=(G, K, D))
    logw = np.log(rng.dirichlet(np.ones(K), size=G))
    groups = Groups.from_labels(torch.tensor(X), torch.tensor(labels), G,
                                torch.tensor(w) if weighted else None)
    t = lambda a: torch.tensor(a)
    st, Nkd = _observed_stats(groups, torch.arange(G), t(logw), t(m), t(lam), t(c))
    for g in range(G):
        x, o, wg = X[labels == g], ~np.isnan(X[labels == g]), w[labels == g]
        d = np.where(o[:, None], x[:, None] - m[g], 0.0)                      # (n, K, D)
        lp = logw[g] + (o[:, None] * (c[g] + 0.5 * np.log(lam[g]) - 0.5 * math.log(2 * math.pi))
                        - 0.5 * lam[g] * d * d).sum(-1)
        top = lp.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(lp - top).sum(1))
        r = np.exp(lp - lse[:, None]) * wg[:, None]                          # (n, K)
        np.testing.assert_allclose(st.loglik[g].item(), (wg * lse).sum(), rtol=1e-12)
        np.testing.assert_allclose(st.Nk[g].numpy(), r.sum(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(Nkd[g].numpy(), r.T @ o, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(st.S1[g].numpy(), np.einsum("nk,nkd->kd", r, d),
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(st.S2[g].numpy(), np.einsum("nk,nkd->kd", r, d * d),
                                   rtol=1e-9, atol=1e-9)
    # One group (a plain mixture) broadcast to two pairs: each pair its own.
    one = Groups.single(torch.tensor(X[labels == 0]))
    st1, Nkd1 = _observed_stats(one, torch.zeros(2, dtype=torch.long), t(logw), t(m), t(lam),
                                t(c))
    ref = _observed_stats(Groups.single(torch.tensor(X[labels == 0])), torch.zeros(1,
                          dtype=torch.long), t(logw[1:]), t(m[1:]), t(lam[1:]), t(c[1:]))
    np.testing.assert_allclose(st1.loglik[1].item(), ref[0].loglik[0].item(), rtol=1e-12)
    np.testing.assert_allclose(Nkd1[1].numpy(), ref[1][0].numpy(), rtol=1e-12, atol=1e-12)
