"""Pure Pyro model functions for Bayesian Gaussian mixtures.

Nothing here touches numpy or user input: the models take tensors and a
:class:`PriorTensors` bundle and declare sample sites.  Fitting lives in
:mod:`bayesgmm.inference`.

The model (for data of shape ``(N, D)``)::

    weights        ~ Dirichlet(concentration)                       shape (K,)
    for k in 1..K:
        means[k]   ~ Normal(mean_loc, mean_scale)   (per feature)   shape (K, D)
        scales[k]  ~ InverseGamma(scale_shape, scale_rate)          shape (K, D)
    for n in 1..N:
        assignment[n] ~ Categorical(weights)
        x[n]          ~ Normal(means[assignment[n]], scales[assignment[n]])

The discrete ``assignment`` site is marked for parallel enumeration, so
``TraceEnum_ELBO`` sums it out exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import pyro
import pyro.distributions as dist
from pyro.infer import config_enumerate

ArrayLike = Union[float, Sequence[float]]

#: Names of the global (continuous) sites of :func:`gmm_model`.
GLOBAL_SITES = ("weights", "means", "scales")


@dataclass(frozen=True)
class Priors:
    """Hyperparameters of the Bayesian Gaussian mixture, in the data's units.

    Every field may be left as ``None`` to take a default that is resolved
    from the data at fit time (so that results do not depend on the data's
    units); the resolved values are stored on the fitted estimator as
    ``priors_``.

    Parameters
    ----------
    weight_concentration : float or array of shape (n_components,), default 1.0
        Dirichlet concentration of the mixture weights.  Must be >= 1: below 1
        the Dirichlet density is unbounded at the edge of the simplex, so the
        MAP estimate does not exist.
    mean_loc : float or array of shape (n_features,), default: data mean
        Mean of the Normal prior on each component mean.
    mean_scale : float or array of shape (n_features,), default: 2 x data std
        Standard deviation of the Normal prior on each component mean.
    scale_shape : float, default 1.0
        Shape of the InverseGamma prior on each component scale (standard
        deviation, not variance).
    scale_rate : float or array of shape (n_features,), default: 0.1 x data std
        Rate of the InverseGamma prior on each component scale.  Any positive
        rate keeps the scales away from zero (no singular components).

    Examples
    --------
    The hyperparameters of Pyro's original iris study:

    >>> Priors(weight_concentration=1.0, mean_loc=0.0, mean_scale=10.0,
    ...        scale_shape=1.0, scale_rate=1.0)  # doctest: +ELLIPSIS
    Priors(weight_concentration=1.0, ...)
    """

    weight_concentration: Optional[ArrayLike] = None
    mean_loc: Optional[ArrayLike] = None
    mean_scale: Optional[ArrayLike] = None
    scale_shape: Optional[float] = None
    scale_rate: Optional[ArrayLike] = None

    @classmethod
    def pyro_iris(cls) -> "Priors":
        """The fixed hyperparameters of Pyro's iris GMM study:
        Dirichlet(1, ..., 1), Normal(0, 10), InverseGamma(1, 1)."""
        return cls(weight_concentration=1.0, mean_loc=0.0, mean_scale=10.0,
                   scale_shape=1.0, scale_rate=1.0)


@dataclass(frozen=True)
class PriorTensors:
    """Fully resolved hyperparameters as tensors, broadcast to their sites.

    ``concentration`` has shape ``(..., K)``; ``mean_loc``, ``mean_scale`` and
    ``scale_rate`` have shape ``(..., D)``; ``scale_shape`` is a 0-d tensor or
    has shape ``(..., 1)``.  The leading ``...`` is empty for one mixture and
    ``(C,)`` for the per-class model.
    """

    concentration: torch.Tensor
    mean_loc: torch.Tensor
    mean_scale: torch.Tensor
    scale_shape: torch.Tensor
    scale_rate: torch.Tensor


@config_enumerate
def gmm_model(data: Optional[torch.Tensor], priors: PriorTensors, n_components: int,
              n_samples: Optional[int] = None) -> torch.Tensor:
    """Bayesian Gaussian mixture with diagonal covariances.

    Parameters
    ----------
    data : tensor of shape (N, D) or None
        Observations; ``None`` samples ``n_samples`` new points.
    priors : PriorTensors
        Hyperparameters (``concentration`` of shape (K,), the rest (D,)).
    n_components : int
        K, the number of mixture components.
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
    # component's mean and scale are single (K,)-batched draws of D values.
    with pyro.plate("components", K, dim=-1):
        means = pyro.sample(
            "means", dist.Normal(priors.mean_loc, priors.mean_scale).expand([K, D]).to_event(1))
        scales = pyro.sample(
            "scales",
            dist.InverseGamma(priors.scale_shape, priors.scale_rate).expand([K, D]).to_event(1))
    with pyro.plate("data", N, dim=-1):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        # Under enumeration ``assignment`` has shape (K, 1), so the indexing
        # yields (K, 1, D) and the log-density broadcasts to (K, N).
        pyro.sample("obs", dist.Normal(means[assignment], scales[assignment]).to_event(1),
                    obs=data)
    return assignment


# ----------------------------------------------------------------------------
# One mixture per class, all classes in one model (GMMClassifier)
# ----------------------------------------------------------------------------
from pyro import poutine  # noqa: E402  (kept with the code that needs it)

#: Names of the global (continuous) sites of :func:`class_gmm_model`.
CLASS_GLOBAL_SITES = ("weight_logits", "means", "scales")


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
                    mask: torch.Tensor) -> torch.Tensor:
    """One Bayesian Gaussian mixture per class, every class in one model.

    Class c has its own :func:`gmm_model` over its own points: the classes are
    a plate, every class is padded to Kmax components and ``mask`` (C, Kmax)
    marks its real ones.  Padded components have weight exactly 0 and their
    mean/scale sites are masked out of the log density, so the log joint is
    the sum over classes of each class's :func:`gmm_model` log joint.

    The weights are parameterised by unconstrained ``weight_logits`` with a
    flat (improper uniform) site and the Dirichlet density of the
    resulting real weights added by ``pyro.factor``: a K_c-dimensional
    Dirichlet cannot be batched over classes with different K_c as a sample
    site, but the factor gives the same log density at the same weights,
    and an ``AutoDelta`` guide (no Jacobian term) therefore has the same MAP.

    Parameters
    ----------
    data : tensor of shape (N, D)
    labels : long tensor of shape (N,)
        Class index in [0, C) of every point; each point is scored only by
        its own class's mixture.
    priors : PriorTensors
        Class-batched hyperparameters: ``concentration`` (C, Kmax),
        ``mean_loc``/``mean_scale``/``scale_rate`` (C, 1, D), ``scale_shape``
        (C, 1, 1) (see :func:`bayesgmm.inference.class_prior_tensors`).
    mask : bool tensor of shape (C, Kmax)

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
    # is a (C, 1)-batched site, means/scales are (C, K)-batched.
    with pyro.plate("classes", C, dim=-2):
        logits = pyro.sample("weight_logits",
                             _Flat(dist.constraints.real, (C, 1), (K,)))
        log_w = torch.log_softmax(logits.masked_fill(~mask.unsqueeze(-2), -float("inf")), -1)
        pyro.factor("weights_prior",
                    masked_dirichlet_log_prob(log_w, priors.concentration.unsqueeze(-2),
                                              mask.unsqueeze(-2)))
        with pyro.plate("components", K, dim=-1), poutine.mask(mask=mask):
            means = pyro.sample(
                "means", dist.Normal(priors.mean_loc, priors.mean_scale).expand([C, K, D]).to_event(1))
            scales = pyro.sample(
                "scales",
                dist.InverseGamma(priors.scale_shape, priors.scale_rate).expand([C, K, D]).to_event(1))
    log_w = log_w.squeeze(-2)                                          # (C, K)
    with pyro.plate("data", N, dim=-1):
        assignment = pyro.sample("assignment", dist.Categorical(logits=log_w[labels]))
        # Under enumeration ``assignment`` has shape (K, 1, 1): indexing with
        # (labels, assignment) gives (K, 1, N, D), each point seeing only its
        # own class's components.
        pyro.sample("obs", dist.Normal(means[labels, assignment], scales[labels, assignment])
                    .to_event(1), obs=data)
    return assignment
