"""The :class:`BayesianGMM` estimator."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from . import _predict, _validation as V
from . import covariance as cov_module
from ._auto import (bic_columns, bic_values, check_max_components, component_cap,
                    fit_candidates, is_auto, log_likelihood, warn_parameter_cap)
from ._base import (INIT_OPTIONS, DeviceLike, InitMethod, MixtureBase, FitProgress, fit_data,
                    check_chunk_weights, guard_stage, is_row_source, sample_mixture,
                    seeded_priors, spread_rows,
                    stream_data, stream_update, seeded_stream, host_stats, PARTIAL_FIT_DECAY,
                    PARTIAL_FIT_OFFSET,
                    effective_components, sparse_concentration, concentration_for,
                    check_same_columns, warm_priors, warn_not_converged, warn_unused_components,
                    check_draws_size, check_result_size, check_threads, fit_context, fit_threads,
                    warn_float32_conditioning,
                    refuse_nuts_constant, rollback_on_error, warn_constant_features,
                    warn_discrete_features, warn_dependent_features, chunk_data, checked_call,
                    warn_far_mean_prior, warn_vi_missing)
from .covariance import CovarianceType
from .fitting import (Groups, component_log_prob, em_fit, first_best, initial_params,
                      negative_log_joint, pyro_svi_fit, screen_rows, seed_centres, seed_rows,
                      svi_fit)
from .distributed import agree, check_group, reducer, seed_sample, shared_settings, shared_seeds
from .persistence import register
from .priors import MixtureParams, Priors, Standardizer, resolve_priors
from . import posterior as post_module
from .posterior import INFERENCE_OPTIONS, Inference, PosteriorSettings
from .variational import WEIGHT_PRIORS, WeightPrior

_BACKENDS = ("fused", "pyro")


@dataclass
class _Run:
    """One restart's result: parameters (batch ()), loss history
    (standardised units, the final loss last), iterations, convergence."""

    params: MixtureParams
    losses: np.ndarray
    n_iter: int
    converged: bool


@dataclass
class _Fit:
    """The kept run, every restart's loss history, and the kept restart."""

    kept: _Run
    restart_losses: list
    best: int


def same_optimum(losses: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """For each restart, the restart that stands for its point: the one of
    lowest loss (then lowest index) among those whose final losses agree
    with it to ``rtol``.  Restarts that converge to one optimum from
    different seeds end with losses equal to about 1e-12 relative on
    well-separated data (float32 parameters scored in float64); 1e-9 of a
    subsample's loss is about 1e-5 nats, the same point for any purpose,
    whichever continues.  Non-finite losses stand for themselves."""
    rep = np.arange(losses.size)
    lead = None
    for i in np.lexsort((rep, losses)):          # by loss, then index
        if not np.isfinite(losses[i]):
            continue
        if lead is None or abs(losses[i] - losses[lead]) > rtol * abs(losses[lead]):
            lead = i                             # a new point
        rep[i] = lead
    return rep


@register
class BayesianGMM(MixtureBase, DensityMixin, BaseEstimator):
    """Bayesian Gaussian mixture with full, tied, diagonal or spherical
    covariances, fitted by MAP.

    The model (see :func:`bayesgmm.models.gmm_model`) puts a Dirichlet prior
    on the mixture weights, Normal priors on the component means, and on the
    covariances the prior of their family (:mod:`bayesgmm.covariance`): a
    Wishart on each precision matrix ("full", "tied") or an InverseGamma on
    each standard deviation ("diag", "spherical").  The fit maximises the log
    joint with the assignments summed out: closed-form MAP-EM from a k-means++
    start climbs to the optimum quickly, and SVI (``TraceEnum_ELBO`` with an
    ``AutoDelta`` guide) continues from there on the same objective.  Set
    ``em_max_iter=0`` for pure SVI, as in Pyro's GMM tutorial.

    Parameters
    ----------
    n_components : int or "auto", default 2
        Number of mixture components K, or "auto" to choose K from
        1..``max_components`` by BIC, -2 log L + p log N with p the
        mixture's free parameters (``(K - 1) + K D`` plus the covariance
        family's count) and N the total sample weight, as
        :class:`~bayesgmm.GMMClassifier` does per class: for a MAP fit under
        weak priors BIC is the Laplace approximation of the log marginal
        likelihood and is consistent for the mixture order.  The ``n_init``
        restarts of every candidate K are fitted by EM as one batch (a
        component mask pads each to the largest K) to a looser tolerance
        (1e-4 nats per point, enough to rank K), the K of lowest BIC is
        chosen, and only that mixture is continued to ``tol`` (then SVI, as
        for a given K; so "auto" needs ``em_max_iter > 0``).  Only the K
        whose mixture has fewer free parameters than there are points (the
        total weight, with ``sample_weight``: integer weights try what the
        rows repeated would), and no more components than rows, are tried
        (a warning says when the chosen K is the largest so allowed, below
        ``max_components``: BIC may fall beyond it; give K explicitly, or a
        covariance type with fewer parameters).  The chosen K is
        ``n_components_``, the BIC of every K ``bic_``.  Restarts are not screened on a subsample with
        "auto" (every candidate is fitted on all the data).  Works with
        ``sample_weight``, missing values, out-of-core data and
        ``process_group``; not with ``init`` given as means, an array
        ``Priors.weight_concentration``, or a first ``partial_fit`` (see
        there); with ``warm_start`` see there.
    max_components : int, default 10
        Largest K tried by ``n_components="auto"`` (a warning says when BIC
        chose it: the best K may lie beyond); ignored for an integer K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
        Each component with its own full covariance matrix, all components
        sharing one, diagonal covariances, or one variance per component, as
        in scikit-learn.  With one feature "full" is the diagonal model.
    priors : Priors, optional
        Hyperparameters in the data's units; fields left ``None`` are resolved
        from the data at fit time (stored in ``priors_``).
    init : {"kmeans++", "kmeans", "random"} or array of shape (K, D), default "kmeans++"
        Initial means: scikit-learn's k-means++ seeding, full k-means, K
        random data points, or the given means (in the data's units).
    n_init : int, default 4
        Restarts; the one with the lowest final loss is kept.  With EM on
        more than ``4 * SCREEN_ROWS`` points (32,768 for K <= 32), the
        restarts are seeded and run to convergence on a random subsample of
        ``SCREEN_ROWS`` points (8,192, or 256 per component), each is scored
        once on all the data, and only the best continues on all of it: the
        cost of restarts no longer grows with N.
    max_iter : int, default 1000
        Maximum number of SVI steps: after EM when EM stopped before
        converging (``em_max_iter`` reached; from a converged EM optimum SVI,
        which optimises the same objective, has nothing left to gain), or
        per restart when ``em_max_iter=0``.
    em_max_iter : int, default 500
        Maximum closed-form MAP-EM iterations before SVI (all restarts at
        once); 0 switches EM off.
    tol : float, default 1e-5
        Convergence threshold on the loss improvement, in nats per sample per
        step (averaged over 10 steps for SVI).
    learning_rate : float, default 0.01
        Adam step size for SVI, in standardised units (the data are centred
        and scaled per feature internally, so the step size does not depend
        on the data's units).
    backend : {"fused", "pyro"}, default "fused"
        How SVI computes its loss.  "pyro" steps ``pyro.infer.SVI`` with
        ``TraceEnum_ELBO`` and an ``AutoDelta`` guide.  "fused" runs the same
        optimisation (AutoDelta's unconstrained parameters, the same Adam)
        with no tracing: the loss is the enumerated negative log joint from
        one blocked E-step, and its gradient comes from the E-step's
        statistics (Fisher's identity: at the current point the data term's
        gradient is that of the expected complete-data log-likelihood).  Loss
        and gradient equal ``TraceEnum_ELBO``'s at the same parameters
        (tested, float64) at a fraction of the per-step time.
    jit : bool, default False
        With ``backend="pyro"``, use ``JitTraceEnum_ELBO``; falls back to
        ``TraceEnum_ELBO`` with a warning if tracing fails.  Pyro traces
        with ``torch.jit.trace``, which recent torch releases deprecate
        (torch 2.13 warns with a ``DeprecationWarning`` on the first step,
        torch 2.14 with a ``FutureWarning``);
        the default ``backend="fused"`` needs no tracing and is faster.
    device : {"auto", "cpu", "cuda"} or torch.device, default "auto"
        Where to fit: "auto" takes CUDA when available.  Apple's "mps" is
        refused with the reason: the fits compare losses in float64, which
        MPS lacks.
    random_state : int, RandomState or None
        Seed for the initialisation and SVI; the same seed gives the same fit
        on the same device.
    progress : bool, default False
        Show a progress bar (notebook-aware) with the current loss.
    n_threads : int or None, default None
        torch's CPU threads during ``fit`` (None: torch's setting).  On a
        busy machine small fits (below ~1e5 rows x features) run several
        times faster with ``n_threads=1``; from ~1e5 rows a second thread
        gains 20-30% on an idle one.  The calling thread's previous setting
        is restored afterwards (threads that first use torch during the fit
        may inherit it: torch keeps the count per thread).
    warm_start : bool, default False
        As in scikit-learn: when the estimator is already fitted, ``fit``
        starts from the fitted parameters instead of new seeds (``n_init``
        and ``init`` are then ignored), e.g. to continue a fit with a small
        ``em_max_iter`` over several calls or on new data of the same
        features.  The previous fit must have the same ``n_components``,
        number of features and covariance type.  With
        ``n_components="auto"`` a warm start continues the fitted K
        (``n_components_``) without a new scan over K (and leaves no
        ``bic_``): set ``warm_start=False`` to choose K afresh.  The
        covariance prior is the previous fit's (scale and degrees of
        freedom together, whether they were defaults or given), so that
        the fit continues its objective, except for the fields ``priors``
        gives now; to return to the data's defaults, fit with
        ``warm_start=False``.
    missing : {"error", "marginalize"}, default "error"
        What NaN entries of X are.  "error": refused, with this option named
        as the remedy.  "marginalize": missing values (at random), handled
        inside the model: a row is scored by the Gaussian of its observed
        features only (the marginal, exact for every covariance type), EM
        takes the conditional expectations of the missing coordinates
        (E[x_m | x_o] and their conditional covariance, not a mean
        imputation), the Pyro model masks them the same way (its ``obs``
        site scores the observed coordinates), and every prediction
        marginalises them too.  A fit refuses a row with every feature
        missing, naming it; predictions answer it by the weights alone
        (its density is 1 with nothing observed: score 0).
    batch_size : int or None, default None
        Minibatch SVI: each SVI step sees this many rows drawn at random,
        its statistics scaled to the data's size (an unbiased estimate of
        the full-batch gradient, as Pyro's subsampled ``plate``), with the
        step size decaying as learning_rate / sqrt(1 + t / 100).  None: full
        batches.  For ``backend="fused"`` with the data in memory.  EM
        always uses all rows, and SVI runs after it only when EM stops
        before converging: set ``em_max_iter=0`` for a fit by minibatch SVI
        alone (a fit whose EM converged says in a ``UserWarning`` that
        ``batch_size`` was not used).
    dtype : {"float32", "float64"}, default "float32"
        Floating-point type of the fit and of the predictions' arithmetic
        (their results come back in float64, as arrays or as tensors for
        tensor input).  float32 is the fast default (and the GPU's);
        float64 for ill-conditioned problems
        (more features than points per component, near-singular
        covariances), where float32 rounding is amplified by the
        condition number.
    inference : {"map", "vi", "nuts"}, default "map"
        What ``fit`` infers.  "map": the MAP point only (the fit described
        above).  "vi" and "nuts": the MAP fit first (its fitted attributes
        below stay the plug-in answers, but with the Dirichlet-process prior:
        see ``weight_prior``), then draws from the posterior
        p(weights, means, covariances | X) of the same Pyro model, started
        from the MAP (:mod:`bayesgmm.posterior`): "nuts" samples it by
        Pyro's NUTS (exact up to Monte Carlo error; R-hat and effective
        sample sizes in ``rhat_`` and ``ess_``, a warning when they say the
        chains have not converged), "vi" fits the mean-field variational
        posterior q(weights) q(means) q(covariances) in closed form
        (coordinate ascent, :mod:`bayesgmm.variational`; at most
        ``max_iter`` iterations of one pass over the data each, stopping at
        ``tol`` nats of ELBO per point; the bound in ``elbo_``; faster than
        NUTS by orders of magnitude, and its intervals somewhat narrower
        where components overlap).  Both run in float64 on all rows (NUTS
        suits up to ~1e4 points; iris petal lengths, K = 2, the defaults:
        20-50 s for NUTS with ``n_threads=1`` on a 2-core CPU, ~0.1 s for
        VI), with the assignments summed out; every NUTS draw's components
        are matched to the MAP's (label switching undone; with the
        Dirichlet-process prior to the variational point it starts from,
        itself matched to the MAP's; VI's factors keep the MAP's labels).
        ``n_iter_``, ``converged_`` and the losses describe the MAP stage;
        a VI fit that stops at ``max_iter`` before its tolerance warns.  The
        draws are read by
        :meth:`posterior_samples` and :meth:`credible_interval`, and
        :meth:`predict_proba`, :meth:`predict`, :meth:`score_samples` and
        :meth:`score`, :meth:`sample`, :meth:`sample_assignments` and
        :meth:`impute` then answer with the posterior predictive (averaged
        over the draws; ``plug_in=True`` for the MAP's answer), while
        :meth:`bic` and :meth:`aic` use the MAP.  Not with
        ``process_group``, out-of-core data, ``batch_size`` or
        ``partial_fit``.
    n_samples : int, default 1000
        Posterior draws kept with ``inference="vi"`` or "nuts" (for NUTS,
        ``ceil(n_samples / n_chains)`` per chain, after the warmup: 8 draws
        for 6 asked of 4 chains).
    n_chains : int, default 4
        NUTS chains, run one after another, each from its own draw of the
        Laplace approximation at the MAP (R-hat compares them).
    n_warmup : int, default 300
        NUTS warmup (adaptation) iterations per chain, discarded.  The
        warmup starts from the Laplace approximation's variances as mass
        matrix, so a few hundred suffice on easy posteriors; raise it when
        the convergence warning asks.
    weight_prior : {"dirichlet", "dirichlet_process"}, default "dirichlet"
        The prior of the mixture weights.  "dirichlet":
        Dirichlet(``Priors.weight_concentration``).  "dirichlet_process":
        the stick-breaking prior of a Dirichlet process truncated at
        ``n_components`` components (sticks v_k ~ Beta(1, alpha), w_k =
        v_k prod_{j<k} (1 - v_j); alpha = ``Priors.weight_concentration``,
        one positive number, default 1; the expected number of clusters
        grows like alpha log n), so that the fit decides how many
        components the data use: surplus ones end with negligible weight,
        and ``n_effective_components_`` counts those that carry data.  It
        needs ``inference="vi"`` or "nuts" (a MAP of the sticks would keep
        every component: its density has no Occam factor).  "vi":
        coordinate ascent alone keeps a cluster split between two
        components (a local optimum), so delete moves judged by the exact
        ELBO switch components off (:func:`bayesgmm.variational.prune`).
        "nuts": the chains sample the sticks, started at the variational
        posterior's point (surplus components at negligible weight); the
        empty components' parameters are then drawn from about their
        priors, which slows NUTS where the data are few (R-hat and ESS say
        so).  The MAP stage that starts either uses a flat Dirichlet, and
        the point attributes (``weights_``, ``means_``, ``covariances_``)
        are the posterior's: for "vi" E[w], E[mu] and E[Lambda]^-1 under q
        (as scikit-learn's BayesianGaussianMixture reports), for "nuts" the
        means of the draws, in the MAP's component order (matched by
        overlap), which :meth:`bic`, :meth:`aic`, :meth:`sample` and
        ``plug_in=True`` then use, while ``loss_``, ``losses_``,
        ``n_iter_`` and ``converged_`` still describe the MAP stage;
        ``n_effective_components_`` counts the components whose expected
        number of points, E[N_k] under the posterior, is at least 1.
        "dirichlet" with a concentration below 1 (e.g.
        ``Priors(weight_concentration=0.1)``, "vi" or "nuts" only) is fitted
        the same way: flat-Dirichlet MAP, delete moves, the posterior's
        point attributes, components kept in the MAP's places.

    Attributes
    ----------
    n_components_ : int
        K of the fitted mixture (chosen by BIC for "auto"; the truncation
        with the Dirichlet-process prior).
    n_effective_components_ : int
        Components that carry at least one point's worth of the data: with
        ``inference="vi"`` those whose expected count E_q[N_k] (the summed
        responsibilities) is >= 1, with ``inference="nuts"`` and the
        Dirichlet-process prior (or a Dirichlet concentration below 1)
        those whose posterior expected count (the
        responsibilities averaged over the draws) is, else those with
        ``weights_ x n >= 1``
        (n: the total sample weight; counts are in the units of
        ``sample_weight``, so with weights normalised to sum to 1 at most
        one component can count: the data weigh as one point).  Set by
        ``fit``; ``partial_fit`` updates it from its running total weight.  With
        ``weight_prior="dirichlet_process"``, the number of clusters the
        fit found.
    bic_ : ndarray of shape (min(max_components, rows of positive weight),)
        Only after an "auto" fit that scanned K: BIC of K = 1, 2, ...
        (lower is better) in the data's units, each K at its best restart
        of the scan and the chosen K at the final fit (so
        ``bic_[n_components_ - 1]`` equals :meth:`bic` on the training
        data, with the fit's ``sample_weight``: exactly with
        ``dtype="float64"``, to float32 rounding with the default dtype);
        inf for K not tried (no K beyond the rows of positive weight is).
    weights_ : ndarray of shape (K,)
    means_ : ndarray of shape (K, D)
    covariances_ : ndarray
        Component covariances in scikit-learn's shapes: (K, D, D) "full",
        (D, D) "tied", (K, D) "diag", (K,) "spherical".
    precisions_cholesky_ : ndarray
        Cholesky factors of the precisions in scikit-learn's convention
        (upper triangular P with precision P P^T; 1/std for "diag" and
        "spherical"), same shapes.
    precisions_ : ndarray
        The precisions (inverse covariances), same shapes; derived from
        ``precisions_cholesky_``.
    scales_ : ndarray of shape (K, D)
        Per-feature (marginal) standard deviations of the components.
    covariance_type_ : str
    priors_ : Priors
        The resolved hyperparameters (numpy arrays).
    loss_ : float
        Final loss: the negative log joint at the fitted parameters.
    losses_ : ndarray
        Loss history of the kept restart (EM iterations, then SVI steps).
        With restart screening (large data) its EM head is the subsample's
        loss scaled to the data's size, an estimate for plots, so the
        history may step up where the whole-data EM takes over.
    restart_losses_ : list of ndarray
        Loss history of every restart (EM stage; SVI stage when EM is off;
        with screening, the scaled subsample losses, then the restart's
        loss on all the data (for one at the kept one's point and not
        scored, the continuation's first loss), or for the kept one its EM
        on all the data;
        for "auto", the chosen K's restarts in the scan, the kept one's
        continued by the polish).
    best_restart_ : int
    n_iter_ : int
        EM iterations plus SVI steps of the kept restart (for "auto": its
        scan iterations plus those of the polish).
    converged_ : bool
        Whether the MAP fit stopped by its rule (EM's, or SVI's where SVI
        continued it) rather than at ``em_max_iter``/``max_iter``; a fit
        that ran out of budget warns (scikit-learn's ``ConvergenceWarning``,
        not with ``tol=0`` nor after minibatch SVI, which runs ``max_iter``
        steps by design).
    device_ : torch.device
    n_partial_fits_ : int
        Only after :meth:`partial_fit`: its calls since its running
        average started (at the last ``fit``; a saved model keeps the count
        and goes on after ``load``, one saved by an earlier release without
        the running statistics starts again; the first call on an unfitted
        estimator, a fit of its chunk, counts as one).
    rhat_ : dict of str to ndarray
        Only after ``inference="nuts"``: the split R-hat of every element of
        the draws, {"weights": (K,), "means": (K, D), "covariances": ...}
        (close to 1 when the chains agree; the warning's threshold is 1.01).
    ess_ : dict of str to ndarray
        Only after ``inference="nuts"``: the effective sample size of every
        element of the draws, same keys.
    n_divergent_ : int
        Only after ``inference="nuts"``: divergent transitions after warmup.
    elbo_ : float
        Only after ``inference="vi"``: the final ELBO, a lower bound on the
        log evidence log p(X) in the data's units.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> X = load_iris()[["petal_length"]]
    >>> gmm = BayesianGMM(n_components=2, random_state=0, device="cpu").fit(X)
    >>> np.round(np.sort(gmm.means_.ravel()), 1)
    array([1.5, 4.9])
    >>> gmm.predict(X).shape
    (150,)

    With ``n_components="auto"`` K is chosen by BIC:

    >>> auto = BayesianGMM("auto", max_components=4, random_state=0, device="cpu").fit(X)
    >>> auto.n_components_
    2
    >>> bool(np.argmin(auto.bic_) == auto.n_components_ - 1)
    True
    """

    def __init__(self, n_components: Union[int, Literal["auto"]] = 2, *,
                 max_components: int = 10, covariance_type: CovarianceType = "full",
                 priors: Optional[Priors] = None, init: Union[InitMethod, Any] = "kmeans++",
                 n_init: int = 4, max_iter: int = 1000, em_max_iter: int = 500, tol: float = 1e-5,
                 learning_rate: float = 0.01, backend: Literal["fused", "pyro"] = "fused",
                 jit: bool = False, device: DeviceLike = "auto", random_state=None,
                 progress: bool = False, warm_start: bool = False,
                 n_threads: Optional[int] = None, missing: Literal["error", "marginalize"] = "error",
                 dtype: Literal["float32", "float64"] = "float32",
                 batch_size: Optional[int] = None, inference: Inference = "map",
                 n_samples: int = 1000, n_chains: int = 4, n_warmup: int = 300,
                 weight_prior: WeightPrior = "dirichlet"):
        self.n_components = n_components
        self.max_components = max_components
        self.covariance_type = covariance_type
        self.priors = priors
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.em_max_iter = em_max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.backend = backend
        self.jit = jit
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.warm_start = warm_start
        self.n_threads = n_threads
        self.missing = missing
        self.dtype = dtype
        self.batch_size = batch_size
        self.inference = inference
        self.n_samples = n_samples
        self.n_chains = n_chains
        self.n_warmup = n_warmup
        self.weight_prior = weight_prior

    # ------------------------------------------------------------------ fit
    def _warm_start(self, K: int, d: int, family, previous_names) -> bool:
        """Whether this fit starts from the previous fit's parameters
        (``warm_start``), after checking they fit this one."""
        if not self._warm_asked():
            return False
        previous = (self.means_.shape[0], self.means_.shape[1], self.covariance_type_)
        if previous != (K, d, family.name):
            raise ValueError(
                f"warm_start=True continues the previous fit (n_components={previous[0]}, "
                f"{previous[1]} feature(s), covariance_type={previous[2]!r}), but this fit has "
                f"n_components={K}, {d} feature(s), covariance_type={self.covariance_type!r}: "
                f"set warm_start=False to start afresh")
        check_same_columns(previous_names, getattr(self, "feature_names_in_", None))
        return True

    def _components(self) -> Optional[int]:
        """``n_components`` checked: K, or None for "auto"."""
        if is_auto(self.n_components):
            return None
        try:
            return V.check_int("n_components", self.n_components, 1)
        except ValueError as exc:
            raise ValueError(f"{exc}: give the number of components K, or 'auto' to choose "
                             f"K by BIC") from None

    def _check_params(self, n_samples: Optional[int], n_features: Optional[int],
                      available: bool = True):
        """Settings, K (None for "auto"), backend and max_components, checked
        (against the data's ``n_samples`` and ``n_features`` where given;
        ``available``: see ``_settings``)."""
        s = self._settings(available)
        K = self._components()
        max_components = check_max_components(self.n_components, self.max_components,
                                              s.em_max_iter)
        if K is not None and n_samples is not None and K > n_samples:
            raise ValueError(f"n_components={K} but only {n_samples} sample(s): "
                             f"use n_components <= {n_samples} or provide more data")
        if K is None:
            if not isinstance(self.init, str):
                raise ValueError(
                    "init given as an array of means fixes K, but n_components='auto' chooses "
                    f"K: give n_components=len(init), or a string init ({list(INIT_OPTIONS)}) "
                    "for 'auto'")
            if isinstance(self.priors, Priors) and np.ndim(self.priors.weight_concentration) > 0:
                raise ValueError(
                    "Priors.weight_concentration is an array (one value per component), but "
                    "n_components='auto' tries several K: give a scalar concentration (the same "
                    "for every component), or an integer n_components")
        backend = V.check_option("backend", self.backend, _BACKENDS)
        V.check_bool("jit", self.jit)
        if self.jit and backend != "pyro":
            raise ValueError(f"jit=True applies to backend='pyro' (JitTraceEnum_ELBO), got "
                             f"backend={self.backend!r}: set backend='pyro' or jit=False")
        if isinstance(self.init, str):
            V.check_option("init", self.init, INIT_OPTIONS)
        else:
            means = V.real_array(self.init, "init")     # no text, no booleans
            D = (means.shape[-1] if n_features is None and means is not None and means.ndim
                 else n_features)
            if means is None or means.shape != (K, D) or not np.all(np.isfinite(means)):
                got = f"{self.init!r}" if means is None else f"an array of shape {means.shape}"
                raise ValueError(
                    f"init must be one of {list(INIT_OPTIONS)} or finite means of shape "
                    f"(n_components, n_features) = ({K}, {'n_features' if D is None else D}), "
                    f"got {got}")
        return s, K, backend, max_components

    def fit(self, X, y=None, sample_weight=None, *, process_group=None) -> "BayesianGMM":
        """Fit the mixture to ``X`` (array-like, DataFrame, Series or tensor of
        shape (n_samples, n_features); 1-D input is one feature).

        ``sample_weight`` (n_samples,): how many times each row counts, in
        every stage (the EM statistics, the SVI loss, the k-means++ seeding,
        the standardisation and the data-dependent priors): integer weights
        give the fit of the rows repeated, weight 0 that of the rows
        removed.  They are frequency weights: their total is the data's
        size against which the priors weigh, so weights rescaled to sum to 1
        make the priors as strong as against one point.  With
        ``missing="marginalize"``, NaN entries of X are missing values (see
        the class docstring).

        ``process_group`` (a ``torch.distributed`` process group, e.g.
        ``torch.distributed.group.WORLD``): X is this process's shard of the
        rows, and every rank calls ``fit`` with its own; the statistics are
        summed over the shards (:mod:`bayesgmm.distributed`), so every rank
        ends with the parameters of one fit on the union of the shards.
        Restarts are not screened on a subsample then, and ``backend`` must
        be "fused".

        A fit that fails or is interrupted (``KeyboardInterrupt``) leaves the
        previously fitted state untouched.

        Returns
        -------
        self
        """
        return self._fit_wrapper(X, sample_weight, process_group)

    def _fit(self, X, sample_weight=None, process_group=None) -> "BayesianGMM":
        # The previous fit's columns, before validation resets them: a warm
        # start must see the same ones.
        previous_names = getattr(self, "feature_names_in_", None)
        group = check_group(process_group)
        reduce = reducer(group)
        streamed = is_row_source(X)
        # Each rank's own checks first, then one collective that stops every
        # rank if any failed (no rank may wait in a collective alone).
        error = None
        try:
            if not streamed:
                X = V.check_X(self, X, reset=True)
                V.check_sample_weight(sample_weight, X.shape[0],
                                      all_zero="error" if group is None else "shard")
            s = self._settings()
            V.check_random_state(self.random_state)   # before the collective (else a hang)
            family = cov_module.get(s.covariance_type, X.shape[1])
            if (group is not None or streamed) and \
                    V.check_option("backend", self.backend, _BACKENDS) != "fused":
                raise ValueError(f"backend={self.backend!r} needs the data in one process's "
                                 f"memory: use backend='fused' with process_group or with "
                                 f"out-of-core data")
            posterior = self._posterior_settings(s, streamed, group)
        except ValueError as exc:
            error = exc
        agree(error, group, X.shape[1] if error is None else -1,
              None if streamed else getattr(self, "feature_names_in_", None),
              None if group is None else shared_settings(self, streamed), self)
        rs = V.check_random_state(self.random_state)
        seeds = shared_seeds(rs.randint(0, 2 ** 31 - 1, size=s.n_init + 1), group)
        warm_asked = self._warm_asked()
        if streamed:
            K0 = self._components()      # None for "auto", which screens no restarts
            screens = (K0 is not None and s.n_init > 1 and s.em_max_iter > 0
                       and not warm_asked and group is None)
            # Every rank keeps up to SEED_SAMPLE_SIZE rows (the total is not
            # known during the pass); seed_sample then takes the union, or
            # each rank's share of a sample of that size.
            seed = int(seeds[-1])

            # Picks among the m rows of positive weight (the rows an in-memory
            # fit keeps): the screening subsample where it would screen on
            # one, else the seeding sample.
            def screen_pick(m: int) -> np.ndarray:
                rows = screen_rows(m, K0) if screens else None
                return (np.zeros(0, dtype=np.int64) if rows is None else
                        np.sort(np.random.default_rng(seed).choice(m, rows, replace=False)))

            def seed_pick(m: int) -> np.ndarray:
                if screens and screen_rows(m, K0) is not None:
                    return np.zeros(0, dtype=np.int64)
                rows = seed_rows(m, [seed, 1])
                return np.arange(m) if rows is None else rows

            picks = {} if warm_asked else {"screen": screen_pick, "seed": seed_pick}
            if not warm_asked and group is None:
                # The rows an in-memory fit measures the priors' spread on.
                picks["spread"] = spread_rows      # among the rows of positive weight
            data = stream_data(self, X, sample_weight, family, s.device,
                               V.allows_missing(self), s.dtype, picks, reduce, group=group)
        else:
            data = fit_data(X, sample_weight, family, s.device, V.allows_missing(self), s.dtype,
                            reduce, getattr(self, "feature_names_in_", None))
        std, Xt = data.std, data.Xt
        d = std.center.shape[0]
        s, K, backend, max_components = self._check_params(data.n_total, d)
        if posterior is not None and K is not None:     # "auto": once K is chosen
            self._check_draws(posterior, family, K, d)
        if posterior is not None and posterior.method == "nuts":
            refuse_nuts_constant("BayesianGMM", family, data.constant,
                                 getattr(self, "feature_names_in_", None))
        warn_constant_features("BayesianGMM", data, getattr(self, "feature_names_in_", None),
                               family, K)
        warn_dependent_features("BayesianGMM", data, getattr(self, "feature_names_in_", None),
                                family, self.priors)
        warn_far_mean_prior("BayesianGMM", self.priors, data, getattr(self, "feature_names_in_", None),
                            family)
        if self.batch_size is not None:
            V.check_int("batch_size", self.batch_size, 1)
            if backend != "fused" or streamed or group is not None:
                raise ValueError(f"batch_size={self.batch_size} (minibatch SVI) needs "
                                 f"backend='fused' and the data in one process's memory: set "
                                 f"batch_size=None for this fit")
        device = s.device
        groups = data.stream if streamed else Groups.single(Xt, data.wt, reduce)
        if K is None and warm_asked:
            K = int(self.means_.shape[0])   # a warm start continues the fitted K (warm_start)
        if K is None:
            fit, K, priors, bic = self._fit_auto(data, groups, family, s, backend,
                                                 max_components, seeds, group)
        else:
            fit, priors = self._fit_k(data, groups, family, s, backend, K, seeds, group,
                                      previous_names)
            bic = None
        offset = data.loss_offset(K, family)
        guard_stage("fit of every restart", fit.kept.params,
                    torch.tensor(float(fit.kept.losses[-1]), dtype=torch.float64,
                                 device=fit.kept.params.means.device),
                    learning_rate=s.learning_rate if s.max_iter > 0 else None)   # SVI's only
        w, m, c = std.params_from_std(fit.kept.params, family)
        self.weights_ = w
        self.means_ = m
        self._set_covariances(c, family)
        warn_float32_conditioning("BayesianGMM", c, family, s.dtype, w >= 0.5 / data.n_total)
        self.n_components_ = K
        if bic is not None:
            self.bic_ = bic
        elif hasattr(self, "bic_"):      # from an earlier "auto" fit
            del self.bic_
        alpha, sparse = self._dp_concentration(), self._sparse_concentration()
        if alpha is not None:       # the process's concentration (the MAP used a flat one)
            priors = replace(priors, weight_concentration=np.full(K, alpha))
        elif sparse is not None:    # the posterior's (the MAP used a flat one)
            priors = replace(priors, weight_concentration=concentration_for(sparse, K))
        self.priors_ = priors
        self.n_effective_components_ = int(effective_components(w * data.mass))
        if self.inference == "map":
            warn_unused_components("BayesianGMM", w, data.n_total)
            # Minibatch SVI runs its max_iter steps by design (its losses
            # are too noisy for the stopping rule): nothing to warn about.
            if not fit.kept.converged and (self.batch_size is None or s.max_iter == 0):
                warn_not_converged("BayesianGMM", s, fit.kept.n_iter, stacklevel=4)
        self.losses_ = np.asarray(fit.kept.losses, dtype=np.float64) + offset
        self.loss_ = float(self.losses_[-1])
        self.restart_losses_ = [np.asarray(r, dtype=np.float64) + offset
                                for r in fit.restart_losses]
        self.best_restart_ = fit.best
        self.n_iter_ = fit.kept.n_iter
        self.converged_ = bool(fit.kept.converged)
        self.device_ = device
        self._stream = None          # a new fit starts partial_fit's average afresh
        self.__dict__.pop("n_partial_fits_", None)   # ... and its count
        self._fit_mass = float(data.mass)    # ... from the fit's data, of this weight
        self._rows_seen = int(data.n_total)   # rows of positive weight: plots' "half a row"
        if posterior is not None and posterior.method == "vi":
            warn_vi_missing("BayesianGMM", data.observed_mass, data.mass, family,
                            getattr(self, "feature_names_in_", None))
        self._fit_posterior(posterior, data, family, fit.kept.params, priors, (w, m, c),
                            int(seeds[-1]))
        self._discrete_said = set()     # (and partial_fit's chunks)
        self._discrete_checked = 0
        warn_discrete_features("BayesianGMM", data, self.weights_, self.means_,
                               self.covariances_, family,
                               getattr(self, "feature_names_in_", None), data.n_total,
                               said=self._discrete_said)
        return self

    # ------------------------------------------------------------ posterior
    _POSTERIOR_ATTRIBUTES = ("_posterior", "rhat_", "ess_", "n_divergent_", "elbo_")

    def _dp_concentration(self) -> Optional[float]:
        """The Dirichlet-process concentration alpha (a positive number,
        default 1) with ``weight_prior="dirichlet_process"``; None with the
        Dirichlet prior."""
        if V.check_option("weight_prior", getattr(self, "weight_prior", "dirichlet"),
                          WEIGHT_PRIORS) == "dirichlet":
            return None
        given = self.priors.weight_concentration if isinstance(self.priors, Priors) else None
        if given is None:
            return 1.0
        try:
            alpha = float(given)
        except (TypeError, ValueError):
            raise ValueError(
                f"with weight_prior='dirichlet_process', Priors.weight_concentration is the "
                f"process's concentration alpha, one positive number, got {given!r}") from None
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(
                f"with weight_prior='dirichlet_process', Priors.weight_concentration is the "
                f"process's concentration alpha and must be finite and > 0, got {alpha}")
        return alpha

    def _sparse_concentration(self) -> Optional[np.ndarray]:
        """A Dirichlet concentration below 1 for the posterior only
        (:func:`~bayesgmm._base.sparse_concentration`), checked against an
        integer K before any work."""
        if self._dp_concentration() is not None:
            return None
        a = sparse_concentration(self.priors, getattr(self, "inference", "map"))
        if a is not None and not is_auto(self.n_components):
            concentration_for(a, V.check_int("n_components", self.n_components, 1))
        return a

    def _map_priors(self) -> Optional[Priors]:
        """The priors of the MAP stage: the user's, but with the
        Dirichlet-process prior, or a Dirichlet concentration below 1 for a
        posterior, a flat Dirichlet on the weights (the MAP is then only
        the posterior's start; below 1 no MAP exists)."""
        if self._dp_concentration() is None and self._sparse_concentration() is None:
            return self.priors
        return replace(self.priors if isinstance(self.priors, Priors) else Priors(),
                       weight_concentration=None)

    def _fit_priors(self) -> Optional[Priors]:
        return self._map_priors()

    def _prior_components(self) -> int:
        """K of the next fit's priors, for a fitted model (with "auto", the
        fitted K)."""
        return int(self.weights_.shape[-1]) if is_auto(self.n_components) \
            else int(self.n_components)

    def _check_model_hyperparameters(self) -> None:
        s, *_ = self._check_params(None, getattr(self, "n_features_in_", None), available=False)
        if self.batch_size is not None:
            V.check_int("batch_size", self.batch_size, 1)
        self._posterior_settings(s, False, None)

    def _posterior_settings(self, s, streamed: bool, group) -> Optional[PosteriorSettings]:
        """``inference`` and its settings checked against the fit's data
        path; None for "map"."""
        inference = V.check_option("inference", getattr(self, "inference", "map"),
                                   INFERENCE_OPTIONS)
        dp = self._dp_concentration() is not None
        sparse = self._sparse_concentration() is not None
        if sparse and is_auto(self.n_components):
            raise ValueError(
                "a Dirichlet concentration below 1 switches surplus components off itself, "
                "with n_components as the number to start from: give an integer "
                "n_components (e.g. 10), not 'auto'")
        if dp and inference == "map":
            raise ValueError(
                "weight_prior='dirichlet_process' is fitted by inference='vi' (mean-field "
                "variational Bayes, whose delete moves switch surplus components off) or "
                "inference='nuts' (started there), got inference='map': set inference='vi' "
                "(a MAP of the stick-breaking weights keeps every component: its density has "
                "no Occam factor, and below alpha = 1 it has no maximum)")
        if dp and is_auto(self.n_components):
            raise ValueError(
                "weight_prior='dirichlet_process' chooses the number of components itself, "
                "with n_components as its truncation: give an integer n_components (e.g. 10), "
                "not 'auto'")
        # Checked whatever the inference, as scikit-learn checks every
        # parameter: a bad value must not wait in a fitted or saved model
        # until a search over inference reaches "vi".
        n_samples = V.check_int("n_samples", self.n_samples, 1)
        n_chains = V.check_int("n_chains", self.n_chains, 1)
        n_warmup = V.check_int("n_warmup", self.n_warmup, 0)
        if inference == "map":
            return None
        if group is not None:
            raise ValueError(
                f"inference={inference!r} runs on all the rows in one process, but "
                f"process_group splits them over processes: fit with inference='map' over the "
                f"processes, or gather the rows (or a sample of them) into one process for "
                f"inference={inference!r}")
        if streamed:
            raise ValueError(
                f"inference={inference!r} reads every row at every step, but X is an "
                f"out-of-core row source: load X (or a random sample of its rows) into memory "
                f"as an array, or use inference='map'")
        if self.batch_size is not None:
            raise ValueError(
                f"batch_size={self.batch_size} (minibatch SVI of the MAP fit) does not apply to "
                f"inference={inference!r}, whose posterior runs on all the rows: set "
                f"batch_size=None")
        if (dp or sparse) and inference == "nuts" and s.max_iter == 0:
            what = ("weight_prior='dirichlet_process'" if dp else
                    "a Dirichlet concentration below 1")
            raise ValueError(f"{what} with inference='nuts' starts NUTS from the variational "
                             f"posterior, fitted by up to max_iter iterations, but max_iter=0: "
                             f"set max_iter > 0 (e.g. 1000)")
        if inference == "vi" and s.max_iter == 0:
            raise ValueError("inference='vi' runs up to max_iter coordinate-ascent iterations, "
                             "but max_iter=0: set max_iter > 0 (e.g. 1000)")
        return PosteriorSettings(inference, n_samples=n_samples, n_chains=n_chains,
                                 n_warmup=n_warmup, max_steps=s.max_iter, tol=s.tol,
                                 progress=bool(s.progress),
                                 weight_prior="dirichlet_process" if dp else "dirichlet",
                                 sparse=sparse)

    def _check_draws(self, settings: PosteriorSettings, family, K: int, D: int) -> None:
        check_draws_size(self.n_samples, settings.kept, family, K, D, "n_samples=1000",
                         n_chains=settings.n_chains if settings.method == "nuts" else 1,
                         requested=settings.n_samples)

    def _fit_posterior(self, settings: Optional[PosteriorSettings], data, family,
                       params: MixtureParams, priors: Priors, reference: tuple,
                       seed: int) -> None:
        """Posterior draws from the fitted MAP (:func:`bayesgmm.posterior.run`)
        stored with their diagnostics, or, for "map", those of an earlier fit
        removed.  In float64 on the fit's device, in the fit's standardised
        frame."""
        if settings is not None and isinstance(self.n_components, str):
            # K chosen by "auto" is known from here (a given K was checked
            # before the fit).
            self._check_draws(settings, family, *params.means.shape[-2:])
        for name in self._POSTERIOR_ATTRIBUTES:
            if name in vars(self):
                delattr(self, name)
        if settings is None:
            return
        std = data.std
        device = self.device_
        X, weight = data.float64_frame(device)
        pt = std.priors(priors, device, torch.float64)
        start = params.map(lambda t: t.detach().to(torch.float64))
        progress = FitProgress(settings.progress and settings.method == "vi",
                               settings.max_steps, "BayesianGMM VI", data.loglik_offset())
        try:
            seed = post_module.stream_seed(seed)
            # stacklevel: run, here, _fit, the fit wrapper, fit, then the caller.
            post = post_module.run(X, pt, family, start, std, reference, settings, seed, weight,
                                   progress.callback, stacklevel=6)
        finally:
            progress.close()
        self._posterior = post.samples
        if post.counts is not None:      # E[N_k] under the posterior (VI; NUTS with the DP)
            self.n_effective_components_ = int(effective_components(post.counts))
        if settings.prunes:
            # No MAP of the process or of a concentration below 1: the
            # point estimates are the posterior's, in the MAP's component
            # order as the draws are:
            # VI's E[w], E[mu], E[Lambda]^-1; NUTS's means of the draws.
            if post.q is not None:
                w, m, c = std.params_from_std(post.q.point(family), family)
                order = post.order
                w, m = w[0][order], m[0][order]
                c = c[0][order] if family.per_component else c[0]
            else:
                w, m, c = (post.samples[k].mean(0) for k in ("weights", "means", "covariances"))
            self.weights_, self.means_ = w, m
            self._set_covariances(c, family)
        if post.method == "nuts":
            self.rhat_, self.ess_, self.n_divergent_ = post.rhat, post.ess, int(post.n_divergent)
        else:
            self.elbo_ = float(post.elbo - data.loglik_offset())
        K = self.means_.shape[0]
        if self._dp_concentration() is not None and K > 1 and self.n_effective_components_ == K:
            # (From an audit.) Four clusters under a truncation of 3 were
            # merged two into one, with every component counted and nothing said.
            warnings.warn(
                f"BayesianGMM: every one of the n_components={K} components of the "
                f"Dirichlet-process truncation carries data, so the data may hold more "
                f"clusters than the truncation allows (surplus clusters are merged): raise "
                f"n_components until some components stay empty", UserWarning, stacklevel=5)

    def _fit_k(self, data, groups, family, s, backend, K: int, seeds, group, previous_names
               ) -> tuple["_Fit", Priors]:
        """The fit of a given K: restarts from new seeds (screened on a
        subsample for large data), or the previous fit's parameters
        (``warm_start``).  Returns the kept run and the resolved priors."""
        std, Xt = data.std, data.Xt
        streamed = data.stream is not None
        n, d = data.n_total, std.center.shape[0]
        device = s.device
        # Validated here; the defaults of the covariance priors are set once
        # the seeding is known (seeded_priors).
        priors = resolve_priors(self._map_priors(), family, K, data.moments)
        init = self.init
        if not isinstance(init, str):
            init = (np.asarray(init, dtype=np.float64) - std.center) / std.scale
        warm = self._warm_start(K, d, family, previous_names)
        # Every random choice comes from these seeds (the fits draw nothing
        # from torch's global RNG, so concurrent fits cannot disturb it).
        rows = (screen_rows(n, K) if s.n_init > 1 and s.em_max_iter > 0 and not warm
                and group is None else None)
        if warm:
            screen = groups
            start = std.params_to_std(self.weights_, self.means_, self.covariances_, family,
                                      device, s.dtype).map(lambda t: t[None, None])
            mask = torch.ones(1, 1, K, dtype=torch.bool, device=device)
        elif streamed and rows is not None:
            Xs, ws = data.samples["screen"]
            screen = Groups.single(Xs, ws)
        elif rows is not None:
            pick = np.random.default_rng(int(seeds[-1])).choice(n, rows, replace=False)
            index = torch.as_tensor(np.sort(pick), device=device)
            Xs, ws = Xt[index], None if data.wt is None else data.wt[index]
            screen = groups.subset(index)
        else:
            Xs, ws = self._seed_points(data, seeds, group)
            screen = groups
        if warm:
            # A warm start continues the previous fit's objective: its
            # covariance priors (those the user leaves to their default).
            priors = warm_priors(priors, self.priors, self.priors_)
        else:
            priors = seeded_priors(self._map_priors(), family, K, data,
                                   *self._spread_points(data, Xs, ws, group), [K])
            centres = torch.as_tensor(seed_centres([Xs], K, s.n_init, init, seeds[:-1], [ws]),
                                      dtype=s.dtype, device=device)
            mask = torch.ones(s.n_init, 1, K, dtype=torch.bool, device=device)
        pt = std.priors(priors, device, s.dtype)
        if not warm:
            start = initial_params(screen, centres, mask, pt, family)
        offset = data.loss_offset(K, family)
        # EM's budget (twice with screening: the subsample, then all the
        # data), or SVI's when EM is off; SVI after EM adds its own.
        # (backend="pyro" runs the SVI restarts one after another.)
        planned = (s.em_max_iter * (1 if screen is groups else 2)
                   or s.max_iter * (s.n_init if backend == "pyro" else 1))
        progress = FitProgress(bool(s.progress), planned, "BayesianGMM", offset)
        try:
            fit = self._run(Xt, groups, screen, start, mask, pt, family, s, backend,
                            progress.callback, int(seeds[-1]))
        finally:
            progress.close()
        return fit, priors

    @staticmethod
    def _spread_points(data, Xs, ws, group) -> tuple[list, list]:
        """The points (and weights) the default priors' spread is measured
        on (:func:`bayesgmm._base.seeded_priors`): the same rows whether the
        data are in memory or streamed and whether restarts are screened
        (:func:`bayesgmm._base.spread_rows` of all the data); under a
        process group, the seed sample every rank shares (``Xs``, ``ws``)."""
        if group is not None:
            return [Xs], [ws]
        if data.stream is not None:
            Xp, wp = data.samples["spread"]
            return [Xp], [wp]
        return [data.Xt], [data.wt]

    @staticmethod
    def _seed_points(data, seeds, group) -> tuple:
        """The points (and weights) the restarts are seeded from without
        screening: past ``SEED_SAMPLE_SIZE`` rows the sample
        :func:`~bayesgmm.fitting.seed_rows` picks, the same whether the data
        are in memory or streamed (whose pass kept it); under a process
        group the sample every rank shares."""
        streamed = data.stream is not None
        Xs, ws = data.samples["seed"] if streamed else (data.Xt, data.wt)
        if group is not None:     # every rank seeds from the same (gathered) points
            return seed_sample(Xs, ws, data.n_total, int(seeds[-1]), group,
                               n_local=data.n_local if streamed else None)
        rows = None if streamed else seed_rows(Xs.shape[0], [int(seeds[-1]), 1])
        if rows is not None:
            index = torch.as_tensor(rows, device=Xs.device)
            Xs, ws = Xs[index], None if ws is None else ws[index]
        return Xs, ws

    def _fit_auto(self, data, groups, family, s, backend, max_components: int, seeds, group
                  ) -> tuple["_Fit", int, Priors, np.ndarray]:
        """``n_components="auto"``: the restarts of every K = 1..max(cap)
        fitted as one batch (:func:`bayesgmm._auto.fit_candidates`, the
        classifier's code for one class), K chosen by BIC, then only the
        chosen mixture continued by :meth:`_run` (EM to ``tol``, SVI if EM
        stops short).  Returns the kept run (its history the scan's, then
        the polish's), K, the resolved priors and the BIC table."""
        std = data.std
        d = std.center.shape[0]
        device = s.device
        cap = component_cap(family, d, max_components, data.n_total, data.mass)
        # Resolved once for the largest K (validating the user's priors); the
        # k-component prior is the first k entries of the scalar concentration.
        Xs, ws = self._seed_points(data, seeds, group)
        # The covariance priors scaled to the data's spread about a seeding
        # with the largest K the data's weight allows (not the largest K
        # tried, which depends on the number of rows: weighted and repeated
        # rows must give the same prior; nor max_components, which would
        # shrink the prior as K never tried were asked for).
        base = seeded_priors(self._map_priors(), family, int(cap[0]), data,
                             *self._spread_points(data, Xs, ws, group),
                             component_cap(family, d, max_components, None, data.mass))
        pt = std.priors(base, device, s.dtype)
        centres = torch.as_tensor(seed_centres([Xs], int(cap[0]), s.n_init, self.init,
                                               seeds[:-1], [ws]), dtype=s.dtype, device=device)
        # EM's budget twice (the scan, then the chosen K; SVI after EM adds
        # its own); the loss is shown once K is chosen (the scan's is a sum
        # over every candidate).
        progress = FitProgress(bool(s.progress), s.em_max_iter * 2, "BayesianGMM")
        try:
            sel = fit_candidates(groups, centres, None, cap, pt, family, s.em_max_iter, s.tol,
                                 progress.callback, np.array([data.mass]),
                                 np.array([data.loglik_offset()]), max_components, depth=1,
                                 columns=bic_columns(max_components, data.n_total))
            K = int(sel.n_components[0])
            # stacklevel: here, _fit, the fit wrapper, fit, then the caller.
            warn_parameter_cap(K, int(cap[0]), max_components, family, d, float(data.mass),
                               stacklevel=5)
            progress.offset = data.loss_offset(K, family)
            pt = pt.with_concentration(pt.concentration[:K])
            mask = torch.ones(1, 1, K, dtype=torch.bool, device=device)
            polish = self._run(data.Xt, groups, groups, sel.params.map(lambda t: t[None]), mask,
                               pt, family, s, backend, progress.callback, int(seeds[-1]))
        finally:
            progress.close()
        bic = sel.bic[0]
        run = polish.kept
        # The chosen K's entry at the polished mixture: the BIC of the model
        # the estimator holds (its bic(X) on the training data).
        bic[K - 1] = bic_values(
            log_likelihood(torch.tensor([run.losses[-1]], dtype=torch.float64, device=device),
                           run.params.map(lambda t: t[None]), pt, family).cpu().numpy(),
            np.array([K]), family, d, np.array([data.mass]), np.array([data.loglik_offset()]))[0]
        # Histories: the chosen K's restarts in the scan; the kept one's
        # continues with the polish.
        M = int(cap[0])
        v = int(sel.variant[0])
        best = v // M
        restarts = [sel.trace.history(r * M + K - 1) for r in range(s.n_init)]
        losses = np.concatenate([restarts[best][:-1], run.losses])
        restarts[best] = losses
        kept = _Run(run.params, losses, int(sel.trace.iterations[v, 0]) + run.n_iter,
                    run.converged)
        priors = replace(base, weight_concentration=base.weight_concentration[:K])
        return _Fit(kept, restarts, best), K, priors, bic

    def _svi(self, Xt, groups, start: MixtureParams, mask, pt, family, s, backend,
             callback, seed: int) -> list["_Run"]:
        """SVI from ``start`` (batch (R, 1)) with the chosen backend, one
        result per restart."""
        if backend == "pyro":
            weight = None if groups.weight is None else groups.weight[0]
            out = [pyro_svi_fit(Xt, start.select((r, 0)), pt, family, s.max_iter, s.tol,
                                s.learning_rate, bool(self.jit), callback, seed=seed,
                                weight=weight)
                   for r in range(start.weights.shape[0])]
            return [_Run(f.params, f.losses.numpy(), f.n_iter, f.converged) for f in out]
        f = svi_fit(groups, start, mask, pt, family, s.max_iter, s.tol, s.learning_rate, callback,
                    batch_size=self.batch_size,
                    generator=torch.Generator().manual_seed(seed) if self.batch_size else None)
        return [_Run(f.params.select((r, 0)), f.history(r), int(f.iterations[r, 0]), f.converged)
                for r in range(start.weights.shape[0])]

    def _run(self, Xt, groups, screen, start, mask, pt, family, s, backend, callback,
             seed: int) -> "_Fit":
        """EM on all restarts (on the ``screen`` subsample when it is not
        all the data, then the best continued on all of it), then SVI on the
        best if EM stopped short; or SVI on every restart."""
        if s.em_max_iter == 0:
            runs = self._svi(Xt, groups, start, mask, pt, family, s, backend, callback, seed)
            best = int(first_best([r.losses[-1] for r in runs]))
            return _Fit(runs[best], [r.losses for r in runs], best)
        em = em_fit(screen, start, mask, pt, family, s.em_max_iter, s.tol, callback)
        restart_losses = [em.history(r) for r in range(em.losses.shape[0])]
        if screen is groups:
            best = int(first_best([h[-1] for h in restart_losses]))
            # The kept restart converged if it stopped before the budget
            # (em.converged is every restart's).
            iters = int(em.iterations[best, 0])
            em_run = _Run(em.params.select((best, 0)), restart_losses[best], iters,
                          iters < s.em_max_iter or em.converged)
        else:
            em_run, best = self._continue_best(groups, screen, em, restart_losses, mask, pt,
                                               family, s, callback)
        if s.max_iter == 0 or em_run.converged or not math.isfinite(em_run.losses[-1]):
            if self.batch_size is not None and s.max_iter > 0 and em_run.converged:
                # fit -> _fit_wrapper -> _fit -> _fit_k/_fit_auto -> _run
                warnings.warn(
                    f"batch_size={self.batch_size} was not used: EM converged on all the rows, "
                    f"and minibatches are taken only by the SVI stage, which runs when EM stops "
                    f"short: set em_max_iter=0 to fit by minibatch SVI alone, or leave "
                    f"batch_size=None", UserWarning, stacklevel=6)
            return _Fit(em_run, restart_losses, best)
        if callback is not None:
            callback.add(s.max_iter)
        svi = self._svi(Xt, groups, em_run.params.map(lambda t: t[None, None]), mask[:1], pt,
                        family, s, backend, callback, seed)[0]
        # depth: _run and its caller (_fit_k or _fit_auto) are between
        # guard_stage and _fit.
        loss = lambda run: torch.tensor(run.losses[-1], device=run.params.means.device)
        _, _, ok = guard_stage("SVI", svi.params, loss(svi), ("EM", em_run.params, loss(em_run)),
                               learning_rate=s.learning_rate, depth=3)
        # Adam may settle marginally above the EM optimum; both optimise
        # the same objective, so keep whichever point is better.
        keep_svi = bool(ok) and svi.losses[-1] <= em_run.losses[-1]
        tail = [] if keep_svi else [em_run.losses[-1:]]
        run = _Run(svi.params if keep_svi else em_run.params,
                   np.concatenate([em_run.losses[:-1], svi.losses, *tail]),
                   em_run.n_iter + svi.n_iter, svi.converged)
        return _Fit(run, restart_losses, best)

    @staticmethod
    def _continue_best(groups, screen, em, restart_losses, mask, pt, family, s, callback):
        """After EM on the subsample: the restarts' parameters scored on all
        the data (the choice is made there), and the best continued there
        to convergence.  Restarts that ended at the same point of the
        subsample (screen losses equal to 1e-9 relative: the same optimum
        reached from different seeds, see :func:`same_optimum`) are scored
        once, by the lowest; when all did, none is scored before the
        continuation.
        The restarts' histories become their subsample losses scaled to the
        data's size (an estimate, for plots), then their loss on all the
        data (for a restart at the kept one's point and not scored, the
        continuation's first loss, at that point); the kept one's continues
        with its EM on all the data."""
        R = em.losses.shape[0]
        sub = em.losses[:, 0, -1].double().cpu().numpy()
        rep = same_optimum(sub)
        reps = np.unique(rep[np.isfinite(sub)])
        whole = np.full(R, math.inf)
        if reps.size > 1:
            flat = em.params.map(lambda t: t[torch.as_tensor(reps, device=t.device), 0])
            zero = torch.zeros(reps.size, dtype=torch.long, device=mask.device)
            whole[reps] = negative_log_joint(groups, flat, zero, pt, family).double().cpu().numpy()
            whole = np.where(np.isfinite(sub), whole[rep], math.inf)
        if reps.size == 1:
            best = int(reps[0])
        elif np.isfinite(whole).any():
            best = int(rep[int(first_best(whole))])
        else:                 # every restart diverged: the guard after the fit says so
            return _Run(em.params.select((0, 0)), restart_losses[0],
                        int(em.iterations[0, 0]), False), 0
        scale = float(groups.mass[0]) / float(screen.mass[0])
        cont = em_fit(groups, em.params.select((slice(best, best + 1),)), mask[:1], pt, family,
                      s.em_max_iter, s.tol, callback)
        kept = cont.history(0)
        if reps.size == 1:
            whole = np.where(rep == best, kept[0], whole)
        for r in range(R):
            head = restart_losses[r][:-1] * scale
            restart_losses[r] = np.concatenate([head, kept if r == best else whole[r:r + 1]])
        run = _Run(cont.params.select((0, 0)), restart_losses[best],
                   int(em.iterations[best, 0]) + int(cont.iterations[0, 0]), cont.converged)
        return run, best

    # ---------------------------------------------------------- prediction
    def _prepare(self, X, mixture: Optional[tuple] = None):
        """Fitted check, validation, and the fitted mixture (or ``mixture``,
        (weights, means, covariances, family)) as tensors in a standardised
        frame (see :meth:`MixtureBase._frame`)."""
        check_is_fitted(self, ("weights_", "means_", "covariances_"))
        X, out_device = _predict.check_input(self, X)
        device = _predict.model_device(self)
        w, m, c, family = self._mixture_of(mixture)
        std, params, offset = self._frame(device, w, m, c, family)
        return X, out_device, std, params, device, family, offset

    def _mixture_of(self, mixture: Optional[tuple]) -> tuple:
        """(weights, means, covariances, family) of ``mixture`` (from
        :meth:`_predictive`), or of the fitted MAP where it is None."""
        if mixture is None:
            return self.weights_, self.means_, self.covariances_, self._family()
        return mixture

    def _predictive(self, plug_in) -> Optional[tuple]:
        """The mixture the predictions score: None for the MAP (a MAP fit,
        or ``plug_in=True``), else the posterior predictive as one mixture
        of S x K components (:func:`bayesgmm.posterior.predictive_mixture`)."""
        V.check_bool("plug_in", plug_in)
        draws = getattr(self, "_posterior", None)
        if plug_in or draws is None:
            return None
        return post_module.predictive_mixture(draws, self._family())

    def _log_joint(self, X, kind: str, n_draws: int = 1, random_state=None,
                   mixture: Optional[tuple] = None):
        """The one log-probability primitive behind every prediction:
        log w_k + log N(x | mu_k, Sigma_k) per point and component, in the
        data's units, over blocks of points, reduced per block to ``kind``:

        * "joint": the log joint (N, K); "log_resp": log p(z = k | x) (N, K);
        * "density": log p(x) (N,);
        * "label": argmax_k p(z = k | x) (N,), the MAP assignment;
        * "draws": ``n_draws`` draws of z ~ p(z | x) (n_draws, N), from a
          private generator seeded by ``random_state``.

        ``mixture`` (:meth:`_predictive`): score the posterior predictive
        instead, the S draws' K components as one mixture of S K components
        of weights w_sk / S; each point's log joints are summed over the
        draws per label k (log sum_s w_sk N(x | theta_sk) / S, the
        predictive log joint of label k) before the reduction to ``kind``,
        so "density" is log of the mean over the draws of p(x | theta_s),
        and "log_resp" the predictive p(z = k | x, X_train).

        Everything but the output is per block, so memory stays bounded at
        any N.  Points far from the mixture follow the far-point rule
        (:func:`bayesgmm.fitting.far_component_log_prob`): their answers are
        the exact limits, never NaN.  No global state is read or written
        (no Pyro handler, no global RNG), so any number of threads may call
        this at once."""
        X, out_device, std, params, device, family, offset = self._prepare(X, mixture)
        allow_missing = V.allows_missing(self)
        n = X.shape[0]
        K, D = self.means_.shape
        if kind == "draws":
            check_result_size(f"n_samples={n_draws}", 8 * int(n_draws) * int(n),
                              f"draw fewer assignments per row ({n_draws} x {n} rows asked), or "
                              f"in batches (each call with its own random_state)")
        J = params.weights.shape[-1]      # components scored: K, or S K for the predictive
        shape = {"joint": (n, K), "log_resp": (n, K), "density": (n,), "label": (n,),
                 "draws": (n_draws, n)}[kind]
        out = _predict.new_output(out_device, shape, np.int64 if kind in ("label", "draws")
                                  else np.float64)
        rows = max(1, _predict.CHUNK_ELEMENTS // (J * D * (n_draws if kind == "draws" else 1)))
        gen = None
        if kind == "draws":
            seed = int(V.check_random_state(random_state).randint(0, 2 ** 31 - 1))
            gen = torch.Generator(device=device).manual_seed(seed)
        far = _predict.FarPoints(params, family, std)
        missing = _predict.MissingRows(params, family, std)
        with torch.no_grad():
            factor = family.precision_factor(params.cov)    # once, not per block
            for a, b, z, raw in _predict.blocks(X, rows, device, std.center, std.scale,
                                                params.weights.dtype, allow_missing):
                zc, miss, corr = _predict.split_missing(z, allow_missing, std.scale)
                lp = component_log_prob(zc, params, family, factor).transpose(0, 1)
                # predict's argmax over the components runs faster along
                # contiguous rows (1e6 points, K=8, one thread: about 25% for
                # float32 models, 15% for float64); the other kinds'
                # reductions were no faster for the copy.
                lp = lp.to(torch.float64, memory_format=torch.contiguous_format, copy=True) \
                    if kind == "label" else lp.double()
                if miss is not None:     # rows with missing features: their observed ones
                    lp[miss], lead_miss = missing.scores(raw[miss])
                # lp + lead is the log joint (lead is 0 but for far points).
                lead = far.patch(zc, raw, lp, exclude=miss)
                if miss is not None:
                    lead[miss] += corr + lead_miss
                if J != K:      # the predictive: each label's components summed over draws
                    lp = torch.logsumexp(lp.reshape(lp.shape[0], J // K, K), 1)
                if kind == "joint":
                    value = lp + (lead - offset).unsqueeze(-1)
                elif kind == "label":          # no normaliser needed for the argmax
                    value = lp.argmax(-1)
                elif kind == "density":
                    value = torch.logsumexp(lp, -1) + lead - offset
                else:
                    value = lp - torch.logsumexp(lp, -1, keepdim=True)
                    if kind == "draws":
                        value = torch.multinomial(value.exp(), n_draws, replacement=True,
                                                  generator=gen).t()
                _predict.put(out, (slice(None), slice(a, b)) if kind == "draws" else slice(a, b),
                             value)
        return out

    # Every prediction method takes ``plug_in`` (keyword only, so that the
    # scikit-learn signatures stay as they are): after inference="vi" or
    # "nuts" the default answer is the posterior predictive, averaged over
    # the stored draws; plug_in=True gives the MAP's (what a MAP fit gives).
    def predict_proba(self, X, *, plug_in: bool = False) -> np.ndarray:
        """Responsibilities p(z = k | x), shape (N, K).

        Exact at the MAP parameters for ``inference="map"`` (or
        ``plug_in=True``).  After ``inference="vi"``/"nuts", the posterior
        predictive p(z = k | x, X_train) = sum_s w_sk N(x | mu_sk, Sigma_sk)
        / sum_s p(x | theta_s) over the draws theta_s (components matched
        to the MAP's), which weighs each draw by how well it explains x."""
        log_resp = self._log_joint(X, "log_resp", mixture=self._predictive(plug_in))
        if isinstance(log_resp, torch.Tensor):
            return log_resp.exp_()
        return np.exp(log_resp, out=log_resp)

    def score_samples(self, X, *, plug_in: bool = False) -> np.ndarray:
        """log p(x) of each point, shape (N,): under the fitted (MAP)
        mixture for ``inference="map"`` (or ``plug_in=True``), else the
        posterior predictive density log (1/S sum_s p(x | theta_s)) over
        the S stored draws."""
        return self._log_joint(X, "density", mixture=self._predictive(plug_in))

    def score(self, X, y=None, *, sample_weight=None, plug_in: bool = False) -> float:
        """Mean log-likelihood per point (higher is better, as in
        scikit-learn): the mean of :meth:`score_samples`, weighted by
        ``sample_weight`` (as ``fit`` takes it: integer weights score as
        repeated rows)."""
        ll = self.score_samples(X, plug_in=plug_in)
        w = V.check_sample_weight(sample_weight, ll.shape[0])
        if w is None:
            return float(ll.mean())
        if isinstance(ll, torch.Tensor):   # a tensor's scores, on its device: weighed here
            ll = ll.cpu().numpy()
        # Weight 0 drops a row (as in fit, bic and aic): 0 x -inf is not 0.
        return float(np.average(ll[w > 0], weights=w[w > 0]))

    def predict(self, X, *, plug_in: bool = False) -> np.ndarray:
        """Most probable component of each point, argmax_k p(z = k | x).

        At the MAP parameters (``inference="map"`` or ``plug_in=True``) it
        is the assignment ``pyro.infer.infer_discrete`` finds at
        temperature 0 on the model conditioned on them (the test suite checks
        the two agree), computed in closed form so that it is thread-safe
        and shares :meth:`predict_proba`'s far-point rule; after
        ``inference="vi"``/"nuts" the argmax of the posterior predictive
        :meth:`predict_proba`."""
        return self._log_joint(X, "label", mixture=self._predictive(plug_in))

    def sample_assignments(self, X, n_samples: int = 1, random_state=None, *,
                           plug_in: bool = False) -> np.ndarray:
        """Posterior draws of the assignments z ~ p(z | x, params), shape
        (n_samples, N): what ``infer_discrete`` draws at temperature 1 (the
        test suite checks the distributions agree), from the closed-form
        responsibilities.  After ``inference="vi"``/"nuts" they are drawn
        from the posterior predictive responsibilities p(z | x, X_train),
        those of ``predict_proba``, so that their frequencies agree with it
        and with ``predict``; ``plug_in=True`` draws from the MAP's.

        Seeded by ``random_state`` (default: the estimator's
        ``random_state``); the same seed gives the same draws, from any
        number of threads at once."""
        n_samples = V.check_int("n_samples", n_samples, 1)
        return self._log_joint(X, "draws", n_samples,
                               self.random_state if random_state is None else random_state,
                               mixture=self._predictive(plug_in))

    def impute(self, X, *, sample: bool = False, random_state=None, plug_in: bool = False):
        """``X`` with its missing entries (NaN) filled in under the fitted
        mixture, as an array (a DataFrame for a DataFrame, same index and
        columns; a float64 tensor on its device for a tensor); observed
        entries are returned unchanged.

        By default each missing entry gets its conditional mean given the
        row's observed features, E[x_m | x_o] = sum_k p(k | x_o) (mu_k,m +
        Sigma_k,mo Sigma_k,oo^-1 (x_o - mu_k,o)): the best fill in squared
        error under the model (not the feature mean: the other features and
        the component the row belongs to inform it).  With ``sample=True``
        they are drawn from p(x_m | x_o) instead (a component, then the
        conditional Gaussian), seeded by ``random_state`` (default: the
        estimator's, so repeated calls repeat the draws: pass a different
        seed per imputation for multiple imputation).

        After ``inference="vi"``/"nuts" the mixture is the posterior
        predictive (the stored draws' components, each weighted by 1/S), as
        for :meth:`score_samples`; ``plug_in=True`` imputes under the MAP.

        Works whatever ``missing`` was at fit time.  A row with every
        feature missing gets the mixture's mean (or a draw from it)."""
        check_is_fitted(self, ("weights_", "means_", "covariances_"))
        weights, means, cov, family = self._mixture_of(self._predictive(plug_in))
        return self._impute(X, sample, random_state,
                            lambda rows, _: [(np.arange(rows.size),
                                             (weights, means, cov, family, None))])

    #: Step sizes of ``partial_fit``: eta_t = (t + PARTIAL_FIT_OFFSET) ** -PARTIAL_FIT_DECAY.
    PARTIAL_FIT_DECAY = PARTIAL_FIT_DECAY
    PARTIAL_FIT_OFFSET = PARTIAL_FIT_OFFSET

    def __setstate__(self, state: dict) -> None:
        # An estimator pickled mid-stream by bayesgmm 0.2.0 holds its running
        # statistics as "_online" (a Standardizer and tensors): taken over as
        # "_stream", so that it continues the stream (and saves) as before.
        online = state.pop("_online", None)
        if online is not None and state.get("_stream") is None and online.get("avg") is not None:
            state["_stream"] = {
                "center": np.asarray(online["std"].center, dtype=np.float64),
                "scale": np.asarray(online["std"].scale, dtype=np.float64),
                "t": int(online["t"]), "mass": float(online["mass"]),
                "avg": host_stats(online["avg"])}
        super().__setstate__(state)

    def partial_fit(self, X, y=None, sample_weight=None) -> "BayesianGMM":
        """Update the mixture with one chunk of a stream (stepwise EM).

        The first call, on an unfitted estimator, is ``fit`` on that chunk.
        Every later call runs one E-step of the chunk at the current
        parameters and folds its sufficient statistics, per unit of weight,
        into a running average with step size eta_t = (t + 2)^-0.6 when t
        chunks are already averaged (stepwise EM, Cappé & Moulines 2009: any
        exponent in (0.5, 1] converges; 0.6 forgets early, poorly fitted
        chunks fast), for a chunk of the stream's mean chunk weight; a chunk
        of m times that weight takes the step m times over,
        1 - (1 - eta_t)^m, so a few rows barely move a mixture fitted to
        many (equal chunks: the plain schedule); then the closed-form
        M-step maximises the MAP objective of that average scaled to the
        total weight seen, so the priors weigh against all the data so far,
        as in a batch fit of it.  Each call
        costs one pass over its chunk; memory does not grow with the stream.

        ``sample_weight`` and ``missing="marginalize"`` work as in ``fit``.
        After ``fit`` the stream starts from the fit: its data are the first
        chunk (statistics that reproduce the fitted mixture, at the fit's
        total weight), so the next chunk updates the fit rather than
        replacing it.  A saved (or pickled) model keeps the stream's
        running statistics, so after ``load`` the next call continues the
        stream exactly as the saved model would have (a file saved by an
        earlier release, without them, starts a new average with a
        ``UserWarning``).  Each later call updates the
        parameters, ``n_effective_components_`` and ``n_partial_fits_``;
        ``loss_`` becomes NaN (the stream's objective would need a pass
        over every row seen), and ``losses_``, ``n_iter_`` and
        ``converged_`` keep describing the last ``fit``.  The calls that
        bring ``n_partial_fits_`` to 1..16, then one every 16 calls, check
        their chunk (of 50 rows or more) for components sitting on single
        values of a feature, as ``fit`` ends with; a finding is said when it
        names a (component, feature) pair not said before in the stream.
        K stays the
        fitted one, so with ``n_components="auto"`` the first call must
        follow a ``fit`` (which chooses K); a first call on an unfitted
        "auto" estimator is refused.  A later call refuses an integer
        ``n_components`` or a ``covariance_type`` other than the fitted
        one (refit with ``fit`` to change them); fields that ``priors``
        gives replace the fitted priors from that call on, and those it
        leaves None keep them.  Later calls run on the model's device
        (``device_``: the fit's, or the one ``load`` chose); the ``device``
        setting takes effect at the next ``fit``.
        """
        self._check_partial_inference()
        return self._fit_wrapper_partial(X, sample_weight)

    def _fit_wrapper_partial(self, X, sample_weight):
        if not hasattr(self, "means_"):
            if is_auto(self.n_components):
                raise ValueError(
                    "partial_fit starts with a fit of its first chunk, and "
                    "n_components='auto' would choose K from that chunk alone: fit a sample of "
                    "the stream with n_components='auto' first (partial_fit then continues its "
                    "K), or give n_components an integer")
            self.fit(X, sample_weight=sample_weight)
            self._stream = None
            # The wrapper's context, for the first chunk's stats.
            with fit_context(check_threads(self.n_threads)):
                return self._partial_step(X, sample_weight, first=True)
        with rollback_on_error(self):
            priors = self._partial_priors()
            self._check_hyperparameters()     # every setting, as fit checks them
            self.priors_ = priors
            with fit_threads(check_threads(self.n_threads)):
                return self._partial_step(X, sample_weight)

    def _partial_priors(self) -> Priors:
        """The priors a continuing ``partial_fit`` maximises against, after
        checking that the settings still describe the fitted mixture: K
        (an integer ``n_components`` must be the fitted one; "auto"
        continues it), ``covariance_type`` and the Dirichlet weight prior
        must be those of the fit, or the update would silently keep the old
        ones.  Fields the user's ``priors`` give replace the fitted ones
        (the objective from this chunk on); fields left None keep them, as
        a warm start does."""
        K, D = self.means_.shape
        fitted_type = getattr(self, "covariance_type_", self.covariance_type)
        remedy = "refit with fit to change it, or set it back"
        if not is_auto(self.n_components) and self._components() != K:
            raise ValueError(f"partial_fit continues the fitted mixture of n_components={K}, but "
                             f"n_components is now {self.n_components!r}: {remedy}")
        family = cov_module.get(self.covariance_type, D)
        if family.name != fitted_type:
            raise ValueError(f"partial_fit continues the fitted covariance_type={fitted_type!r}, "
                             f"but covariance_type is now {self.covariance_type!r}: {remedy}")
        if self._dp_concentration() is not None:
            raise ValueError("partial_fit updates the MAP, but weight_prior='dirichlet_process' "
                             "has no MAP (see fit): set weight_prior='dirichlet'")
        return self._continued_priors(self.priors_, family, K, D)

    def _partial_step(self, X, sample_weight, first: bool = False) -> "BayesianGMM":
        X = V.check_X(self, X, reset=False)
        w = V.check_sample_weight(sample_weight, X.shape[0])
        if w is not None:
            X, w = X[w > 0], w[w > 0]
        check_chunk_weights(w, self._dtype())
        device = _predict.model_device(self)
        family = self._family()
        K, D = self.means_.shape
        state = getattr(self, "_stream", None)
        fresh = first or state is None      # a new running average starts here
        if state is None and not first and getattr(self, "n_partial_fits_", 0) == 0 \
                and getattr(self, "_fit_mass", None) is None:
            # Fitted by fit and loaded from a file of an earlier release,
            # which did not record the fit's data mass: the stream would
            # start from zero mass, and its first chunk replace the fit.
            raise ValueError(
                "BayesianGMM.partial_fit continues a fit from the amount of data it saw, but "
                "this model was loaded from a file saved by an earlier bayesgmm, which did not "
                "record it: the new rows would replace the fit instead of updating it; refit "
                "it with fit(X) on its data (and save it again with this release)")
        if state is None:
            if not first and getattr(self, "n_partial_fits_", 0) >= 1:
                # Loaded from a file without the running statistics (saved
                # by an earlier release, which left them out).
                warnings.warn(
                    f"BayesianGMM.partial_fit: this model was loaded after "
                    f"{self.n_partial_fits_} partial_fit call"
                    f"{'s' if self.n_partial_fits_ != 1 else ''} from a file without the "
                    f"stream's running statistics (saved by an earlier bayesgmm): this call "
                    f"starts a new running average from the loaded parameters, and the priors "
                    f"weigh against the rows seen from now on. Save the model again with this "
                    f"release to keep a stream's statistics", UserWarning, stacklevel=4)
            std, params, _ = self._frame(device, self.weights_, self.means_, self.covariances_,
                                         family, dtype=torch.float64)
            fit_mass = getattr(self, "_fit_mass", None)
            if first or fit_mass is None:
                state = {"center": std.center, "scale": std.scale, "t": 0, "mass": 0.0,
                         "avg": None}
            else:
                # After fit: the fit's data are the stream's first chunk.
                seed = seeded_stream(std, params.map(lambda t: t[None]), family,
                                     np.array([fit_mass]))
                state = dict(seed, t=1, mass=float(fit_mass))
        std = Standardizer(np.asarray(state["center"], dtype=np.float64),
                           np.asarray(state["scale"], dtype=np.float64))
        params = std.params_to_std(self.weights_, self.means_, self.covariances_, family, device,
                                   self._dtype())
        dtype = params.weights.dtype
        Xt = std.apply(X, device, dtype)
        wt = None if w is None else torch.as_tensor(w, dtype=dtype, device=device)
        groups = Groups.single(Xt, wt)
        flat = params.map(lambda t: t[None])
        # Kept as a scalar count and weight (what a saved model holds).
        run = dict(state, t=np.array([state["t"]]), mass=np.array([state["mass"]]))
        new, _ = stream_update(run, groups, flat, std.priors(self.priors_, device, dtype), family,
                               None, self.PARTIAL_FIT_DECAY, self.PARTIAL_FIT_OFFSET)
        if first:   # the fit's own parameters stand; the average starts here
            new = flat
        _, _, ok = guard_stage("partial_fit", new.select(0),
                               torch.tensor(0.0, device=new.means.device),
                               learning_rate=None)
        if not first:   # (the fit's attributes as they are, not through the frame and back)
            wts, means, cov = std.params_from_std(new.select(0), family)
            self.weights_, self.means_ = wts, means
            self._set_covariances(cov, family)
        total = float(run["mass"][0])
        # A new dict: a shallow copy of the estimator (copy.copy) shares the
        # old one, whose stream must not move with the copy's.
        state = dict(state, t=int(run["t"][0]), mass=total, avg=run["avg"])
        # The count restarts with a new running average (after fit or load).
        self.n_partial_fits_ = 1 if fresh else self.n_partial_fits_ + 1
        if not first and getattr(self, "_rows_seen", None) is not None:
            self._rows_seen = int(self._rows_seen) + int(X.shape[0])
        self._stream = state
        if not first:
            # The stream's objective is not known (it would need a pass over
            # every row seen): loss_ no longer describes the parameters.
            self.loss_ = math.nan
        self.n_effective_components_ = int(effective_components(self.weights_ * float(total)))
        if not first and checked_call(self.n_partial_fits_, X.shape[0],
                                        getattr(self, "_discrete_checked", 0)):
            # The fit's end check on this chunk's rows, at the updated
            # components; a finding said before is not repeated (from an
            # audit: a stream that collapsed onto single values went unsaid).
            # A new set each call: a copy.copy of the estimator shares the
            # old one, whose findings must not silence the copy's.
            said = set(getattr(self, "_discrete_said", ()))
            chunk, _ = chunk_data(X, w)
            warn_discrete_features("BayesianGMM", chunk, self.weights_, self.means_,
                                   self.covariances_, family,
                                   getattr(self, "feature_names_in_", None), chunk.n_total,
                                   said=said)
            self._discrete_said = said
            self._discrete_checked = self.n_partial_fits_
        return self

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit (with ``sample_weight``, as :meth:`fit`), then return
        ``predict(X)`` at the final parameters (every row, weight 0 too)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def sample(self, n_samples: int = 1, random_state=None, *,
               plug_in: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Draw points from the fitted mixture by running the Pyro model at
        the fitted parameters.  After ``inference="vi"``/"nuts" the points
        come from the posterior predictive, the density ``score_samples``
        gives (each point from a stored draw of the parameters picked at
        random, its component from that draw's weights; the label is the
        component); ``plug_in=True`` draws from the MAP's mixture.

        Seeded by ``random_state`` (default: the estimator's
        ``random_state``); the caller's global torch RNG is left untouched,
        and concurrent calls from several threads each get their own seed's
        draws (Pyro runs one model at a time, under a process-wide lock).
        Many draws run the model in blocks (about 2 million D x D entries
        each, each block from its own seed), so memory stays near the draws'
        own size; draws that alone would exceed this machine's memory are
        refused with a ``ValueError`` before any work.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, ("weights_", "means_", "covariances_"))
        n_samples = V.check_int("n_samples", n_samples, 1)
        # The predictive's S K components are j = s K + k: component k is j mod K.
        weights, means, cov, family = self._mixture_of(self._predictive(plug_in))
        rs = V.check_random_state(self.random_state if random_state is None else random_state)
        x, z = sample_mixture(weights, means, cov, family, self.priors_, n_samples, rs,
                              _predict.model_device(self))
        return x, z % self.means_.shape[0]

    # ------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        K, D = self.means_.shape
        return self._family().mixture_parameters(K, D)

    def _weighted_loglik(self, X, sample_weight) -> tuple[float, float]:
        """sum_i w_i log p(x_i) at the MAP parameters, and sum_i w_i (N
        without weights)."""
        ll = self.score_samples(X, plug_in=True)
        w = V.check_sample_weight(sample_weight, ll.shape[0])
        if w is None:
            return float(ll.sum()), float(ll.shape[0])
        return float(np.dot(w[w > 0], ll[w > 0])), float(w.sum())

    def bic(self, X, sample_weight=None) -> float:
        """Bayesian information criterion, -2 log L + p log N (lower is
        better), at the MAP parameters whatever ``inference``; with
        ``sample_weight`` log L is weighted and N is the weights' sum (as
        for repeated rows, and as ``bic_`` of a weighted "auto" fit)."""
        ll, n = self._weighted_loglik(X, sample_weight)
        return float(-2 * ll + self._n_parameters() * math.log(n))

    def aic(self, X, sample_weight=None) -> float:
        """Akaike information criterion, -2 log L + 2p (lower is better),
        at the MAP parameters whatever ``inference``; ``sample_weight`` as
        in :meth:`bic`."""
        ll, _ = self._weighted_loglik(X, sample_weight)
        return float(-2 * ll + 2 * self._n_parameters())
