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
# Spreads below this count as zero: 0.1 x a subnormal spread underflows to a
# zero prior rate, and dividing by one loses all precision.
_TINY = 1e-290


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


def resolve_priors(priors: Optional[Priors], X: np.ndarray, n_components: int,
                   moments: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Priors:
    """Fill every ``None`` field of ``priors`` from the data and broadcast.

    Returns a :class:`Priors` whose fields are float64 numpy arrays:
    ``weight_concentration`` (K,), ``mean_loc``/``mean_scale``/``scale_rate``
    (D,) and ``scale_shape`` a float.  ``moments`` is X's per-feature (mean,
    standard deviation) if already computed.  Raises ``ValueError`` for values of the
    wrong shape or out of range.
    """
    priors = priors if priors is not None else Priors()
    if not isinstance(priors, Priors):
        raise ValueError(
            f"priors must be a bayesgmm.Priors instance or None, got {type(priors).__name__}: "
            f"build one with bayesgmm.Priors(...)")
    D = X.shape[1]
    # (mean, std) of X when the caller has them (Standardizer.fit_to).
    mean, std = moments if moments is not None else (X.mean(axis=0), X.std(axis=0))
    # A constant feature has no spread to take units from: fall back to its
    # magnitude, and to 1 for an all-zero feature.
    fallback = np.where(np.abs(mean) > _TINY, 1e-3 * np.abs(mean), 1.0)
    std = np.where(std > _TINY, std, fallback)

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
    def fit_to(cls, X: np.ndarray, device, dtype=torch.float32
               ) -> tuple["Standardizer", torch.Tensor, tuple[np.ndarray, np.ndarray]]:
        """The standardiser of ``X``, the standardised data as a ``dtype``
        tensor on ``device``, and the raw per-feature (mean, standard
        deviation) in float64.

        X goes to the device once, in float64; the moments and the affine map
        are computed there (host numpy took ~1 s for these at N = 1e7 on the
        GPU machine, against ~50 ms for the copy and device arithmetic)."""
        Xd = torch.as_tensor(X, dtype=torch.float64, device=device)
        mean_t = Xd.mean(0)
        sd_t = Xd.std(0, correction=0)
        mean, sd = mean_t.cpu().numpy(), sd_t.cpu().numpy()
        scale = np.where(sd > _TINY, sd, np.where(np.abs(mean) > _TINY, np.abs(mean), 1.0))
        std = cls(center=mean, scale=scale)
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(mean))):
            return std, Xd.to(dtype), (mean, sd)   # the caller reports the overflow
        shift = torch.as_tensor(mean, dtype=torch.float64, device=device)
        div = torch.as_tensor(scale, dtype=torch.float64, device=device)
        return std, ((Xd - shift) / div).to(dtype), (mean, sd)

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
    log_norm = -torch.log(params.scales).sum(-1) - 0.5 * X.shape[-1] * math.log(2 * math.pi)
    if X.device.type == "cpu":
        # Features first, (D, ..., N, K): the sum over a handful of features
        # becomes adds of contiguous blocks instead of a reduction over a
        # tiny last dimension (1.7x faster on CPU, the same values).
        nb = max(X.dim() - 2, params.means.dim() - 2)
        Xe = X.reshape((1,) * (nb - X.dim() + 2) + X.shape).movedim(-1, 0).unsqueeze(-1)
        lead = (1,) * (nb - params.means.dim() + 2)
        mu = params.means.reshape(lead + params.means.shape).movedim(-1, 0).unsqueeze(-2)
        sc = params.scales.reshape(lead + params.scales.shape).movedim(-1, 0).unsqueeze(-2)
        sq = ((Xe - mu) / sc).square_().sum(0)
    else:
        diff = (X.unsqueeze(-2) - params.means.unsqueeze(-3)) / params.scales.unsqueeze(-3)
        sq = (diff * diff).sum(-1)
    return torch.log(params.weights).unsqueeze(-2) + log_norm.unsqueeze(-2) - 0.5 * sq


def log_prior(params: MixtureParams, priors: PriorTensors) -> torch.Tensor:
    """log p(weights) + log p(means) + log p(scales), batched over restarts.

    Argument validation is off: parameters that diverged (NaN, 0 or inf
    scales) must give a non-finite loss for the callers to detect and drop,
    not a ValueError from inside torch."""
    lp = dist.Dirichlet(priors.concentration, validate_args=False).log_prob(params.weights)
    lp = lp + dist.Normal(priors.mean_loc, priors.mean_scale, validate_args=False).log_prob(
        params.means).sum((-1, -2))
    lp = lp + dist.InverseGamma(priors.scale_shape, priors.scale_rate, validate_args=False).log_prob(
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
    Nk = resp.sum(-2)                                            # (..., K)
    Sx = resp.transpose(-1, -2) @ X                              # (..., K, D)
    Sxx = resp.transpose(-1, -2) @ (X * X)                       # (..., K, D)
    return _m_step_moments(Nk, Sx, Sxx, scales, priors)


def _m_step_moments(Nk: torch.Tensor, Sx: torch.Tensor, Sxx: torch.Tensor,
                    scales: Optional[torch.Tensor], priors: PriorTensors,
                    mask: Optional[torch.Tensor] = None) -> MixtureParams:
    """:func:`_m_step` from the responsibility-weighted moments: counts N_k
    (..., K), sums S_x and sums of squares S_xx (..., K, D).

    ``mask`` (..., K) restricts the weights to the real components of
    padded mixtures (the per-class model) and pads the rest."""
    conc = priors.concentration
    maskf = 1.0 if mask is None else mask.to(Nk.dtype)
    w = (Nk + conc - 1).clamp_min(0) * maskf
    w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    w = w.clamp_min(_MIN_WEIGHT) * maskf
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
    params = MixtureParams(w, means, scales)
    return params if mask is None else masked_params(params, mask)


def design_matrix(X: torch.Tensor) -> torch.Tensor:
    """[x^2, x, 1] per point, shape (N, 2D + 1): built once per fit, it turns
    both the E-step and the M-step of a diagonal mixture into one matrix
    product each (see :func:`e_step`)."""
    return torch.cat([X * X, X, torch.ones_like(X[:, :1])], dim=-1)


def natural_weights(params: MixtureParams) -> torch.Tensor:
    """The (..., 2D + 1, K) matrix W with design_matrix(X) @ W equal to
    log w_k + log N(x | mu_k, sigma_k): the quadratic form expanded as
    -x^2/(2 s^2) + x mu/s^2 + (log w - sum log s - mu^2/(2 s^2) - D/2 log 2 pi)."""
    prec = params.scales.pow(-2)                                             # (..., K, D)
    D = prec.shape[-1]
    const = (torch.log(params.weights) - torch.log(params.scales).sum(-1)
             - 0.5 * (params.means * params.means * prec).sum(-1)
             - 0.5 * D * math.log(2 * math.pi))
    return torch.cat([-0.5 * prec, params.means * prec, const.unsqueeze(-1)], -1).transpose(-1, -2)


# Lower clamp of the exponents of responsibilities (see e_step).
_EXP_FLOOR = -80.0
# Rows per block of the reduction products below.
_REDUCE_BLOCK = 2 ** 12


def sum_outer(A: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """A^T F summed over the N rows: A (N, P), F (N, Q) -> (P, Q).

    A product whose inner dimension is the whole data set and whose output is
    tiny (responsibilities times the design matrix).  cuBLAS handles that
    shape badly: batched over 4 restarts at N = 1e7 on an H100 it took
    171-315 ms per EM step.  The rows are cut into blocks, multiplied as one
    batched product and the per-block results summed (the whole EM step is
    now 3.5 ms there).  Deterministic: no atomics."""
    N = F.shape[0]
    nb = N // _REDUCE_BLOCK
    if nb < 2:
        return A.transpose(0, 1) @ F
    m = nb * _REDUCE_BLOCK
    head = (A[:m].view(nb, _REDUCE_BLOCK, -1).transpose(1, 2)
            @ F[:m].view(nb, _REDUCE_BLOCK, -1)).sum(0)
    return head if m == N else head + A[m:].transpose(0, 1) @ F[m:]


def e_step(F: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One E-step for a batch of R mixtures: W (R, 2D + 1, K) natural
    weights (:func:`natural_weights`), F the design matrix (N, 2D + 1).

    Returns the data log-likelihood of each mixture (R,) and the
    responsibility-weighted moments (R, K, 2D + 1) (sums of x^2, of x, and
    counts N_k, in the design matrix's column order).  All restarts go
    through one (N, R K) product each way; the responsibilities are formed
    in place, so the step allocates one (N, R K) buffer."""
    R, P, K = W.shape
    N = F.shape[0]
    logp = (F @ W.permute(1, 0, 2).reshape(P, R * K)).view(N, R, K)
    top = logp.amax(-1, keepdim=True)
    # Clamped before exp: exp(x) for x in about (-103, -87) is a float32
    # denormal, which x86 CPUs compute ~10x slower (it took 6 of the 15 ms
    # of an E-step at N = 1e5, K = 8).  exp(-80) ~ 2e-35 is zero next to the
    # largest term (exactly 1), so responsibilities and loss are unchanged.
    e = logp.sub_(top)
    if e.device.type == "cpu":   # GPUs compute denormals at full speed
        e = e.clamp_min_(_EXP_FLOOR)
    e = e.exp_()
    total = e.sum(-1, keepdim=True)
    loglik = (top + torch.log(total)).sum((0, 2))
    resp = e.div_(total).view(N, R * K)
    return loglik, sum_outer(resp, F).view(R, K, P)


# k-means++ / k-means seed on at most this many points: the seeds only start
# EM, and sklearn's seeding is O(N K) on the host, which would dominate a GPU
# fit of millions of points.
SEED_SAMPLE_SIZE = 100_000


def initial_params(X: torch.Tensor, n_components: int, n_init: int, init, priors: PriorTensors,
                   seeds: Sequence[int]) -> MixtureParams:
    """Starting parameters for ``n_init`` restarts, stacked on a leading dim.

    Means come from the initialisation (k-means++ seeding or Lloyd's k-means
    from scikit-learn, on a random subsample of at most ``SEED_SAMPLE_SIZE``
    points; random data points; or user means in standardised units); every
    point is then assigned to its nearest mean and one closed-form M-step
    gives weights and scales consistent with that partition."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    N, D = X.shape
    K = n_components
    F = design_matrix(X)
    params = []
    for r in range(n_init):
        rng = np.random.default_rng(int(seeds[r]))
        if isinstance(init, str):
            if init == "random":
                c = X[torch.as_tensor(rng.choice(N, K, replace=False), device=X.device)]
            else:
                rows = (rng.choice(N, SEED_SAMPLE_SIZE, replace=False) if N > SEED_SAMPLE_SIZE
                        else slice(None))
                sub = X[rows].detach().cpu().double().numpy()
                seed = int(rng.integers(2 ** 31 - 1))
                if init == "kmeans++":
                    c, _ = kmeans_plusplus(sub, K, random_state=seed)
                elif init == "kmeans":
                    c = KMeans(K, init="k-means++", n_init=1, random_state=seed).fit(sub).cluster_centers_
                else:  # validated by the estimator; kept as a guard for direct callers
                    raise ValueError(f"init must be 'kmeans++', 'kmeans', 'random' or an array, "
                                     f"got {init!r}")
        else:
            c = np.asarray(init, dtype=np.float64)
            if r > 0:
                # Restarts from the same user means would be identical: jitter
                # them by a small fraction of a standardised unit.
                c = c + 0.01 * rng.standard_normal(c.shape)
        C = torch.as_tensor(c, dtype=X.dtype, device=X.device)                # (K, D)
        # Nearest centre by |x|^2 - 2 x.c + |c|^2 without the |x|^2 term: an
        # (N, K) product, no (N, K, D) temporary.
        nearest = ((C * C).sum(-1) - 2 * X @ C.T).argmin(-1)
        # Counts and moments of each cell by a product with the one-hot
        # assignments (deterministic on CUDA, unlike index_add_'s atomics).
        onehot = torch.zeros(N, K, dtype=X.dtype, device=X.device).scatter_(1, nearest[:, None], 1.0)
        mom = sum_outer(onehot, F)                                           # (K, 2D + 1)
        p = _m_step_moments(mom[:, 2 * D], mom[:, D:2 * D], mom[:, :D], None, priors)
        # Keep the seeded centres as the means: the M-step only fills in
        # weights and scales that fit the partition they induce.
        params.append(MixtureParams(p.weights, C, p.scales))
    return MixtureParams(torch.stack([p.weights for p in params]),
                         torch.stack([p.means for p in params]),
                         torch.stack([p.scales for p in params]))


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
    N, D = X.shape
    F = design_matrix(X)                                                   # once per fit
    history = []
    converged = False
    it = 0
    prev = None
    alive = torch.ones(params.weights.shape[:-1], dtype=torch.bool, device=X.device)
    for it in range(1, max_iter + 1):
        loglik, moments = e_step(F, natural_weights(params))               # (R,), (R, K, 2D + 1)
        loss = -(loglik + log_prior(params, priors))
        alive = alive & torch.isfinite(loss)
        loss = torch.where(alive, loss, torch.full_like(loss, math.inf))
        history.append(loss)
        new = _m_step_moments(moments[..., 2 * D], moments[..., D:2 * D], moments[..., :D],
                              params.scales, priors)
        keep = alive.unsqueeze(-1)
        params = MixtureParams(torch.where(keep, new.weights, params.weights),
                               torch.where(keep.unsqueeze(-1), new.means, params.means),
                               torch.where(keep.unsqueeze(-1), new.scales, params.scales))
        if callback is not None:
            callback(it, float(loss.min()))
        if prev is not None:
            gain = (prev - loss) / N
            # Converged when no live restart gains more than tol per sample
            # (one host sync per iteration: the loop needs the answer anyway).
            if not bool((alive & (gain > tol)).any()):
                converged = True
                break
        prev = loss
    # The loss at the final parameters (the loop records the loss before each update).
    final = -(e_step(F, natural_weights(params))[0] + log_prior(params, priors))
    final = torch.where(alive & torch.isfinite(final), final, torch.full_like(final, math.inf))
    history.append(final)
    return FitTrace(params, torch.stack(history, -1), it, converged)


# ----------------------------------------------------------------------------
# SVI (reference semantics)
# ----------------------------------------------------------------------------
def svi_converged(losses: Sequence[float], window: int, n_samples: int, tol: float) -> bool:
    """SVI's stopping rule: the best loss of the last ``window`` steps beats
    the best before them by less than ``tol`` nats per sample per step.

    Adam's losses oscillate, so neither single steps nor the latest value are
    a fair measure of progress: a rise over the window is not convergence as
    long as the best keeps improving.  With ``tol=0`` the rule never fires
    and SVI runs ``max_iter`` steps."""
    if len(losses) <= window:
        return False
    before = min(losses[:-window])
    recent = min(losses[-window:])
    return (before - recent) / (window * n_samples) < tol


def run_svi_loop(step: Callable[[], float], max_iter: int, n_samples: int, tol: float,
                 window: int, callback: Optional[Callable[[int, float], None]] = None):
    """Step ``step()`` (one SVI step, returning its loss) until
    :func:`svi_converged`, a non-finite loss, or ``max_iter`` steps.

    Returns (losses, number of steps taken, converged, diverged)."""
    losses: list = []
    it = 0
    for it in range(1, max_iter + 1):
        loss = step()
        if not math.isfinite(loss):
            return losses, it, False, True
        losses.append(loss)
        if callback is not None:
            callback(it, loss)
        if svi_converged(losses, window, n_samples, tol):
            return losses, it, True, False
    return losses, it, False, False


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
    with pyro.get_param_store().scope():
        guide = AutoDelta(poutine.block(model, expose=list(GLOBAL_SITES)),
                          init_loc_fn=init_to_value(values=init))
        state = {"svi": SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}), _make_elbo(jit)),
                 "first": True}

        def step() -> float:
            first, state["first"] = state["first"], False
            try:
                return _step_or_nan(state["svi"], guide, X)
            except Exception as exc:  # only the JIT path's first step is allowed to fail
                if not (jit and first):
                    raise
                warnings.warn(f"JitTraceEnum_ELBO failed ({type(exc).__name__}: {exc}); "
                              f"falling back to TraceEnum_ELBO", RuntimeWarning)
                state["svi"] = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}),
                                   _make_elbo(False))
                return _step_or_nan(state["svi"], guide, X)

        losses, it, converged, _ = run_svi_loop(step, max_iter, N, tol, window, callback)
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


def fused_svi_fit(X: torch.Tensor, params: MixtureParams, priors: PriorTensors, max_iter: int,
                  tol: float, learning_rate: float,
                  callback: Optional[Callable[[int, float], None]] = None,
                  window: int = 10) -> FitTrace:
    """The same SVI as :func:`svi_fit`, with the loss computed by one fused
    torch expression instead of Pyro's traced ``TraceEnum_ELBO``.

    For an ``AutoDelta`` guide the ELBO is the log joint at the guide's point
    with the assignments summed out, which :func:`negative_log_joint`
    computes directly (tests check it equals ``TraceEnum_ELBO`` at the same
    parameters).  The parameters live in the unconstrained space where Pyro
    stores AutoDelta's constrained ``PyroParam`` values (``transform_to`` of
    each site's support: softmax for the weights, exp for the scales) and Adam is stepped with the same settings
    as ``pyro.optim.Adam``, so the trajectory is Pyro's, at a fraction of the
    per-step cost (no tracing, no einsum planning)."""
    from torch.distributions import constraints, transform_to

    N = X.shape[0]
    to_simplex, to_positive = transform_to(constraints.simplex), transform_to(constraints.positive)
    w0 = params.weights.clamp_min(_MIN_WEIGHT)
    w0 = w0 / w0.sum(-1, keepdim=True)
    u_w = to_simplex.inv(w0).detach().clone().requires_grad_(True)
    u_m = params.means.detach().clone().requires_grad_(True)
    u_s = to_positive.inv(params.scales).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u_w, u_m, u_s], lr=learning_rate)

    def current() -> MixtureParams:
        return MixtureParams(to_simplex(u_w), u_m, to_positive(u_s))

    F = design_matrix(X)  # once per fit
    start = MixtureParams(w0, params.means, params.scales)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        cur = current()
        W = natural_weights(cur)                       # small graph: params -> (2D+1, K)
        prior = log_prior(cur, priors)
        with torch.no_grad():
            # The data term and its gradient by hand: d/dW sum_n logsumexp_k (F W)_nk
            # = F^T resp, one product, instead of autograd through the (N, K)
            # log-sum-exp (which allocates several (N, K) temporaries).
            data_ll, moments = e_step(F, W.unsqueeze(0))
            data_ll, grad_W = data_ll[0], moments[0].transpose(0, 1)
        loss = -float(data_ll + prior.detach())  # one host sync per step: the stopping rule needs it
        if math.isfinite(loss):
            # A surrogate with the loss's gradient: -(W . grad_W) - log prior.
            (-(W * grad_W).sum() - prior).backward()
            opt.step()
        return loss

    losses, it, converged, diverged = run_svi_loop(step, max_iter, N, tol, window, callback)
    if diverged:
        return FitTrace(start, torch.tensor(losses + [math.inf], dtype=torch.float64), it, False)
    with torch.no_grad():
        out = current()
        final = -float(e_step(F, natural_weights(out).unsqueeze(0))[0][0] + log_prior(out, priors))
        out = MixtureParams(out.weights.detach(), out.means.detach(), out.scales.detach())
    if not math.isfinite(final) or not _all_finite(out.as_dict()):
        return FitTrace(start, torch.tensor(losses + [math.inf], dtype=torch.float64), it, False)
    losses.append(final)
    return FitTrace(out, torch.tensor(losses, dtype=torch.float64), it, converged)


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
    with torch.no_grad(), warnings.catch_warnings():
        # With K = 1 the assignment has one value and Pyro warns that nothing
        # is enumerated; the answer (all zeros) is still right.
        warnings.filterwarnings("ignore", message=".*no sample sites configured for enumeration")
        discrete = infer_discrete(fn, first_available_dim=first_dim, temperature=temperature)
        trace = poutine.trace(discrete).get_trace(X)
    z = trace.nodes["assignment"]["value"]
    # The max-product/sampling contraction may drop a dimension along which the
    # value is constant (e.g. every point in one component): broadcast back.
    shape = (X.shape[0],) if n_draws is None else (n_draws, X.shape[0])
    while z.dim() > len(shape) and z.shape[0] == 1:  # leftover enumeration dims
        z = z.squeeze(0)
    return torch.broadcast_to(z, shape)


def sample_model(params: MixtureParams, priors: PriorTensors, n_components: int, n_samples: int):
    """Draw ``n_samples`` (x, z) pairs from the model at fixed parameters."""
    conditioned = poutine.condition(gmm_model, data=params.as_dict())
    with torch.no_grad():
        trace = poutine.trace(conditioned).get_trace(None, priors, n_components, n_samples)
    return trace.nodes["obs"]["value"], trace.nodes["assignment"]["value"]


# ----------------------------------------------------------------------------
# Per-class mixtures fitted together (GMMClassifier)
# ----------------------------------------------------------------------------
# Shapes used below: C classes, every class padded to Kmax components, B a
# batch of variants (restarts, and candidate K for model selection), D
# features.  Class parameters are MixtureParams with weights (B, C, Kmax),
# means and scales (B, C, Kmax, D); ``mask`` (B, C, Kmax) or (C, Kmax) marks
# the real components.  Padded components have weight exactly 0, mean 0 and
# scale 1, so every expression stays finite and they never take any mass.
from .models import CLASS_GLOBAL_SITES, masked_dirichlet_log_prob  # noqa: E402

def class_prior_tensors(priors: Sequence[Priors], std: Standardizer, n_max: int, device,
                        dtype=torch.float32) -> PriorTensors:
    """Stack resolved per-class :class:`Priors` into class-batched tensors in
    standardised units.

    Shapes (C classes, K = ``n_max``): ``concentration`` (C, K) (padded with
    1, unused), ``mean_loc``/``mean_scale``/``scale_rate`` (C, 1, D) and
    ``scale_shape`` (C, 1, 1): the singleton dims line the per-class values up
    with (..., C, K, D) parameters."""
    per = [std.priors(p, device, dtype) for p in priors]
    conc = torch.ones(len(per), n_max, dtype=dtype, device=device)
    for c, p in enumerate(per):  # C small host-side copies, once per fit
        conc[c, : p.concentration.shape[-1]] = p.concentration
    stack = lambda name: torch.stack([getattr(p, name) for p in per]).unsqueeze(-2)
    return PriorTensors(
        concentration=conc,
        mean_loc=stack("mean_loc"),
        mean_scale=stack("mean_scale"),
        scale_shape=torch.stack([p.scale_shape.reshape(1) for p in per]).unsqueeze(-1),
        scale_rate=stack("scale_rate"),
    )


def masked_params(params: MixtureParams, mask: torch.Tensor) -> MixtureParams:
    """Put padded components at weight 0, mean 0 and scale 1 (weights
    renormalised over the real components)."""
    w = torch.where(mask, params.weights, torch.zeros_like(params.weights))
    w = w / w.sum(-1, keepdim=True)
    m = mask.unsqueeze(-1)
    return MixtureParams(w, torch.where(m, params.means, torch.zeros_like(params.means)),
                         torch.where(m, params.scales, torch.ones_like(params.scales)))


def class_log_prior(params: MixtureParams, priors: PriorTensors, mask: torch.Tensor) -> torch.Tensor:
    """log p(weights) + log p(means) + log p(scales) of every class over its
    real components only, shape (..., C).

    The Dirichlet term is the K_c-dimensional density of the real weights, so
    a padded class has exactly the prior of an unpadded K_c-component one."""
    maskf = mask.to(params.weights.dtype)
    logw = torch.log(params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny))
    lp = masked_dirichlet_log_prob(logw, priors.concentration, mask)
    # Closed forms of the Normal and InverseGamma log densities: building
    # torch.distributions objects every EM iteration costs more (shape
    # inference of InverseGamma's transform) than the arithmetic itself.
    z = (params.means - priors.mean_loc) / priors.mean_scale
    lp_means = (-0.5 * z * z - torch.log(priors.mean_scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
    a, b, sc = priors.scale_shape, priors.scale_rate, params.scales
    lp_scales = (a * torch.log(b) - torch.lgamma(a) - (a + 1) * torch.log(sc) - b / sc).sum(-1)
    return lp + ((lp_means + lp_scales) * maskf).sum(-1)


def class_log_likelihoods(X: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """log p(x_n | class c) for every point and class, shape (..., N, C).

    One call of :func:`component_log_prob` with the classes as its batch
    dim: (C, N, Kmax) log w + log N, then a log-sum-exp over components
    (padded components have log weight -inf and drop out)."""
    return torch.logsumexp(component_log_prob(X, params), -1).transpose(-1, -2)


def _own_class_log_prob(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """log w_k + log N(x_n | mu_k, sigma_k) under each point's OWN class only,
    shape (B, N, Kmax).

    Each point gathers its class's parameters (B, N, Kmax, D) and is treated
    by :func:`component_log_prob` as a one-point batch (X as (N, 1, D)), so
    the cost is N x Kmax, not N x C x Kmax."""
    own = MixtureParams(params.weights[:, labels], params.means[:, labels], params.scales[:, labels])
    return component_log_prob(X.unsqueeze(-2), own).squeeze(-2)


@dataclass
class ClassStats:
    """Per-class sufficient statistics of one E-step, summed over each
    class's own points: log-likelihood (B, C), N_k (B, C, K), sum of x and
    of x^2 per component (B, C, K, D)."""

    loglik: torch.Tensor
    Nk: torch.Tensor
    Sx: torch.Tensor
    Sxx: torch.Tensor


@dataclass
class ClassData:
    """The training points laid out per class, built once per fit.

    ``design`` (C, n_max, 2D + 1) holds the rows [x^2, x, 1] of every class's
    own points, zero-padded to the largest class, with ``valid`` (C, n_max)
    marking real rows.  With this layout a class sees only its own points
    through plain batched matrix products: the log densities of all variants,
    classes and components are one GEMM against the natural parameters, and
    the E-step moments are one GEMM back (no gather, no scatter, no loop over
    classes).  Padding costs at most the imbalance between class sizes."""

    design: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_labels(cls, X: torch.Tensor, labels: torch.Tensor, n_classes: int) -> "ClassData":
        counts = torch.bincount(labels, minlength=n_classes)
        n_max = int(counts.max())
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n_max, device=X.device)
        valid = pos.unsqueeze(0) < counts.unsqueeze(1)                     # (C, n_max)
        idx = order[(starts.unsqueeze(1) + pos).clamp_max(X.shape[0] - 1)]
        F = torch.cat([X * X, X, torch.ones_like(X[:, :1])], -1)[idx]     # (C, n_max, 2D+1)
        design = torch.where(valid.unsqueeze(-1), F, torch.zeros_like(F))
        return cls(design, valid, counts)


def _natural_params(params: MixtureParams) -> torch.Tensor:
    """(..., 2D + 1, K) coefficients such that [x^2, x, 1] @ theta is
    log w_k + log N(x | mu_k, sigma_k).  Zero weights (padded components)
    get a large finite negative constant rather than -inf: -inf times the
    zero rows of padded points would give NaN."""
    prec = params.scales.pow(-2)                                           # (B, C, K, D)
    D = params.means.shape[-1]
    logw = torch.log(params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny))
    logw = torch.where(params.weights > 0, logw, torch.full_like(logw, -1e30))
    const = (logw - 0.5 * (params.means.pow(2) * prec).sum(-1) - torch.log(params.scales).sum(-1)
             - 0.5 * D * math.log(2 * math.pi))
    theta = torch.cat([-0.5 * prec, params.means * prec, const.unsqueeze(-1)], -1)
    return theta.transpose(-1, -2)


def class_stats(data: ClassData, params: MixtureParams, chunk: int,
                resp: Optional[torch.Tensor] = None) -> ClassStats:
    """E-step for all variants and classes at once: log densities by one
    batched GEMM per chunk of rows, moments by one GEMM back.

    The quadratic form [x^2, x, 1] @ theta loses a little float32 precision
    for points far from a narrow component compared with
    :func:`component_log_prob`'s differences; EM only needs the
    responsibilities, and the reported losses are recomputed exactly by
    :func:`class_negative_log_joint`.  ``resp`` (B, C, n_max, K) replaces the
    posterior (hard assignments at initialisation)."""
    lead, K = params.weights.shape[:-1], params.weights.shape[-1]
    D = params.means.shape[-1]
    theta = None if resp is not None else _natural_params(params)
    dt = data.design.dtype
    loglik = torch.zeros(lead, dtype=dt, device=data.design.device)
    mom = torch.zeros(*lead, K, 2 * D + 1, dtype=dt, device=data.design.device)
    for a in range(0, data.design.shape[1], chunk):
        F = data.design[:, a:a + chunk]                                     # (C, n, F)
        v = data.valid[:, a:a + chunk].to(dt).unsqueeze(-1)                 # (C, n, 1)
        if resp is None:
            logp = F @ theta                                                # (B, C, n, K)
            ll = torch.logsumexp(logp, -1, keepdim=True)
            r = torch.exp(logp - ll) * v
            loglik += (ll * v).sum((-1, -2))
        else:
            r = resp[:, :, a:a + chunk] * v
        mom += r.transpose(-1, -2) @ F                                      # (B, C, K, F)
    return ClassStats(loglik, mom[..., -1], mom[..., D:2 * D], mom[..., :D])


def _m_step_stats(stats: ClassStats, scales: Optional[torch.Tensor], priors: PriorTensors,
                  mask: torch.Tensor) -> MixtureParams:
    """The closed-form conditional maximisation of :func:`_m_step`, from
    per-class sufficient statistics and restricted to real components.

    Same formulas: Dirichlet mode for the weights (over the class's K_c
    components), precision-weighted means given the scales, and the positive
    root of (a + 1 + N_k) s^2 - b s - S_k = 0 for the scales."""
    return _m_step_moments(stats.Nk, stats.Sx, stats.Sxx, scales, priors, mask)


def class_negative_log_joint(X: torch.Tensor, labels: torch.Tensor, n_classes: int,
                             params: MixtureParams, priors: PriorTensors, mask: torch.Tensor,
                             chunk: int = 2 ** 16) -> torch.Tensor:
    """-log p(X_c, weights_c, means_c, scales_c) of every class (assignments
    summed out), shape (B, C): the per-class value of :func:`negative_log_joint`."""
    ll = torch.zeros(params.weights.shape[:2], dtype=X.dtype, device=X.device)
    for a in range(0, X.shape[0], chunk):
        y = labels[a:a + chunk]
        onehot = torch.nn.functional.one_hot(y, n_classes).to(X.dtype)          # (n, C)
        # Summed per class by a product (deterministic on CUDA, unlike index_add_).
        ll += torch.logsumexp(_own_class_log_prob(X[a:a + chunk], y, params), -1) @ onehot
    return -(ll + class_log_prior(params, priors, mask))


def class_kmeanspp(X: torch.Tensor, labels: torch.Tensor, n_classes: int, n_centers: int,
                   n_batch: int, generator: torch.Generator, method: str = "kmeans++",
                   max_points: int = 8192) -> torch.Tensor:
    """Greedy k-means++ seeding (as scikit-learn's ``kmeans_plusplus``: 2 +
    log K candidates per step, keep the one that lowers the potential most)
    for every (variant, class) group at once, each over its own class's
    points; ``method="random"`` draws distinct points uniformly instead.

    Returns centres of shape (n_batch, C, n_centers, D).  The first k centres
    of a k-means++ run are themselves a k-means++ seeding for k, so variants
    that differ only in K can share one run.  Classes larger than
    ``max_points`` are seeded from a random subset of that size (seeding
    needs spread, not every point), which bounds the (G, L, n) work."""
    N, D = X.shape
    counts = torch.bincount(labels, minlength=n_classes)
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    n_max = int(min(int(counts.max()), max_points))
    # Per-class padded point table (C, n_max): a random subset of size
    # min(count, n_max) of each class's points.
    keys = torch.rand(n_classes, int(counts.max()), generator=generator, dtype=torch.float64)
    valid_all = torch.arange(int(counts.max())).unsqueeze(0) < counts.unsqueeze(1)
    keys = torch.where(valid_all, keys, torch.full_like(keys, 2.0))
    pick = torch.argsort(keys, dim=1)[:, :n_max]                        # (C, n_max)
    member = torch.arange(n_max).unsqueeze(0) < counts.clamp_max(n_max).unsqueeze(1)
    idx = order[(starts.unsqueeze(1) + pick).clamp_max(N - 1)]
    P = X[idx]                                                          # (C, n_max, D)
    G = n_batch * n_classes
    P = P.repeat(n_batch, 1, 1)                                         # (G, n_max, D)
    member = member.repeat(n_batch, 1)                                  # (G, n_max)
    memberf = member.to(X.dtype)
    rows = torch.arange(G)
    centers = torch.zeros(G, n_centers, D, dtype=X.dtype)
    if method == "random":
        keys = torch.rand(G, n_max, generator=generator, dtype=torch.float64)
        keys = torch.where(member, keys, torch.full_like(keys, 2.0))
        sel = torch.argsort(keys, dim=1)[:, :n_centers]
        # Classes with fewer points than centres repeat their points.
        sel = torch.where(sel < counts.clamp_max(n_max).repeat(n_batch).unsqueeze(1), sel,
                          torch.zeros_like(sel))
        return P[rows.unsqueeze(1), sel].reshape(n_batch, n_classes, n_centers, D)
    n_local = 2 + int(math.log(n_centers))
    first = torch.multinomial(memberf, 1, generator=generator).squeeze(1)
    centers[:, 0] = P[rows, first]
    closest = ((P - centers[:, :1]) ** 2).sum(-1) * memberf             # (G, n_max)
    for j in range(1, n_centers):   # a loop over centres, never over points or classes
        pot = closest.sum(-1, keepdim=True)
        # A class with fewer distinct points than centres has zero potential
        # left: fall back to uniform draws (EM then handles duplicates).
        probs = torch.where(pot > 0, closest, memberf)
        cand = torch.multinomial(probs, n_local, replacement=True, generator=generator)
        d2 = ((P.unsqueeze(1) - P[rows.unsqueeze(1), cand].unsqueeze(2)) ** 2).sum(-1)
        new = torch.minimum(closest.unsqueeze(1), d2) * memberf.unsqueeze(1)  # (G, L, n_max)
        best = new.sum(-1).argmin(-1)
        centers[:, j] = P[rows, cand[rows, best]]
        closest = new[rows, best]
    return centers.reshape(n_batch, n_classes, n_centers, D)


def class_initial_params(data: ClassData, centers: torch.Tensor, mask: torch.Tensor,
                         priors: PriorTensors, chunk: int) -> MixtureParams:
    """Weights and scales consistent with the partition the seeded centres
    induce (each point to its nearest real centre of its own class), as
    :func:`initial_params` does for one mixture; the centres are kept as the
    means."""
    B, C, K, D = centers.shape
    maskb = mask.expand(B, C, K)
    X = data.design[..., D:2 * D]                                               # (C, n_max, D)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; the |x|^2 term does not change the argmin.
    d2 = -2 * X @ centers.transpose(-1, -2) + centers.pow(2).sum(-1).unsqueeze(-2)   # (B, C, n, K)
    d2 = torch.where(maskb.unsqueeze(-2), d2, torch.full_like(d2, math.inf))
    resp = torch.nn.functional.one_hot(d2.argmin(-1), K).to(X.dtype)
    start = MixtureParams(maskb.to(X.dtype), centers, torch.ones_like(centers))
    stats = class_stats(data, start, chunk, resp=resp)
    p = _m_step_stats(stats, None, priors, maskb)
    return masked_params(MixtureParams(p.weights, centers, p.scales), maskb)


def _priors_at(priors: PriorTensors, classes: torch.Tensor) -> PriorTensors:
    """Class-batched priors gathered for a list of (variant, class) groups."""
    return PriorTensors(priors.concentration[classes], priors.mean_loc[classes],
                        priors.mean_scale[classes], priors.scale_shape[classes],
                        priors.scale_rate[classes])


def class_em_fit(X: torch.Tensor, labels: torch.Tensor, data: ClassData, params: MixtureParams,
                 mask: torch.Tensor, priors: PriorTensors, max_iter: int, tol: float, chunk: int,
                 callback: Optional[Callable[[int, float], None]] = None) -> FitTrace:
    """Closed-form MAP-EM of every class's mixture, for all variants at once.

    Classes are independent, so each (variant, class) pair is a separate MAP
    problem.  Every iteration gathers the pairs still running into one batch
    of groups, runs one chunked E-step on it (each group against its own
    class's points, see :class:`ClassData`) and one M-step from the
    statistics; a pair leaves the batch once it improves by less than ``tol``
    nats per point of its class.  So the batch does the work of the pairs
    that need it, never more iterations for a pair than a separate fit would
    run.  ``losses`` has shape (B, C, T), standardised units; a finished
    pair's entries repeat its last loss."""
    B, C, K = params.weights.shape
    maskb = mask.expand(B, C, K)
    n_c = data.counts.to(X.dtype).clamp_min(1)
    w, m, s = params.weights.clone(), params.means.clone(), params.scales.clone()
    active = torch.ones(B, C, dtype=torch.bool, device=X.device)
    last = torch.full((B, C), math.inf, dtype=X.dtype, device=X.device)
    history = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        bi, ci = active.nonzero(as_tuple=True)    # one host sync per iteration
        sub = MixtureParams(w[bi, ci], m[bi, ci], s[bi, ci])
        pg = _priors_at(priors, ci)
        mg = maskb[bi, ci]
        group = ClassData(data.design[ci], data.valid[ci], data.counts[ci])
        stats = class_stats(group, sub, chunk)
        loss = -(stats.loglik + class_log_prior(sub, pg, mg))
        new = _m_step_stats(stats, sub.scales, pg, mg)
        # A pair that went non-finite keeps its last finite parameters and stops.
        ok = torch.isfinite(new.weights).all(-1) & torch.isfinite(new.scales).all((-1, -2)) \
            & torch.isfinite(new.means).all((-1, -2)) & torch.isfinite(loss)
        keep = ok.unsqueeze(-1)
        w[bi, ci] = torch.where(keep, new.weights, sub.weights)
        m[bi, ci] = torch.where(keep.unsqueeze(-1), new.means, sub.means)
        s[bi, ci] = torch.where(keep.unsqueeze(-1), new.scales, sub.scales)
        prev = last[bi, ci]
        gain = (prev - loss) / n_c[ci]
        last[bi, ci] = loss
        history.append(last.clone())
        active[bi, ci] = ok & ((gain > tol) | ~torch.isfinite(prev))
        if callback is not None:
            callback(it, float(loss.sum()))
        if not bool(active.any()):
            converged = True
            break
    params = MixtureParams(w, m, s)
    final = class_negative_log_joint(X, labels, C, params, priors, maskb, chunk)
    final = torch.where(torch.isfinite(final), final, torch.full_like(final, math.inf))
    history.append(final)
    return FitTrace(params, torch.stack(history, -1), it, converged)


def _make_class_model(priors: PriorTensors, mask: torch.Tensor):
    from .models import class_gmm_model

    def model(data, labels):
        return class_gmm_model(data, labels, priors, mask)
    return model


def _class_guide_init(params: MixtureParams, mask: torch.Tensor) -> dict:
    """AutoDelta starting values for :func:`class_gmm_model` from (C, K)
    parameters: log weights as logits (padded entries 0; the model masks them)."""
    logw = torch.log(params.weights.clamp_min(_MIN_WEIGHT))
    logits = torch.where(mask, logw, torch.zeros_like(logw)).unsqueeze(-2)
    return {"weight_logits": logits.detach().clone(), "means": params.means.detach().clone(),
            "scales": params.scales.detach().clone()}


def _class_params_from_guide(values: dict, mask: torch.Tensor) -> MixtureParams:
    logits = values["weight_logits"].squeeze(-2).masked_fill(~mask, -math.inf)
    return masked_params(MixtureParams(torch.softmax(logits, -1), values["means"], values["scales"]),
                         mask)


def class_elbo_loss(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams,
                    priors: PriorTensors, mask: torch.Tensor) -> float:
    """``TraceEnum_ELBO`` loss of :func:`bayesgmm.models.class_gmm_model` with
    an AutoDelta guide sitting on ``params`` (weights (C, K), means and
    scales (C, K, D)); equals the sum over classes of :func:`elbo_loss` of
    each class's own :func:`gmm_model`."""
    model = _make_class_model(priors, mask)
    with pyro.get_param_store().scope():
        guide = AutoDelta(poutine.block(model, expose=list(CLASS_GLOBAL_SITES)),
                          init_loc_fn=init_to_value(values=_class_guide_init(params, mask)))
        return TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide, X, labels)


def class_svi_fit(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams, mask: torch.Tensor,
                  priors: PriorTensors, max_iter: int, tol: float, learning_rate: float,
                  callback: Optional[Callable[[int, float], None]] = None,
                  window: int = 10) -> FitTrace:
    """MAP of all classes at once by SVI on the class-plate model
    (``TraceEnum_ELBO`` enumerating the assignments, ``AutoDelta`` over
    ``weight_logits``, ``means`` and ``scales``, Adam), from ``params``
    (weights (C, K), means/scales (C, K, D)).

    Same stopping rule as :func:`svi_fit` (average gain over ``window``
    steps below ``tol`` nats per sample); the param store is scoped."""
    N = X.shape[0]
    model = _make_class_model(priors, mask)
    with pyro.get_param_store().scope():
        guide = AutoDelta(poutine.block(model, expose=list(CLASS_GLOBAL_SITES)),
                          init_loc_fn=init_to_value(values=_class_guide_init(params, mask)))
        svi = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}),
                  TraceEnum_ELBO(max_plate_nesting=2))
        losses, it, converged, _ = run_svi_loop(lambda: svi.step(X, labels), max_iter, N, tol,
                                                window, callback)
        with torch.no_grad():
            fitted = {k: v.detach() for k, v in guide.median().items()}
    out = _class_params_from_guide(fitted, mask)
    if not all(torch.isfinite(v).all() for v in out.as_dict().values()):
        return FitTrace(params, torch.tensor(losses + [math.inf]), it, False)
    return FitTrace(out, torch.tensor(losses, dtype=torch.float64), it, converged)


def class_discriminative_fit(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams,
                             mask: torch.Tensor, log_class_prior: torch.Tensor, steps: int,
                             learning_rate: float, batch_size: int, generator: torch.Generator,
                             callback: Optional[Callable[[int, float], None]] = None
                             ) -> tuple[MixtureParams, torch.Tensor]:
    """Discriminative fine-tuning, as in the original PyTorch study: starting
    from the generative MAP, minimise the cross-entropy of the class logits
    log p(x | c) + log p(c) with Adam over (log weights, means, log scales).

    Full batch when ``batch_size >= N``, else minibatches drawn with
    ``generator``.  Returns the new parameters and the loss per step."""
    logits = torch.log(params.weights.clamp_min(_MIN_WEIGHT)).masked_fill(~mask, 0.0)
    logits = logits.detach().clone().requires_grad_(True)
    means = params.means.detach().clone().requires_grad_(True)
    log_scales = torch.log(params.scales).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits, means, log_scales], lr=learning_rate)
    N = X.shape[0]
    history = []

    m = mask.unsqueeze(-1)
    ones = torch.ones_like(logits)

    def log_weights() -> torch.Tensor:
        return torch.log_softmax(logits.masked_fill(~mask, -math.inf), -1)

    def current() -> MixtureParams:
        return masked_params(MixtureParams(log_weights().exp(), means, torch.exp(log_scales)), mask)

    for step in range(1, steps + 1):
        if batch_size >= N:
            x, y = X, labels
        else:
            pick = torch.randint(0, N, (batch_size,), generator=generator).to(X.device)
            x, y = X[pick], labels[pick]
        opt.zero_grad()
        # The log weights enter as log_softmax of masked logits rather than
        # log(softmax): a padded weight is exactly 0 and d log(w)/dw there
        # would be inf * 0 = nan.  Unit weights make component_log_prob
        # return the plain log densities; pads (log weight -inf) drop out of
        # the log-sum-exp and torch.where keeps their means/scales finite.
        dens = component_log_prob(x, MixtureParams(ones, torch.where(m, means, 0.0),
                                                   torch.where(m, torch.exp(log_scales), 1.0)))
        logit = torch.logsumexp(dens + log_weights().unsqueeze(-2), -1).transpose(-1, -2) \
            + log_class_prior
        loss = torch.nn.functional.cross_entropy(logit, y)
        loss.backward()
        opt.step()
        history.append(loss.detach())
        if callback is not None:
            callback(step, float(loss.detach()))
    with torch.no_grad():
        out = current()
    return MixtureParams(out.weights.detach(), out.means.detach(), out.scales.detach()), \
        torch.stack(history) if history else torch.zeros(0)
