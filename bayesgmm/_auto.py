"""Fitting a batch of candidate mixtures and keeping the best: restarts, and
for ``n_components="auto"`` every candidate K, chosen by BIC.

One code path for both estimators: a :class:`~bayesgmm.BayesianGMM` is the
one-group case of the :class:`~bayesgmm.GMMClassifier`'s per-class batch.
Restarts and candidate K are batch dimensions of one closed-form MAP-EM run
(:func:`bayesgmm.fitting.em_fit`, components beyond a variant's K masked);
per group the best restart of each K is kept, K is chosen by BIC, and the
caller polishes only the chosen mixture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import _validation as V
from .covariance import Covariance
from .fitting import (Callback, FitTrace, em_fit, first_best, initial_params, log_prior,
                      negative_log_joint, trim)
from .priors import MixtureParams, PriorTensors

# Tolerance (nats per point per iteration) of the "auto" scan over K: BIC
# differences between candidate K are tens of nats, far above what the last
# EM iterations change, so the scan stops early and only the chosen K is
# polished to the estimator's ``tol``.
AUTO_SCAN_TOL = 1e-4

# The restart screen of a fixed K: every restart runs EM to this looser
# tolerance, and only the SCREEN_KEEP best per group (by their loss there)
# continue to the estimator's ``tol``; the best of those is kept.  The last
# EM iterations move a restart's loss by far less than the gaps between
# distinct optima, and the continued pairs run as one batch (whose cost per
# iteration is mostly fixed), so keeping two costs little more than one
# and guards against two restarts that the screen ranks wrongly.
RESTART_SCREEN_TOL = 1e-3
SCREEN_KEEP = 2


def is_auto(n_components) -> bool:
    """Whether ``n_components`` asks for K chosen by BIC."""
    return isinstance(n_components, str) and n_components == "auto"


def check_max_components(n_components, max_components, em_max_iter: int) -> int:
    """``max_components`` checked; with "auto", also that EM is on: the
    candidates are ranked by their EM fits, and at their initialisation
    (k-means++ seeds) BIC picks a wrong K even on clear clusters."""
    if is_auto(n_components) and em_max_iter == 0:
        raise ValueError(
            "n_components='auto' ranks every candidate K by its EM fit, but em_max_iter=0 "
            "switches EM off: set em_max_iter > 0 (SVI then continues the chosen K for "
            "max_iter steps where EM stops short), or give n_components an integer")
    return V.check_int("max_components", max_components, 1)


def component_cap(family: Covariance, n_features: int, max_components: int,
                  rows: Optional[np.ndarray], mass: np.ndarray) -> np.ndarray:
    """The largest K tried per group (at least 1): K up to ``max_components``
    whose mixture has fewer free parameters than the group's total weight
    (``mass`` (G,): its number of points without weights), and no more
    components than rows of positive weight (``rows`` (G,)); more cannot be
    estimated, and each K tried costs a batch of mixtures.  By the weight,
    not the rows, so that integer weights try the K that the rows repeated
    would.  ``rows=None``: the bound by the weight alone, the same for
    weighted and repeated rows (the K whose seeding scales the default
    covariance priors of a scan, :func:`bayesgmm._base.seeded_priors`)."""
    mass = np.atleast_1d(mass)
    rows = [max_components] * mass.size if rows is None else np.atleast_1d(rows)

    def largest(n, m) -> int:
        # The free parameters grow with K: stop at the first K too many (a
        # huge max_components costs nothing beyond the K the data allow).
        k = 1
        while k < min(max_components, int(n)) and \
                family.mixture_parameters(k + 1, n_features) < m:
            k += 1
        return k

    return np.array([largest(n, m) for n, m in zip(rows, mass)])


def bic_columns(max_components: int, rows) -> int:
    """Columns of the BIC table, K = 1.. this: ``max_components``, but no
    more than the most rows of positive weight of any group (``rows``): a
    larger K is never tried (:func:`component_cap`), and a table padded to
    a huge ``max_components`` would be mostly inf (1e8 columns: 800 MB)."""
    return int(min(max_components, max(1, int(np.max(rows)))))


@dataclass
class Selection:
    """The kept mixture of each group, cut to the largest K kept:
    ``params`` (batch (G,)), ``mask`` (G, K) its real components,
    ``variant`` (G,) the kept variant (restart r, or r * M + k - 1 for
    "auto" with M candidate K), ``bic`` (G, :func:`bic_columns`) for "auto" (inf
    for K not tried), else None; ``trace`` EM's record of every variant
    (None without EM; the screen's, when the restarts were screened), the
    iterations (the longest variant's, both stages) and whether every kept
    variant converged."""

    params: MixtureParams
    mask: torch.Tensor
    variant: torch.Tensor
    bic: Optional[np.ndarray]
    trace: Optional[FitTrace]
    n_iter: int
    converged: bool

    @property
    def n_components(self) -> np.ndarray:
        """K of each group's kept mixture (G,)."""
        return self.mask.sum(-1).cpu().numpy().astype(np.int64)


def candidate_mask(ks: Optional[np.ndarray], cap: np.ndarray, n_init: int,
                   device) -> torch.Tensor:
    """Real components of every variant, (B, G, K): the restarts of each
    group's K (``ks`` (G,)), or for "auto" (``ks`` None) the restarts of
    every candidate K = 1..max(cap), variant r * M + k - 1, K capped per
    group at ``cap`` (a group's variants beyond its cap repeat its cap)."""
    if ks is None:
        k_max = int(cap.max())
        ar = torch.arange(k_max, device=device)
        kc = torch.arange(1, k_max + 1, device=device)
        k_var = torch.minimum(kc.unsqueeze(1), torch.as_tensor(cap, device=device))     # (M, G)
        return (ar < k_var.unsqueeze(-1)).repeat(n_init, 1, 1)                            # (R*M, G, K)
    k_max = int(ks.max())
    ar = torch.arange(k_max, device=device)
    return (ar < torch.as_tensor(ks, device=device).unsqueeze(-1)).expand(n_init, ks.size, k_max)


def fit_candidates(groups, centres: torch.Tensor, ks: Optional[np.ndarray], cap: np.ndarray,
                   pt: PriorTensors, family: Covariance, em_max_iter: int, tol: float,
                   callback: Callback, mass: np.ndarray, loglik_offset: np.ndarray,
                   max_components: int, what: str = "", depth: int = 0,
                   columns: Optional[int] = None) -> Selection:
    """Fit every variant from ``centres`` (R, G, K, D: one k-means++ seeding
    of K = max(ks) or max(cap) per restart and group, whose first k seeds
    seed the K = k variant) and keep the best per group.

    ``ks`` (G,): fixed K per group, the best restart kept; None for
    "auto": every K = 1..max(cap) fitted (to the looser
    :data:`AUTO_SCAN_TOL`, enough to rank K) and the K of lowest BIC kept,
    with ``mass`` (G,) the groups' sizes (total weight) and
    ``loglik_offset`` (G,) log L in standardised units minus log L in the
    data's (:meth:`bayesgmm._base.FitData.loglik_offset`), so that the BIC
    table is in the data's units.  Without EM (``em_max_iter`` 0, fixed K
    only: see :func:`check_max_components`) the restarts are ranked at
    their initialisation.  With a fixed K and more than ``SCREEN_KEEP``
    restarts (and ``tol`` below :data:`RESTART_SCREEN_TOL`, EM on), the
    restarts are screened: all run EM to :data:`RESTART_SCREEN_TOL`, the
    ``SCREEN_KEEP`` best per group continue to ``tol`` (``em_max_iter``
    bounding each restart's iterations over both), and the best of those
    is kept; ``trace`` is then the screen's record.  ``what``/``depth``
    name the groups and place the warning as
    :func:`~bayesgmm._base.guard_stage` does."""
    auto = ks is None
    R = centres.shape[0]
    device = centres.device
    mask = candidate_mask(ks, cap, R, device)
    if auto:
        # One seeding of max(cap) centres per restart serves every K:
        # variant r * M + (k - 1) takes its first k.
        centres = centres.repeat_interleave(int(cap.max()), dim=0)
    start = initial_params(groups, centres, mask, pt, family)
    trace, n_iter, converged = None, 0, True
    polish = None
    if em_max_iter > 0:
        screened = not auto and R > SCREEN_KEEP and tol < RESTART_SCREEN_TOL
        scan_tol = max(tol, AUTO_SCAN_TOL) if auto else (RESTART_SCREEN_TOL if screened else tol)
        trace = em_fit(groups, start, mask, pt, family, em_max_iter, scan_tol, callback)
        params, final = trace.params, trace.losses[..., -1]
        n_iter, converged = trace.n_iter, trace.converged
        if screened:
            # The best SCREEN_KEEP restarts per group continue to ``tol``.
            G = mask.shape[1]
            grp = torch.arange(G, device=device).expand(SCREEN_KEEP, G)
            order = torch.argsort(final, dim=0, stable=True)[:SCREEN_KEEP]  # (m, G)
            # em_max_iter bounds each restart's iterations over both stages;
            # a progress bar grows by the screen's iterations, so that the
            # two stages' never overrun it.
            if callback is not None and hasattr(callback, "add"):
                callback.add(n_iter)
            polish = em_fit(groups, params.select((order, grp)), mask[order, grp], pt, family,
                            em_max_iter, tol, callback, spent=trace.iterations[order, grp],
                            last_loss=trace.previous_loss()[order, grp])
            params, final, mask = polish.params, polish.losses[..., -1], mask[order, grp]
            n_iter = max(n_iter, int(polish.iterations.max()))
            converged = polish.converged
    else:
        params = start
        B, G, K = mask.shape
        flat = params.map(lambda t: t.reshape((B * G,) + t.shape[2:]))
        gidx = torch.arange(G, device=device).repeat(B)
        final = negative_log_joint(groups, flat, gidx, pt, family,
                                   mask.reshape(B * G, K)).reshape(B, G)
    params, kept_mask, bic, variant = _select(params, final, mask, pt, family, mass, cap,
                                              loglik_offset, max_components if auto else 0, R,
                                              what, depth, columns)
    if trace is not None:
        # Converged: each group's kept variant stopped before the budget
        # (trace.converged is every variant's).
        g = torch.arange(variant.shape[0], device=device)
        last = trace if polish is None else polish
        converged = bool((last.iterations[variant, g] < em_max_iter).all()) or converged
        if polish is not None:
            variant = order[variant, g]          # back to the restart's index
    k_max = int(kept_mask.sum(-1).max())
    return Selection(trim(params, k_max, family), kept_mask[:, :k_max], variant, bic, trace,
                     n_iter, converged)


def warn_parameter_cap(K: int, cap: int, max_components: int, family: Covariance, D: int,
                       mass: float, stacklevel: int) -> None:
    """Warn when a clustering's "auto" chose ``K``, the largest K the data's
    weight ``mass`` allowed (``cap``), below ``max_components``: the larger
    K were never tried (wine, 178 points in 13-D, full covariances: K = 1,
    "one cluster", silently, where K = 2 given explicitly had the lower
    BIC).  Not where the rows stopped the scan (no larger K can be fitted
    at all); not for a classifier's classes, whose one component each is a
    sound default on few points (the caller decides)."""
    k1 = cap + 1
    p = family.mixture_parameters(k1, D)
    if not (K == cap < max_components and p >= mass):
        return
    fewer = {"full": "'diag', 'tied' or 'spherical'", "tied": "'diag' or 'spherical'",
             "diag": "'spherical'"}.get(family.name)
    warnings.warn(
        f"n_components='auto' chose K={K}, the largest K the data allow (K={k1} has {p} free "
        f"parameters, not fewer than the {mass:.10g} points), so larger K were not tried and "
        f"BIC may still fall beyond it: give n_components explicitly (the priors make a "
        f"larger K estimable)"
        + (f", or use a covariance type with fewer parameters ({fewer})" if fewer else ""),
        UserWarning, stacklevel=stacklevel + 1)


def log_likelihood(losses: torch.Tensor, params: MixtureParams, pt: PriorTensors,
                   family: Covariance, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log L at the fitted parameters from the negative log joint
    ``losses`` (float64, standardised units): the loss minus the log prior,
    evaluated in float64 as the loss is."""
    p = params.map(lambda t: t.double())
    p = MixtureParams(p.weights / p.weights.sum(-1, keepdim=True), p.means, p.cov)
    return -losses.double() - log_prior(p, pt.to(torch.float64), family, mask)


def bic_values(loglik: np.ndarray, n_components: np.ndarray, family: Covariance, n_features: int,
               mass: np.ndarray, loglik_offset: np.ndarray) -> np.ndarray:
    """BIC, -2 log L + p log n, in the data's units: ``loglik`` in
    standardised units (any shape ending in G), p the free parameters of a
    mixture of ``n_components`` (same shape), n the group's size ``mass``."""
    n_par = np.vectorize(lambda k: family.mixture_parameters(int(k), n_features))(n_components)
    return -2 * (loglik - loglik_offset) + n_par * np.log(mass)


def _select(params: MixtureParams, final: torch.Tensor, mask: torch.Tensor, pt, family,
            mass, cap, loglik_offset, max_components: int, R: int, what: str, depth: int,
            columns: Optional[int] = None):
    """Best restart per group (and, for "auto", best K per group by BIC).

    ``max_components``: 0 for fixed K, else "auto" tried K = 1..M per
    group, up to ``cap``.  Returns group parameters (G, K, ...), their mask
    (G, K), the BIC table (G, ``columns`` or max_components: :func:`bic_columns`)
    (None unless auto), and the
    variant kept for each group (G,)."""
    auto = max_components > 0
    B, G, K = params.weights.shape
    D = params.means.shape[-1]
    grp = torch.arange(G, device=final.device)
    if not auto:
        idx = first_best(final)                                 # (G,), on final's device
        return params.select((idx, grp)), mask[idx, grp], None, idx
    M = B // R
    f = final.reshape(R, M, G)
    best_r = first_best(f)                                      # (M, G)
    var = best_r * M + torch.arange(M, device=final.device).unsqueeze(1)   # (M, G)
    gl = grp.unsqueeze(0).expand(M, G)
    sel, msel = params.select((var, gl)), mask[var, gl]
    loglik = log_likelihood(f.gather(0, best_r.unsqueeze(0))[0], sel, pt, family, msel)
    k = np.arange(1, M + 1)[:, None]
    bic = bic_values(loglik.cpu().numpy(), np.broadcast_to(k, (M, G)), family, D,
                     np.asarray(mass, dtype=np.float64)[None, :],
                     np.asarray(loglik_offset, dtype=np.float64)[None, :])
    bic = np.where(k <= cap[None, :], bic, np.inf)              # K capped per group
    bic = np.where(np.isfinite(bic), bic, np.inf)
    k_best = np.argmin(bic, axis=0)                             # (G,)
    at_cap = np.flatnonzero(k_best == max_components - 1)
    if at_cap.size:
        whose = f" for {at_cap.size} {what}" if what else ""
        warnings.warn(
            f"n_components='auto' chose the largest K tried "
            f"(max_components={max_components}){whose}: BIC may still fall beyond it; "
            f"raise max_components", UserWarning, stacklevel=6 + depth)
    idx = var[torch.as_tensor(k_best, device=final.device), grp]
    # One column per K in 1..columns (max_components, or fewer where no
    # group has that many rows: bic_columns); K beyond every group's cap
    # were not fitted (BIC inf, as for K beyond one group's cap).
    width = max_components if columns is None else columns
    bic = np.pad(bic.T, ((0, 0), (0, width - M)), constant_values=np.inf)
    return params.select((idx, grp)), mask[idx, grp], bic, idx
