"""Posterior inference for the Bayesian Gaussian mixture: NUTS and
variational inference on the same Pyro model as the MAP fit.

The MAP fit (:class:`~bayesgmm.BayesianGMM` with ``inference="map"``) gives
one point; this module gives draws from (an approximation of) the whole
posterior p(weights, means, covariances | X) of
:func:`bayesgmm.models.gmm_model`, starting from that point.  Both engines
run in the fit's standardised frame on :func:`~bayesgmm.models.gmm_model`
itself, with the discrete ``assignment`` site summed out by Pyro's
enumeration (the model is ``@config_enumerate``; ``max_plate_nesting=1``),
so the sampled density is exactly the one the MAP maximises (two
changes of coordinates that leave it as it is: a Wishart site is sampled
through :class:`PositiveDefiniteVector`, since torch has no bijection onto
positive definite matrices, and one component's weight, the constant 1, is
conditioned on):

* :func:`sample_nuts`: Pyro's ``NUTS`` kernel driven by ``pyro.infer.MCMC``,
  one chain after another in this process, each started from a draw of the
  Laplace approximation at the MAP.
* :func:`fit_vi`: mean-field variational Bayes in closed form (coordinate
  ascent, :mod:`bayesgmm.variational`), started at the MAP; the ELBO is the
  one ``TraceEnum_ELBO`` estimates for the model and the guide of the same
  family (:func:`bayesgmm.variational.pyro_guide`).

:func:`run` chains an engine with the post-processing every caller needs:
draws taken to the data's units in scikit-learn's layouts
(:meth:`~bayesgmm.priors.Standardizer.params_from_std`), every draw's
components relabelled to match the MAP's
(:func:`~bayesgmm.alignment.match_components`: label switching), and for
NUTS split R-hat and effective sample sizes (:func:`diagnostics`) with a
warning when they say the chains have not converged
(:func:`check_convergence`).

Why the posterior runs in float64 whatever the fit's ``dtype``: HMC accepts
or rejects a trajectory on an energy difference of order 1 between log
joints of order N, and float32 rounds a log joint of 1e5 nats to ~0.01; the
cost on the small problems NUTS suits is the same (the time per gradient is
overhead, not arithmetic).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Optional

import numpy as np
import torch
from . import _pyro  # noqa: F401  (Pyro imported without tqdm's notebook warning)
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.infer.reparam.reparam import Reparam
from pyro.ops.integrator import potential_grad
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch.distributions import Transform, biject_to, constraints

from . import covariance as cov_module
from ._options import INFERENCE_OPTIONS
from ._base import progress_bar
from .alignment import match_components
from .covariance import Covariance
from .fitting import Groups, e_step, pyro_session
from .models import gmm_model, stick_breaking, sticks_from_weights
from .priors import MixtureParams, PriorTensors, Standardizer
from .variational import VariationalPosterior, cavi, prune, warn_unconverged

__all__ = ["INFERENCE_OPTIONS", "DRAW_NAMES", "RHAT_THRESHOLD", "MIN_ESS_PER_CHAIN",
           "PosteriorSettings", "Posterior", "PositiveDefiniteVector", "run", "sample_nuts",
           "fit_vi", "laplace_variances", "diagnostics", "fixed_elements", "check_convergence",
           "warn_convergence",
           "stream_seed", "to_data_units", "draw_order", "align_draws", "predictive_mixture"]

Inference = Literal["map", "vi", "nuts"]
#: Names of the draws, in the data's units (the fitted attributes' names
#: without the trailing underscore).
DRAW_NAMES = ("weights", "means", "covariances")

#: Split R-hat above which the chains count as not converged (Vehtari et
#: al. 2021 recommend 1.01 for their rank-normalised R-hat; ``rhat_`` is the
#: classic split R-hat, Pyro's ``split_gelman_rubin``, and ``ess_`` Pyro's
#: ``effective_sample_size``, not the bulk/tail ESS).
RHAT_THRESHOLD = 1.01
#: Effective draws per chain below which the effective sample size counts
#: as low (ArviZ's rule: 100 per chain, for reliable R-hat and quantiles).
MIN_ESS_PER_CHAIN = 100
# Step of the finite differences of the Laplace approximation's Hessian
# (unconstrained coordinates, float64: truncation error ~h^2, rounding
# ~1e-16 / h, both far below what a mass matrix needs).
_HESSIAN_STEP = 1e-4
# Weights start at least this far inside the simplex: the unconstrained
# (stick-breaking) image of a weight of 0 is -inf.
_MIN_START_WEIGHT = 1e-6


@dataclass(frozen=True)
class PosteriorSettings:
    """Validated settings of one posterior run.

    ``n_samples`` draws in all (NUTS: ``ceil(n_samples / n_chains)`` per
    chain, after ``n_warmup`` warmup iterations each); ``max_tree_depth``
    and ``target_accept`` are NUTS's; ``max_steps`` (iterations) and
    ``tol`` (nats of ELBO per point per iteration) the variational fit's;
    ``jit`` compiles NUTS's potential with ``torch.jit``, falling back to
    eager with a warning if tracing fails; ``weight_prior``: "dirichlet" or
    "dirichlet_process" (stick-breaking, truncated at K); ``sparse``: the
    Dirichlet's concentration is below 1.  With either of the last two
    (:attr:`prunes`) the variational fit runs delete moves
    (:func:`~bayesgmm.variational.prune`) and NUTS starts from it."""

    method: Literal["vi", "nuts"]
    n_samples: int = 1000
    n_chains: int = 4
    n_warmup: int = 300
    max_tree_depth: int = 10
    target_accept: float = 0.8
    jit: bool = True
    max_steps: int = 1000
    tol: float = 1e-5
    progress: bool = False
    weight_prior: str = "dirichlet"
    sparse: bool = False

    @property
    def prunes(self) -> bool:
        """Whether the prior switches surplus components off (the
        Dirichlet process, or a Dirichlet concentration below 1)."""
        return self.weight_prior == "dirichlet_process" or self.sparse

    @property
    def kept(self) -> int:
        """The draws the run keeps: ``n_samples``; for NUTS every chain
        keeps its share, rounded up."""
        if self.method != "nuts":
            return self.n_samples
        return self.n_chains * -(-self.n_samples // self.n_chains)


@dataclass
class Posterior:
    """The result of :func:`run`.

    ``samples``: {"weights": (S, K), "means": (S, K, D), "covariances": (S,
    ...)} float64 arrays in the data's units, the covariances in
    scikit-learn's layout of the covariance type, every draw's components in
    the MAP's order; the S draws of NUTS are the chains' draws one chain
    after another (``n_chains`` equal blocks).  NUTS also gives ``rhat`` and
    ``ess`` (per element of each draw, same keys), ``n_divergent`` and the
    ``problems`` :func:`check_convergence` found; VI
    ``elbo`` (in the standardised frame: the caller shifts it to the data's
    units), ``n_steps``, ``converged``, ``q`` (the variational
    posterior, standardised frame, components in the engine's order),
    ``counts`` (K,), the points each of q's components carries, and
    ``order``, the permutation that takes q's components to the draws' (the
    MAP's labels)."""

    method: str
    samples: dict
    n_chains: int = 1
    rhat: Optional[dict] = None
    ess: Optional[dict] = None
    n_divergent: Optional[int] = None
    elbo: Optional[float] = None
    n_steps: Optional[int] = None
    converged: Optional[bool] = None
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q: Optional[VariationalPosterior] = None
    counts: Optional[np.ndarray] = None
    order: Optional[np.ndarray] = None
    problems: list = field(default_factory=list)


# ----------------------------------------------------------------------------
# The model, as the engines see it
# ----------------------------------------------------------------------------
class PositiveDefiniteVector(Transform):
    """Bijection from R^(D(D+1)/2) onto D x D positive definite matrices:
    the vector fills the lower triangle of L row by row (``tril_indices``
    order), the diagonal through exp, and the matrix is L L^T.

    torch registers no bijection for ``constraints.positive_definite``
    (``transform_to`` maps D x D matrices, D^2 numbers for D(D+1)/2 degrees
    of freedom: a sampler would drift without bound in the ignored ones),
    so NUTS and autoguides cannot take a Wishart site as it is; this one is
    a change of variables with the exact Jacobian,
    log |d(L L^T)/du| = D log 2 + sum_j (D - j + 1) u_jj (j = 0..D-1, u_jj
    the diagonal entries before exp)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.positive_definite
    bijective = True

    def __init__(self, n_features: int, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.D = n_features
        rows, cols = torch.tril_indices(n_features, n_features)
        self._rows, self._cols = rows, cols
        self._diag = torch.nonzero(rows == cols).squeeze(-1)       # positions in the vector

    def __eq__(self, other):
        return isinstance(other, PositiveDefiniteVector) and other.D == self.D

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else PositiveDefiniteVector(self.D,
                                                                                  cache_size)

    def _lower(self, u: torch.Tensor) -> torch.Tensor:
        D = self.D
        v = u.clone()
        d = self._diag.to(u.device)
        v[..., d] = u[..., d].exp()
        L = u.new_zeros(u.shape[:-1] + (D, D))
        L[..., self._rows.to(u.device), self._cols.to(u.device)] = v
        return L

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        L = self._lower(u)
        return L @ L.transpose(-1, -2)

    def _inverse(self, M: torch.Tensor) -> torch.Tensor:
        L = torch.linalg.cholesky(M)
        v = L[..., self._rows.to(M.device), self._cols.to(M.device)]
        d = self._diag.to(M.device)
        v = v.clone()
        v[..., d] = v[..., d].log()
        return v

    def log_abs_det_jacobian(self, u: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        D = self.D
        power = torch.arange(D + 1, 1, -1, dtype=u.dtype, device=u.device)   # D + 1 - j
        return D * math.log(2.0) + (u[..., self._diag.to(u.device)] * power).sum(-1)

    def forward_shape(self, shape):
        return tuple(shape[:-1]) + (self.D, self.D)

    def inverse_shape(self, shape):
        return tuple(shape[:-2]) + (self.D * (self.D + 1) // 2,)


class _VectorReparam(Reparam):
    """A site with support ``transform.codomain`` sampled as its preimage
    under ``transform``: a new site ``{name}_vector`` whose density is the
    site's pushed through the inverse (``TransformedDistribution``: the
    same joint density, Jacobian included), and the original site a
    deterministic function of it (as Pyro's ``TransformReparam`` does).  Not a
    second model: the same ``gmm_model``, in other coordinates for one site."""

    def __init__(self, transform: Transform):
        self.transform = transform

    def apply(self, msg):
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        t = self.transform
        u = pyro.sample(f"{name}{_VECTOR}", dist.TransformedDistribution(fn, [t.inv]),
                        obs=None if value is None else t.inv(value),
                        infer={"is_observed": msg["is_observed"]})
        if value is None:
            value = t(u)
        # A deterministic site: the Delta's log density at its own value is
        # 0 in the value's dtype (``.mask(False)``, as TransformReparam
        # writes it, returns a float32 zero that breaks float64 models).
        return {"fn": dist.Delta(value, event_dim=fn.event_dim), "value": value,
                "is_observed": True}


_VECTOR = "_vector"


class _Target:
    """:func:`gmm_model` on the data as the engines see it, built once per
    run: the data closed over (the engines call it without arguments), and
    two adjustments that leave the posterior as it is:

    * one component: the weight vector is the constant [1] (a Dirichlet of
      one category has no free parameter; an empty unconstrained vector
      trips up both the step size search and the guide), so the site is
      conditioned on it;
    * with the Dirichlet-process prior the weights are the ``sticks``
      site's (started at the sticks that break into the start's weights);
    * a covariance site whose support torch cannot map bijectively to
      unconstrained space (the Wishart precisions of "full" and "tied") is
      sampled as its :class:`PositiveDefiniteVector` preimage
      (:class:`_VectorReparam`).

    ``latent`` names the sites the engines infer, ``start`` the MAP as
    their values (``init_values`` for ``init_to_value``); :meth:`site_values`
    turns the engines' draws back into ``weights``, ``means`` and the
    family's site."""

    def __init__(self, X: torch.Tensor, pt: PriorTensors, family: Covariance,
                 start: MixtureParams, weight: Optional[torch.Tensor],
                 weight_prior: str = "dirichlet"):
        K, D = start.means.shape[-2:]
        self.K, self.family = K, family
        self.dp = weight_prior == "dirichlet_process"
        try:
            biject_to(family.constraint)
            self.transform = None
        except NotImplementedError:
            self.transform = PositiveDefiniteVector(D)

        def model():
            return gmm_model(X, pt, K, family, weight=weight, weight_prior=weight_prior)
        if self.transform is not None:
            model = poutine.reparam(model, config={family.site: _VectorReparam(self.transform)})
        if K == 1 and not self.dp:       # (the process with K = 1 has no weights site)
            model = poutine.condition(model, data={"weights": torch.ones(1, dtype=X.dtype,
                                                                         device=X.device)})
        self.model = model
        w = start.weights.clamp_min(_MIN_START_WEIGHT)
        w = w / w.sum(-1, keepdim=True)
        cov = start.cov if self.transform is None else self.transform.inv(start.cov)
        values = {"weights": w, "means": start.means, self.cov_site: cov}
        if self.dp:
            values["sticks"] = sticks_from_weights(w).clamp(_MIN_START_WEIGHT,
                                                            1 - _MIN_START_WEIGHT)
        self.weight_site = "sticks" if self.dp else "weights"
        self.latent = tuple(k for k in (self.weight_site, "means", self.cov_site)
                            if not (k == self.weight_site and K == 1))
        self.start = {k: values[k].detach().clone() for k in self.latent}
        # Pyro's init handlers see the reparametrised site under its own
        # name before the reparametrisation does (which then takes the value
        # given): init_to_value needs the matrix too.
        self.init_values = dict(self.start)
        if self.transform is not None:
            self.init_values[family.site] = start.cov.detach().clone()

    @property
    def cov_site(self) -> str:
        return self.family.site + (_VECTOR if self.transform is not None else "")

    def site_values(self, draws: dict) -> dict:
        """Draws {latent site: (C, S, ...)} as {"weights", "means", family
        site} with the sites' own shapes (a vectorised guide's draws carry
        an extra dimension of 1 for the weights)."""
        C, S = draws["means"].shape[:2]
        out = {k: draws[k].reshape((C, S) + self.start[k].shape) for k in self.latent}
        if self.transform is not None:
            out[self.family.site] = self.transform(out.pop(self.cov_site))
        if self.dp and self.K > 1:
            out["weights"] = stick_breaking(out.pop("sticks"))
        if self.K == 1:
            ref = out["means"]
            out["weights"] = torch.ones((C, S, 1), dtype=ref.dtype, device=ref.device)
        return {k: v.detach() for k, v in out.items()}


@contextlib.contextmanager
def _quiet_tracing():
    """Silence the tracer's notes on Python control flow in the model (the
    data are constants of the trace, so the branches they take are fixed)
    and torch's deprecation notice of ``torch.jit.trace``, which Pyro's JIT
    options use; every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.tensor results are registered as "
                                                  "constants.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.trace. is deprecated.*")
        yield


@contextlib.contextmanager
def _kept_logger(name: str = "pyro.infer.mcmc"):
    """The logger ``name`` as it was before the block: Pyro's ``MCMC.run``
    gives it a handler of its own and ``propagate=False`` for good, after
    which its messages (divergences, warmup) no longer reached the user's
    handlers.  (From an audit.)"""
    import logging

    log = logging.getLogger(name)
    kept = (list(log.handlers), log.propagate, log.level, log.disabled)
    try:
        yield
    finally:
        log.handlers[:] = kept[0]
        log.propagate, log.level, log.disabled = kept[1:]


# ----------------------------------------------------------------------------
# NUTS
# ----------------------------------------------------------------------------
class _LaplaceNUTS(NUTS):
    """NUTS whose warmup starts from a given diagonal inverse mass matrix
    (the Laplace approximation's variances) instead of the identity.

    In the standardised frame the posterior's scales still span orders of
    magnitude (a mean known to sigma_k / sqrt(N_k), a weight's logit to
    ~1 / sqrt(N)): with a unit mass matrix the first warmup iterations
    build trees of up to hundreds of leapfrog steps.  Started from the
    Laplace variances they take a handful (iris, K = 2, 4 chains of 200
    warmup and 250 draws: 68 s -> 45 s); the warmup windows still
    re-estimate the matrix from the draws."""

    def __init__(self, potential_fn, inverse_mass: Optional[torch.Tensor], **kwargs):
        super().__init__(potential_fn=potential_fn, **kwargs)
        self._start_inverse_mass = inverse_mass

    def setup(self, warmup_steps, *args, **kwargs):
        super().setup(warmup_steps, *args, **kwargs)
        if self._start_inverse_mass is not None:
            (block,) = self.inverse_mass_matrix.keys()   # one diagonal block, sites sorted
            self.mass_matrix_adapter.inverse_mass_matrix = {block: self._start_inverse_mass}
            # The step size was searched for the unit mass matrix; search
            # again for this one (Pyro has no public hook for it).
            self._adapter.reset_step_size_adaptation(self.initial_params)
        self.divergences = 0

    def diagnostics(self):
        # Called by MCMC at the end of the run, before the kernel's cleanup
        # resets its record: the divergent transitions after warmup, kept.
        out = super().diagnostics()
        self.divergences = len(out["divergences"])
        return out


def _flatten(z: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict]]:
    """Sites -> one vector in the order of NUTS's mass matrix (sites sorted
    by name, each flattened), and the inverse map."""
    names = sorted(z)
    shapes = [z[k].shape for k in names]
    flat = torch.cat([z[k].reshape(-1) for k in names])

    def unflatten(v: torch.Tensor) -> dict:
        out, i = {}, 0
        for k, s in zip(names, shapes):
            n = int(np.prod(s, dtype=np.int64))
            out[k] = v[i:i + n].reshape(s)
            i += n
        return out
    return flat, unflatten


def laplace_variances(potential_fn: Callable[[dict], torch.Tensor], z: dict) -> torch.Tensor:
    """Marginal variances of the Laplace approximation at ``z`` (unconstrained
    sites; the vector in :func:`_flatten`'s order): the diagonal of the
    inverse Hessian of the potential, or 1 / its diagonal where the Hessian
    is not positive definite (``z`` not a mode in these coordinates), 1
    where even that is not positive; clipped to [1e-8, 1e2]."""
    flat, unflatten = _flatten({k: v.detach() for k, v in z.items()})

    def grad(v: torch.Tensor) -> torch.Tensor:
        g, _ = potential_grad(potential_fn, unflatten(v))
        return _flatten(g)[0]
    # Central differences of the gradient, 2P gradients: a mass matrix needs
    # no more precision, and double backward through the model pulls in
    # torch._dynamo on its first use (1.6 s, more than the whole warmup of
    # a small problem).
    h = _HESSIAN_STEP
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device) * h
    H = torch.stack([(grad(flat + e) - grad(flat - e)) / (2 * h) for e in eye])
    H = 0.5 * (H + H.T)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        var = torch.diagonal(torch.cholesky_inverse(L))
    else:
        d = torch.diagonal(H)
        var = torch.where(d > 0, 1.0 / d, torch.ones_like(d))
    var = torch.nan_to_num(var, nan=1.0, posinf=1.0, neginf=1.0)
    return var.clamp(1e-8, 1e2).detach()


def _potential(model, values: dict, jit: bool):
    """Pyro's potential energy of ``model`` (the enumerated log joint and
    the Jacobians of the transforms to unconstrained space), its
    transforms, and the MAP in unconstrained coordinates: what
    ``NUTS(model)`` builds for itself (:func:`pyro.infer.mcmc.util.initialize_model`),
    built once here so that every chain shares the compiled potential.
    ``jit``: with ``torch.jit``, falling back to eager (with a warning)
    if tracing fails."""
    def build(j: bool):
        init, potential_fn, transforms, _ = initialize_model(
            model, max_plate_nesting=1, jit_compile=j, skip_jit_warnings=True,
            init_strategy=init_to_value(values=values))
        potential_fn(init)      # traces now, so that a failure falls back here
        return init, potential_fn, transforms
    if jit:
        try:
            return build(True)
        except Exception as exc:  # tracing is best effort
            warnings.warn(f"torch.jit tracing of the NUTS potential failed ({type(exc).__name__}: "
                          f"{exc}); sampling with the eager potential (slower)", RuntimeWarning,
                          stacklevel=4)
    return build(False)


def _default_device(device: torch.device):
    """torch's default device made ``device`` for Pyro's NUTS, which
    builds its own tensors (momenta, step-size state) without naming a
    device: under a user's ``torch.set_default_device("cuda")`` they landed
    on the GPU beside a CPU fit's.  Only where the user set a default other
    than the CPU (with the CPU default, Pyro follows the data's device, as
    before): the device mode it installs costs a Python call per torch
    operation (16-29% of a CPU NUTS fit)."""
    default = torch.empty(0).device      # torch.get_default_device() needs torch 2.3
    return (contextlib.nullcontext() if default.type == "cpu" or default == device
            else torch.device(device))


def sample_nuts(X: torch.Tensor, pt: PriorTensors, family: Covariance, start: MixtureParams,
                settings: PosteriorSettings, seed: int, weight: Optional[torch.Tensor] = None
                ) -> tuple[dict, int]:
    """NUTS draws of the continuous sites of :func:`gmm_model`.

    Parameters
    ----------
    X : tensor of shape (N, D)
        The data in the standardised frame (float64; NaN entries missing).
    pt : PriorTensors
        The priors in the same frame and dtype.
    family : Covariance
    start : MixtureParams
        The MAP (batch shape ()), the chains' starting point.
    settings : PosteriorSettings
    seed : int
        Seeds chain c with ``seed + c`` (the caller's torch RNG is untouched).
    weight : tensor of shape (N,), optional
        Sample weights (the model's ``weight``).

    Returns
    -------
    draws : dict
        {site: tensor of shape (n_chains, draws per chain, ...)} in the
        standardised frame (``weights`` included for K = 1, as ones).
    n_divergent : int
        Divergent transitions after warmup, summed over the chains (the
        kernels' record).

    Notes
    -----
    The kernel is Pyro's NUTS on the potential of ``gmm_model`` with the
    assignments enumerated (``max_plate_nesting=1``), built once by
    :func:`pyro.infer.mcmc.util.initialize_model` with
    ``init_strategy=init_to_value(values=MAP)``, as ``NUTS(model)`` does
    internally, and compiled with ``torch.jit`` when ``settings.jit``
    (measured: 3 ms per gradient against 10 ms eager, iris, K = 2).
    Chains run one after another in this process, each its own
    ``MCMC(num_chains=1)``: Pyro runs ``num_chains > 1`` in worker
    processes only when the machine has more cores than chains (else,
    sequentially with a warning), so the results would depend on the
    machine; sequential chains do not, and share the compiled potential.
    Chain c starts at a draw of the Laplace approximation at the MAP
    (unconstrained coordinates: MAP + sd * N(0, 1)), dispersed about the
    mode so that R-hat can see chains that have not forgotten their start,
    and its warmup starts from the Laplace variances as inverse mass matrix
    (:class:`_LaplaceNUTS`).
    """
    target = _Target(X, pt, family, start, weight, settings.weight_prior)
    per_chain = settings.kept // settings.n_chains
    with pyro_session(seed, X.device), _quiet_tracing():
        init, potential_fn, transforms = _potential(target.model, target.init_values,
                                                    settings.jit)
        var = laplace_variances(potential_fn, init)
        flat0, unflatten = _flatten(init)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        chains, n_divergent = [], 0
        sd = var.sqrt()
        # One bar over every chain's warmup and draws, named by chain (Pyro's
        # own bar, one per chain, stayed in a notebook's output four times
        # over, unnumbered).
        bar = progress_bar(settings.progress, settings.n_chains * (settings.n_warmup + per_chain),
                           "NUTS")

        def step(kernel, params, stage, i):
            bar.update(1)

        try:
            for c in range(settings.n_chains):
                bar.set_description(f"NUTS chain {c + 1}/{settings.n_chains}")
                noise = torch.randn(flat0.shape, generator=gen, dtype=flat0.dtype,
                                    device=gen.device).to(flat0.device)
                z0 = unflatten(flat0.detach() + sd * noise)
                torch.manual_seed(seed + c)
                kernel = _LaplaceNUTS(potential_fn, var, max_tree_depth=settings.max_tree_depth,
                                      target_accept_prob=settings.target_accept)
                mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=settings.n_warmup,
                            initial_params=z0, transforms=transforms, disable_progbar=True,
                            hook_fn=step if settings.progress else None)
                with _kept_logger():
                    mcmc.run()
                chains.append(mcmc.get_samples(group_by_chain=True))
                # The kernel's own record (MCMC.diagnostics would also compute
                # R-hat, which needs 4 draws a chain).
                n_divergent += kernel.divergences
        finally:
            bar.refresh()          # the count reached, drawn before the bar goes
            bar.close()
    draws = {k: torch.cat([ch[k] for ch in chains]) for k in chains[0]}
    return target.site_values(draws), n_divergent


# ----------------------------------------------------------------------------
# Variational inference
# ----------------------------------------------------------------------------
def _vi_runs(settings) -> str:
    """What a VI convergence warning's ELBO is: with delete moves, the
    iterations are those of several runs, each of at most max_iter."""
    if not settings.prunes:
        return "the ELBO"
    return ("in all, over the first coordinate ascent and the delete-move runs, each of at most "
            "max_iter; the ELBO of the run kept")


def fit_vi(X: torch.Tensor, pt: PriorTensors, family: Covariance, start: MixtureParams,
           settings: PosteriorSettings, seed: int, weight: Optional[torch.Tensor] = None,
           callback=None) -> tuple[dict, float, int, bool, np.ndarray, VariationalPosterior,
                                   np.ndarray]:
    """Mean-field variational posterior of the globals of :func:`gmm_model`
    by closed-form coordinate ascent from the MAP ``start``
    (:func:`bayesgmm.variational.cavi`: q(weights) q(means) q(covariances),
    the assignments summed out), for at most ``settings.max_steps``
    iterations, stopping when the exact ELBO improves by less than
    ``settings.tol`` nats per point; ``settings.weight_prior`` chooses the
    Dirichlet or the stick-breaking prior, for which delete moves
    (:func:`bayesgmm.variational.prune`) then switch surplus components
    off.  ``callback(it, -elbo)`` is called after every iteration of the
    first coordinate ascent (not of the delete moves' runs).

    Returns
    -------
    draws : dict
        {site: tensor of shape (1, n_samples, ...)}, standardised frame
        (the sticks' weights under "weights").
    elbo : float
        The final ELBO (standardised frame), exact.
    n_steps : int
    converged : bool
    losses : ndarray
        -ELBO at every iteration (of the delete moves' start, with the
        Dirichlet process).
    q : VariationalPosterior
    counts : ndarray (K,)
        E_q[N_k], the points each component carries.
    """
    groups = Groups.single(X, weight)
    res = cavi(groups, start.map(lambda t: t[None]), pt, family, settings.weight_prior,
               settings.max_steps, settings.tol, callback)
    q, value, counts, n_steps = res.q, res.elbo, res.counts, res.n_iter
    converged = res.converged
    if settings.prunes:
        q, value, counts, extra, kept = prune(groups, q, pt, family, settings.max_steps,
                                              settings.tol)
        n_steps += extra
        converged = converged and kept     # the delete-move run kept stopped short too
    final = float(value[0])
    if not math.isfinite(final):
        raise ValueError("the variational fit produced a non-finite ELBO: check the data's and "
                         "the priors' scales, or use inference='nuts'")
    draws = q.sample(settings.n_samples, family, seed)
    losses = -res.history[:, 0].double().cpu().numpy()     # the last is q's
    counts = counts[0].double().cpu().numpy()
    return draws, final, n_steps, converged, losses, q, counts


# ----------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------
def to_data_units(draws: dict, std: Standardizer, family: Covariance) -> dict:
    """Site draws of the standardised frame ({site: (..., K, ...)}, any
    leading batch dims) as {"weights", "means", "covariances"} numpy
    float64 arrays in the data's units, covariances in scikit-learn's layout
    (:meth:`Standardizer.params_from_std`, batched)."""
    params = MixtureParams(draws["weights"], draws["means"], draws[family.site])
    w, m, c = std.params_from_std(params, family)
    return {"weights": w, "means": m, "covariances": np.asarray(c, dtype=np.float64)}


def draw_order(samples: dict, reference: tuple, family: Covariance,
               common: bool = False) -> np.ndarray:
    """The permutation (S, K) of every draw's components that matches them
    to the reference mixture's (``reference`` = (weights, means,
    covariances), the MAP), each draw by its own
    (:func:`~bayesgmm.alignment.match_components`, with weights and
    covariances), or with ``common`` one for all the draws, that of their
    average (draws that share a labelling, as a variational posterior's do:
    matching each draw alone would clip the tails of overlapping
    components)."""
    w, m, c = samples["weights"], samples["means"], samples["covariances"]
    S, K = w.shape
    if K == 1:
        return np.zeros((S, 1), dtype=np.int64)
    if common:
        perm = match_components(reference[1], m.mean(0), reference[2], c.mean(0), reference[0],
                                w.mean(0), covariance_type=family.name)
        return np.broadcast_to(perm, (S, K))
    return match_components(reference[1], m, reference[2], c, reference[0], w,
                            covariance_type=family.name)


def align_draws(samples: dict, reference: tuple, family: Covariance,
                perm: Optional[np.ndarray] = None) -> dict:
    """Every draw's components reordered by ``perm`` (S, K), by default
    :func:`draw_order`'s per-draw matching to ``reference``: label switching
    between or within chains undone.  ``samples`` have leading dims (S,);
    a shared (tied) covariance has no component axis and is left as it
    is."""
    w, m, c = samples["weights"], samples["means"], samples["covariances"]
    if w.shape[-1] == 1:
        return dict(samples)
    if perm is None:
        perm = draw_order(samples, reference, family)

    def take(a: np.ndarray) -> np.ndarray:
        idx = perm.reshape(perm.shape + (1,) * (a.ndim - 2))
        return np.take_along_axis(a, idx, axis=1)
    return {"weights": take(w), "means": take(m),
            "covariances": take(c) if family.per_component else c}


def _spreads(grouped: dict) -> tuple[dict, bool]:
    """Each element's range over all draws of every array of ``grouped``
    {name: (n_chains, draws per chain, ...)} (NaN for NaN elements), and
    whether any element moved at all (else the sampler is stuck)."""
    spreads = {}
    for name, a in grouped.items():
        a = np.asarray(a, dtype=np.float64)
        spreads[name] = np.ptp(a.reshape((-1,) + a.shape[2:]), axis=0)
    return spreads, any(bool(np.any(r > 0)) for r in spreads.values())


def fixed_elements(grouped: dict) -> dict:
    """Which elements of each draw array (as :func:`diagnostics` takes
    them) never move while some element does: those the model fixes (the
    weight of a single component), with nothing for R-hat or the effective
    sample size to diagnose.  All False when nothing moves (a stuck
    sampler, which must be reported)."""
    spreads, moved = _spreads(grouped)
    return {name: (r == 0) & moved for name, r in spreads.items()}


def diagnostics(grouped: dict) -> tuple[dict, dict]:
    """Split R-hat and effective sample size of every element of every
    draw array, ``grouped`` {name: (n_chains, draws per chain, ...)}
    (:func:`pyro.ops.stats.split_gelman_rubin`,
    :func:`~pyro.ops.stats.effective_sample_size`).  Returns two dicts of
    arrays of the elements' shapes.  An element that is constant over every
    draw while others move (the weight of a single component, fixed by the
    model) has R-hat 1 and an effective sample size equal to the number of
    draws.  When no element of any array moves (a sampler stuck at its
    start: one distinct draw), R-hat is NaN (not computable) and the
    effective sample size 1.  With fewer than 4 draws per chain R-hat is
    NaN, and so is the effective sample size of draws that moved.  The
    effective sample size is
    bounded as Stan bounds it (its autocorrelation time at least
    1 / log10(N) for N draws in all): Pyro's estimate is negative or huge
    for anticorrelated draws (a NUTS chain that alternates around the
    mode), where Stan reports N log10 N."""
    tensors = {name: torch.from_numpy(np.asarray(a, dtype=np.float64))
               for name, a in grouped.items()}
    # NaN elements neither move nor stay.
    spreads, moved = _spreads(grouped)
    rhat, ess = {}, {}
    for name, t in tensors.items():
        if t.shape[1] < 4:       # split R-hat needs two halves of 2 draws per chain
            r = e = np.full(tuple(t.shape[2:]), math.nan)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = split_gelman_rubin(t, chain_dim=0, sample_dim=1).numpy()
                e = effective_sample_size(t, chain_dim=0, sample_dim=1).numpy()
            n = t.shape[0] * t.shape[1]
            cap = n * math.log10(n)
            e = np.where(np.isnan(e), e, np.where((e < 0) | (e > cap), cap, e))
        if not moved:
            rhat[name] = np.full(tuple(t.shape[2:]), math.nan)
            ess[name] = np.where(np.isnan(spreads[name]), math.nan, 1.0)
            continue
        const = spreads[name] == 0
        rhat[name] = np.where(const, 1.0, r)
        ess[name] = np.where(const, float(t.shape[0] * t.shape[1]), e)
    return rhat, ess


def check_convergence(rhat: dict, ess: dict, n_chains: int, *, n_divergent: int = 0,
                      sites: Optional[dict] = None, max_rhat: float = RHAT_THRESHOLD,
                      min_ess: Optional[float] = None, stacklevel: int = 2,
                      warn: bool = True, fixed: Optional[dict] = None) -> list:
    """Warn (one ``UserWarning``) when NUTS's diagnostics say the draws are
    not to be trusted: a split R-hat above ``max_rhat`` (default 1.01), an
    effective sample size below ``min_ess`` (default
    :data:`MIN_ESS_PER_CHAIN` x ``n_chains``), or divergent transitions.
    ``sites`` maps a draw's name to its Pyro site's when they differ;
    ``fixed`` (:func:`fixed_elements`) masks the elements the model fixes,
    whose effective sample size (the number of draws) says nothing of the
    chains: a K = 1 weight is not "low" when fewer draws than ``min_ess``
    are kept.  Returns the problems found (empty: no warning); with ``warn=False``
    only returns them (for a caller that gathers several runs' into one
    :func:`warn_convergence`)."""
    sites = sites or {}
    if min_ess is None:
        min_ess = MIN_ESS_PER_CHAIN * n_chains
    problems = []
    for name, r in rhat.items():
        r = np.asarray(r, dtype=np.float64)
        worst = float(np.nanmax(r)) if r.size and not np.all(np.isnan(r)) else math.nan
        where = f" (Pyro site {sites[name]!r})" if name in sites and sites[name] != name else ""
        if math.isnan(worst):
            problems.append(f"R-hat of {name!r}{where} could not be computed (fewer than 4 "
                            f"draws per chain, or draws that never moved from the start)")
        elif worst > max_rhat:
            problems.append(f"R-hat of {name!r}{where} is {worst:.3f} > {max_rhat}")
    for name, e in ess.items():
        e = np.asarray(e, dtype=np.float64)
        if fixed is not None and name in fixed:
            e = np.where(fixed[name], math.nan, e)
            if np.all(fixed[name]):
                continue
        low = float(np.nanmin(e)) if e.size and not np.all(np.isnan(e)) else math.nan
        where = f" (Pyro site {sites[name]!r})" if name in sites and sites[name] != name else ""
        if math.isnan(low):             # not computable: said with R-hat, when it is too
            if name not in rhat:
                problems.append(f"effective sample size of {name!r}{where} could not be "
                                f"computed (fewer than 4 draws per chain)")
        elif low < min_ess:
            # Rounded down: 199.97 against 200 reads "199 < 200", not "200 < 200".
            problems.append(f"effective sample size of {name!r}{where} is {math.floor(low)} < "
                            f"{min_ess:.0f}")
    if n_divergent:
        problems.append(f"{n_divergent} divergent transition(s) after warmup")
    if problems and warn:
        warn_convergence(problems, stacklevel)
    return problems


#: Said with a Dirichlet-process NUTS fit's convergence warning: the number
#: of components it reports rests on those draws.  (From an audit: two
#: clusters 8 sd apart, truncation 4, 2 x (60 + 40) draws: R-hat 1.35-1.62,
#: surplus components holding 12-14 points each, n_effective_components_ 4;
#: VI on the same data, 2.)
DP_NUTS_NOTE = ("; with weight_prior='dirichlet_process' the number of components the data "
                "use (n_effective_components_) and the weights rest on these draws: until they "
                "converge, inference='vi' chooses it more reliably")


def warn_convergence(problems: list, stacklevel: int = 2, note: str = "") -> None:
    """The one warning about NUTS draws that are not to be trusted, naming
    the ``problems`` (:func:`check_convergence`'s) and the remedy, then
    ``note``; ``stacklevel`` counts from the caller of this function, as
    ``warnings.warn``'s from its own caller."""
    warnings.warn(
        "NUTS draws may not represent the posterior: " + "; ".join(problems)
        + ". Remedy: more warmup and more draws (raise n_warmup and n_samples; more "
        "n_chains for R-hat), and check that the MAP fit converged" + note, UserWarning,
        stacklevel=stacklevel + 1)


def run(X: torch.Tensor, pt: PriorTensors, family: Covariance, start: MixtureParams,
        std: Standardizer, reference: tuple, settings: PosteriorSettings, seed: int,
        weight: Optional[torch.Tensor] = None, callback=None, stacklevel: int = 1,
        warn: bool = True) -> Posterior:
    """The posterior by ``settings.method`` ("nuts" or "vi") from the MAP
    ``start`` (standardised frame, float64 tensors like ``X`` and ``pt``),
    in the data's units and the MAP's component order: engine, then
    :func:`to_data_units`, and for NUTS :func:`align_draws` (to
    ``reference``, the MAP's (weights, means, covariances) in the data's
    units), :func:`diagnostics` on the aligned draws and
    :func:`check_convergence` (``stacklevel``: that of a warning issued by
    this function, 1 for this line; ``warn=False`` keeps its problems in
    ``Posterior.problems`` without warning); VI's factors keep the labels of the
    MAP they start from (no per-draw matching, which would clip the tails
    of overlapping components' draws; with the Dirichlet process, whose
    delete moves reorder them, one matching of q's mean to the MAP), and
    it warns when the fit stopped before meeting its tolerance."""
    if settings.method == "nuts":
        if settings.prunes:
            start, reference = _process_start(X, pt, family, start, std, reference, settings,
                                              seed, weight, stacklevel + 1)
        with _default_device(X.device):
            draws, n_div = sample_nuts(X, pt, family, start, settings, seed, weight)
        out = Posterior("nuts", {}, settings.n_chains, n_divergent=n_div)
    elif settings.method == "vi":
        draws, elbo, n_steps, converged, losses, q, counts = fit_vi(
            X, pt, family, start, settings, seed, weight, callback)
        out = Posterior("vi", {}, 1, elbo=elbo, n_steps=n_steps, converged=converged,
                        losses=losses, q=q, counts=counts)
        if not converged:
            warn_unconverged(n_steps, settings.tol, stacklevel, _vi_runs(settings))
    else:
        raise ValueError(f"posterior method must be 'nuts' or 'vi', got {settings.method!r}")
    C, S = draws["means"].shape[:2]
    units = to_data_units({k: v.reshape((C * S,) + v.shape[2:]) for k, v in draws.items()},
                          std, family)
    if settings.method == "vi" and not settings.prunes:
        # q's components are those of the start, in its order: the start's
        # matching to the reference (the identity when the start is the
        # reference, as in the estimator) relabels every draw.
        first = to_data_units({"weights": start.weights[None], "means": start.means[None],
                               family.site: start.cov[None]}, std, family)
        perm = np.broadcast_to(draw_order(first, reference, family)[0], units["weights"].shape)
    else:
        # NUTS: per draw (label switching); the Dirichlet process's q, whose
        # surviving components need not be the MAP's: once, by overlap.
        perm = draw_order(units, reference, family, common=settings.method == "vi")
    samples = align_draws(units, reference, family, perm)
    if settings.method == "vi":
        out.order = np.array(perm[0])
    if settings.method == "nuts" and settings.prunes:
        # How many points each component carries, averaged over the draws
        # (E[N_k], what VI's counts are): one E-step over all S draws.
        flat = MixtureParams(*(draws[k].reshape((C * S,) + draws[k].shape[2:])
                               for k in ("weights", "means", family.site)))
        Nk = e_step(Groups.single(X, weight), flat,
                    torch.zeros(C * S, dtype=torch.long, device=X.device), family).Nk
        out.counts = np.take_along_axis(Nk.double().cpu().numpy(), np.asarray(perm), 1).mean(0)
    if settings.method == "nuts":
        grouped = {k: v.reshape((C, S) + v.shape[1:]) for k, v in samples.items()}
        out.rhat, out.ess = diagnostics(grouped)
        out.problems = check_convergence(out.rhat, out.ess, C, n_divergent=out.n_divergent,
                                         sites={"covariances": family.site},
                                         fixed=fixed_elements(grouped),
                                         stacklevel=stacklevel + 1, warn=False)
        if out.problems and warn:
            warn_convergence(out.problems, stacklevel, DP_NUTS_NOTE if settings.prunes
                             else "")
    out.samples = samples
    return out


def stream_seed(seed: int, reserve: int = 0) -> int:
    """A seed for a posterior engine, derived from the fit's ``seed`` (a
    stream apart from the MAP's), leaving room for ``reserve`` consecutive
    seeds above it below 2^31 (chains, classes)."""
    return int(np.random.default_rng([seed, 2]).integers(2 ** 31 - 1 - reserve))


def _process_start(X, pt, family: Covariance, start: MixtureParams, std: Standardizer,
                   reference: tuple, settings: PosteriorSettings, seed: int,
                   weight: Optional[torch.Tensor], stacklevel: int = 1
                   ) -> tuple[MixtureParams, tuple]:
    """Where NUTS starts with the Dirichlet-process prior, and what its
    draws are aligned to: the variational posterior's point (E[w], E[mu],
    E[Lambda]^-1, :func:`fit_vi` with its delete moves) with its components
    matched once to ``reference`` (the flat-Dirichlet MAP, whose every
    component carries data).  The MAP itself is no start: it spreads the
    data over all K components, a region of the process's posterior that
    the chains would spend their warmup leaving; surplus components start
    at negligible weight instead.  Warns (at ``stacklevel`` above the
    caller) when the variational fit stopped before its tolerance."""
    vi = replace(settings, method="vi", n_samples=1)
    _, _, n_steps, converged, _, q, _ = fit_vi(X, pt, family, start, vi, seed, weight)
    if not converged:
        warn_unconverged(n_steps, settings.tol, stacklevel, _vi_runs(settings))
    point = q.point(family).select(0)
    units = to_data_units({"weights": point.weights[None], "means": point.means[None],
                           family.site: point.cov[None]}, std, family)
    perm = draw_order(units, reference, family, common=True)[:1]
    idx = torch.as_tensor(np.array(perm[0]), device=point.means.device)
    start = MixtureParams(point.weights[idx], point.means[idx],
                          point.cov[idx] if family.per_component else point.cov)
    aligned = align_draws(units, reference, family, perm)
    return start, (aligned["weights"][0], aligned["means"][0], aligned["covariances"][0])


def predictive_mixture(samples: dict, family: Covariance) -> tuple:
    """The posterior predictive as one mixture: S draws of K components are
    S K components of weight w_sk / S (the average of the draws' densities),
    component j = s K + k; any leading dims of the draws (the classifier's
    classes: (C, S, K, ...)) are kept.  Returns (weights (..., S K), means
    (..., S K, D), covariances in the layout of the returned family, that
    family); a shared (tied) covariance becomes one full matrix per
    component, since it differs between draws."""
    w, m, c = samples["weights"], samples["means"], samples["covariances"]
    S, K, D = m.shape[-3:]
    lead = m.shape[:-3]
    weights = (w / S).reshape(lead + (S * K,))
    means = m.reshape(lead + (S * K, D))
    if family.per_component:
        return weights, means, c.reshape(lead + (S * K,) + c.shape[len(lead) + 2:]), family
    full = np.broadcast_to(c[..., None, :, :], lead + (S, K, D, D)).reshape(lead + (S * K, D, D))
    if not full.flags.writeable:    # K = 1: the reshape kept the read-only view
        full = full.copy()          # (torch warns on non-writable arrays)
    return weights, means, full, cov_module.get("full", D)
