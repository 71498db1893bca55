"""MAP inference for :func:`bayesgmm.models.gmm_model`.

The pieces, in the order a fit uses them:

1. :func:`resolve_priors` fills the data-dependent prior defaults and
   :class:`Standardizer` maps data and priors to standardised units, so the
   optimiser's step size and float32 precision do not depend on the data's
   units.  The MAP is equivariant under that map; only the loss shifts by a
   constant, which :meth:`Standardizer.loss_offset` adds back.
2. :func:`initial_params` seeds the components (k-means++, random points or
   user means) for every restart.
3. :func:`em_fit` runs closed-form MAP-EM (an ECM algorithm: weights, then
   means given scales, then scales given means) on all restarts at once, as a
   batch dimension.  Each iteration cannot decrease the log joint, and its
   fixed points are stationary points of the same MAP objective that SVI
   optimises, so it is an accelerator, not a different estimator.
4. :func:`svi_fit` runs SVI with ``TraceEnum_ELBO`` (assignment summed out)
   and an ``AutoDelta`` guide over the global sites, starting from the EM
   solution (or from the initialisation when EM is switched off).  Its loss
   is the reference definition of the objective.
5. :func:`map_assignments` replays the model at the MAP parameters under
   ``infer_discrete``; :func:`component_log_prob` gives exact
   responsibilities and densities.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Literal, Optional, Sequence, Union

import numpy as np
import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO, infer_discrete
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value

from .models import GLOBAL_SITES, Priors, PriorTensors, gmm_model

logger = logging.getLogger(__name__)

InitMethod = Literal["kmeans++", "kmeans", "random"]

# Smallest weight a component may have: the AutoDelta guide lives on the open
# simplex, and log(0) would poison the loss.
_MIN_WEIGHT = 1e-10


# ----------------------------------------------------------------------------
# Parameters and priors
# ----------------------------------------------------------------------------
@dataclass
class MixtureParams:
    """Weights (..., K), means (..., K, D) and scales (..., K, D) as tensors.

    The leading ``...`` is a batch of independent mixtures (restarts)."""

    weights: torch.Tensor
    means: torch.Tensor
    scales: torch.Tensor

    def select(self, index) -> "MixtureParams":
        return MixtureParams(self.weights[index], self.means[index], self.scales[index])

    def as_dict(self) -> dict:
        return {"weights": self.weights, "means": self.means, "scales": self.scales}


def resolve_priors(priors: Optional[Priors], X: np.ndarray, n_components: int) -> Priors:
    """Fill every ``None`` field of ``priors`` from the data and broadcast.

    Returns a :class:`Priors` whose fields are float64 numpy arrays:
    ``weight_concentration`` (K,), ``mean_loc``/``mean_scale``/``scale_rate``
    (D,) and ``scale_shape`` a float.  Raises ``ValueError`` for values of the
    wrong shape or out of range.
    """
    priors = priors if priors is not None else Priors()
    if not isinstance(priors, Priors):
        raise ValueError(
            f"priors must be a bayesgmm.Priors instance or None, got {type(priors).__name__}: "
            f"build one with bayesgmm.Priors(...)")
    D = X.shape[1]
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    # A constant feature has no spread to take units from: fall back to its
    # magnitude, and to 1 for an all-zero feature.
    fallback = np.where(np.abs(mean) > 0, 1e-3 * np.abs(mean), 1.0)
    std = np.where(std > 0, std, fallback)

    def vector(name: str, value, default: np.ndarray, size: int, what: str) -> np.ndarray:
        if value is None:
            return np.asarray(default, dtype=np.float64)
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(size, float(arr))
        if arr.shape != (size,):
            raise ValueError(
                f"Priors.{name} must be a scalar or have shape ({size},) (one value per {what}), "
                f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Priors.{name} must be finite, got {arr.tolist()}")
        return arr

    conc = vector("weight_concentration", priors.weight_concentration,
                  np.ones(n_components), n_components, "component")
    if np.any(conc < 1):
        raise ValueError(
            f"Priors.weight_concentration must be >= 1, got {conc.tolist()}: below 1 the "
            f"Dirichlet density is unbounded at the simplex edge and no MAP estimate exists; "
            f"use 1.0 for a flat prior")
    mean_loc = vector("mean_loc", priors.mean_loc, mean, D, "feature")
    mean_scale = vector("mean_scale", priors.mean_scale, 2.0 * std, D, "feature")
    if np.any(mean_scale <= 0):
        raise ValueError(f"Priors.mean_scale must be > 0, got {mean_scale.tolist()}")
    shape = 1.0 if priors.scale_shape is None else priors.scale_shape
    if not np.isscalar(shape) and np.ndim(shape) != 0:
        raise ValueError(f"Priors.scale_shape must be a positive float, got {shape!r}")
    shape = float(shape)
    if not (math.isfinite(shape) and shape > 0):
        raise ValueError(f"Priors.scale_shape must be a positive float, got {shape}")
    scale_rate = vector("scale_rate", priors.scale_rate, 0.1 * std, D, "feature")
    if np.any(scale_rate <= 0):
        raise ValueError(f"Priors.scale_rate must be > 0, got {scale_rate.tolist()}")
    return Priors(weight_concentration=conc, mean_loc=mean_loc, mean_scale=mean_scale,
                  scale_shape=shape, scale_rate=scale_rate)


@dataclass(frozen=True)
class Standardizer:
    """Affine map x' = (x - center) / scale, per feature, and its effect on
    priors, parameters and the loss."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_data(cls, X: np.ndarray) -> "Standardizer":
        center = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, np.where(np.abs(center) > 0, np.abs(center), 1.0))
        return cls(center=center, scale=scale)

    def data(self, X: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor((X - self.center) / self.scale, dtype=dtype, device=device)

    def priors(self, p: Priors, device, dtype=torch.float32) -> PriorTensors:
        """Resolved priors in standardised units.

        Normal(m, s) on a mean becomes Normal((m - c)/a, s/a) and
        InverseGamma(shape, rate) on a scale becomes InverseGamma(shape, rate/a):
        both are exact changes of variables."""
        t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=dtype, device=device)
        return PriorTensors(
            concentration=t(p.weight_concentration),
            mean_loc=t((p.mean_loc - self.center) / self.scale),
            mean_scale=t(p.mean_scale / self.scale),
            scale_shape=t(p.scale_shape),
            scale_rate=t(p.scale_rate / self.scale),
        )

    def params_to_std(self, weights, means, scales, device, dtype=torch.float32) -> MixtureParams:
        t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=dtype, device=device)
        return MixtureParams(t(weights), t((np.asarray(means) - self.center) / self.scale),
                             t(np.asarray(scales) / self.scale))

    def params_from_std(self, params: MixtureParams):
        """Numpy (weights, means, scales) in the data's units."""
        w = params.weights.detach().double().cpu().numpy()
        w = w / w.sum(-1, keepdims=True)  # exactly on the simplex in float64
        m = params.means.detach().double().cpu().numpy() * self.scale + self.center
        s = params.scales.detach().double().cpu().numpy() * self.scale
        return w, m, s

    def loss_offset(self, n_samples: int, n_components: int) -> float:
        """Loss(original units) - loss(standardised units).

        Each data point's density and each component's mean and scale prior
        density pick up a Jacobian factor 1/prod(scale)."""
        return float((n_samples + 2 * n_components) * np.log(self.scale).sum())


# ----------------------------------------------------------------------------
# Exact densities
# ----------------------------------------------------------------------------
def component_log_prob(X: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """log w_k + log N(x_n | mu_k, sigma_k), shape (..., N, K).

    Computed from differences rather than the expanded quadratic form, so
    that a point far from a narrow component loses no precision."""
    diff = (X.unsqueeze(-2) - params.means.unsqueeze(-3)) / params.scales.unsqueeze(-3)
    log_norm = -torch.log(params.scales).sum(-1) - 0.5 * X.shape[-1] * math.log(2 * math.pi)
    return (torch.log(params.weights).unsqueeze(-2) + log_norm.unsqueeze(-2)
            - 0.5 * (diff * diff).sum(-1))


def log_prior(params: MixtureParams, priors: PriorTensors) -> torch.Tensor:
    """log p(weights) + log p(means) + log p(scales), batched over restarts."""
    lp = dist.Dirichlet(priors.concentration).log_prob(params.weights)
    lp = lp + dist.Normal(priors.mean_loc, priors.mean_scale).log_prob(params.means).sum((-1, -2))
    lp = lp + dist.InverseGamma(priors.scale_shape, priors.scale_rate).log_prob(
        params.scales).sum((-1, -2))
    return lp


def negative_log_joint(X: torch.Tensor, params: MixtureParams, priors: PriorTensors) -> torch.Tensor:
    """-log p(X, weights, means, scales) with the assignments summed out: the
    quantity ``TraceEnum_ELBO`` reports for an ``AutoDelta`` guide."""
    return -(torch.logsumexp(component_log_prob(X, params), -1).sum(-1) + log_prior(params, priors))


# ----------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------
def _m_step(X: torch.Tensor, resp: torch.Tensor, scales: Optional[torch.Tensor],
            priors: PriorTensors) -> MixtureParams:
    """Closed-form conditional maximisation of the log joint given
    responsibilities ``resp`` (..., N, K).

    weights: (N_k + a_k - 1) / (N + sum(a) - K)      (Dirichlet mode)
    means:   precision-weighted average of data and prior, given the scales
             (the current ones; the prior scale's mode when None)
    scales:  the positive root of (a + 1 + N_k) s^2 - b s - S_k = 0, the
             stationary point of the InverseGamma prior times the likelihood
             in s, given the new means (S_k the weighted squared deviations)
    """
    conc = priors.concentration
    Nk = resp.sum(-2)                                            # (..., K)
    Sx = resp.transpose(-1, -2) @ X                              # (..., K, D)
    Sxx = resp.transpose(-1, -2) @ (X * X)                       # (..., K, D)
    w = (Nk + conc - 1).clamp_min(0)
    w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    w = w.clamp_min(_MIN_WEIGHT)
    w = w / w.sum(-1, keepdim=True)
    prior_prec = priors.mean_scale.pow(-2)                       # (D,)
    if scales is None:
        scales = (priors.scale_rate / (priors.scale_shape + 1)).expand_as(Sx)
    prec = scales.pow(-2)
    means = (Sx * prec + priors.mean_loc * prior_prec) / (Nk.unsqueeze(-1) * prec + prior_prec)
    S = (Sxx - 2 * means * Sx + means * means * Nk.unsqueeze(-1)).clamp_min(0)
    a = priors.scale_shape + 1 + Nk.unsqueeze(-1)
    b = priors.scale_rate
    scales = (b + torch.sqrt(b * b + 4 * a * S)) / (2 * a)
    return MixtureParams(w, means, scales)


def initial_params(X: torch.Tensor, n_components: int, n_init: int, init, priors: PriorTensors,
                   seeds: Sequence[int]) -> MixtureParams:
    """Starting parameters for ``n_init`` restarts, stacked on a leading dim.

    Means come from the initialisation (k-means++ seeding or Lloyd's k-means
    from scikit-learn, random data points, or user means in standardised
    units); every point is then assigned to its nearest mean and one
    closed-form M-step gives weights, means and scales consistent with that
    partition."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    X_np = X.detach().cpu().double().numpy()
    K = n_components
    centers = []
    for r in range(n_init):
        seed = int(seeds[r])
        if isinstance(init, str):
            if init == "kmeans++":
                c, _ = kmeans_plusplus(X_np, K, random_state=seed)
            elif init == "kmeans":
                c = KMeans(K, init="k-means++", n_init=1, random_state=seed).fit(X_np).cluster_centers_
            elif init == "random":
                idx = np.random.default_rng(seed).choice(X_np.shape[0], K, replace=False)
                c = X_np[idx]
            else:  # validated by the estimator; kept as a guard for direct callers
                raise ValueError(f"init must be 'kmeans++', 'kmeans', 'random' or an array, got {init!r}")
        else:
            c = np.asarray(init, dtype=np.float64)
            if r > 0:
                # Restarts from the same user means would be identical: jitter
                # them by a small fraction of a standardised unit.
                c = c + 0.01 * np.random.default_rng(seed).standard_normal(c.shape)
        centers.append(c)
    C = torch.as_tensor(np.stack(centers), dtype=X.dtype, device=X.device)   # (R, K, D)
    d2 = ((X.unsqueeze(0).unsqueeze(-2) - C.unsqueeze(1)) ** 2).sum(-1)      # (R, N, K)
    resp = torch.nn.functional.one_hot(d2.argmin(-1), K).to(X.dtype)
    params = _m_step(X, resp, None, priors)
    # Keep the seeded centres as the means: the M-step above only fills in
    # weights and scales that fit the partition they induce.
    return MixtureParams(params.weights, C, params.scales)


# ----------------------------------------------------------------------------
# EM (accelerator / initialiser)
# ----------------------------------------------------------------------------
@dataclass
class FitTrace:
    """What a fit stage leaves behind."""

    params: MixtureParams
    losses: torch.Tensor        # (..., T) loss before each update, standardised units
    n_iter: int
    converged: bool


def em_fit(X: torch.Tensor, params: MixtureParams, priors: PriorTensors, max_iter: int, tol: float,
           callback: Optional[Callable[[int, float], None]] = None) -> FitTrace:
    """Closed-form MAP-EM on a batch of restarts until every restart's loss
    improves by less than ``tol`` nats per sample, or ``max_iter``.

    Restarts whose loss becomes non-finite are frozen and reported with an
    infinite loss so that they are never selected."""
    N = X.shape[0]
    history = []
    converged = False
    it = 0
    prev = None
    alive = torch.ones(params.weights.shape[:-1], dtype=torch.bool, device=X.device)
    for it in range(1, max_iter + 1):
        logp = component_log_prob(X, params)                               # (R, N, K)
        loss = -(torch.logsumexp(logp, -1).sum(-1) + log_prior(params, priors))
        alive = alive & torch.isfinite(loss)
        loss = torch.where(alive, loss, torch.full_like(loss, math.inf))
        history.append(loss)
        resp = torch.softmax(logp, -1)
        new = _m_step(X, resp, params.scales, priors)
        keep = alive.unsqueeze(-1)
        params = MixtureParams(torch.where(keep, new.weights, params.weights),
                               torch.where(keep.unsqueeze(-1), new.means, params.means),
                               torch.where(keep.unsqueeze(-1), new.scales, params.scales))
        if callback is not None:
            callback(it, float(loss[alive].min()) if bool(alive.any()) else math.inf)
        if prev is not None:
            gain = (prev - loss) / N
            # Converged when no live restart gains more than tol per sample
            # (one host sync per iteration: the loop needs the answer anyway).
            if not bool((alive & (gain > tol)).any()):
                converged = True
                break
        prev = loss
    # The loss at the final parameters (the loop records the loss before each update).
    final = negative_log_joint(X, params, priors)
    final = torch.where(alive & torch.isfinite(final), final, torch.full_like(final, math.inf))
    history.append(final)
    return FitTrace(params, torch.stack(history, -1), it, converged)


# ----------------------------------------------------------------------------
# SVI (reference semantics)
# ----------------------------------------------------------------------------
def _make_model(priors: PriorTensors, n_components: int):
    def model(data):
        return gmm_model(data, priors, n_components)
    return model


def svi_fit(X: torch.Tensor, params: MixtureParams, priors: PriorTensors, n_components: int,
            max_iter: int, tol: float, learning_rate: float, jit: bool = False,
            callback: Optional[Callable[[int, float], None]] = None, window: int = 10) -> FitTrace:
    """MAP by SVI: ``AutoDelta`` over the global sites (the model blocked to
    them), ``TraceEnum_ELBO`` enumerating the assignment, Adam.

    Stops when the loss has improved by less than ``tol`` nats per sample per
    step on average over the last ``window`` steps (Adam's steps oscillate,
    so single-step changes are too noisy a rule), or after ``max_iter``.

    The param store is scoped to this call, so concurrent or repeated fits
    never see each other's parameters."""
    N = X.shape[0]
    model = _make_model(priors, n_components)
    init = {k: v.detach().clone() for k, v in params.as_dict().items()}
    init["weights"] = init["weights"].clamp_min(_MIN_WEIGHT)
    init["weights"] = init["weights"] / init["weights"].sum()
    losses = []
    converged = False
    it = 0
    with pyro.get_param_store().scope():
        guide = AutoDelta(poutine.block(model, expose=list(GLOBAL_SITES)),
                          init_loc_fn=init_to_value(values=init))
        elbo = _make_elbo(jit)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}), elbo)
        for it in range(1, max_iter + 1):
            try:
                loss = _step_or_nan(svi, guide, X)
            except Exception as exc:  # only the JIT path is allowed to fail here
                if not jit or it > 1:
                    raise
                warnings.warn(f"JitTraceEnum_ELBO failed ({type(exc).__name__}: {exc}); "
                              f"falling back to TraceEnum_ELBO", RuntimeWarning)
                jit = False
                svi = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}), _make_elbo(False))
                loss = _step_or_nan(svi, guide, X)
            if not math.isfinite(loss):
                break
            losses.append(loss)
            if callback is not None:
                callback(it, loss)
            if it > window and (losses[-window - 1] - loss) / (window * N) < tol:
                converged = True
                break
        with torch.no_grad():
            fitted = {k: v.detach() for k, v in guide.median().items()}
            # Non-finite parameters fail Pyro's distribution checks with a
            # ValueError deep inside torch: skip the loss, fall back below.
            final = (TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, X)
                     if _all_finite(fitted) else math.nan)
    out = MixtureParams(fitted["weights"], fitted["means"], fitted["scales"])
    if not math.isfinite(final) or not _all_finite(fitted):
        return FitTrace(params, torch.tensor(losses + [math.inf], dtype=torch.float64), it, False)
    losses.append(final)
    return FitTrace(out, torch.tensor(losses, dtype=torch.float64), it, converged)


def _all_finite(values: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in values.values())


def _step_or_nan(svi: SVI, guide, X: torch.Tensor) -> float:
    """One SVI step; NaN when the step diverged.

    A step that drives the parameters to NaN/inf (too large a learning rate,
    extreme data) makes the next trace fail the distributions' argument checks
    with a ValueError from inside torch.  That is divergence, not a bug: report
    it as a NaN loss so that the caller falls back to its start point.  Any
    other ValueError (parameters still finite) is re-raised."""
    try:
        return svi.step(X)
    except ValueError:
        with torch.no_grad():
            if _all_finite(guide.median()):
                raise
        return math.nan


def _make_elbo(jit: bool):
    if jit:
        return JitTraceEnum_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
    return TraceEnum_ELBO(max_plate_nesting=1)


def elbo_loss(X: torch.Tensor, params: MixtureParams, priors: PriorTensors, n_components: int) -> float:
    """``TraceEnum_ELBO`` loss of the model at fixed parameters (an AutoDelta
    guide sitting exactly on ``params``), for checking other computations
    against the reference."""
    model = _make_model(priors, n_components)
    with pyro.get_param_store().scope():
        guide = AutoDelta(poutine.block(model, expose=list(GLOBAL_SITES)),
                          init_loc_fn=init_to_value(values=params.as_dict()))
        return TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, X)


# ----------------------------------------------------------------------------
# Assignments
# ----------------------------------------------------------------------------
def map_assignments(X: torch.Tensor, params: MixtureParams, priors: PriorTensors, n_components: int,
                    temperature: int = 0, n_draws: Optional[int] = None) -> torch.Tensor:
    """Assignments from ``infer_discrete`` on the model conditioned on the
    fitted global parameters.

    ``temperature=0`` gives the MAP assignment of every point (shape (N,));
    ``temperature=1`` draws from p(z | x, params), ``n_draws`` times at once
    (shape (n_draws, N)) by wrapping the model in a vectorised plate."""
    conditioned = poutine.condition(_make_model(priors, n_components), data=params.as_dict())
    if n_draws is None:
        # max_plate_nesting is 1 (the data plate), so enumeration starts at -2.
        fn, first_dim = conditioned, -2
    else:
        def fn(data):
            with pyro.plate("draws", n_draws, dim=-2):
                return conditioned(data)
        first_dim = -3
    with torch.no_grad():
        discrete = infer_discrete(fn, first_available_dim=first_dim, temperature=temperature)
        trace = poutine.trace(discrete).get_trace(X)
    return trace.nodes["assignment"]["value"]


def sample_model(params: MixtureParams, priors: PriorTensors, n_components: int, n_samples: int):
    """Draw ``n_samples`` (x, z) pairs from the model at fixed parameters."""
    conditioned = poutine.condition(gmm_model, data=params.as_dict())
    with torch.no_grad():
        trace = poutine.trace(conditioned).get_trace(None, priors, n_components, n_samples)
    return trace.nodes["obs"]["value"], trace.nodes["assignment"]["value"]
