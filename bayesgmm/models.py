"""Pure Pyro model functions for Bayesian Gaussian mixtures.

Nothing here touches numpy or user input: the models take tensors, a
:class:`~bayesgmm.priors.PriorTensors` bundle and a covariance family
(:mod:`bayesgmm.covariance`), and declare sample sites; the family supplies
its own prior site and observation distribution.  Fitting lives in
:mod:`bayesgmm.fitting`.

The model (for data of shape ``(N, D)``)::

    weights        ~ Dirichlet(concentration)                       shape (K,)
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

from typing import Optional

import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import config_enumerate

from .covariance import Covariance
from .priors import PriorTensors


def global_sites(family: Covariance) -> tuple:
    """Names of the global (continuous) sites of :func:`gmm_model`."""
    return ("weights", "means", family.site)


def class_global_sites(family: Covariance) -> tuple:
    """Names of the global (continuous) sites of :func:`class_gmm_model`."""
    return ("weight_logits", "means", family.site)


@config_enumerate
def gmm_model(data: Optional[torch.Tensor], priors: PriorTensors, n_components: int,
              family: Covariance, n_samples: Optional[int] = None) -> torch.Tensor:
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

    Returns
    -------
    tensor of shape (N,)
        The assignments (enumerated values under ``TraceEnum_ELBO``).
    """
    K = n_components
    D = priors.mean_loc.shape[-1]
    N = data.shape[0] if data is not None else n_samples
    weights = pyro.sample("weights", dist.Dirichlet(priors.concentration))
    # One plate over components; the features are an event dimension, so a
    # component's mean is a single (K,)-batched draw of D values.
    with pyro.plate("components", K, dim=-1):
        means = pyro.sample(
            "means", dist.Normal(priors.mean_loc, priors.mean_scale).expand([K, D]).to_event(1))
        if family.per_component:
            cov = pyro.sample(family.site, family.prior(priors, K))
    if not family.per_component:
        cov = pyro.sample(family.site, family.prior(priors, K))
    with pyro.plate("data", N, dim=-1):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        # Under enumeration ``assignment`` has shape (K, 1), so the gathered
        # parameters are (K, 1, ...) and the log-density broadcasts to (K, N).
        pyro.sample("obs", family.obs(means[assignment], family.gather(cov, assignment)),
                    obs=data)
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
                    mask: torch.Tensor, family: Covariance) -> torch.Tensor:
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
    with pyro.plate("data", N, dim=-1):
        assignment = pyro.sample("assignment", dist.Categorical(logits=log_w[labels]))
        # Under enumeration ``assignment`` has shape (K, 1, 1): indexing with
        # (labels, assignment) gives (K, 1, N, ...), each point seeing only its
        # own class's components.
        pyro.sample("obs", family.obs(means[labels, assignment],
                                      family.gather(cov, labels, assignment)), obs=data)
    return assignment
