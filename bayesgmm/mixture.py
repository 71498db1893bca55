"""The :class:`BayesianGMM` estimator."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _predict, _validation as V
from .inference import (InitMethod, MixtureParams, Standardizer, component_log_prob, em_fit,
                        fused_svi_fit, initial_params, map_assignments, resolve_priors, sample_model,
                        svi_fit)
from .models import Priors

DeviceLike = Union[Literal["auto", "cpu", "cuda"], str, torch.device]

_INIT_OPTIONS = ("kmeans++", "kmeans", "random")
_BACKENDS = ("fused", "pyro")
# Rows per chunk in prediction: keeps the (rows, K, D) working tensors near
# 2**24 elements (64 MiB in float32) whatever the input size.
_CHUNK_ELEMENTS = 2 ** 24


def _svi(Xt, start: MixtureParams, pt, p: dict, callback):
    """The SVI stage with the chosen backend (see ``BayesianGMM.backend``)."""
    if p["backend"] == "pyro":
        return svi_fit(Xt, start, pt, p["K"], p["max_iter"], p["tol"], p["learning_rate"],
                       p["jit"], callback)
    return fused_svi_fit(Xt, start, pt, p["max_iter"], p["tol"], p["learning_rate"], callback)


def _progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (the notebook widget under Jupyter) when enabled; a
    disabled plain bar otherwise, so that a notebook without ipywidgets gets
    no warning from a bar nobody asked for."""
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


class BayesianGMM(DensityMixin, BaseEstimator):
    """Bayesian Gaussian mixture with diagonal covariances, fitted by MAP.

    The model (see :func:`bayesgmm.models.gmm_model`) puts a Dirichlet prior
    on the mixture weights, Normal priors on the component means and
    InverseGamma priors on the component scales.  The fit maximises the log
    joint with the assignments summed out: closed-form MAP-EM from a k-means++
    start climbs to the optimum quickly, and SVI (``TraceEnum_ELBO`` with an
    ``AutoDelta`` guide) continues from there on the same objective.  Set
    ``em_max_iter=0`` for pure SVI, as in Pyro's GMM tutorial.

    Parameters
    ----------
    n_components : int, default 2
        Number of mixture components K.
    priors : Priors, optional
        Hyperparameters in the data's units; fields left ``None`` are resolved
        from the data at fit time (stored in ``priors_``).
    init : {"kmeans++", "kmeans", "random"} or array of shape (K, D), default "kmeans++"
        Initial means: scikit-learn's k-means++ seeding, full k-means, K
        random data points, or the given means (in the data's units).
    n_init : int, default 4
        Restarts; the one with the lowest final loss is kept.
    max_iter : int, default 1000
        Maximum number of SVI steps (per restart when ``em_max_iter=0``).
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
        with the enumerated loss written as one torch expression: it equals
        ``TraceEnum_ELBO``'s loss at the same parameters (tested) and costs a
        fraction of the per-step time, since nothing is traced.
    jit : bool, default False
        With ``backend="pyro"``, use ``JitTraceEnum_ELBO``; falls back to
        ``TraceEnum_ELBO`` with a warning if tracing fails.
    device : {"auto", "cpu", "cuda"} or torch.device, default "auto"
        Where to fit: "auto" takes CUDA when available.
    random_state : int, RandomState or None
        Seed for the initialisation and SVI; the same seed gives the same fit
        on the same device.
    progress : bool, default False
        Show a progress bar (notebook-aware) with the current loss.

    Attributes
    ----------
    weights_ : ndarray of shape (K,)
    means_ : ndarray of shape (K, D)
    scales_ : ndarray of shape (K, D)
        Per-feature standard deviations of the components.
    priors_ : Priors
        The resolved hyperparameters (numpy arrays).
    loss_ : float
        Final loss: the negative log joint at the fitted parameters.
    losses_ : ndarray
        Loss history of the kept restart (EM iterations, then SVI steps).
    restart_losses_ : list of ndarray
        Loss history of every restart (EM stage; SVI stage when EM is off).
    best_restart_ : int
    n_iter_ : int
        EM iterations plus SVI steps of the kept restart.
    converged_ : bool
    device_ : torch.device
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> X = load_iris()[["petal_length"]]
    >>> gmm = BayesianGMM(n_components=2, random_state=0, device="cpu").fit(X)
    >>> np.round(np.sort(gmm.means_.ravel()), 1)
    array([1.5, 4.9])
    >>> gmm.predict(X).shape
    (150,)
    """

    def __init__(self, n_components: int = 2, *, priors: Optional[Priors] = None,
                 init: Union[InitMethod, Any] = "kmeans++", n_init: int = 4, max_iter: int = 1000,
                 em_max_iter: int = 500, tol: float = 1e-5, learning_rate: float = 0.01,
                 backend: Literal["fused", "pyro"] = "fused", jit: bool = False,
                 device: DeviceLike = "auto", random_state=None, progress: bool = False):
        self.n_components = n_components
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

    # ------------------------------------------------------------------ fit
    def _check_params(self, n_samples: int, n_features: int) -> dict:
        K = V.check_int("n_components", self.n_components, 1)
        if K > n_samples:
            raise ValueError(f"n_components={K} but only {n_samples} sample(s): "
                             f"use n_components <= {n_samples} or provide more data")
        p = dict(
            K=K,
            n_init=V.check_int("n_init", self.n_init, 1),
            max_iter=V.check_int("max_iter", self.max_iter, 0),
            em_max_iter=V.check_int("em_max_iter", self.em_max_iter, 0),
            tol=V.check_float("tol", self.tol, minimum=0.0, strict=False),
            learning_rate=V.check_float("learning_rate", self.learning_rate),
            device=V.resolve_device(self.device),
            jit=bool(self.jit),
            backend=V.check_option("backend", self.backend, _BACKENDS),
        )
        if p["max_iter"] == 0 and p["em_max_iter"] == 0:
            raise ValueError("max_iter=0 and em_max_iter=0 leave nothing to fit: "
                             "set max_iter > 0 (SVI) or em_max_iter > 0 (EM)")
        if not isinstance(self.jit, (bool, np.bool_)):
            raise ValueError(f"jit must be True or False, got {self.jit!r}")
        if self.jit and p["backend"] != "pyro":
            raise ValueError(f"jit=True applies to backend='pyro' (JitTraceEnum_ELBO), got "
                             f"backend={self.backend!r}: set backend='pyro' or jit=False")
        if not isinstance(self.progress, (bool, np.bool_)):
            raise ValueError(f"progress must be True or False, got {self.progress!r}")
        if isinstance(self.init, str):
            V.check_option("init", self.init, _INIT_OPTIONS)
        else:
            try:
                means = np.asarray(self.init, dtype=np.float64)
            except (TypeError, ValueError):
                means = None
            if means is None or means.shape != (K, n_features) or not np.all(np.isfinite(means)):
                got = f"{self.init!r}" if means is None else f"an array of shape {means.shape}"
                raise ValueError(
                    f"init must be one of {list(_INIT_OPTIONS)} or finite means of shape "
                    f"(n_components, n_features) = ({K}, {n_features}), got {got}")
        return p

    def fit(self, X, y=None) -> "BayesianGMM":
        """Fit the mixture to ``X`` (array-like, DataFrame, Series or tensor of
        shape (n_samples, n_features); 1-D input is one feature).

        A fit that fails or is interrupted (``KeyboardInterrupt``) leaves the
        previously fitted state untouched.

        Returns
        -------
        self
        """
        # The new state is built in locals and assigned at the end, but input
        # validation sets n_features_in_/feature_names_in_ up front: restore
        # them (and anything else) if the fit raises or is interrupted.
        # enable_grad: SVI needs autograd even when called under no_grad, and
        # its exit restores the caller's grad mode even if a KeyboardInterrupt
        # landed inside a torch.no_grad() __enter__ (which would otherwise
        # leave autograd off for the rest of the session).
        with _rollback_on_error(self), torch.enable_grad():
            return self._fit(X)

    def _fit(self, X) -> "BayesianGMM":
        X = V.check_X(self, X, reset=True)
        n, d = X.shape
        p = self._check_params(n, d)
        K, device = p["K"], p["device"]
        std, Xt, moments = Standardizer.fit_to(X, device)
        priors = resolve_priors(self.priors, X, K, moments)
        if not (np.all(np.isfinite(std.scale)) and np.all(np.isfinite(std.center))):
            # Beyond ~1e154 the squares in the standard deviation overflow.
            big = float(np.abs(X).max())
            raise ValueError(
                f"X has values too large to fit in float64 arithmetic (largest magnitude "
                f"{big:.3g}): rescale X, e.g. divide it by {10.0 ** math.floor(math.log10(big)):.0e}")
        pt = std.priors(priors, device)
        rs = check_random_state(self.random_state)
        seeds = rs.randint(0, 2 ** 31 - 1, size=p["n_init"] + 1)

        init = self.init
        if not isinstance(init, str):
            init = (np.asarray(init, dtype=np.float64) - std.center) / std.scale
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(int(seeds[-1]))
            start = initial_params(Xt, K, p["n_init"], init, pt, seeds[:-1])
            total = (p["em_max_iter"] if p["em_max_iter"] else 0) + p["max_iter"] * (
                1 if p["em_max_iter"] else p["n_init"])
            bar = _progress_bar(bool(self.progress), total, "BayesianGMM")

            def show(it, loss):
                bar.update(1)
                if it % 10 == 0:
                    bar.set_postfix(loss=f"{loss + std.loss_offset(n, K):.4g}")

            # No callback without a bar: the fit loops would otherwise read
            # the loss back from the device every step for nothing.
            callback = show if self.progress else None

            try:
                result = self._run(Xt, start, pt, p, callback)
            finally:
                bar.close()
        params, losses, restart_losses, best, n_iter, converged = result
        if not math.isfinite(float(losses[-1])):
            raise ValueError(
                "the fit diverged (non-finite loss) in every restart: check the data for extreme "
                "values, or raise Priors.scale_rate / lower learning_rate")
        offset = std.loss_offset(n, K)
        w, m, s = std.params_from_std(params)
        self.weights_ = w
        self.means_ = m
        self.scales_ = s
        self.priors_ = priors
        self.losses_ = np.asarray(losses, dtype=np.float64) + offset
        self.loss_ = float(self.losses_[-1])
        self.restart_losses_ = [np.asarray(r, dtype=np.float64) + offset for r in restart_losses]
        self.best_restart_ = int(best)
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.device_ = device
        return self

    @staticmethod
    def _run(Xt, start: MixtureParams, pt, p, callback):
        """EM on all restarts, then SVI on the best; or SVI per restart."""
        K = p["K"]
        if p["em_max_iter"] > 0:
            em = em_fit(Xt, start, pt, p["em_max_iter"], p["tol"], callback)
            final = em.losses[:, -1]
            best = int(torch.argmin(final))
            restart_losses = [em.losses[r].double().cpu().numpy() for r in range(em.losses.shape[0])]
            em_best = em.params.select(best)
            em_hist = restart_losses[best]
            if p["max_iter"] == 0 or not math.isfinite(em_hist[-1]):
                return em_best, em_hist, restart_losses, best, em.n_iter, em.converged
            svi = _svi(Xt, em_best, pt, p, callback)
            svi_hist = svi.losses.double().cpu().numpy()
            if not math.isfinite(svi_hist[-1]):
                warnings.warn(
                    f"SVI diverged (non-finite loss after {svi.n_iter} step(s)); keeping the EM "
                    f"solution: lower learning_rate (now {p['learning_rate']}) to refine it by SVI",
                    RuntimeWarning, stacklevel=3)
            # Adam may settle marginally above the EM optimum; both optimise
            # the same objective, so keep whichever point is better.
            if svi_hist[-1] <= em_hist[-1]:
                params, losses = svi.params, np.concatenate([em_hist[:-1], svi_hist])
            else:
                params, losses = em_best, np.concatenate([em_hist[:-1], svi_hist, em_hist[-1:]])
            return (params, losses, restart_losses, best, em.n_iter + svi.n_iter,
                    em.converged and svi.converged)
        fits = [_svi(Xt, start.select(r), pt, p, callback) for r in range(start.weights.shape[0])]
        restart_losses = [f.losses.double().cpu().numpy() for f in fits]
        best = int(np.argmin([h[-1] for h in restart_losses]))
        f = fits[best]
        return f.params, restart_losses[best], restart_losses, best, f.n_iter, f.converged

    # ---------------------------------------------------------- prediction
    def _prepare(self, X):
        """Fitted check, validation, and the fitted mixture as tensors in a
        standardised frame taken from the mixture's own moments (any affine
        frame gives the same answers; this one needs no state beyond the
        public fitted attributes)."""
        check_is_fitted(self, ("weights_", "means_", "scales_"))
        X, out_device = _predict.check_input(self, X)
        device = _predict.model_device(self)
        center = self.weights_ @ self.means_
        # Deviations from the centre, not E[x^2] - E[x]^2: the latter cancels
        # catastrophically when the spread is tiny next to the offset (data
        # around 1e8 with scales of 1e-10 gave a negative variance, NaN output).
        # Divided by the largest deviation per feature before squaring, so
        # that spreads like 1e-200 do not underflow to a zero variance.
        dev = self.means_ - center
        ref = np.maximum(self.scales_.max(axis=0), np.abs(dev).max(axis=0))
        ref = np.where(ref > 0, ref, 1.0)
        var = self.weights_ @ ((self.scales_ / ref) ** 2 + (dev / ref) ** 2)
        std = Standardizer(center=center, scale=ref * np.sqrt(var))
        params = std.params_to_std(self.weights_, self.means_, self.scales_, device)
        return X, out_device, std, params, device

    def _rows(self) -> int:
        """Rows per prediction block: (rows, K, D) working tensors near
        _CHUNK_ELEMENTS elements."""
        K, D = self.means_.shape
        return max(1, _CHUNK_ELEMENTS // (K * D))

    def _log_joint(self, X, joint: bool = True, normalise: bool = False,
                   density: bool = True) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """The one log-probability primitive: log w_k + log N(x | mu_k, s_k)
        per point and component, in the data's units, chunked over points.
        Returns (log_joint (N, K), log_density (N,)).

        Everything but the returned arrays is per chunk (the log-sum-exp
        too), so memory beyond the outputs stays bounded at any N.
        ``joint=False`` skips the (N, K) array (returns None in its place);
        ``normalise=True`` returns log p(z = k | x) in its place;
        ``density=False`` skips the (N,) array (None in its place)."""
        X, out_device, std, params, device = self._prepare(X)
        n = X.shape[0]
        out = _predict.new_output(out_device, (n, self.means_.shape[0]), np.float64) if joint else None
        dens = _predict.new_output(out_device, (n,), np.float64) if density else None
        offset = float(np.log(std.scale).sum())
        rows = self._rows()
        with torch.no_grad():
            for a, b, z in _predict.blocks(X, rows, device, std.center, std.scale):
                lp = component_log_prob(z, params).double() - offset
                ld = torch.logsumexp(lp, -1)
                if density:
                    _predict.put(dens, slice(a, b), ld)
                if joint:
                    _predict.put(out, slice(a, b), lp - ld.unsqueeze(-1) if normalise else lp)
        return out, dens

    def predict_proba(self, X) -> np.ndarray:
        """Exact responsibilities p(z = k | x) at the MAP parameters, shape (N, K)."""
        log_resp, _ = self._log_joint(X, normalise=True, density=False)
        if isinstance(log_resp, torch.Tensor):
            return log_resp.exp_()
        return np.exp(log_resp, out=log_resp)

    def score_samples(self, X) -> np.ndarray:
        """log p(x) of each point under the fitted mixture, shape (N,)."""
        return self._log_joint(X, joint=False)[1]

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per point (higher is better, as in scikit-learn)."""
        return float(self.score_samples(X).mean())

    def predict(self, X) -> np.ndarray:
        """MAP component of each point, from ``infer_discrete`` (temperature 0)
        on the model conditioned on the fitted parameters."""
        return self._assignments(X, temperature=0, n_draws=None)

    def sample_assignments(self, X, n_samples: int = 1) -> np.ndarray:
        """Posterior draws of the assignments z ~ p(z | x, params) from
        ``infer_discrete`` at temperature 1, shape (n_samples, N).

        Seeded by ``random_state``."""
        n_samples = V.check_int("n_samples", n_samples, 1)
        return self._assignments(X, temperature=1, n_draws=n_samples)

    def _assignments(self, X, temperature: int, n_draws: Optional[int]) -> np.ndarray:
        X, out_device, std, params, device = self._prepare(X)
        K = self.means_.shape[0]
        priors = std.priors(self.priors_, device)
        n = X.shape[0]
        # Points per chunk: the draws multiply the working set.
        step = max(1, _CHUNK_ELEMENTS // (self.means_.size * (n_draws or 1)))
        # Filled chunk by chunk: collecting parts and concatenating would hold
        # the labels three times over at the end.
        out = _predict.new_output(out_device, (n,) if n_draws is None else (n_draws, n), np.int64)
        with self._rng(device):
            for a, b, z in _predict.blocks(X, step, device, std.center, std.scale):
                labels = map_assignments(z, params, priors, K, temperature=temperature,
                                         n_draws=n_draws)
                _predict.put(out, (Ellipsis, slice(a, b)), labels)
        return out

    def _rng(self, device):
        """A torch RNG scope seeded from ``random_state`` that leaves the
        caller's global RNG untouched."""
        import contextlib

        seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 1))

        @contextlib.contextmanager
        def scope():
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                yield
        return scope()

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit, then return ``predict(X)`` at the final parameters."""
        return self.fit(X).predict(X)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw points from the fitted mixture (by running the Pyro model at
        the fitted parameters).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, ("weights_", "means_", "scales_"))
        n_samples = V.check_int("n_samples", n_samples, 1)
        device = _predict.model_device(self)
        center = np.zeros(self.means_.shape[1])
        std = Standardizer(center=center, scale=np.ones_like(center))
        params = std.params_to_std(self.weights_, self.means_, self.scales_, device,
                                   dtype=torch.float64)
        priors = std.priors(self.priors_, device, dtype=torch.float64)
        with self._rng(device):
            x, z = sample_model(params, priors, self.means_.shape[0], n_samples)
        return x.cpu().numpy(), z.cpu().numpy().astype(np.int64)

    # ------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        K, D = self.means_.shape
        return (K - 1) + 2 * K * D

    def bic(self, X) -> float:
        """Bayesian information criterion, -2 log L + p log N (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * ll.sum() + self._n_parameters() * math.log(ll.shape[0]))

    def aic(self, X) -> float:
        """Akaike information criterion, -2 log L + 2p (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * ll.sum() + 2 * self._n_parameters())

    # ---------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Save the estimator (hyperparameters and fitted state) to ``path``.

        The file is a zip archive holding the arrays as safetensors and
        everything else as JSON (see :mod:`bayesgmm.persistence`); loading it
        never runs code from the file.  The write is atomic: an interrupted
        save leaves any previous file at ``path`` intact.  Use this, not
        pickle/joblib, for files you share or receive.

        Examples
        --------
        >>> import os, tempfile
        >>> from bayesgmm import BayesianGMM, load
        >>> from bayesgmm.datasets import load_iris
        >>> X = load_iris()[["petal_length"]]
        >>> gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
        >>> path = os.path.join(tempfile.mkdtemp(), "iris.bgmm")
        >>> gmm.save(path)
        >>> (load(path).predict(X) == gmm.predict(X)).all()
        True
        """
        from .persistence import save
        save(self, path)

    @classmethod
    def load(cls, path, *, device=None) -> "BayesianGMM":
        """Load an estimator saved by :meth:`save`; refuses any other kind.

        ``device`` ("cpu", "cuda", ...) sets where the loaded model predicts
        (``device_``); by default the saved device, or the CPU when it is a
        GPU this machine lacks.  See :func:`bayesgmm.persistence.load`.
        """
        from .persistence import load
        return load(path, device=device, expect=cls)


def _rollback_on_error(estimator):
    """Context manager: on any exception (``KeyboardInterrupt`` included),
    restore the estimator's attributes as they were on entry.

    A shallow snapshot suffices because fitting assigns new objects and never
    mutates fitted arrays in place."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        saved = dict(vars(estimator))
        try:
            yield
        except BaseException:
            vars(estimator).clear()
            vars(estimator).update(saved)
            raise
    return scope()
