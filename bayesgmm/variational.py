"""Mean-field variational Bayes for the Bayesian Gaussian mixture, in
closed form (coordinate ascent, CAVI): the engine of ``inference="vi"``.

The variational family factorises over the globals of
:func:`bayesgmm.models.gmm_model` (the assignments are summed out exactly,
as ``TraceEnum_ELBO`` does)::

    q(weights) q(means) q(covariances),   q(means) = prod_k N(m_k, Sigma_k)

with each factor the exact coordinate-ascent optimum given the others:

* weights: Dirichlet(alpha + N) for the Dirichlet prior; for the truncated
  Dirichlet-process (stick-breaking) prior, independent Beta(1 + N_k,
  alpha + N_{>k}) sticks;
* means: a Gaussian per component with a full covariance (the prior is
  Normal per feature, independent of the covariance, so given q of the
  precisions the optimum is Gaussian);
* covariances: "full"/"tied": a Wishart on the precision (the prior's
  family: conjugate); "diag"/"spherical": the prior is an InverseGamma on
  each standard deviation sigma (a Gamma on u = 1/sigma), which is not
  conjugate to a Gaussian likelihood, but the optimal factor is still a
  one-dimensional density, ``q(u) ~ u^(p-1) exp(-b u - c u^2 / 2)``
  (:class:`InverseScale`), whose normaliser and moments are computed by
  the trapezoid rule in log u (accurate to ~1e-14: the log density is
  concave and smooth there; a Gamma's closed forms where c = 0, shifted
  to first order in c where c is tiny).

Why this family and this engine: it is the largest family that has closed
form updates, so each iteration costs one E-step over the data, the same
as an EM step of the MAP fit (the E-step is the MAP's own, run on
"effective" parameters: E[log w_k] plus a per-component constant as the
log weight, the posterior mean as the mean and E[Lambda]^-1 as the
covariance); a Pyro guide fitted by stochastic gradients needs hundreds of
noisy steps for the same bound.  Each update cannot lower the ELBO, so the
fit stops on a tolerance on the exact ELBO.  The price against a full-rank
guide (``AutoMultivariateNormal``): the correlations between a component's
weight, mean and covariance are not represented, so the credible intervals
are somewhat narrower than NUTS's where components overlap
(``benchmarks/calibration.py`` measures the coverage).

The ELBO computed here is the one Pyro's ``TraceEnum_ELBO`` estimates for
:func:`gmm_model` with the guide :func:`pyro_guide` of the same ``q``
(``tests/test_variational.py`` checks the two agree), for complete data.

Sample weights scale each point's statistics, as in EM (integer weights
give the fit of repeated rows).  Missing entries (NaN), "diag" and
"spherical": the likelihood factorises over features, so the exact bound
scores each point by its observed coordinates (the effective constant of
each component split by feature) and each feature's factors count that
feature's observed entries (:func:`_observed_stats`); the bound is the one
``TraceEnum_ELBO`` estimates for the model that masks them (tested).
"full" and "tied": the model scores a
point by the marginal density of its observed coordinates, whose
expectation under a Wishart q has no closed-form optimum; so the missing
coordinates join the variational family, q(z, x_mis) = q(z) q(x_mis | z),
independent of the parameters.  The optimal q(x_mis | z = k) is the
conditional Gaussian under the effective parameters, which is what the
E-step's conditional moments are, so the updates stay closed-form; the
price is a looser bound than the one ``TraceEnum_ELBO`` estimates for the
same q of the parameters (below it by ~0.5 nats with a dozen missing
entries in ``tests/test_variational.py``), and a posterior far too narrow
for the parameters of a feature that is mostly missing: the imputed
coordinates count as data in q of the means (95% of a feature missing gave
intervals 14-35 times narrower than NUTS's).  The estimators warn
(:func:`bayesgmm._base.warn_vi_missing`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
from . import _pyro  # noqa: F401  (Pyro imported without tqdm's notebook warning)
import pyro
import pyro.distributions as dist
from torch.distributions import constraints

from ._options import WEIGHT_PRIORS
from .covariance import Covariance
from .fitting import (_PYRO_LOCK, Groups, Stats, _beyond, e_step, expanded_bound,
                      feature_stats, gaussian_constants)
from .models import stick_breaking
from .priors import MixtureParams, PriorTensors

__all__ = ["WEIGHT_PRIORS", "InverseScale", "VariationalPosterior", "CaviResult", "cavi", "elbo",
           "prune",
           "score", "warn_unconverged", "pyro_guide"]

WeightPrior = Literal["dirichlet", "dirichlet_process"]

# The grid of q(u) in t = log u (see _span): nodes of the trapezoid rule for
# its normaliser and moments, and of the inverse-CDF sampler.  The step is
# _STEP x the curvature scale sd, at most _STEP x _STEP_CAP in t: the
# trapezoid rule's error falls like exp(-2 pi a / step) for an integrand
# analytic in a strip of half-width a about the real line, and the log
# density p t - b e^t - c e^(2t) / 2 keeps |q| bounded for a up to ~pi/4 in
# t (the e^(2t) term) and ~sd where it is Gaussian-like.  Against 40-digit
# quadrature (mpmath; 400 cases of p 1e-2..1e30, b 1e-6..1e6, c 0..1e6 p)
# this step was within 2e-15 of log Z and E[log u] and 1.4e-14 of E[u^2]
# relative in float64, 1.5e-6 in float32; half of it changed nothing
# measurable, twice it lost ~5 digits (the tests hold it to 1e-10 of
# scipy's quad, to 1e-14 of mpmath's where p is huge).  The grid ends where
# the log density is _TAIL nats below the mode's (the mass beyond, ~1e-17).
_STEP, _STEP_CAP = 0.25, 0.5
_TAIL = 40.0
_SAMPLE_POINTS = 4097
_MAX_GRID_POINTS = 2 ** 17
_NEWTON_STEPS = 5
_LOG_2 = math.log(2.0)


def _phis(d: torch.Tensor):
    """phi(d) and phi(2 d), phi(x) = e^x - 1 - x: its Taylor
    series to x^5 for |x| < 1e-3 (truncation below 4e-15 relative),
    expm1(x) - x beyond (whose cancellation leaves ~2e-13 relative just
    above 1e-3, ~1e-14 by 1e-2: far inside what the quadrature needs);
    phi(2d) = expm1(d)^2 + 2 phi(d), a sum of two terms >= 0 (no
    cancellation), held below finfo.max / 8 (where it would overflow, the
    density is 0 and its coefficient may be 0: 0 x inf was NaN).  In place
    where it can be: the grids hold ~1e5-1e6 points."""
    phi1 = torch.expm1(d)
    phi2 = phi1 * phi1
    phi1 = torch.where(d.abs() < 1e-3, _phi_series(d), phi1.sub_(d))
    phi2.add_(phi1, alpha=2).clamp_(max=torch.finfo(d.dtype).max / 8)
    return phi1, phi2


def _phi_series(x: torch.Tensor) -> torch.Tensor:
    """e^x - 1 - x by its Taylor series to x^5 (for |x| < 1e-3)."""
    return (x / 120).add_(1 / 24).mul_(x).add_(1 / 6).mul_(x).add_(0.5).mul_(x).mul_(x)


def _grid(q: "InverseScale", points: Optional[int] = None) -> torch.Tensor:
    """Offsets d (*batch, n) from the mode in t = log u of the sampling grid
    (:func:`_span`), n the most any element needs, or ``points`` if more."""
    lo, hi, need = _span(q)
    n = int(need.max().item()) if need.numel() else 2
    return _points(lo, hi, max(n, points or 2))


def _span(q: "InverseScale"):
    """The grid's ends (lo, hi) as offsets from the mode in t = log u, where
    the log density is _TAIL nats below the mode's (:meth:`InverseScale._ends`),
    and the points it needs at a step of _STEP x min(sd, _STEP_CAP), at most
    _MAX_GRID_POINTS (a shape p below ~2.4e-3 with data would need more: the
    left tail falls like e^(p t); the step then widens: E[u^2] 1.3e-6 off at
    p = 1e-3 in float64, against 3e-7 on the grid of before)."""
    lo, hi = q._ends()
    step = _STEP * torch.clamp(q.sd, max=_STEP_CAP)
    need = torch.ceil((hi - lo) / step).clamp(1, _MAX_GRID_POINTS - 1) + 1
    return lo, hi, need


def _points(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    s = torch.linspace(0.0, 1.0, n, dtype=lo.dtype, device=lo.device)
    return lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * s


def _groups(need: torch.Tensor):
    """Elements (flat indices, or None for all) and the grid length each
    group shares: one group, or two where that saves a fifth of the points
    or more (a Dirichlet process's components with little data, p ~ a,
    need a few times the points of the others).  Elements that need 0
    points (closed forms) are in none.  One host sync."""
    v = need.cpu().numpy()
    order = np.flatnonzero(v > 0)
    if order.size == 0:
        return []
    order = order[np.argsort(v[order], kind="stable")]
    s = v[order]
    k = np.arange(1, s.size + 1)
    cost = k * s + (s.size - k) * s[-1]      # the first k on a grid of s[k-1] points
    best = int(np.argmin(cost))
    idx = torch.from_numpy(order).to(need.device)
    if best == s.size - 1 or cost[best] > 0.8 * cost[-1]:
        return [(None if s.size == v.size else idx, max(int(s[-1]), 2))]
    return [(idx[:best + 1], max(int(s[best]), 2)), (idx[best + 1:], int(s[-1]))]


def _logf_rel(d: torch.Tensor, bu: torch.Tensor, cu: torch.Tensor):
    """log f(t0 + d) - log f(t0) of q(u)'s density against dt (t = log u),
    log f(t) = p t - b u - c u^2 / 2, through the mode's p = b u0 + c u0^2:
    -b u0 phi(d) - c u0^2 phi(2 d) / 2 with phi(x) = e^x - 1 - x, whose
    terms keep their digits however narrow the grid (the direct form
    subtracts numbers ~p apart by O(1)); ``bu``, ``cu``: b u0 and c u0^2
    (batch shape of d without its last axis)."""
    phi1, phi2 = _phis(d)
    return phi1.mul_(-bu.unsqueeze(-1)).addcmul_(phi2, cu.unsqueeze(-1), value=-0.5)


def _quadrature(p, b, c, t0, lo, hi, n: int):
    """log Z, E[log u] and E[u^2] of q(u) by the trapezoid rule on n points
    covering lo to hi (offsets from the mode t0 in t), elementwise.  The
    points are whole multiples of the step from the mode (d_k = h (k - k0)):
    those near the mode, where the body and the steep right edge are, carry
    no rounding of |lo| (~40 / p; from a review: float32 lost up to 1e-3 of
    E[u^2] at p ~ 1e-3 on lo + (hi - lo) s)."""
    u0 = torch.exp(t0)
    bu, cu = b * u0, c * u0 * u0
    h = (hi - lo) / (n - 2)                         # one spare point for the whole shift
    k0 = torch.ceil(-lo / h)
    d = h.unsqueeze(-1) * (torch.arange(n, dtype=lo.dtype, device=lo.device)
                           - k0.unsqueeze(-1))
    logf = _logf_rel(d, bu, cu)
    e2 = torch.exp(logf + 2 * d)                    # w e^(2d), summed as it is (no cancellation)
    w = logf.exp_()                                 # the ends': ~1e-17 of the mass
    z = w.sum(-1)
    log_z = (p * t0 - bu - 0.5 * cu) + torch.log(z) + torch.log(h)      # log f(t0) + ...
    return log_z, t0 + torch.einsum("...i,...i->...", w, d) / z, u0 * u0 * e2.sum(-1) / z


# ----------------------------------------------------------------------------
# q(u) for u = 1 / sigma: the optimal factor of a diagonal / spherical scale
# ----------------------------------------------------------------------------
class InverseScale:
    """The density ``q(u) = u^(p-1) exp(-b u - c u^2 / 2) / Z`` of an
    inverse standard deviation u = 1/sigma (p, b > 0, c >= 0, elementwise
    batched): the coordinate-ascent optimum for an InverseGamma(a, b)
    prior on sigma (a Gamma(a, b) on u) and Gaussian data with expected
    squared deviations c, p = a + the number of values.  With c = 0 it is
    the Gamma(p, b) itself, whose closed forms are used; with c so small
    that the Gamma's moments shifted to first order in c are exact to
    rounding (:meth:`_near_gamma`: a Dirichlet process's surplus
    components, which carry ~1e-12 of a point), those.

    ``log_z``, ``mean_log`` (E[log u]) and ``mean_sq`` (E[u^2]) come from
    the trapezoid rule in t = log u on a grid about the mode (:func:`_span`,
    :func:`_quadrature`; the log density p t - b e^t - c e^(2t) / 2 is
    concave in t), elements grouped by the grid length they need
    (:func:`_groups`).  A Gauss-Hermite rule of 64 nodes was off by ~2e-7
    for small p, where the density is skewed (a Gumbel-like left tail).
    Computed without gradients (in place; the grouping is on the host):
    inputs that require grad are refused."""

    def __init__(self, p: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
        if any(torch.is_tensor(x) and x.requires_grad for x in (p, b, c)):
            raise ValueError("InverseScale computes its moments without gradients (in place, "
                             "grouped on the host), got inputs that require grad: pass "
                             "detached tensors (p.detach(), b.detach(), c.detach())")
        self.p, self.b, self.c = torch.broadcast_tensors(p, b, c.clamp_min(0))
        p, b, c = self.p, self.b, self.c
        # Mode in u of u^p exp(-b u - c u^2/2) (the dt-density), the stable
        # root; hypot, as b^2 + 4cp leaves the range once the weight behind
        # a component passes ~sqrt(finfo.max).
        u0 = 2 * p / (b + torch.hypot(b, 2 * c.sqrt() * p.sqrt()))
        self.t0 = torch.log(u0)
        self.sd = torch.rsqrt(p + c * u0 * u0)          # 1 / sqrt(-f''(t0))
        near, r = self._near_gamma()
        # The grid is held as offsets d from the mode, and the log density
        # relative to the mode's (<= 0): with a large weight behind a
        # component (p ~ 1e29: sd ~ 1e-15), t0 + d rounds to t0 and
        # log f(t0 + d) (~p) to log f(t0), so the rule would see one point.
        lo, hi, groups = self._plan(near)
        flat = [x.reshape(-1) for x in (p, b, c, self.t0, lo, hi)]
        # NaN unless a grid or the closed forms give it (a NaN c: neither).
        log_z, mean_log, mean_sq = (torch.full_like(flat[0], math.nan) for _ in range(3))
        for idx, n in groups:
            args = flat if idx is None else [x[idx] for x in flat]
            out = _quadrature(*args, n)
            if idx is None:
                log_z, mean_log, mean_sq = out
            else:
                for whole, part in zip((log_z, mean_log, mean_sq), out):
                    whole[idx] = part
        log_z, mean_log, mean_sq = (x.reshape(p.shape) for x in (log_z, mean_log, mean_sq))
        # Near the Gamma(p, b) (almost no data behind the component): its closed
        # forms, shifted to first order in s = c / 2 (the grid, sized for the
        # others, need not fit their long left tails).  With Y = u^2 under
        # the Gamma, log Z = log Z_Gamma - s E[Y] + s^2 Var(Y) / 2 - ...,
        # E[log u] its derivative in p, E[u^2] minus its derivative in s:
        # E[Y] = p (p + 1) / b^2, s Var(Y) = E[Y] r (r = s (4 p + 6) / b^2).
        # In float64 where the device has it: lgamma(p) - p log b cancels
        # (float32: 1e-5 of log Z at p ~ 1e4, against the grid's 6e-7).
        wide = torch.float64 if p.device.type != "mps" else p.dtype
        pw, bw, cw, rw = (x.to(wide) for x in (p, b, c, r))
        log_b = torch.log(bw)
        m2 = (pw / bw) * ((pw + 1) / bw)
        s = torch.where(near & (cw > 0), 0.5 * cw, torch.zeros_like(cw))   # c = 0: exactly 0
        zero = torch.zeros_like(m2)
        shift = torch.where(s > 0, s * m2, zero)                          # 0 x inf is NaN
        shift_log = torch.where(s > 0, s * ((2 * pw + 1) / bw) / bw, zero)
        closed = (torch.lgamma(pw) - pw * log_b - shift * (1 - 0.5 * rw),
                  torch.digamma(pw) - log_b - shift_log, m2 * (1 - rw))
        self.log_z, self.mean_log, self.mean_sq = (
            torch.where(near, x.to(p.dtype), grid)
            for x, grid in zip(closed, (log_z, mean_log, mean_sq)))

    def _near_gamma(self):
        """Where q is the Gamma(p, b) shifted to first order in c (c = 0, or
        the relative first-order shift of E[u^2], r = c (2 p + 3) / b^2,
        below 1e-2 sqrt(finfo.eps): the terms left out are below ~2 r^2,
        ~4e-20 in float64 and ~2e-11 in float32 (a review measured the
        factors against 60-digit quadrature: 1.7 r^2 in E[u^2], 0.4 r^2 in
        E[log u], ~p r^3 in log Z)), and r (NaN where c is)."""
        p, b, c = self.p, self.b, self.c
        r = torch.where(c == 0, torch.zeros_like(c), c * ((2 * p + 3) / b) / b)
        return (c == 0) | (r < 1e-2 * math.sqrt(torch.finfo(c.dtype).eps)), r

    def _plan(self, near: Optional[torch.Tensor] = None):
        """The grid's ends and its groups (:func:`_groups`) of flat indices
        sharing a length; an element near the Gamma (:meth:`_near_gamma`:
        closed forms) is in none."""
        lo, hi, need = _span(self)
        near = self._near_gamma()[0] if near is None else near
        need = torch.where(near, torch.zeros_like(need), need)
        return lo, hi, _groups(need.reshape(-1))

    def _ends(self):
        """Offsets (lo, hi) from the mode in t beyond which the log density
        is at least _TAIL below the mode's.  It is concave with its maximum
        at 0, so Newton's method on g(d) = -_TAIL started outside the root
        stays outside (the tangent lies above g) and closes in; the starts
        are bounds: g(d) <= p d + b u0 + c u0^2 / 2 everywhere, g(d) <=
        -d^2 / (2 sd^2) for d >= 0 and <= -d^2 / (2 e sd^2) for -1/2 <= d <= 0
        (g'' <= -e^(2d) / sd^2 below the mode), g(d) <= -b u0 e^d / 2 for
        d >= 1.7 and g(d) <= -c u0^2 e^(2d) / 4 for d >= 0.85 (phi(x) >= e^x / 2
        for x >= 1.7).  From these starts _NEWTON_STEPS = 5 leave each end
        within 1e-6 nats of _TAIL over 2e5 random (p, b, c) (p 1e-2..1e30,
        b 1e-6..1e6, c 0..1e6 p); without the last bound 10 steps left ends
        up to 3e15 nats beyond, where c u0^2 e^(2d) rules (each step then
        moves the end by ~1/2 in d)."""
        p = self.p
        u0 = torch.exp(self.t0)
        bu, cu = self.b * u0, self.c * u0 * u0
        lin = -(_TAIL + bu + 0.5 * cu) / p
        near = math.sqrt(2 * _TAIL * math.e) * self.sd
        lo = torch.where(near <= 0.5, torch.maximum(-near, lin), lin)
        # g(d) <= -b u0 e^d / 2 for d >= 1.7, so log(2 _TAIL / (b u0)) bounds
        # it too, where that is >= 1.7 (else b u0 e^1.7 / 2 > _TAIL already).
        # Likewise -c u0^2 e^(2d) / 4 for d >= 0.85 (log(inf) where c = 0).
        hi = torch.minimum(math.sqrt(2 * _TAIL) * self.sd,
                           torch.log(2 * _TAIL / bu).clamp_min(1.7))
        hi = torch.minimum(hi, (0.5 * torch.log(4 * _TAIL / cu)).clamp_min(0.85))
        x = torch.stack([lo, hi])                  # both ends in one pass
        for _ in range(_NEWTON_STEPS):
            phi1, phi2 = _phis(x)
            g = -bu * phi1 - 0.5 * cu * phi2
            slope = -bu * (phi1 + x) - cu * (phi2 + 2 * x)            # g'(x)
            new = x - (g + _TAIL) / slope
            x = torch.where(torch.isfinite(new) & (new * x > 0), new, x)
        return x[0], x[1]

    #: What an instance holds: its parameters, mode, curvature scale and moments.
    _FIELDS = ("p", "b", "c", "t0", "sd", "log_z", "mean_log", "mean_sq")

    @classmethod
    def _of(cls, fields: dict) -> "InverseScale":
        """An instance holding ``fields`` (every one of _FIELDS), as computed."""
        out = cls.__new__(cls)
        out.__dict__.update(fields)
        return out

    def select(self, index) -> "InverseScale":
        """The elements ``index`` of the leading (batch) dimension, moments
        kept (no quadrature)."""
        return self._of({f: getattr(self, f)[index] for f in self._FIELDS})

    @classmethod
    def cat(cls, parts: Sequence["InverseScale"]) -> "InverseScale":
        """``parts`` joined along the leading dimension, moments kept."""
        return cls._of({f: torch.cat([getattr(s, f) for s in parts]) for f in cls._FIELDS})

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """log q(u) against du."""
        return ((self.p - 1) * torch.log(u) - self.b * u - 0.5 * self.c * u * u - self.log_z)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` independent draws (n, *batch) by the inverse CDF on a fine
        grid in t (linear interpolation of the CDF between grid points)."""
        shape = self.p.shape
        d = _grid(self, _SAMPLE_POINTS)                                      # (*batch, G)
        u0 = torch.exp(self.t0)
        dens = torch.exp(_logf_rel(d, self.b * u0, self.c * u0 * u0))
        cdf = torch.cumsum(0.5 * (dens[..., 1:] + dens[..., :-1]), -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        cdf = cdf / cdf[..., -1:]
        G = d.shape[-1]
        flat_cdf, flat_d = cdf.reshape(-1, G), d.reshape(-1, G)
        U = torch.rand((flat_cdf.shape[0], n), dtype=self.p.dtype, device=self.p.device)
        hi = torch.searchsorted(flat_cdf, U).clamp(1, G - 1)
        lo = hi - 1
        c_lo, c_hi = flat_cdf.gather(1, lo), flat_cdf.gather(1, hi)
        frac = ((U - c_lo) / (c_hi - c_lo).clamp_min(1e-300)).clamp(0, 1)
        dd = flat_d.gather(1, lo) + frac * (flat_d.gather(1, hi) - flat_d.gather(1, lo))
        # u0 e^dd, not e^(t0 + dd): with sd ~1e-15 (p ~1e29) t0 + dd rounds
        # to the spacing of t0.
        u0 = torch.exp(self.t0).reshape(-1, 1)
        return (u0 * torch.exp(dd)).t().reshape((n,) + shape)


class _ScaleGuide(dist.TorchDistribution):
    """q of a standard deviation sigma = 1/u, u ~ :class:`InverseScale`, as a
    Pyro distribution (for :func:`pyro_guide`): samples and scores only."""

    arg_constraints = {}
    support = constraints.positive
    has_rsample = False

    def __init__(self, q: InverseScale, validate_args=None):
        self.q = q
        super().__init__(q.p.shape, torch.Size(), validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        n = int(np.prod(sample_shape)) if len(sample_shape) else 1
        u = self.q.sample(n)
        return (1.0 / u).reshape(tuple(sample_shape) + tuple(self.q.p.shape))

    def log_prob(self, value):
        u = 1.0 / value
        return self.q.log_prob(u) - 2 * torch.log(value)     # |du/dsigma| = 1/sigma^2


# ----------------------------------------------------------------------------
# The variational posterior
# ----------------------------------------------------------------------------
@dataclass
class VariationalPosterior:
    """Parameters of q, batch shape (P,) of independent mixtures.

    ``weight_a``, ``weight_b``: Dirichlet concentrations (P, K) (``weight_b``
    None), or the Beta sticks (P, K - 1) each of the stick-breaking prior;
    ``mean`` (P, K, D) and ``mean_cov`` (P, K, D, D): q(means); and the
    covariance factor: "diag"/"spherical" an :class:`InverseScale` per
    standard deviation ((P, K, D) / (P, K)), "full"/"tied" a Wishart on the
    precision with ``dof`` (P, K) / (P,) and inverse scale matrix
    ``wishart_inv`` (Psi + expected scatter), (P, K, D, D) / (P, D, D).
    ``mask`` (P, K) marks the real components of mixtures padded to a
    common K (the classifier's classes; Dirichlet prior only): padded ones
    have weight 0 and their other factors stay at the prior."""

    weight_prior: str
    weight_a: torch.Tensor
    weight_b: Optional[torch.Tensor]
    mean: torch.Tensor
    mean_cov: torch.Tensor
    scale: Optional[InverseScale] = None
    dof: Optional[torch.Tensor] = None
    wishart_inv: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None

    def select(self, index) -> "VariationalPosterior":
        """The mixtures ``index`` of the batch (their factors' moments kept)."""
        pick = lambda t: None if t is None else t[index]
        return VariationalPosterior(
            self.weight_prior, pick(self.weight_a), pick(self.weight_b), pick(self.mean),
            pick(self.mean_cov), None if self.scale is None else self.scale.select(index),
            pick(self.dof), pick(self.wishart_inv), pick(self.mask))

    @staticmethod
    def cat(parts: Sequence["VariationalPosterior"]) -> "VariationalPosterior":
        """Batches ``parts`` (of one family and weight prior) joined."""
        join = lambda f: (None if getattr(parts[0], f) is None
                          else torch.cat([getattr(q, f) for q in parts]))
        first = parts[0]
        return VariationalPosterior(
            first.weight_prior, join("weight_a"), join("weight_b"), join("mean"),
            join("mean_cov"), None if first.scale is None
            else InverseScale.cat([q.scale for q in parts]),
            join("dof"), join("wishart_inv"), join("mask"))

    # ---- weights
    def expected_log_weights(self) -> torch.Tensor:
        """E_q[log w_k], (P, K)."""
        a, b = self.weight_a, self.weight_b
        if b is None:
            if self.mask is None:
                return torch.digamma(a) - torch.digamma(a.sum(-1, keepdim=True))
            total = torch.digamma((a * self.mask).sum(-1, keepdim=True))
            return torch.where(self.mask, torch.digamma(a) - total,
                               torch.full_like(a, -math.inf))
        tot = torch.digamma(a + b)
        log_v, log_1mv = torch.digamma(a) - tot, torch.digamma(b) - tot
        before = torch.cumsum(log_1mv, -1)
        zero = a.new_zeros(a.shape[:-1] + (1,))
        return torch.cat([log_v, zero], -1) + torch.cat([zero, before], -1)

    def mean_weights(self) -> torch.Tensor:
        """E_q[w], (P, K)."""
        a, b = self.weight_a, self.weight_b
        if b is None:
            a = a if self.mask is None else a * self.mask
            return a / a.sum(-1, keepdim=True)
        return stick_breaking(a / (a + b))     # the sticks are independent under q

    # ---- precisions
    def expected_precision(self, family: Covariance) -> torch.Tensor:
        """The site value whose precision is E_q[Lambda] (the effective
        covariance of the E-step and of the means' update)."""
        if family.full_moments:
            return self.dof[..., None, None] * torch.cholesky_inverse(
                torch.linalg.cholesky(self.wishart_inv))
        return torch.rsqrt(self.scale.mean_sq)

    def log_det_gap(self, family: Covariance, D: int) -> torch.Tensor:
        """0.5 (E log|Lambda_k| - log|E Lambda_k|) per component, (P, K)."""
        if family.full_moments:
            i = torch.arange(D, dtype=self.dof.dtype, device=self.dof.device)
            dg = torch.digamma(0.5 * (self.dof.unsqueeze(-1) - i)).sum(-1)
            gap = 0.5 * (dg + D * _LOG_2 - D * torch.log(self.dof))
            return gap if family.per_component else gap.unsqueeze(-1).expand(
                self.weight_a.shape[:-1] + (self.mean.shape[-2],))
        g = self.scale.mean_log - 0.5 * torch.log(self.scale.mean_sq)
        return g.sum(-1) if g.dim() == self.mean.dim() else D * g

    def effective(self, family: Covariance) -> MixtureParams:
        """Parameters for which the E-step computes q(assignments) and the
        expected log joint of each point: log weights E[log w_k] + 0.5 (E
        log|Lambda| - log|E Lambda|) - 0.5 tr(E[Lambda] Sigma_k) (as
        weights, unnormalised), the means m_k, precisions E[Lambda]."""
        D = self.mean.shape[-1]
        value = self.expected_precision(family)
        prec = _dense_precision(family, value, self.mean.shape[-2], D)
        tr = (prec * self.mean_cov).sum((-1, -2))
        logw = self.expected_log_weights() + self.log_det_gap(family, D) - 0.5 * tr
        return MixtureParams(torch.exp(logw), self.mean, value)

    def feature_terms(self) -> tuple:
        """What the exact E-step with missing entries (:func:`_observed_stats`,
        "diag"/"spherical") needs of q: E[log w_k] (P, K), the means (P, K, D),
        E[lambda_kd] (P, K, D), and each observed feature's constant
        0.5 (E log lambda - log E lambda) - 0.5 E[lambda] Var(mu) (P, K, D):
        :meth:`effective`'s per-component constant, split by feature."""
        s = self.scale
        D = self.mean.shape[-1]
        prec, g = s.mean_sq, s.mean_log - 0.5 * torch.log(s.mean_sq)
        if prec.dim() < self.mean.dim():               # spherical: one per component
            prec, g = (v.unsqueeze(-1).expand(v.shape + (D,)) for v in (prec, g))
        var = torch.diagonal(self.mean_cov, dim1=-2, dim2=-1)
        return self.expected_log_weights(), self.mean, prec, g - 0.5 * prec * var

    def point(self, family: Covariance) -> MixtureParams:
        """A point summary: E[w], E[mu] and the covariance E[Lambda]^-1
        (scikit-learn's BayesianGaussianMixture reports the same)."""
        return MixtureParams(self.mean_weights(), self.mean, self.expected_precision(family))

    def kl(self, pt: PriorTensors, family: Covariance) -> torch.Tensor:
        """KL(q || prior) of the globals, (P,)."""
        a, b = self.weight_a, self.weight_b
        maskf = 1.0 if self.mask is None else self.mask.to(a.dtype)
        if b is None:
            # KL(Dir(a) || Dir(a0)) over the real components.
            a0 = pt.concentration.expand_as(a)
            a, a0 = a * maskf + (1 - maskf), a0 * maskf + (1 - maskf)   # padded: 1 and 1
            sa, sa0 = (a * maskf).sum(-1), (a0 * maskf).sum(-1)
            kl_w = (torch.lgamma(sa) - (torch.lgamma(a) * maskf).sum(-1) - torch.lgamma(sa0)
                    + (torch.lgamma(a0) * maskf).sum(-1)
                    + ((a - a0) * (torch.digamma(a) - torch.digamma(sa).unsqueeze(-1))
                       * maskf).sum(-1))
        else:
            alpha = pt.concentration[..., :1].expand_as(b)
            kl_w = torch.distributions.kl_divergence(
                dist.Beta(a, b), dist.Beta(torch.ones_like(a), alpha)).sum(-1)
        # Means: KL(N(m, S) || N(m0, diag s0^2)) per component.
        s0 = pt.mean_scale
        D = self.mean.shape[-1]
        z = (self.mean - pt.mean_loc) / s0
        var = torch.diagonal(self.mean_cov, dim1=-2, dim2=-1) / (s0 * s0)
        if family.diagonal_precision:   # q(means) factorises over features
            logdet = torch.log(torch.diagonal(self.mean_cov, dim1=-2, dim2=-1)).sum(-1)
        else:
            logdet = 2 * torch.log(torch.diagonal(torch.linalg.cholesky(self.mean_cov),
                                                  dim1=-2, dim2=-1)).sum(-1)
        kl_m = 0.5 * (var.sum(-1) + (z * z).sum(-1) - D + 2 * torch.log(s0).sum() - logdet)
        return kl_w + (kl_m * maskf).sum(-1) + self._kl_cov(pt, family, maskf)

    def _kl_cov(self, pt: PriorTensors, family: Covariance, maskf=1.0) -> torch.Tensor:
        if family.full_moments:
            D = self.mean.shape[-1]
            dof, Winv = self.dof, self.wishart_inv
            nu0 = pt.dof
            i = torch.arange(D, dtype=dof.dtype, device=dof.device)
            logdet_winv = 2 * torch.log(torch.diagonal(torch.linalg.cholesky(Winv),
                                                       dim1=-2, dim2=-1)).sum(-1)
            e_logdet = torch.digamma(0.5 * (dof.unsqueeze(-1) - i)).sum(-1) + D * _LOG_2 \
                - logdet_winv
            W = torch.cholesky_inverse(torch.linalg.cholesky(Winv))
            tr = (pt.psi * W).sum((-1, -2))
            # E_q log p(Lambda): Wishart(nu0, scale Psi^-1).
            e_logp = (0.5 * (nu0 - D - 1) * e_logdet - 0.5 * dof * tr - 0.5 * nu0 * D * _LOG_2
                      + 0.5 * nu0 * pt.logdet_psi - torch.mvlgamma(0.5 * nu0, D))
            # E_q log q(Lambda): Wishart(dof, scale W), E[tr(Winv Lambda)] = dof D.
            e_logq = (0.5 * (dof - D - 1) * e_logdet - 0.5 * dof * D - 0.5 * dof * D * _LOG_2
                      + 0.5 * dof * logdet_winv - torch.mvlgamma(0.5 * dof, D))
            kl = e_logq - e_logp
            return (kl * maskf).sum(-1) if family.per_component else kl
        q, a, rate = self.scale, pt.scale_shape, pt.scale_rate
        # E_q[log p(u) - log q(u)] for p(u) = Gamma(a, rate), q(u) as InverseScale.
        neg = (a * torch.log(rate) - torch.lgamma(a) + (a - q.p) * q.mean_log
               + 0.5 * q.c * q.mean_sq + q.log_z)
        if not isinstance(maskf, float):
            neg = neg * maskf.reshape(maskf.shape + (1,) * (neg.dim() - maskf.dim()))
        return -neg.reshape(neg.shape[:1] + (-1,)).sum(-1)

    # ---- draws
    def sample(self, n: int, family: Covariance, seed: int) -> dict:
        """``n`` draws of the globals, {"weights": (P, n, K), "means": (P, n,
        K, D), site: (P, n, ...)}, in the frame q lives in; reproducible for a
        ``seed`` (torch's global generator is forked, not disturbed; under
        the Pyro lock, as every fit's seeded use of it: two VI fits in
        threads drew from each other's seeding, and the caller's state could
        come back changed)."""
        a, b = self.weight_a, self.weight_b
        cuda = (list(range(torch.cuda.device_count()))
                if torch.cuda.is_available() and torch.cuda.is_initialized() else [])
        with _PYRO_LOCK, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            if b is None:
                g = dist.Gamma(a, torch.ones_like(a)).sample((n,))
                g = g if self.mask is None else g * self.mask
                w = g / g.sum(-1, keepdim=True)
            else:
                w = stick_breaking(dist.Beta(a, b).sample((n,)))
            # By hand: MultivariateNormal's shape checks import sympy (~0.5 s)
            # on first use.
            L = torch.linalg.cholesky(self.mean_cov)
            eps = torch.randn((n,) + self.mean.shape, dtype=L.dtype, device=L.device)
            means = self.mean + (L @ eps.unsqueeze(-1)).squeeze(-1)
            if family.full_moments:
                value = _wishart_draws(self.dof, self.wishart_inv, n)
            else:
                value = 1.0 / self.scale.sample(n)
        return {"weights": w.movedim(0, 1), "means": means.movedim(0, 1),
                family.site: value.movedim(0, 1)}


def _wishart_draws(dof: torch.Tensor, wishart_inv: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` draws (n, *batch, D, D) of Wishart(dof, scale W = wishart_inv^-1)
    by Bartlett's decomposition, W = L L^T: L A A^T L^T with A lower
    triangular, A_ii^2 ~ chi^2(dof - i), A_ij ~ N(0, 1) below the diagonal.
    (torch's own sampler re-draws, with a warning, whenever its float32-style
    positive-definiteness check trips, which happens at large dof.)"""
    D = wishart_inv.shape[-1]
    L = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(wishart_inv)))
    shape = (n,) + tuple(dof.shape)
    i = torch.arange(D, dtype=dof.dtype, device=dof.device)
    chi2 = 2 * dist.Gamma(0.5 * (dof.unsqueeze(-1) - i), 1.0).sample((n,))   # (n, *batch, D)
    A = torch.randn(shape + (D, D), dtype=dof.dtype, device=dof.device).tril(-1)
    A = A + torch.diag_embed(torch.sqrt(chi2))
    LA = L @ A
    return LA @ LA.transpose(-1, -2)


def _dense_precision(family: Covariance, value: torch.Tensor, K: int, D: int) -> torch.Tensor:
    """Precision matrices (..., K, D, D) of a site value."""
    if family.full_moments:
        return value if family.per_component else value.unsqueeze(-3).expand(
            value.shape[:-2] + (K,) + value.shape[-2:])
    prec = value.pow(-2)
    if family.name == "spherical":
        return prec[..., None, None] * torch.eye(D, dtype=value.dtype, device=value.device)
    return torch.diag_embed(prec)


# ----------------------------------------------------------------------------
# Updates
# ----------------------------------------------------------------------------
def _point_terms(params: MixtureParams) -> tuple:
    """:meth:`VariationalPosterior.feature_terms` of a point (CAVI's start):
    log weights, means, precisions, no constants."""
    prec = params.cov.pow(-2)
    if prec.dim() < params.means.dim():
        prec = prec.unsqueeze(-1).expand_as(params.means)
    return torch.log(params.weights), params.means, prec, torch.zeros_like(prec)


def _observed_stats(groups: Groups, gidx: torch.Tensor, logw: torch.Tensor, means: torch.Tensor,
                    prec: torch.Tensor, const: torch.Tensor) -> tuple[Stats, torch.Tensor]:
    """The E-step of the exact mean-field bound with missing entries, for
    diagonal precisions ("diag", "spherical"): the likelihood factorises
    over features, so a point is scored, and counts, by its observed
    coordinates only, sum_d o_nd (c_kd + 0.5 log lambda_kd - 0.5 log 2 pi
    - 0.5 lambda_kd (x_nd - m_kd)^2) plus E[log w_k] (``feature_terms``'
    order of arguments).  Returns the statistics about ``means`` (loglik
    (P,), N_k (P, K), and S1, S2 (P, K, D) over observed entries only) and
    each feature's count of observed responsibility N_kd (P, K, D).  By
    the MAP E-step's masked products (:func:`bayesgmm.fitting.feature_stats`,
    float64, on every device), with the bound's constants in place of the
    Gaussian's."""
    m, p = means.double(), prec.double()
    base = gaussian_constants(p) + const.double()                          # (P, K, D)
    bound = expanded_bound(means.dtype)
    far = _beyond(p, m, bound)                  # once for every block
    total = None
    for x, w, o in groups.blocks(gidx, groups.rows(*means.shape[:2], expanded=True)):
        part = feature_stats(x, w, logw, m, p, base, o, False, bound, far)
        total = part if total is None else tuple(a + b for a, b in zip(total, part))
    ll, Nk, Nkd, S1, S2 = (t.to(means.dtype) for t in total)
    return Stats(ll, Nk, S1, S2, means.detach()), Nkd


def _exact_missing(groups: Groups, family: Covariance) -> bool:
    """Whether missing entries take the exact observed-data bound (diagonal
    precisions) rather than the latent-coordinates one (full, tied)."""
    return groups.has_missing and not family.full_moments


def _update(stats, eff: MixtureParams, pt: PriorTensors, family: Covariance,
            weight_prior: str, mask: Optional[torch.Tensor] = None,
            Nkd: Optional[torch.Tensor] = None) -> VariationalPosterior:
    """Every global factor updated from the E-step's statistics (about the
    effective means ``eff.means``): weights, then the means given E[Lambda]
    of ``eff``, then the covariances given the new q(means).  ``Nkd``
    (P, K, D): per-feature counts of the observed entries
    (:func:`_observed_stats`; diagonal precisions only), which then weigh
    each feature's factors."""
    Nk, K = stats.Nk, stats.Nk.shape[-1]
    D = stats.S1.shape[-1]
    if weight_prior == "dirichlet" or K == 1:     # one component: no stick to break
        wa, wb = pt.concentration + Nk, None
    else:
        after = torch.flip(torch.cumsum(torch.flip(Nk, [-1]), -1), [-1])     # N_{>=k}
        wa = 1 + Nk[..., :-1]
        wb = pt.concentration[..., :1] + after[..., 1:]
    # q(means): precision diag(1/s0^2) + N_k E[Lambda_k]; mean by the MAP's
    # own conditional update given the precision E[Lambda].
    prec = _dense_precision(family, eff.cov, K, D)
    P0 = torch.diag_embed(pt.mean_scale.pow(-2).clamp_max(torch.finfo(Nk.dtype).max / 1e6))
    if Nkd is None:
        Pm = Nk[..., None, None] * prec + P0
    else:                          # diagonal precisions, counted per feature
        Pm = torch.diag_embed(Nkd * torch.diagonal(prec, dim1=-2, dim2=-1)) + P0
    if family.diagonal_precision:       # Pm is diagonal: no factorisation
        mean_cov = torch.diag_embed(torch.diagonal(Pm, dim1=-2, dim2=-1).reciprocal())
    else:
        mean_cov = torch.cholesky_inverse(torch.linalg.cholesky(Pm))
        mean_cov = 0.5 * (mean_cov + mean_cov.transpose(-1, -2))
    counts = Nk if Nkd is None else Nkd
    shift = family.mean_shift(counts, stats.S1, eff.cov, pt, stats.ref)
    S = family.recentre(stats.S2, stats.S1, counts, shift)    # scatter about the new means
    mean = stats.ref + shift
    out = VariationalPosterior(weight_prior, wa, wb, mean, mean_cov, mask=mask)
    if family.full_moments:
        scatter = S + Nk[..., None, None] * mean_cov
        if family.per_component:
            out.dof, out.wishart_inv = pt.dof + Nk, pt.psi + scatter
        else:
            out.dof, out.wishart_inv = pt.dof + Nk.sum(-1), pt.psi + scatter.sum(-3)
        out.wishart_inv = 0.5 * (out.wishart_inv + out.wishart_inv.transpose(-1, -2))
    else:
        per = Nk.unsqueeze(-1).expand_as(S) if Nkd is None else Nkd     # (P, K, D)
        c = S + per * torch.diagonal(mean_cov, dim1=-2, dim2=-1)
        if family.name == "spherical":
            out.scale = InverseScale(pt.scale_shape + per.sum(-1), pt.scale_rate, c.sum(-1))
        else:
            out.scale = InverseScale(pt.scale_shape + per, pt.scale_rate, c)
    return out


def score(groups: Groups, q: VariationalPosterior, pt: PriorTensors,
          family: Covariance) -> tuple[torch.Tensor, torch.Tensor]:
    """The evidence lower bound of q (P,), the assignments at their optimal
    q (sum_n log sum_k exp(E[log w_k p(x_n | k)]) - KL(q || prior)), and
    the points each component carries, E_q[N_k] (P, K): one pass over the
    data."""
    gidx = _group_index(groups, q.mean.shape[0], q.mean.device)
    if _exact_missing(groups, family):
        stats = _observed_stats(groups, gidx, *q.feature_terms())[0]
    else:
        stats = e_step(groups, q.effective(family), gidx, family)
    return stats.loglik - q.kl(pt, family), stats.Nk


def elbo(groups: Groups, q: VariationalPosterior, pt: PriorTensors,
         family: Covariance) -> torch.Tensor:
    """The evidence lower bound of q (P,) (:func:`score`)."""
    return score(groups, q, pt, family)[0]


def warn_unconverged(n_iter: int, tol: float, stacklevel: int, what: str = "the ELBO") -> None:
    """The warning of a variational fit that stopped at ``max_iter`` before
    its tolerance: scikit-learn's ``ConvergenceWarning``, as a MAP fit's;
    not with ``tol=0``, which asks for every iteration (as the MAP's)."""
    if tol <= 0:
        return
    from sklearn.exceptions import ConvergenceWarning
    warnings.warn(f"the variational fit was still improving after {n_iter} iterations ({what} "
                  f"gained more than tol={tol} nats per point in the last): raise max_iter",
                  ConvergenceWarning, stacklevel=stacklevel + 1)


def _group_index(groups: Groups, P: int, device) -> torch.Tensor:
    """Each mixture's group: its own when there is one per mixture, else
    the single group."""
    if groups.XT.shape[0] == P and P > 1:
        return torch.arange(P, device=device)
    return torch.zeros(P, dtype=torch.long, device=device)


@dataclass
class CaviResult:
    """What :func:`cavi` returns: ``q`` (batch (P,)), its ``elbo`` (P,)
    and the points each of its components carries, ``counts`` (P, K)
    (E_q[N_k], from the E-step that scored it), the ELBO of every iteration
    ``history`` (T, P), the iterations run (by the longest run), whether
    every mixture met the tolerance, and which did, ``stopped`` (P,)."""

    q: VariationalPosterior
    elbo: torch.Tensor
    counts: torch.Tensor
    history: torch.Tensor
    n_iter: int
    converged: bool
    stopped: torch.Tensor


def cavi(groups: Groups, start: MixtureParams, pt: PriorTensors, family: Covariance,
         weight_prior: str = "dirichlet", max_iter: int = 1000, tol: float = 1e-6,
         callback: Optional[Callable[[int, float], None]] = None,
         mask: Optional[torch.Tensor] = None) -> CaviResult:
    """Coordinate-ascent mean-field VB from a point ``start`` (batch (P,),
    e.g. the MAP): the first E-step uses ``start`` as the effective
    parameters; then E-step and updates alternate until the ELBO improves by
    less than ``tol`` nats per point (or ``max_iter`` iterations; every one
    with ``tol <= 0``, as the MAP's EM).  One pass
    over the data per iteration: the E-step that scores q also gives the
    statistics of the next update, so the q returned is the last one scored
    (the update after it, which met the tolerance, is not taken).

    Each mixture of the batch stops on its own when it meets the tolerance
    (it leaves the batch, which runs on with the others): its result is
    the one it would have run alone (to rounding: the batch's row blocks
    and quadrature grids depend on its members), and the batch costs the
    iterations each needs, not P times the slowest's.  Its column of
    ``history`` then repeats its last ELBO.  A mixture whose ELBO is not
    finite leaves too (not having met the tolerance).

    ``groups`` holds one group that every mixture sees, or one group per
    mixture (the classifier's classes, whose real components ``mask``
    (P, K) marks); the tolerance is per point of each group."""
    if weight_prior not in WEIGHT_PRIORS:
        raise ValueError(f"weight_prior must be one of {list(WEIGHT_PRIORS)}, got "
                         f"{weight_prior!r}")
    if weight_prior != "dirichlet" and mask is not None:
        raise ValueError("padded components (mask) need weight_prior='dirichlet'")
    P = start.weights.shape[0]
    device = start.weights.device
    gidx = _group_index(groups, P, device)
    n = groups.mass.to(torch.float64).clamp_min(1e-300)[gidx]      # (P,)
    exact = _exact_missing(groups, family)
    Nkd = None
    eff = start
    if exact:
        stats, Nkd = _observed_stats(groups, gidx, *_point_terms(start))
    else:
        stats = e_step(groups, eff, gidx, family)
    q = _update(stats, eff, pt, family, weight_prior, mask, Nkd)
    ids = torch.arange(P, device=device)     # the batch's mixtures still running
    done = []                                # (ids, q, ELBO, counts) of those that stopped
    stopped = torch.zeros(P, dtype=torch.bool, device=device)
    history, it = [], 0
    last = value = None
    for it in range(1, max_iter + 1):
        eff = q.effective(family)
        if exact:
            stats, Nkd = _observed_stats(groups, gidx, *q.feature_terms())
        else:
            stats = e_step(groups, eff, gidx, family)
        value = stats.loglik - q.kl(pt, family)
        row = value if not history else history[-1].index_copy(0, ids, value)
        history.append(row)
        if callback is not None:       # the best mixture's
            callback(it, -float(row.max()))
        if last is not None and tol > 0:
            bad = ~torch.isfinite(value)              # leaves too, not having met tol
            met = ((value - last) / n < tol) & ~bad
            stopped[ids[met]] = True
            stop = met | bad
            n_stop = int(stop.sum())                  # one host sync
            if n_stop == stop.numel():
                break
            if n_stop:
                done.append((ids[stop], q.select(stop), value[stop], stats.Nk[stop]))
                keep = ~stop
                ids, q, value, gidx, n = ids[keep], q.select(keep), value[keep], gidx[keep], n[keep]
                stats = Stats(*(t[keep] for t in (stats.loglik, stats.Nk, stats.S1, stats.S2,
                                                  stats.ref)))
                eff = eff.select(keep)
                Nkd = None if Nkd is None else Nkd[keep]
                mask = None if mask is None else mask[keep]
        if it == max_iter:
            break
        q = _update(stats, eff, pt, family, weight_prior, mask, Nkd)
        last = value
    counts = None if value is None else stats.Nk
    if value is None:            # max_iter = 0: score the first update
        value, counts = score(groups, q, pt, family)
    if done:                     # the stopped ones back in their places
        done.append((ids, q, value, counts))
        order = torch.argsort(torch.cat([d[0] for d in done]))
        q = VariationalPosterior.cat([d[1] for d in done]).select(order)
        value, counts = (torch.cat([d[i] for d in done])[order] for i in (2, 3))
    hist = torch.stack(history) if history else value.unsqueeze(0)
    return CaviResult(q, value, counts, hist, it, bool(stopped.all()), stopped)


def prune(groups: Groups, q: VariationalPosterior, pt: PriorTensors, family: Covariance,
          max_iter: int = 1000, tol: float = 1e-6, min_count: float = 1e-3):
    """Delete moves for a prior that switches surplus components off (the
    stick-breaking prior, or a Dirichlet with concentration below 1):
    coordinate ascent stops at the first local optimum, and one that
    splits a cluster between two components is one (neither half can take
    the other's points one small step at a time), so surplus components of
    a fit started from a MAP with all K in use survive.  Each round tries,
    as one batch, every deletion of a component carrying more than
    ``min_count`` points (its effective weight set to 0; with the sticks,
    the components re-ordered by size so that they break largest first,
    and the re-ordering alone tried too), runs each to convergence, and
    keeps the best if its ELBO beats the current one; it stops when none
    does (Hughes and Sudderth's delete move, NIPS 2013, with the exact ELBO
    as the judge).  q has batch shape (1,).

    Returns (q, its ELBO (1,), its counts E_q[N_k] (1, K), the total
    iterations run, whether the run that gave q met the tolerance: True
    when no deletion was kept, the given q's own being the caller's)."""
    if q.mean.shape[0] != 1:
        raise ValueError(f"prune takes one mixture (batch 1), got batch {q.mean.shape[0]}")
    sticks = q.weight_prior == "dirichlet_process"
    current = q
    best_elbo, Nk = score(groups, current, pt, family)
    Nk = Nk[0]
    total, converged = 0, True
    while True:
        eff = current.effective(family)
        order = torch.argsort(Nk, descending=True)
        live = [int(j) for j in order if float(Nk[j]) > min_count]
        starts = []
        for drop in ([None] if sticks else []) + (live if len(live) > 1 else []):
            if sticks:   # the dropped component last, the others by size
                keep = [j for j in order.tolist() if j != drop] + ([] if drop is None else [drop])
            else:        # a Dirichlet's components keep their places
                keep = list(range(Nk.shape[0]))
            idx = torch.as_tensor(keep, device=Nk.device)
            e = MixtureParams(eff.weights[0, idx].clone(), eff.means[0, idx],
                              eff.cov[0, idx] if family.per_component else eff.cov[0])
            if drop is not None:
                e.weights[-1 if sticks else drop] = 0.0
            starts.append(e)
        if not starts:      # one live component: nothing to delete
            break
        start = MixtureParams(*(torch.stack([getattr(e, f) for e in starts])
                                for f in ("weights", "means", "cov")))
        res = cavi(groups, start, pt, family, q.weight_prior, max_iter, tol)
        total += res.n_iter
        values = torch.where(torch.isfinite(res.elbo), res.elbo,
                             torch.full_like(res.elbo, -math.inf))
        b = int(torch.argmax(values))
        if not bool(values[b] > best_elbo[0] + tol * groups.mass.sum()):
            break
        current, best_elbo, Nk = res.q.select(slice(b, b + 1)), values[b:b + 1], res.counts[b]
        converged = bool(res.stopped[b])      # the kept start met the tolerance
    return current, best_elbo, Nk.unsqueeze(0), total, converged


def pyro_guide(q: VariationalPosterior, family: Covariance, index: int = 0):
    """The Pyro guide of q (mixture ``index`` of its batch) for
    :func:`bayesgmm.models.gmm_model`: ``TraceEnum_ELBO`` with it estimates
    :func:`elbo` (the check of this module's closed forms)."""
    def guide(*args, **kwargs):
        a = q.weight_a[index]
        if q.weight_b is None:
            pyro.sample("weights", dist.Dirichlet(a))
        elif a.shape[-1] > 0:             # one component has no sticks
            pyro.sample("sticks", dist.Beta(a, q.weight_b[index]).to_event(1))
        K = q.mean.shape[-2]
        with pyro.plate("components", K, dim=-1):
            pyro.sample("means", dist.MultivariateNormal(q.mean[index], q.mean_cov[index]))
            if family.per_component:
                pyro.sample(family.site, _site_guide(q, family, index))
        if not family.per_component:
            pyro.sample(family.site, _site_guide(q, family, index))
    return guide


def _site_guide(q: VariationalPosterior, family: Covariance, index: int):
    if family.full_moments:
        W = torch.cholesky_inverse(torch.linalg.cholesky(q.wishart_inv[index]))
        return dist.Wishart(df=q.dof[index], covariance_matrix=W)
    g = _ScaleGuide(q.scale.select(index))
    return g.to_event(1) if family.name != "spherical" else g
