"""Pure Pyro model functions for Bayesian Gaussian mixtures.

Nothing here touches numpy or user input: the models take tensors, a
:class:`~bayesgmm.priors.PriorTensors` bundle and a covariance family
(:mod:`bayesgmm.covariance`), and declare sample sites; the family supplies
its own prior site and observation distribution.  Fitting lives in
:mod:`bayesgmm.fitting`.

The model (for data of shape ``(N, D)``)::

    weights        ~ Dirichlet(concentration)                       shape (K,)
                     (or stick-breaking: sticks ~ Beta(1, alpha), K - 1 of them)
    for k in 1..K:
        means[k]   ~ Normal(mean_loc, mean_scale)   (per feature)   shape (K, D)
        cov[k]     ~ the family's prior (InverseGamma scales or Wishart precisions)
    for n in 1..N:
        assignment[n] ~ Categorical(weights)
        x[n]          ~ Normal(means[assignment[n]], cov[assignment[n]])

The discrete ``assignment`` site is marked for parallel enumeration, so
``TraceEnum_ELBO`` sums it out exactly.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from . import _pyro  # noqa: F401  (Pyro imported without tqdm's notebook warning)
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import config_enumerate

from .covariance import Covariance, observed_gaussian
from .priors import PriorTensors


def global_sites(family: Covariance) -> tuple:
    """Names of the global (continuous) sites of :func:`gmm_model`."""
    return ("weights", "means", family.site)


def class_global_sites(family: Covariance) -> tuple:
    """Names of the global (continuous) sites of :func:`class_gmm_model`."""
    return ("weight_logits", "means", family.site)


class ObservedNormal(dist.TorchDistribution):
    """A Gaussian N(loc, cov) scored on the observed entries of each value
    only (``observed`` (..., D) bool; the missing entries of the value are
    ignored): the marginal density of the observed coordinates, by
    :func:`~bayesgmm.covariance.observed_gaussian`.  The observation
    distribution of points with missing features; it only scores."""

    arg_constraints = {}
    support = dist.constraints.real_vector

    def __init__(self, loc: torch.Tensor, cov: torch.Tensor, observed: torch.Tensor,
                 validate_args=None):
        batch = torch.broadcast_shapes(loc.shape[:-1], cov.shape[:-2], observed.shape[:-1])
        self.loc, self.cov, self.observed = loc, cov, observed
        super().__init__(batch, loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        D = self.loc.shape[-1]
        return ObservedNormal(self.loc.expand(shape + (D,)), self.cov.expand(shape + (D, D)),
                              self.observed.expand(shape + (D,)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        A, half_logdet, n_obs = observed_gaussian(self.cov, self.observed)
        d = torch.where(self.observed, value - self.loc, torch.zeros((), dtype=value.dtype,
                                                                    device=value.device))
        quad = (d.unsqueeze(-2) @ A @ d.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return -0.5 * quad - half_logdet - 0.5 * n_obs * math.log(2 * math.pi)


def _observation(family: Covariance, loc: torch.Tensor, value: torch.Tensor,
                 dense: Optional[torch.Tensor], data: Optional[torch.Tensor]):
    """The observation distribution of a data plate and the value it
    scores: the family's own, or :class:`ObservedNormal` (with the gathered
    covariance matrices ``dense``) where ``data`` has missing (NaN) entries,
    which are passed as 0."""
    if dense is not None:
        return ObservedNormal(loc, dense, ~torch.isnan(data)), torch.nan_to_num(data)
    return family.obs(loc, value), data


def _has_missing(data: Optional[torch.Tensor]) -> bool:
    return data is not None and bool(torch.isnan(data).any())


def _weighted_factor(obs_dist, value: torch.Tensor, log_weights: torch.Tensor,
                     weight: torch.Tensor) -> None:
    """The data term with sample weights: each point's log density, the
    assignment summed out over the leading (component) dimension, times
    its weight, as a ``pyro.factor``.  (``TraceEnum_ELBO`` enumerates only
    under scalar ``poutine.scale``, so weighted models sum the assignment
    out themselves.)"""
    ll = torch.logsumexp(obs_dist.log_prob(value) + log_weights, 0)
    pyro.factor("obs", weight * ll.reshape(weight.shape))


def stick_breaking(sticks: torch.Tensor) -> torch.Tensor:
    """Weights (..., K) from K - 1 stick fractions v (..., K - 1):
    w_k = v_k prod_{j<k} (1 - v_j), the last component taking the rest."""
    rest = torch.cumprod(1 - sticks, -1)
    one = sticks.new_ones(sticks.shape[:-1] + (1,))
    return torch.cat([sticks, one], -1) * torch.cat([one, rest], -1)


def sticks_from_weights(weights: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`stick_breaking`: the K - 1 stick fractions
    v_k = w_k / (1 - sum_{j<k} w_j) (..., K - 1) that break into
    ``weights`` (..., K)."""
    left = 1 - torch.cumsum(weights, -1) + weights
    return weights[..., :-1] / left[..., :-1]


def _weights_site(priors: PriorTensors, K: int, weight_prior: str) -> torch.Tensor:
    """The mixture weights: ``weights ~ Dirichlet(concentration)``, or for
    the truncated Dirichlet process ``sticks ~ Beta(1, alpha)`` (K - 1 of
    them, alpha = ``concentration[0]``) and the weights by
    :func:`stick_breaking`."""
    if weight_prior == "dirichlet":
        return pyro.sample("weights", dist.Dirichlet(priors.concentration))
    if weight_prior != "dirichlet_process":
        raise ValueError(f"weight_prior must be 'dirichlet' or 'dirichlet_process', got "
                         f"{weight_prior!r}")
    if K == 1:          # one component: no stick to break
        return priors.concentration.new_ones(priors.concentration.shape[:-1] + (1,))
    alpha = priors.concentration[..., :1].expand(priors.concentration.shape[:-1] + (K - 1,))
    sticks = pyro.sample("sticks", dist.Beta(torch.ones_like(alpha), alpha).to_event(1))
    return stick_breaking(sticks)


@config_enumerate
def gmm_model(data: Optional[torch.Tensor], priors: PriorTensors, n_components: int,
              family: Covariance, n_samples: Optional[int] = None,
              weight: Optional[torch.Tensor] = None,
              weight_prior: str = "dirichlet") -> torch.Tensor:
    """Bayesian Gaussian mixture with the covariances of ``family``.

    Parameters
    ----------
    data : tensor of shape (N, D) or None
        Observations; ``None`` samples ``n_samples`` new points.
    priors : PriorTensors
        Hyperparameters (``concentration`` of shape (K,), the rest per feature).
    n_components : int
        K, the number of mixture components.
    family : Covariance
        The covariance family (:func:`bayesgmm.covariance.get`).
    n_samples : int, optional
        Number of points to generate when ``data`` is None.
    weight : tensor of shape (N,), optional
        Sample weights: each point's log density is scaled by its weight, as
        if repeated (a ``pyro.factor`` with the assignment summed out in the
        model: enumeration takes only scalar scales).
    weight_prior : {"dirichlet", "dirichlet_process"}
        The weights' prior (:func:`_weights_site`): a Dirichlet, or the
        stick-breaking prior of a Dirichlet process truncated at K.

    Missing entries of ``data`` (NaN) are marginalised: a point with
    missing features is scored by the Gaussian of its observed coordinates
    (:class:`ObservedNormal`).

    Returns
    -------
    tensor of shape (N,)
        The assignments (enumerated values under ``TraceEnum_ELBO``).
    """
    K = n_components
    D = priors.mean_loc.shape[-1]
    N = data.shape[0] if data is not None else n_samples
    weights = _weights_site(priors, K, weight_prior)
    # One plate over components; the features are an event dimension, so a
    # component's mean is a single (K,)-batched draw of D values.
    with pyro.plate("components", K, dim=-1):
        means = pyro.sample(
            "means", dist.Normal(priors.mean_loc, priors.mean_scale).expand([K, D]).to_event(1))
        if family.per_component:
            cov = pyro.sample(family.site, family.prior(priors, K))
    if not family.per_component:
        cov = pyro.sample(family.site, family.prior(priors, K))
    dense = family.dense(cov, K) if _has_missing(data) else None
    with pyro.plate("data", N, dim=-1):
        if weight is None:
            assignment = pyro.sample("assignment", dist.Categorical(weights))
        else:
            assignment = torch.arange(K, device=weights.device).unsqueeze(-1)
        # Under enumeration ``assignment`` has shape (K, 1), so the gathered
        # parameters are (K, 1, ...) and the log-density broadcasts to (K, N).
        obs_dist, value = _observation(family, means[assignment], family.gather(cov, assignment),
                                       None if dense is None else dense[assignment], data)
        if weight is None:
            pyro.sample("obs", obs_dist, obs=value)
        else:
            _weighted_factor(obs_dist, value, torch.log(weights).unsqueeze(-1), weight)
    return assignment


def masked_dirichlet_log_prob(log_weights: torch.Tensor, concentration: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
    """log Dirichlet(w_real | a_real) from log weights: the density of the
    weights of the real (``mask``) components only, so a class padded to Kmax
    components has exactly the prior of its own K_c-component mixture.
    Padded entries (log weight -inf) are ignored."""
    maskf = mask.to(log_weights.dtype)
    logw = torch.where(mask, log_weights, torch.zeros_like(log_weights))
    return (torch.lgamma((concentration * maskf).sum(-1))
            - (torch.lgamma(concentration) * maskf).sum(-1)
            + ((concentration - 1) * logw * maskf).sum(-1))


class _Flat(dist.ImproperUniform):
    """Flat improper density on the reals (log density 0) in the value's
    dtype: Pyro's ``ImproperUniform`` returns float32 zeros, which breaks
    float64 models."""

    def log_prob(self, value):
        batch_shape = value.shape[: value.dim() - self.event_dim]
        return value.new_zeros(()).expand(torch.broadcast_shapes(batch_shape, self.batch_shape))


@config_enumerate
def class_gmm_model(data: torch.Tensor, labels: torch.Tensor, priors: PriorTensors,
                    mask: torch.Tensor, family: Covariance,
                    weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One Bayesian Gaussian mixture per class, every class in one model.

    Class c has its own :func:`gmm_model` over its own points: the classes are
    a plate, every class is padded to Kmax components and ``mask`` (C, Kmax)
    marks its real ones.  Padded components have weight exactly 0 and their
    mean and covariance sites are masked out of the log density, so the log
    joint is the sum over classes of each class's :func:`gmm_model` log joint.

    The weights are parameterised by unconstrained ``weight_logits`` with a
    flat (improper uniform) site and the Dirichlet density of the resulting
    real weights added by ``pyro.factor``: a K_c-dimensional Dirichlet cannot
    be batched over classes with different K_c as a sample site, but the
    factor gives the same log density at the same weights, and an
    ``AutoDelta`` guide (no Jacobian term) therefore has the same MAP.

    Parameters
    ----------
    data : tensor of shape (N, D)
    labels : long tensor of shape (N,)
        Class index in [0, C) of every point; each point is scored only by
        its own class's mixture.
    priors : PriorTensors
        Hyperparameters shared by the classes (``concentration`` (Kmax,)).
    mask : bool tensor of shape (C, Kmax)
    family : Covariance

    Returns
    -------
    tensor of shape (N,)
        The assignments (enumerated values under ``TraceEnum_ELBO``, which
        needs ``max_plate_nesting=2``).
    """
    C, K = mask.shape
    D = priors.mean_loc.shape[-1]
    N = data.shape[0]
    # classes at dim -2 and components at dim -1: the per-class weight vector
    # and a tied covariance are (C, 1)-batched sites, means are (C, K)-batched.
    with pyro.plate("classes", C, dim=-2):
        logits = pyro.sample("weight_logits", _Flat(dist.constraints.real, (C, 1), (K,)))
        log_w = torch.log_softmax(logits.masked_fill(~mask.unsqueeze(-2), -float("inf")), -1)
        pyro.factor("weights_prior",
                    masked_dirichlet_log_prob(log_w, priors.concentration, mask.unsqueeze(-2)))
        if not family.per_component:
            cov = pyro.sample(family.site, family.prior(priors, K, (C, 1)))
        with pyro.plate("components", K, dim=-1), poutine.mask(mask=mask):
            means = pyro.sample(
                "means", dist.Normal(priors.mean_loc, priors.mean_scale).expand([C, K, D]).to_event(1))
            if family.per_component:
                cov = pyro.sample(family.site, family.prior(priors, K, (C,)))
    log_w = log_w.squeeze(-2)                                          # (C, K)
    if not family.per_component:
        cov = cov.squeeze(1)                                           # (C, D, D)
    dense = family.dense(cov, K) if _has_missing(data) else None
    with pyro.plate("data", N, dim=-1):
        if weight is None:
            assignment = pyro.sample("assignment", dist.Categorical(logits=log_w[labels]))
        else:
            assignment = torch.arange(K, device=log_w.device).reshape(K, 1, 1)
        # Under enumeration ``assignment`` has shape (K, 1, 1): indexing with
        # (labels, assignment) gives (K, 1, N, ...), each point seeing only its
        # own class's components.
        obs_dist, value = _observation(family, means[labels, assignment],
                                       family.gather(cov, labels, assignment),
                                       None if dense is None else dense[labels, assignment], data)
        if weight is None:
            pyro.sample("obs", obs_dist, obs=value)
        else:
            _weighted_factor(obs_dist, value, log_w[labels].t().unsqueeze(1), weight)
    return assignment
