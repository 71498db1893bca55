"""What the two estimators share: typed settings checked at fit, the fit
wrapper (rollback on failure, grad mode), the progress bar, the fitted
covariance attributes and their standardised frame, and save/load."""

from __future__ import annotations

import contextlib
import os
import math
import numbers
import threading
import warnings
from dataclasses import dataclass, fields, replace
from typing import Literal, Optional, Union

import numpy as np
import torch

from . import _predict, _validation as V, persistence
from . import covariance as cov_module
from ._options import DTYPES, STREAM_STATS
from .covariance import COVARIANCE_TYPES, Covariance
from ._validation import check_result_size
from .fitting import RESTART_COPIES, Stats, e_step, m_step, masked, seeded_spread
from .priors import (MixtureParams, Priors, Standardizer, data_moments, pair_coverage,
                     resolve_priors, rms, spread_of, standard_scale)

DeviceLike = Union[Literal["auto", "cpu", "cuda"], str, torch.device]
InitMethod = Literal["kmeans++", "kmeans", "random"]
INIT_OPTIONS = ("kmeans++", "kmeans", "random")


@dataclass(frozen=True)
class FitSettings:
    """The estimator arguments every fit uses, validated (see
    :meth:`MixtureBase._settings`)."""

    covariance_type: str
    n_init: int
    max_iter: int
    em_max_iter: int
    tol: float
    learning_rate: float
    device: torch.device
    progress: bool
    dtype: torch.dtype


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (the notebook widget under Jupyter) when enabled; a
    disabled plain bar otherwise, so that a notebook without ipywidgets gets
    no warning from a bar nobody asked for."""
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


class FitProgress:
    """A fit's progress bar, called once per iteration (EM) or step (SVI,
    fine-tuning).  Its total is the budget of the stages planned at the
    start; a stage that starts only when needed (SVI where EM stopped short)
    adds its budget with :meth:`add`; and a fit that ends early, by
    convergence, ends the bar full, at the iterations it ran (a total of
    1500 that stopped at 6% told users nothing)."""

    def __init__(self, enabled: bool, total: int, desc: str,
                 offset: Optional[float] = None) -> None:
        self.enabled = enabled
        self.bar = progress_bar(enabled, total, desc)
        self.offset = offset

    def __call__(self, it: int, loss: float) -> None:
        """One iteration; ``loss``: the fit's best restart's (standardised
        units), shown with ``offset`` in the data's units."""
        self.bar.update(1)
        if it % 10 == 0 and self.offset is not None:   # the loss in the data's units
            self.bar.set_postfix(loss=f"{loss + self.offset:.4g}")

    @property
    def callback(self):
        """The per-iteration callback, or None without a bar: the fit loops
        would otherwise read the loss back from the device every step for
        nothing."""
        return self if self.enabled else None

    def add(self, steps: int) -> None:
        if self.enabled:
            self.bar.total += steps
            self.bar.refresh()

    def close(self) -> None:
        if self.enabled:
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.bar.close()


_THREADS = threading.local()


def max_threads() -> int:
    """The most CPU threads a fit may ask torch for: four per core this
    machine has, and at least 256.  Far more (100,000 threads) crashed the
    Python process inside OpenMP (a segmentation fault), or failed in
    torch's integer conversion (2**31)."""
    return max(256, 4 * (os.cpu_count() or 1))


def check_threads(n_threads, here: bool = True) -> Optional[int]:
    """``n_threads`` checked: None (torch's own setting) or 1 to
    :func:`max_threads` (``here`` False: its form only, for a model saved
    or kept for another machine, whose cap may be higher)."""
    if n_threads is None:
        return None
    V.check_int("n_threads", n_threads, 1)
    cap = max_threads()
    if here and n_threads > cap:
        raise ValueError(f"n_threads must be in [1, {cap}], got {n_threads}: this machine has "
                         f"{os.cpu_count()} CPU core(s), and more threads than cores only slow "
                         f"a fit; use n_threads <= {os.cpu_count()} (or None, torch's setting)")
    return int(n_threads)


#: The most iterations ``max_iter`` and ``em_max_iter`` take (int64 counters).
MAX_ITERATIONS = 2 ** 63 - 1
#: The largest SVI step: beyond it Adam's float32 update overflows inside
#: torch (1e300 raised "value cannot be converted to type float").
MAX_LEARNING_RATE = 1e30


def check_learning_rate(value) -> float:
    """``learning_rate``: a positive number up to :data:`MAX_LEARNING_RATE`."""
    lr = V.check_float("learning_rate", value)
    if lr > MAX_LEARNING_RATE:
        raise ValueError(f"learning_rate must be at most {MAX_LEARNING_RATE:g} (Adam's step, in "
                         f"units of the data's spread; the default is 0.01), got {lr:g}")
    return lr


#: A posterior run's peak memory over the size of the draws it keeps
#: (float64 weights, means, covariances): 4.8-5.4 measured (VI, D = 2 and
#: 10, 200,000 draws: peak RSS growth over the stored draws); counted as 6.
DRAWS_WORKING_FACTOR = 6.0


def check_draws_size(n_samples, n_draws: int, family: Covariance, K: int, D: int,
                     default: str, classes: int = 1, n_chains: int = 1,
                     requested: Optional[int] = None) -> None:
    """The posterior run for ``n_draws`` draws of ``classes`` mixtures of K
    components in D features within this machine's memory (the draws kept,
    times :data:`DRAWS_WORKING_FACTOR`), checked before it starts;
    ``default``: the estimator's default ``n_samples``, said in the remedy.
    NUTS's ``n_chains`` is named with it where the chains keep more than
    the ``requested`` draws (each keeps at least one)."""
    per = K + K * D + int(np.prod(family.covariance_shape(K, D)))
    chains = n_chains > 1 and requested is not None and n_draws > requested
    check_result_size(f"n_samples={n_samples!r}"
                      + (f" over n_chains={n_chains} ({n_draws} draws kept)" if chains else ""),
                      int(DRAWS_WORKING_FACTOR * 8) * int(classes) * int(n_draws) * int(per),
                      f"keep fewer posterior draws (the default: {default})"
                      + (" or run fewer chains (the default: n_chains=4)" if chains else ""))


@contextlib.contextmanager
def fit_context(n_threads: Optional[int]):
    """What every fit runs in: autograd on whatever the caller's mode (SVI,
    NUTS and the pyro backend need gradients; under a caller's
    ``torch.inference_mode()`` enable_grad alone left them without, a
    RuntimeError from torch or, for the pyro backend, a silently other fit)
    and the fit's threads (:func:`fit_threads`)."""
    with torch.inference_mode(False), torch.enable_grad(), fit_threads(n_threads):
        yield


@contextlib.contextmanager
def fit_threads(n_threads: Optional[int]):
    """torch's CPU threads for one fit: ``n_threads`` when given (the
    calling thread's setting restored when its outermost fit ends), torch's
    own setting when None.  Not chosen automatically: torch's count is per
    thread in OpenMP builds, and a thread that first uses torch while
    another thread has changed it keeps the changed value, so a library
    that changed it behind the user's back could leave their other threads
    slowed for good."""
    if n_threads is None:
        yield
        return
    depth = getattr(_THREADS, "depth", 0)
    if depth == 0:
        _THREADS.saved = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    _THREADS.depth = depth + 1
    try:
        yield
    finally:
        _THREADS.depth = depth
        if depth == 0:
            torch.set_num_threads(_THREADS.saved)


@contextlib.contextmanager
def rollback_on_error(estimator):
    """On any exception (``KeyboardInterrupt`` included) restore the
    estimator's attributes as they were on entry.  A shallow snapshot
    suffices because fitting assigns new objects and never mutates fitted
    arrays in place."""
    saved = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(saved)
        raise


def check_overflow(std: Standardizer, X: np.ndarray, family: Covariance,
                   moments: tuple[np.ndarray, np.ndarray],
                   constant: Optional[np.ndarray] = None, reduce=None, device=None,
                   names=None) -> None:
    """Refuse data whose per-feature variances are not normal float64
    numbers: covariances (and their priors) live in squared data units, so a
    spread beyond ~1e154 (its square overflows; also a constant feature
    beyond ~1e157, whose fallback spread is 1e-3 of its magnitude) or below
    ~1e-154 (its square is subnormal or zero) cannot be represented.
    ``constant`` (D,) bool (:func:`constant_features`, the same on every
    process): a feature that varies but whose mean and computed spread are
    both below ``_TINY`` (values like +-1e-300 around 0, whose squared
    deviations underflow to 0) would get the all-zero feature's scale 1 and
    fit as a constant in float32 (silently); it is refused the same way.
    ``X``: rows of the data (all, or a sample), for the messages only;
    ``reduce``: every process's (the refusal is decided on reduced moments,
    so every rank takes it; the remedy is sized on the values of them all);
    ``names``: the data's column names, which the messages then use for the
    features (else their indices)."""
    with np.errstate(all="ignore"):
        sq = std.scale.astype(np.float64) ** 2
    if not (np.all(np.isfinite(std.scale)) and np.all(np.isfinite(std.center))
            and np.all(np.isfinite(sq))):
        with np.errstate(all="ignore"):
            # The features whose own mean or variance overflows (an
            # isotropic scale can overflow from their sum alone: then none).
            mean, sd = (np.asarray(v, dtype=np.float64) for v in moments)
            cols = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(sd * sd)))
            part = X[:, cols] if cols.size and X.ndim == 2 and X.shape[1] == mean.size else X
            finite = np.abs(part[np.isfinite(part)])
            big = float(finite.max()) if finite.size else math.nan
            if not (math.isfinite(big) and big > 0):
                # Out-of-core rows come back from the overflowed frame: the
                # magnitude is then the means'.
                means = np.abs(np.asarray(moments[0], dtype=np.float64))
                big = float(np.max(means[np.isfinite(means)], initial=0.0))
        if reduce is not None:
            from .distributed import reduce_extremes
            # The largest over every rank's values (the refusal is every
            # rank's): one remedy, not "divide by 1" on a rank of small values.
            big = float(reduce_extremes(0.0, big if math.isfinite(big) else 0.0, reduce,
                                        device)[1])
        what, it = ((f" in feature(s) {feature_list(names, cols[:10])}"
                     + (f" and {cols.size - 10} more" if cols.size > 10 else ""), "them")
                    if cols.size else ("", "X"))
        hint = (f" (largest magnitude {big:.3g}): rescale {it}, e.g. divide "
                f"{'them' if cols.size else 'it'} by {10.0 ** math.floor(math.log10(big)):.0e}"
                if math.isfinite(big) and big > 0 else f": rescale {it}")
        raise ValueError(f"X has values too large to fit in float64 arithmetic{what}{hint}")
    from .priors import _TINY

    small = sq < np.finfo(np.float64).tiny
    if constant is not None:
        mean, sd = (np.asarray(v, dtype=np.float64) for v in moments)
        small |= ~constant & (sd <= _TINY) & (np.abs(mean) <= _TINY)
    if np.any(small):
        j = int(np.flatnonzero(small)[0])
        # The spread computed from underflowing squares is not the data's:
        # the values' largest deviation from the mean sizes the remedy.
        with np.errstate(all="ignore"):
            column = X[:, j] if X.ndim == 2 and X.shape[0] else np.zeros(0)
            off = np.abs(column[np.isfinite(column)] - std.center[j])
        reach = float(off.max()) if off.size else 0.0
        if reduce is not None:
            from .distributed import reduce_extremes
            # The largest of the ranks' reaches (the same remedy on every rank).
            reach = float(reduce_extremes(0.0, reach, reduce, device)[1])
        if constant is not None and constant[j]:
            reach = 0.0     # a constant's deviations are its mean's rounding: its magnitude
        s = reach if reach > 0 else float(std.scale[j])
        if s >= 1:
            # Values spread by 1 or more, yet no float64 variance: the
            # sample weights put (almost) all the mass on one value.
            raise ValueError(
                f"X's feature {feature_label(names, j)} has a weighted spread too small for "
                f"float64 variances (values "
                f"within {reach:.3g} of their weighted mean {float(std.center[j]):.3g}, almost "
                f"all the sample weight on one value): rescale the sample weights (they weigh "
                f"as counts of rows) or drop the rows of negligible weight")
        said = (f"values within {reach:.3g} of their mean {float(std.center[j]):.3g}"
                if reach > 0 else f"{s:.3g}")
        power = -math.floor(math.log10(s)) if s > 0 else 0
        factor = ("" if s <= 0 else f", e.g. multiply it by 1e+{power}" if power <= 308 else
                  f", e.g. multiply it by 1e+300 and then by 1e+{power - 300}")
        held = constant is not None and bool(constant[j])
        if held:        # rescaling X for it alone would overflow the other features
            said += ", one value in every row"
        raise ValueError(
            f"X has a spread too small for float64 variances (feature {feature_label(names, j)}: "
            f"{said}; "
            f"variances below 1e-308 are not numbers): "
            + ("drop that feature (a constant carries nothing to cluster on) or " if held else "")
            + f"rescale X{factor}")
    if family.isotropic:
        # One common scale for all features: a feature whose spread is a
        # tiny fraction of it has a mean prior no float32 number can hold.
        ratio = spread_of(moments[1], moments[0]) / std.scale
        if np.any(ratio < 1e-30):
            j = int(np.argmin(ratio))
            raise ValueError(
                f"covariance_type={family.name!r} uses one scale for all features, but the "
                f"spread of feature {feature_label(names, j)} is {ratio[j]:.1e} times the "
                f"features' common spread: rescale X's "
                f"features to comparable spreads (e.g. standardise them), or use "
                f"covariance_type='diag'")


@dataclass
class FitData:
    """The training data of a fit, validated and standardised: the rows of
    positive weight (``keep`` marks them among the input's rows, None when
    all), their weights (None: each row once), the standardiser, the
    standardised tensor (missing entries NaN), the weights as a
    tensor, the raw moments, the total weight and, with missing entries,
    the weight of the observed entries per feature (else None); the rows
    of every process (``n_total``) and the reduce hook of a fit over
    several processes (None in one process).  Totals are over every
    process's shard."""

    X: np.ndarray
    weight: Optional[np.ndarray]
    keep: Optional[np.ndarray]
    std: Standardizer
    Xt: torch.Tensor
    wt: Optional[torch.Tensor]
    moments: tuple
    mass: float
    observed_mass: Optional[np.ndarray]
    n_total: int = 0
    reduce: Optional[object] = None
    # Out-of-core data (X and Xt None): the source and the rows sampled by
    # the first pass, standardised, with their weights (and labels); with
    # labels, per-class row counts, weights and observed weights (C, D).
    stream: Optional[object] = None
    samples: Optional[dict] = None
    class_totals: Optional[tuple] = None
    # (D,) bool: the features that hold one value in every kept row.
    constant: Optional[np.ndarray] = None
    # This process's rows of positive weight (n_total is every process's);
    # None: those of Xt.
    n_local: Optional[int] = None

    def float64_frame(self, device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The rows standardised in float64 on ``device`` (straight from the
        float64 input, not from the fit's ``Xt``) and their weights: the
        data of the posterior engines, which run in float64."""
        f64 = {"dtype": torch.float64, "device": device}
        X = ((torch.as_tensor(self.X, **f64) - torch.as_tensor(self.std.center, **f64))
             / torch.as_tensor(self.std.scale, **f64))
        return X, None if self.weight is None else torch.as_tensor(self.weight, **f64)

    def loss_offset(self, n_components: int, family: Covariance, mass=None, observed=None):
        """:meth:`Standardizer.loss_offset` of these data (or of a part of
        them: ``mass`` and ``observed``, e.g. one class)."""
        return self.std.loss_offset(self.mass if mass is None else mass, n_components, family,
                                    self.observed_mass if mass is None else observed)

    def loglik_offset(self, mass=None, observed=None) -> float:
        """log L in standardised units minus log L in the data's units, of
        these data (or of a part of them: ``mass`` and ``observed``, e.g. one
        class): each point's density picks up the Jacobian prod(scale) of its
        observed features (the data term of :meth:`loss_offset`, without the
        priors')."""
        if mass is None:
            mass, observed = self.mass, self.observed_mass
        log_a = np.log(self.std.scale)
        return float(mass * log_a.sum() if observed is None else np.dot(observed, log_a))


def effective_components(counts: np.ndarray) -> np.ndarray:
    """The components carrying at least one point's worth of the data
    (``counts``: expected points per component, (..., K), in sample-weight
    units), counted over the last axis: ``n_effective_components_``."""
    return np.sum(np.asarray(counts) >= 1.0, axis=-1)


#: The condition number (of the correlation matrix) above which a float32
#: full or tied covariance is warned of: its
#: Mahalanobis terms lose about log10 of it of float32's seven digits (a
#: 3-D Gaussian of condition 1.2e5 scored 1% off a float64 evaluation of the
#: same parameters, one of 1.2e6 21%; the fits of iris, wine, the five-class
#: study and 30 digits features stay below 4e3).
FLOAT32_MAX_CONDITION = 1e5


def warn_float32_conditioning(estimator: str, covariances: np.ndarray, family: Covariance,
                              dtype: torch.dtype, used: Optional[np.ndarray] = None,
                              labels=None) -> None:
    """One ``UserWarning`` when a float32 fit ends with a full or tied
    covariance whose correlation matrix's condition number exceeds
    :data:`FLOAT32_MAX_CONDITION`, naming the component (and class) and
    ``dtype="float64"`` as the remedy.  ``covariances``: the fitted
    attribute in data units (a classifier's with a leading class axis and
    NaN padding; ``labels`` its classes); ``used`` (full: the leading
    shape) marks the components that carry data: one the fit left empty
    (weight below half a row's share, which
    :func:`warn_unused_components` says) barely enters any score.
    Diagonal and spherical
    covariances solve nothing and are not checked, nor are models whose
    eigenvalues would cost more than 2^30 operations (K D^3)."""
    if dtype != torch.float32 or family.name not in ("full", "tied"):
        return
    S = np.asarray(covariances, dtype=np.float64)
    D = S.shape[-1]
    # The correlation matrix's: a Cholesky solve's rounding grows with it,
    # not with the features' scales (a constant feature's floor variance
    # makes the covariance's own condition number huge, harmlessly).
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.diagonal(S, axis1=-2, axis2=-1))
        S = S / (sd[..., :, None] * sd[..., None, :])
    lead = S.shape[:-2]
    flat = S.reshape((-1, D, D))
    if flat.shape[0] * D ** 3 > 2 ** 30:
        return
    real = np.isfinite(flat).all((-2, -1))
    if used is not None and family.per_component:
        real &= np.asarray(used, dtype=bool).reshape(-1)
    cond = np.zeros(flat.shape[0])
    if real.any():
        ev = np.linalg.eigvalsh(flat[real])
        with np.errstate(divide="ignore"):
            cond[real] = np.where(ev[:, 0] > 0, ev[:, -1] / np.maximum(ev[:, 0], 1e-300), np.inf)
    worst = int(np.argmax(cond))
    if not cond[worst] > FLOAT32_MAX_CONDITION:
        return
    at = [int(i) for i in np.unravel_index(worst, lead)] if lead else []
    cls = f"class {labels[at.pop(0)]!r}" if labels is not None else None
    if at:
        what = f"the fitted covariance of {cls + ', ' if cls else ''}component {at[0]}"
    else:
        what = f"the fitted shared (tied) covariance{' of ' + cls if cls else ''}"
    more = int((cond > FLOAT32_MAX_CONDITION).sum()) - 1
    warnings.warn(
        f"{estimator}: {what} has condition number {cond[worst]:.2g} (of its correlation "
        f"matrix{f'; {more} more above {FLOAT32_MAX_CONDITION:.0e}' if more else ''}), beyond what "
        f"float32 resolves (its Mahalanobis terms lose about log10 of that of float32's seven "
        f"digits: scores about {min(1.0, cond[worst] * 1e-7):.0%} off at this one); fit with "
        f"dtype='float64'", UserWarning, stacklevel=5)


#: A component's variance in a feature below this fraction of the data's
#: variance in it is checked against the spacing of the feature's values
#: (:func:`warn_discrete_features`), a bound on the work only: a component
#: on one value of a feature has a variance at the prior's floor, far below
#: this (two components on a 90/10 flag: 0.003 and 0.02 of its 0.09 within
#: the class, a full covariance's floor at 358 and 42 rows).
DISCRETE_CHECK_RATIO = 0.1
#: Values of a feature closer than this fraction of its standard deviation
#: are one value to :func:`warn_discrete_features` (float rounding).
DISCRETE_VALUE_RTOL = 1e-6
#: A feature with at most this share of its rows' count of distinct values
#: is one of few values (a lattice: jitter it); above, a component on one
#: value is on a value repeated in a continuous feature (a point mass).
DISCRETE_MAX_SHARE = 0.5
#: A component with at least half its rows on one value of a feature of
#: many values and a variance there below this fraction of the feature's is
#: on that value, if at least POINT_MASS_MIN_SHARE of the rows hold it (a
#: rounding-merged pair in a continuous sample is no point mass).
POINT_MASS_RATIO = 0.01
POINT_MASS_MIN_SHARE = 0.01


def _check_rows(data: "FitData", classes: Optional[np.ndarray]):
    """The rows the fit-end checks read, in the data's units, with their
    weights (None: each once) and, for a classifier, their classes: the
    data in memory (over several processes, this process's shard: each
    checks its own), or out of core the first pass's sample (a mixture's
    rows for the priors' spread, a classifier's seeding rows: without
    ``classes`` whichever the fit collected); None where there are none (a
    warm start out of core, or out of core over several processes)."""
    if data.X is not None:
        return data.X, data.weight, classes
    if data.reduce is not None:
        return None
    samples = data.samples or {}
    picked = samples.get("seed") if classes is not None else (
        samples.get("spread") or samples.get("seed"))
    if picked is None:
        return None
    X = picked[0].double().cpu().numpy() * data.std.scale + data.std.center
    w = None if picked[1] is None else picked[1].double().cpu().numpy()
    y = None if classes is None else picked[2].cpu().numpy()
    return X, w, y


def _snap(value: float, sd: float) -> float:
    """``value`` rounded to 1e-6 of the feature's spread ``sd`` (a float32
    sample's 0 came back as 4e-7)."""
    q = 10.0 ** math.floor(math.log10(sd * 1e-6)) if sd > 0 else 0.0
    if not q > 0 or not abs(value / q) < 1e15:
        return value
    return round(value / q) * q


def _segment_search(u: np.ndarray, run_start: np.ndarray, nu: np.ndarray, ps: np.ndarray,
                    queries: list, side: str) -> list:
    """``np.searchsorted(u[segment], q, side)`` for each array ``q`` of
    ``queries``, each entry in its segment ``ps`` (sorted): ``u`` holds
    sorted segments one after another (segment s: ``nu[s]`` values from
    ``run_start[s]``).  One call per segment (an exact sort of all the
    values and queries together took 3x the time of the loop it replaced)."""
    q = np.stack(queries, axis=-1)
    out = np.empty(q.shape, np.int64)
    bounds = np.searchsorted(ps, np.arange(nu.size + 1))
    for s in np.flatnonzero(np.diff(bounds)):
        a, b = bounds[s], bounds[s + 1]
        out[a:b] = np.searchsorted(u[run_start[s]:run_start[s] + nu[s]], q[a:b], side)
    return list(np.moveaxis(out, -1, 0))


#: Sums of weights compared by :func:`_single_value_hits` (a value's
#: weight against two rows' worth, half a component's weight, a share of
#: the total) hold this much slack: sums of equal weights in different
#: orders differ by roundings (two rows at weight 0.3 held 0.6 against two
#: rows' worth of 0.6000000000000001, and were not counted: from a review).
_WEIGHT_RTOL = 1e-9


def _single_value_hits(groups: list, narrow: np.ndarray, M: np.ndarray, V: np.ndarray,
                       W: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, dict]:
    """:func:`warn_discrete_features`'s test, every (group, feature) at once
    (a loop over features cost ~0.2 ms each: a ten-class classifier's chunk
    check in 20-D took longer than its ``partial_fit`` update).  ``groups``:
    (g, X, w) per mixture (g ``()``, or ``(c,)`` a classifier's class c),
    its rows and weights; ``narrow`` (..., K, D) the components checked.
    Returns which (..., K, D) components sit on a single value, and per
    feature found, from its first group: (distinct values, smallest gap
    found, g, few values?, the value, its share of the weight)."""
    on = np.zeros_like(narrow)
    told: dict = {}
    shape = narrow.shape
    G = 1 if len(shape) == 2 else shape[0]
    narrowG, MG, VG = (a.reshape((G,) + shape[-2:]) for a in (narrow, M, V))
    WG = W.reshape(G, shape[-2])
    onG = on.reshape(narrowG.shape)
    # Every (group, narrow feature) column, sorted, as segments one after
    # another, without its missing entries.
    vals, wts, counts, seg_g, seg_gi, seg_j = [], [], [], [], [], []
    weighted = groups[0][2] is not None if groups else False
    for g, X, w in groups:
        J = np.flatnonzero(narrow[g].any(0))
        cols = np.ascontiguousarray(X[:, J].T)                # (J, n): rows sorted fast
        if w is None:
            v, wt = np.sort(cols, axis=1), None                 # NaN last
        else:
            order = np.argsort(cols, axis=1, kind="stable")
            v, wt = np.take_along_axis(cols, order, 1), w[order]
        seen = ~np.isnan(v)
        whole = bool(seen.all())
        vals.append(v.ravel() if whole else v[seen])
        if weighted:
            wts.append(wt.ravel() if whole else wt[seen])
        counts.append(seen.sum(1))
        seg_g += [g] * J.size
        seg_gi.append(np.full(J.size, g[0] if g else 0))
        seg_j += J.tolist()
    val = np.concatenate(vals) if vals else np.zeros(0)
    if val.size == 0:
        return on, told
    count = np.concatenate(counts)
    seg_gi, seg_j = np.concatenate(seg_gi), np.asarray(seg_j, dtype=np.int64)
    S = seg_j.size
    seg_begin = np.cumsum(count) - count
    # One value per run of values within a rounding of each other (3 and
    # 3 - 1e-7 made a gap of 1e-7, and hid a component on 3).
    start = np.empty(val.size, bool)
    start[1:] = np.diff(val) > np.repeat(DISCRETE_VALUE_RTOL * sd[seg_j], count)[1:]
    start[seg_begin[count > 0]] = True
    idx = np.flatnonzero(start)
    run_start = np.searchsorted(idx, seg_begin)             # each segment's first run
    nu = np.diff(np.r_[run_start, idx.size])
    run_seg = np.repeat(np.arange(S), nu)
    if weighted:
        wt = np.concatenate(wts)
        ties = np.add.reduceat(wt, idx)
        u = np.add.reduceat(val * wt, idx) / ties
        # numpy's (pairwise) sum of each segment, as the thresholds were
        # set on (a sum of run sums moved them by a rounding: two rows at
        # weight 0.3 sit exactly on the two rows' worth: from a review).
        total = np.array([wt[b:b + c].sum() for b, c in zip(seg_begin, count)])
        # Rows represented, and a row's worth: whole-number weights are
        # counts of repeated rows (distinct values given with their counts
        # are so many rows); other weights leave the rows as they are, each
        # worth the mean weight (one light row, or survey weights, made
        # every continuous feature one of few values and hid its point
        # masses: from a review).
        counts = np.bincount(np.repeat(np.arange(S), count), minlength=S,
                             weights=(wt != np.round(wt)).astype(np.float64)) == 0
    else:
        ties = np.diff(np.r_[idx, val.size]).astype(np.float64)
        u = np.add.reduceat(val, idx) / ties
        total = count.astype(np.float64)
        counts = np.ones(S, bool)
    represented = np.where(counts, total, count)
    with np.errstate(divide="ignore", invalid="ignore"):
        one_row = np.where(counts, 1.0, total / count)
    few = nu <= DISCRETE_MAX_SHARE * represented
    # A component can only be on a value holding two rows' worth and half
    # its weight: none in a feature of distinct values, whose components
    # need not be searched (the search was most of the check's time).
    most = np.zeros(S)
    np.maximum.at(most, run_seg, ties)
    most *= 1.0 + _WEIGHT_RTOL
    checked = narrowG[seg_gi, :, seg_j] & ((count >= 2) & (nu >= 2) & (most >= 2.0 * one_row)
                                           )[:, None] & (most[:, None] >= 0.5 * total[:, None] *
                                                         WG[seg_gi])       # (S, K)
    ps, pc = np.nonzero(checked)
    if ps.size == 0:
        return on, told
    mu = MG[seg_gi[ps], pc, seg_j[ps]]
    v = VG[seg_gi[ps], pc, seg_j[ps]]
    base, n_u = run_start[ps], nu[ps]
    # The value holding the most weight within two of the component's sds
    # of its mean (the prior pulls a collapsed component's mean a little
    # off its value, where one other row's value can be nearer: from a
    # review), else the nearest.
    lo, i = _segment_search(u, run_start, nu, ps, [mu - 2 * np.sqrt(v), mu], "left")
    hi, = _segment_search(u, run_start, nu, ps, [mu + 2 * np.sqrt(v)], "right")
    i = np.clip(i, 1, n_u - 1)
    near = np.where(np.abs(u[base + i - 1] - mu) <= np.abs(u[base + i] - mu), i - 1, i)
    ranged = np.flatnonzero(hi > lo)
    if ranged.size:
        L = (hi - lo)[ranged]
        offs = np.cumsum(L) - L
        idx = np.arange(int(L.sum())) + np.repeat(base[ranged] + lo[ranged] - offs, L)
        held = ties[idx]
        top = held == np.repeat(np.maximum.reduceat(held, offs), L)
        pair = np.repeat(np.arange(ranged.size), L)
        _, first = np.unique(pair[top], return_index=True)   # np.argmax: the first maximum
        near[ranged] = lo[ranged] + (np.flatnonzero(top)[first] - offs)
    left = np.where(near > 0, u[base + near] - u[base + np.maximum(near - 1, 0)], np.inf)
    right = np.where(near < n_u - 1, u[base + np.minimum(near + 1, n_u - 1)] - u[base + near],
                     np.inf)
    gap = np.minimum(left, right)
    # Half the component's weight, and two rows' worth, on the value: one
    # on a lone outlier (a singleton component) is not meant.
    held = ties[base + near]
    slack = held * (1.0 + _WEIGHT_RTOL)
    shared = (slack >= 2.0 * one_row[ps]) & (slack >= 0.5 * WG[seg_gi[ps], pc] * total[ps])
    # In a feature of many values the gaps are small (500 repeated rows
    # among 500 others left a component of variance 1e-5).
    mass = ~few[ps] & (slack >= POINT_MASS_MIN_SHARE * total[ps]) & \
        (v < POINT_MASS_RATIO * sd[seg_j[ps]] ** 2)
    hit = shared & ((v < gap ** 2 / 12) | mass)
    onG[seg_gi[ps], pc, seg_j[ps]] = hit
    for s in np.unique(ps[hit]):          # in order: groups, then features
        j = int(seg_j[s])
        if j in told:
            continue
        mine = hit & (ps == s)
        first = np.flatnonzero(mine)[0]
        told[j] = (int(nu[s]), float(np.min(gap[mine])), seg_g[s], bool(few[s]),
                   _snap(float(u[base[first] + near[first]]), float(sd[j])),
                   float(held[first]) / float(total[s]))
    return on, told


def warn_discrete_features(estimator: str, data: "FitData", weights: np.ndarray,
                           means: np.ndarray, covariances: np.ndarray, family: Covariance,
                           names, rows, labels=None, classes: Optional[np.ndarray] = None,
                           said: Optional[set] = None, stacklevel: int = 5) -> None:
    """One ``UserWarning`` when fitted components sit on a single value of a
    feature: one of few distinct values (counts, ratings, codes, flags,
    rounded measurements), or a value many rows repeat in a feature of many
    (zeros, a default, duplicated rows).  A Gaussian can shrink onto it,
    where its density, and with it the log-likelihood, scores and BIC,
    grows without bound.  (From an audit: ratings from two clusters, "auto"
    chose K = 10 with every variance about 1e-4, one spike per value;
    scikit-learn's ``GaussianMixture`` chose one per value of a 1..5 scale.)

    A component that carries data (weight at least half a row's share of
    ``rows``) is on a value of feature j when at least half its weight and
    two rows' worth sit on that value (the one nearest its mean) and its
    variance there is below ``g^2 / 12``, the variance of a uniform spread
    over ``g``, the gap from that value to its nearest neighbour, or, in a
    feature of many values (more than :data:`DISCRETE_MAX_SHARE` of its
    rows distinct), below :data:`POINT_MASS_RATIO` of the feature's
    variance with the value held by :data:`POINT_MASS_MIN_SHARE` of the
    weight.  Values within :data:`DISCRETE_VALUE_RTOL` of the feature's
    spread are one (float rounding); whole-number weights count as
    repeated rows, other weights leave each row worth the mean weight.  The
    rows are those the default priors measure (:func:`spread_rows`, per
    class for a classifier; out of core, :func:`_check_rows`).  Only
    components below :data:`DISCRETE_CHECK_RATIO` of the data's variance
    are checked.  ``weights``, ``means``, ``covariances``: the fitted
    attributes in the data's units (a classifier's with a leading class
    axis, NaN padded; ``labels`` its classes, ``classes`` each row of
    ``data.X``'s class index, ``rows`` its per-class row counts); constant
    features are said by :func:`warn_constant_features`.  ``said``: the
    (component, feature) pairs said before (by a fit and its ``partial_fit``
    chunks): a finding of none but those is not said again; a finding said
    adds its pairs.  ``stacklevel``: the user's line's, from the warning."""
    checked = _check_rows(data, classes)
    if checked is None or data.n_total < 2:
        return
    source, wsource, csource = checked
    W = np.asarray(weights, dtype=np.float64)
    M = np.asarray(means, dtype=np.float64)
    C = np.asarray(covariances, dtype=np.float64)
    D = M.shape[-1]
    if family.name == "full":
        V = np.diagonal(C, axis1=-2, axis2=-1)
    elif family.name == "tied":
        V = np.broadcast_to(np.diagonal(C, axis1=-2, axis2=-1)[..., None, :], M.shape)
    elif family.name == "spherical":
        V = np.broadcast_to(C[..., None], M.shape)
    else:
        V = C
    sd = np.asarray(data.moments[1], dtype=np.float64)
    const = np.zeros(D, bool) if data.constant is None else np.asarray(data.constant, bool)
    with np.errstate(divide="ignore"):      # a class without rows in a chunk: none used
        share = 0.5 / np.asarray(rows, dtype=np.float64)
    used = np.isfinite(W) & (W >= (share[:, None] if share.ndim else share))
    with np.errstate(invalid="ignore"):
        narrow = used[..., None] & (V < DISCRETE_CHECK_RATIO * sd ** 2) & ~const
    if not narrow.any():
        return
    groups = []
    for g in ([()] if csource is None else [(c,) for c in range(M.shape[0])]):
        if not narrow[g].any():
            continue
        pick = slice(None) if csource is None else csource == g[0]
        X = source[pick]
        w = None if wsource is None else wsource[pick]
        if data.X is not None:
            at_rows = spread_rows(X.shape[0])
            X, w = X[at_rows], None if w is None else w[at_rows]
        groups.append((g, X, w))
    on, told = _single_value_hits(groups, narrow, M, V, W, sd)
    if not on.any():
        return
    if said is not None:
        pairs = set(map(tuple, np.argwhere(on).tolist()))
        if pairs <= said:
            return
        said |= pairs
    feats = np.flatnonzero(on.reshape(-1, D).any(0))
    hit = on.any(-1)
    counted: list = []

    def listed(ks) -> str:
        ks = [int(k) for k in ks]
        counted.append(len(ks))
        return (f"component{'s' if len(ks) > 1 else ''} "
                f"{', '.join(map(str, ks[:8]))}{' and more' if len(ks) > 8 else ''}")
    if labels is not None:
        where = "; ".join(f"class {labels[c]!r}: {listed(np.flatnonzero(hit[c]))}"
                          for c in np.flatnonzero(hit.any(-1)))
    else:
        where = listed(np.flatnonzero(hit))

    def values(j) -> str:
        n, gap, g, few, value, part = told[j]
        where = f" in class {labels[g[0]]!r}" if g and labels is not None else ""
        if few:
            return f"{feature_label(names, j)} ({n} distinct values{where}, gap {gap:.3g})"
        return (f"{feature_label(names, j)} (the value {value:.6g} held by {part:.0%} of the "
                f"rows{where}, among {n} distinct values)")
    said = ", ".join(values(j) for j in feats[:10])
    kinds = {told[j][3] for j in feats}
    noise = ("df[col] + rng.uniform(-gap / 2, gap / 2, len(df))" if names is not None
             else "X[:, j] + rng.uniform(-gap / 2, gap / 2, len(X))")
    remedies = []
    if True in kinds:
        remedies.append(f"for a feature of few distinct values (counts, ratings, codes, flags, "
                        f"rounded measurements) add uniform noise of one gap's width ({noise}), "
                        f"or leave it out")
    if False in kinds:
        remedies.append("for a value repeated in a feature of many values (zeros, a default, "
                        "duplicated rows) fit the rows at that value apart from the others, or "
                        "leave them out")
    repeated = (f", or, for a value repeated in a feature of many values, below "
                f"{POINT_MASS_RATIO:g} of the feature's variance" if False in kinds else "")
    warnings.warn(
        f"{estimator}: {where} of the fit {'sits' if counted == [1] else 'sit'} on a single "
        f"value of feature(s) {said}{' and more' if feats.size > 10 else ''} (fitted variance "
        f"below a twelfth of the squared gap to the neighbouring value{repeated}): a Gaussian "
        f"can shrink onto a value that many rows share, where its density, and with it the "
        f"log-likelihood, scores and BIC, grows without bound, so such a component describes "
        f"that value rather than a cluster; {'; '.join(remedies)}", UserWarning,
        stacklevel=stacklevel)


def warn_unused_components(estimator: str, weights: np.ndarray, rows, real=None,
                           classes=None) -> None:
    """One ``UserWarning`` when a MAP fit ends with at least half of a
    mixture's components carrying (almost) nothing: weight below half a
    row's share, 0.5 / ``rows``.
    Under a flat (or any concentration >= 1) Dirichlet that happens when
    splitting the data costs more under the covariance prior than it gains,
    e.g. across the thin direction of nearly collinear features, which the
    default prior widens: the user asked for K components and silently got
    fewer.  ``weights`` (K,) or, for the classifier, (C, K) with ``rows``
    (C,) the classes' rows, ``real`` (C, K) their real components and
    ``classes`` their labels.  Called from an estimator's ``_fit``: the
    warning points at the user's ``fit`` line."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    limit = 0.5 / np.atleast_1d(np.asarray(rows, dtype=np.float64))[:, None]
    real = np.ones(w.shape, dtype=bool) if real is None else np.atleast_2d(real)
    unused = (w < limit) & real
    # Said where at least half of a mixture's components are unused: a
    # surplus component or two starving on data that fewer describe (16
    # Gaussians along a ring, 15 used) is the prior at work, not a problem.
    said = 2 * unused.sum(1) >= real.sum(1)
    unused &= said[:, None]
    if not unused.any():
        return
    if classes is None:
        k, K = int(unused.sum()), w.shape[1]
        weights_said = ", ".join(f"{v:.2g}" for v in w[unused])
        where = (f"{k} of {K} components ended with weight below half a row's share "
                 f"(0.5/n = {float(limit[0, 0]):.2g}; weight {weights_said}): the MAP fit "
                 f"describes the data with {K - k} (see n_effective_components_)")
    else:
        per = "; ".join(f"class {classes[c]!r}: {int(unused[c].sum())} of "
                        f"{int(np.sum(real[c]))} components"
                        for c in np.flatnonzero(unused.any(1)))
        where = (f"components ended with weight below half a row's share of their class "
                 f"({per}): those classes are described with fewer components than asked "
                 f"(see n_effective_components_)")
    warnings.warn(
        f"{estimator}: {where}. If the data hold more clusters, the default covariance prior "
        f"may be too wide across their thinnest direction (e.g. nearly collinear features): "
        f"give a smaller Priors(covariance_scale=...) (full, tied) or Priors(scale_rate=...) "
        f"(diag, spherical), or ask for fewer components", UserWarning, stacklevel=5)


def warn_not_converged(estimator: str, s: FitSettings, n_iter: int, stacklevel: int) -> None:
    """scikit-learn's ``ConvergenceWarning`` after a MAP fit whose kept
    mixture stopped at its iteration budget (``converged_`` False), naming
    the stage that ran out and the remedy.  Not said with ``tol=0``: that
    asks for the whole budget (Pyro's tutorial takes a fixed number of SVI
    steps), so reaching it is what was asked for."""
    if s.tol <= 0:
        return
    from sklearn.exceptions import ConvergenceWarning
    if s.max_iter == 0:
        stage = f"EM used its em_max_iter={s.em_max_iter} iterations"
        remedy = "raise em_max_iter"
    elif s.em_max_iter == 0:
        stage = f"SVI used its max_iter={s.max_iter} steps"
        remedy = "raise max_iter"
    else:
        stage = (f"EM used its em_max_iter={s.em_max_iter} iterations, then the SVI that "
                 f"continues it its max_iter={s.max_iter} steps")
        remedy = "raise em_max_iter (EM is the faster stage) or max_iter"
    warnings.warn(
        f"{estimator}: the fit stopped before converging ({stage}, {n_iter} in all, the loss "
        f"still changing by more than tol={s.tol:g} nats per point): {remedy}, or loosen tol; "
        f"the parameters are where it stopped and converged_ is False",
        ConvergenceWarning, stacklevel=stacklevel + 1)


#: Fraction of a feature's (weighted) entries missing from which a VI fit
#: warns that its intervals for that feature are too narrow.
VI_MISSING_WARN = 0.1


def feature_label(names, j: int) -> str:
    """Feature ``j`` as a message names it: its column name (quoted) when the
    estimator was fitted on named columns (``names``: its
    ``feature_names_in_``, or None), else its index."""
    return repr(str(names[j])) if names is not None else str(int(j))


def feature_list(names, idx) -> str:
    """Features ``idx`` as a message lists them: ``['a', 'b']`` by column
    name where the data had named columns (``names``), else ``[0, 3]``."""
    idx = [int(j) for j in idx]
    return str([str(names[j]) for j in idx] if names is not None else idx)


#: Over several processes, a shard's one value of a feature is the features'
#: mean up to this fraction of its magnitude (the rounding of the mean).
CONSTANT_RTOL = 1e-12


def refuse_nuts_constant(estimator: str, family: Covariance, constant, names) -> None:
    """A ``ValueError`` for ``inference="nuts"`` where a feature holds one
    value in every row that observes it (``constant`` (D,) bool, or None):
    its variance then sits at the prior's floor, a posterior direction
    millions of times narrower than the others, and NUTS shrinks its steps
    to it, runs to its tree depth at every draw and does not mix (two 1-D
    blobs with a constant second column, diag: 158 s against 3 s, R-hat
    1e6, the means' intervals 100x too narrow; tied likewise; the
    classifier's, 215 s against 4.4 s).  Spherical families share one
    variance across features, which the constant does not pin: not
    refused."""
    if family.isotropic or constant is None or not constant.any():
        return
    raise ValueError(
        f"{estimator}: inference='nuts' cannot sample a {family.name!r} mixture in which "
        f"feature(s) {feature_list(names, np.flatnonzero(constant))} hold one value in every "
        f"row that observes them: such a variance sits at the prior's floor, where NUTS needs "
        f"steps far smaller than elsewhere, runs for many times as long and does not mix "
        f"(R-hat far above 1.01, intervals far too narrow); drop those features (a constant "
        f"carries nothing to cluster on), or use covariance_type='spherical' or "
        f"inference='vi'")


def warn_constant_features(estimator: str, data: "FitData", names, family: Covariance,
                           n_components=None) -> None:
    """One ``UserWarning`` when a feature holds one value in every row: it
    carries nothing to cluster on.  Under diag, full and tied covariances
    its variance ends at the covariance prior's floor (a standard
    deviation of about 1e-6 of its magnitude, or of 1 for a feature of
    zeros, over sqrt(n): 3e-7 of it at 7 rows, 1e-9 at 3,000, with or
    without weights), where the density of a point on it is huge and of a
    point off it vanishing, so that log-likelihoods, scores and BIC are
    that feature's (the same column fitted by scikit-learn's GaussianMixture
    has its reg_covar of 1e-6); under spherical covariances it shares each
    component's one variance, which it lowers by about (D - 1) / D.  With a
    floor per component (diag: standard deviation b / (a + 1 + N_k); full:
    variance Psi_jj / (nu + N_k - D - 1)) it also changes the clustering:
    the heavier component gets a log-ratio bonus on every row, and one
    component can take them all (two blobs at +-1.5 with a constant third
    column: one component of weight 1 in 3, 9, 2 and 8 of 12 seeds at n =
    100, 300, 1000 and 3000; scikit-learn in none); tied covariances share
    the floor and keep the clustering.  Called from ``_fit``: points at the
    user's line.  ``n_components``: the fit's largest K where known (the
    clustering clause is left out for one component)."""
    if data.n_total < 2 or data.constant is None or not data.constant.any():
        return
    mean = np.asarray(data.moments[0], dtype=np.float64)
    const = np.flatnonzero(data.constant)
    om = data.observed_mass
    # A feature missing in most rows may hold one value where observed (in
    # one row, say): said, not called a value of every row.
    # (The two totals are summed differently: equal up to rounding when
    # the feature is observed in every row.)
    partly = [] if om is None else [j for j in const if om[j] < data.mass * (1 - 1e-9)]
    unit = "rows" if data.weight is None else "total weight"

    def seen(j) -> str:
        return f", observed in {om[j]:.6g} of {data.mass:.6g} {unit}" if j in partly else ""
    said = ", ".join(f"{feature_label(names, j)} (= {mean[j]:.6g}{seen(j)})" for j in const[:10])
    more = f" and {const.size - 10} more" if const.size > 10 else ""
    where = " where observed" if partly else ""
    if family.isotropic:
        effect = (f"with covariance_type={family.name!r} it counts as a feature of zero spread in "
                  f"each component's one variance, fitting the other features tighter than "
                  f"they are")
    else:
        effect = ("its fitted variance is the prior's floor, so log-likelihoods, scores and BIC "
                  "are dominated by it (a point off that value scores far below any other)")
    clusters = ""
    if family.name in ("diag", "full") and n_components != 1:
        clusters = (f"; with covariance_type={family.name!r} it also changes the clustering "
                    f"(that floor narrows as a component's weight grows, which gives the heavier "
                    f"component a bonus on every row: one component can take them all)")
    warnings.warn(
        f"{estimator}: feature(s) {said}{more} hold one value in every row{where}: a constant feature "
        f"carries nothing to cluster on, and {effect}{clusters}; drop it", UserWarning,
        stacklevel=5)


#: A feature whose variance is, to within this fraction, a linear
#: combination of the features before it is dependent on them
#: (:func:`warn_dependent_features`): the rest, about 1e-3 of its spread,
#: is below what a full or tied covariance's prior lets a variance be.
DEPENDENT_RTOL = 1e-6
#: Below this share of a feature's variance unexplained, the dependence is
#: exact up to rounding (said so, and said under a user's covariance_scale).
DEPENDENT_EXACT = 1e-12


def _combinations(Z: np.ndarray) -> list:
    """The columns of ``Z`` (rows x features, no NaN) that are linear
    combinations of earlier ones, in column order, each with the earlier
    columns it combines and the share of its variance they leave
    unexplained (below :data:`DEPENDENT_RTOL`): an incremental Cholesky
    factor of the kept columns' correlations."""
    from scipy.linalg import solve_triangular

    Z = Z - Z.mean(0)
    S = Z.T @ Z / Z.shape[0]
    d = np.sqrt(np.diagonal(S))
    if not np.all(d > 0):
        return []
    R = S / np.outer(d, d)
    kept, L = [], np.zeros((0, 0))
    found = []
    for j in range(R.shape[0]):
        y = solve_triangular(L, R[kept, j], lower=True) if kept else np.zeros(0)
        r = float(R[j, j] - y @ y)
        if r < DEPENDENT_RTOL:
            coef = solve_triangular(L.T, y, lower=False)
            found.append((j, [kept[i] for i in np.flatnonzero(
                np.abs(coef) > 1e-3 * np.abs(coef).max())], r))
            continue
        L = np.block([[L, np.zeros((L.shape[0], 1))], [y[None], np.sqrt([[r]])]])
        kept.append(j)
    return found


def warn_dependent_features(estimator: str, data: "FitData", names, family: Covariance,
                            priors=None) -> None:
    """One ``UserWarning`` when, under full or tied covariances, some
    features are linearly dependent (a duplicated column, one quantity in
    two units, a total beside its parts): the data lie in a subspace, and
    across it the covariance ends at the prior's floor, which narrows as a
    component's weight grows, as a constant feature's does.  (From an
    audit: two clusters 5.2 sd apart with a duplicated column, fitted with
    n_components="auto", gave K = 1 under full covariances, each extra
    component costing about log(2) / 2 nats per row across that direction;
    scikit-learn's BIC chose 2.)  Read on the rows the default priors
    measure (:func:`spread_rows`; out of core, the first pass's) that
    observe every feature, standardised, constant features left out: in
    column order, a feature whose variance the features kept before it
    explain but for :data:`DEPENDENT_RTOL` is named with those it combines,
    and the remedy names every such feature.  On this process's rows (over
    several processes each checks its shard), at most 2^32 multiply-adds.
    Where the user's ``priors`` set ``covariance_scale`` only exact
    dependences (up to rounding) are said: for features nearly dependent
    that scale is the remedy, theirs to set."""
    if family.name not in ("full", "tied") or data.n_total < 3:
        return
    given_scale = isinstance(priors, Priors) and priors.covariance_scale is not None
    checked = _check_rows(data, None)
    if checked is None:
        return
    Z = checked[0] if data.X is None else checked[0][spread_rows(checked[0].shape[0])]
    Z = (Z - data.std.center) / data.std.scale
    keep = ~np.asarray(data.constant, bool) if data.constant is not None else \
        np.ones(Z.shape[1], bool)
    cols = np.flatnonzero(keep)
    if cols.size < 2:
        return
    Z = Z[:, cols]
    Z = Z[~np.isnan(Z).any(1)]
    if Z.shape[0] <= cols.size or Z.shape[0] * cols.size ** 2 > 2 ** 32:
        return
    found = _combinations(Z)
    if found:
        # Confirmed without the rows far out (over 8 sds in some feature):
        # one row holding a code such as 999999 in two columns made them
        # look dependent.  (From a review.)
        calm = Z[np.abs(Z).max(1) <= 8.0]
        if calm.shape[0] < Z.shape[0] and calm.shape[0] > cols.size:
            again = {j for j, *_ in _combinations(calm)}
            found = [f for f in found if f[0] in again]
    if given_scale:
        # The user's own scale resolves features only nearly dependent; an
        # exact dependence no scale resolves (from a review).
        found = [f for f in found if f[2] < DEPENDENT_EXACT]
    if not found:
        return
    said = "; ".join(f"{feature_label(names, cols[j])} of {feature_list(names, cols[g])}"
                     for j, g, _ in found[:5]) + (" and more" if len(found) > 5 else "")
    off = math.sqrt(max(max(r for *_, r in found), 0.0))
    within = ("up to rounding" if off ** 2 < DEPENDENT_EXACT else
              f"to within {off:.1g} of its spread")
    scale_too = ("" if given_scale else
                 " (for features only nearly dependent, a covariance prior scale below the thin "
                 "direction's variance, Priors(covariance_scale=...), also resolves it)")
    fewer = ("" if family.name == "tied" else
             ", and, narrowing as a component's weight grows, favours fewer, heavier "
             "components (n_components='auto' can choose too few: K = 1 for two clusters "
             "with a duplicated column)")
    drop = feature_list(names, cols[[j for j, *_ in found]])
    warnings.warn(
        f"{estimator}: feature(s) that are linear combinations of earlier ones ({within}): "
        f"{said} (a duplicated column, one quantity in two units, a total beside its parts): "
        f"with covariance_type={family.name!r} the variance across such a "
        f"direction ends at the prior's floor, which dominates log-likelihoods, scores and "
        f"BIC{fewer}; leave out {drop}{scale_too} (covariance_type='diag' has no such floor, "
        f"but counts a copied column twice: with n_components='auto' it splits the clusters "
        f"into many)", UserWarning, stacklevel=5)


#: A prior mean farther than this many of its standard deviations from the
#: data's mean (in some feature) is said: it holds the components away from
#: every point.
FAR_MEAN_PRIOR = 10.0


def warn_far_mean_prior(estimator: str, priors: Optional[Priors], data: "FitData", names,
                        family: Covariance) -> None:
    """One ``UserWarning`` when the user's ``Priors.mean_loc`` (with their
    or the default ``mean_scale``) lies more than :data:`FAR_MEAN_PRIOR`
    prior standard deviations from the data's mean in some feature: the
    prior then holds the components' means away from every point, and the
    MAP stretches a component's covariance to reach the data or diverges
    ("every restart diverged", whose remedies do not help).  Defaults (both
    fields None) are the data's and never far.  Called from ``_fit``:
    points at the user's line."""
    if not isinstance(priors, Priors) or (priors.mean_loc is None and priors.mean_scale is None):
        return
    try:          # the defaults filled as the fit fills them; bad values are the fit's to say
        resolved = resolve_priors(Priors(mean_loc=priors.mean_loc, mean_scale=priors.mean_scale),
                                  family, 1, data.moments)
    except ValueError:
        return
    mean = np.asarray(data.moments[0], dtype=np.float64)
    with np.errstate(all="ignore"):
        away = np.abs(resolved.mean_loc - mean) / resolved.mean_scale
    far = np.flatnonzero(away > FAR_MEAN_PRIOR)
    if far.size == 0:
        return
    said = ", ".join(f"{feature_label(names, j)} ({away[j]:.3g} x mean_scale "
                     f"{resolved.mean_scale[j]:.3g} from the data's mean {mean[j]:.3g})"
                     for j in far[:10])
    more = f" and {far.size - 10} more" if far.size > 10 else ""
    reach = float(np.max(np.abs(resolved.mean_loc - mean)[far]))
    warnings.warn(
        f"{estimator}: Priors.mean_loc is far from the data in feature(s) {said}{more}: the "
        f"prior holds the components' means away from every point (the fit stretches a "
        f"component's covariance to reach the data, or diverges); give a mean_loc within the "
        f"data's range, or a mean_scale that reaches the data (e.g. Priors(mean_scale="
        f"{reach:.3g}))", UserWarning, stacklevel=5)


def warn_vi_missing(estimator: str, observed_mass: Optional[np.ndarray], mass: float,
                    family: Covariance, names=None) -> None:
    """One ``UserWarning`` before a full or tied VI posterior is fitted to
    data with features missing in at least :data:`VI_MISSING_WARN` of the
    rows.  For those types the mean-field family makes the missing entries
    latent values independent of the parameters (see
    :mod:`bayesgmm.variational`), so the posterior of a poorly observed
    feature's parameters is too narrow: 90% intervals of a mean 0.16 and
    0.06 wide where NUTS gives 2.2 and 0.86, with 95% of that feature
    missing.  "diag" and "spherical" fit the exact observed-data bound
    (each feature counts its observed entries): nothing to say.  Called
    from ``_fit``: points at the user's line."""
    if observed_mass is None or not family.full_moments:
        return
    missing = 1.0 - np.asarray(observed_mass, dtype=np.float64) / float(mass)
    bad = np.flatnonzero(missing >= VI_MISSING_WARN)
    if bad.size == 0:
        return
    said = ", ".join(f"{feature_label(names, d)} (missing in {missing[d]:.0%} of the rows)"
                     for d in bad[:10])
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    warnings.warn(
        f"{estimator} with inference='vi': feature(s) {said}{more}: with "
        f"covariance_type='{family.name}' the mean-field posterior treats "
        f"missing entries as latent values independent of the parameters, so its credible "
        f"intervals and draws for those features' parameters are too narrow (up to an order "
        f"of magnitude where most entries are missing); use inference='nuts' for their "
        f"intervals, or covariance_type='diag', whose variational fit counts each feature's "
        f"observed entries exactly", UserWarning, stacklevel=5)


# Points on which the default covariance priors' spread is measured.
SPREAD_SAMPLE_SIZE = 2 ** 14


def spread_rows(n: int) -> np.ndarray:
    """The rows (sorted indices among ``n``) on which :func:`seeded_priors`
    measures the spread: all of them up to ``SPREAD_SAMPLE_SIZE``, else that
    many drawn with a fixed seed."""
    if n <= SPREAD_SAMPLE_SIZE:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, SPREAD_SAMPLE_SIZE, replace=False))


def check_same_columns(previous_names, names) -> None:
    """A warm start sees the columns the previous fit saw (names, or none
    on both), in the same order: else a ValueError naming both."""
    if (previous_names is None) != (names is None) or (
            names is not None and list(previous_names) != list(names)):
        raise ValueError(
            f"warm_start=True continues the previous fit on columns "
            f"{None if previous_names is None else list(previous_names)}, but X has "
            f"columns {None if names is None else list(names)}: pass the same columns in "
            f"the same order, or set warm_start=False to start afresh")


def warm_priors(priors: Priors, user, previous: Priors) -> Priors:
    """The resolved ``priors`` of a warm start: the previous fit's
    covariance priors where the user (``user``, the estimator's ``priors``)
    leaves them to their data-dependent default, so that the fit continues
    the previous objective.  The Wishart's scale and degrees of freedom go
    together (with missing entries both follow the observed share,
    :func:`~bayesgmm.priors.resolve_priors`): a warm start on data missing
    another share took the previous scale with a new dof, a prior of
    neither fit."""
    given = user if isinstance(user, Priors) else Priors()
    return replace(priors, **{f: getattr(previous, f)
                              for f in ("covariance_scale", "covariance_dof", "scale_rate")
                              if getattr(given, f) is None and getattr(previous, f) is not None})


def sparse_concentration(priors, inference: str) -> Optional[np.ndarray]:
    """The Dirichlet concentration (scalar or one per component) that only
    a posterior can use: one with an entry below 1, given with
    ``inference`` "vi" or "nuts".  Its density is unbounded at the
    simplex's edge, so no MAP exists (``resolve_priors`` refuses it for
    "map"), but the posterior is proper: the MAP stage that starts the
    posterior then uses a flat Dirichlet, the posterior this one.  None
    when the priors serve the MAP as given (all entries >= 1, none given,
    or "map")."""
    if inference == "map" or not isinstance(priors, Priors) or \
            priors.weight_concentration is None:
        return None
    given = priors.weight_concentration
    a = V.real_array(given, "Priors.weight_concentration")
    if a is None:
        return None                     # resolve_priors names the problem
    if a.ndim > 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.all(a >= 1):
        return None
    if np.any(a <= 0):
        raise ValueError(f"Priors.weight_concentration must be > 0, got {a.tolist()}: a "
                         f"Dirichlet's concentrations are positive (below 1 it favours few "
                         f"components, e.g. 0.1)")
    return a


def concentration_for(a: np.ndarray, K: int) -> np.ndarray:
    """The concentration ``a`` (scalar or (K,)) for K components."""
    if a.ndim == 1 and a.shape != (K,):
        raise ValueError(f"Priors.weight_concentration must be a scalar or have shape ({K},) "
                         f"(one value per component), got shape {a.shape}")
    return np.broadcast_to(a, (K,)).astype(np.float64)


#: ``sample`` draws in blocks of about this many D x D entries (16 MiB of
#: float64 per (N, D, D) array of the model's working set).
SAMPLE_BLOCK_ELEMENTS = 2 ** 21


def sample_mixture(weights: np.ndarray, means: np.ndarray, cov: np.ndarray, family: Covariance,
                   priors: Priors, n_samples: int, rs: np.random.RandomState,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` points (N, D) and their components (N,) drawn from the
    mixture of ``weights`` (M,), ``means`` (M, D) and ``cov`` (scikit-learn's
    layout of ``family``), in the data's units, by running the Pyro model
    with every site conditioned on them (:func:`~bayesgmm.fitting.sample_model`),
    seeded from ``rs``.  ``priors`` only give the sites their shapes: the
    concentration becomes M ones, and a prior field ``family`` uses but
    ``priors`` never resolved (a tied fit's predictive, full per component,
    in 1-D) a placeholder."""
    from .fitting import sample_model

    D = means.shape[1]
    check_result_size(f"n_samples={n_samples}", 8 * int(n_samples) * (int(D) + 1),
                      "draw fewer, or in batches (each call with its own random_state)")
    center = np.zeros(means.shape[1])
    std = Standardizer(center=center, scale=np.ones_like(center))
    params = std.params_to_std(weights, means, cov, family, device, dtype=torch.float64)
    resolved = replace(priors, **{f: 1.0 for f in family.prior_fields
                                  if getattr(priors, f) is None})
    pt = std.priors(resolved, device, dtype=torch.float64).with_concentration(
        torch.ones(len(weights), dtype=torch.float64, device=device))
    # The model's working set is several (N, D, D) arrays (full, tied): 133
    # times the draws at D = 30.  Drawn in blocks of SAMPLE_BLOCK_ELEMENTS
    # D x D entries, each from its own seed (one block below that: the one
    # seed, as before), into the output.
    rows = max(1, SAMPLE_BLOCK_ELEMENTS // (D * D + D + 1))
    try:
        x_out = np.empty((n_samples, D))
        z_out = np.empty(n_samples, dtype=np.int64)
        for a in range(0, n_samples, rows):
            b = min(n_samples, a + rows)
            x, z = sample_model(params, pt, family, b - a, int(rs.randint(0, 2 ** 31 - 1)))
            x_out[a:b] = x.cpu().numpy()
            z_out[a:b] = z.cpu().numpy()
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
            raise
        # numpy's MemoryError, or torch's CPU allocator's RuntimeError from
        # inside Pyro.
        need = n_samples * (D + 1) * 8 / 2 ** 30
        raise MemoryError(f"sample(n_samples={n_samples}) needs about {need:.3g} GiB for the "
                          f"draws, more than this machine could allocate: draw fewer, or "
                          f"in batches (each call with its own random_state)") from None
    return x_out, z_out


def seeded_priors(priors: Optional[Priors], family: Covariance, n_components: int,
                  data: "FitData", points, weights, ks) -> Priors:
    """``priors`` resolved (:func:`~bayesgmm.priors.resolve_priors`) with the
    covariance priors' defaults scaled to the spread of a k-means++ seeding
    of the data: each group's ``points`` (with ``weights``; lists,
    standardised units; at most ``SPREAD_SAMPLE_SIZE`` drawn from each)
    seeded with ``ks[g]`` centres, and the within-cluster variance of that
    partition (:func:`~bayesgmm.fitting.seeded_spread`), taken back to the
    data's units.  The seeding has its own fixed seed: the priors depend on
    the data and K only, not on ``random_state``, ``n_init``, ``init`` or
    restart screening (every restart optimises the same objective), and
    every process computes the same value from the same seed sample.
    Above ``SPREAD_SAMPLE_SIZE`` points of a group the sample is one of
    positions (:func:`spread_rows`, as the out-of-core pass draws it), so
    the priors then depend on the rows' order and on repeating versus
    weighting too."""
    from .fitting import seed_centres

    pts, wts = [], []
    for g, P in enumerate(points):
        w = None if weights is None else weights[g]
        if P.shape[0] > SPREAD_SAMPLE_SIZE:
            pick = spread_rows(P.shape[0])
            index = torch.as_tensor(pick, device=P.device) if torch.is_tensor(P) else pick
            P, w = P[index], None if w is None else w[index]
        pts.append(P)
        wts.append(w)
    k_max = int(np.max(ks))
    centres = seed_centres(pts, k_max, 1, "kmeans++", [0], wts)
    spread = seeded_spread(pts, wts, centres, ks) * data.std.scale ** 2
    return resolve_priors(priors, family, n_components, data.moments, spread,
                          pair_coverage(data.observed_mass, data.mass))


def value_range(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's smallest and largest observed value over the rows of
    ``X`` (inf and -inf where it has none).  By torch on X's own memory, in
    one pass without missing values: numpy's column-wise reductions of an
    (n, 2) array took 0.27 s each at n = 1e7, torch's aminmax 0.05 s."""
    D = X.shape[1]
    if X.shape[0] == 0:
        return np.full(D, np.inf), np.full(D, -np.inf)
    # from_numpy: on the CPU whatever torch.set_default_device says.
    T = torch.from_numpy(X if X.flags.writeable else np.array(X))
    nan = torch.isnan(T)
    if bool(nan.any()):
        lo = torch.where(nan, torch.full_like(T, math.inf), T).amin(0)
        hi = torch.where(nan, torch.full_like(T, -math.inf), T).amax(0)
    else:
        lo, hi = torch.aminmax(T, dim=0)
    return lo.numpy().astype(np.float64), hi.numpy().astype(np.float64)


def constant_features(lo: np.ndarray, hi: np.ndarray, mean: np.ndarray, reduce,
                      device) -> np.ndarray:
    """Which features hold one value in every kept row, from this process's
    :func:`value_range` (exactly: its largest value is its smallest); over
    several processes, every shard's one value must also be the features'
    mean (up to its rounding, :data:`CONSTANT_RTOL`).  A feature whose
    spread is a tiny fraction of its magnitude (1e8 + 1e-7) is not one."""
    from .distributed import reduce_array

    varies = hi > lo
    if reduce is None:
        return ~varies & np.isfinite(lo)
    with np.errstate(invalid="ignore"):
        varies |= np.isfinite(lo) & (np.abs(lo - mean) > CONSTANT_RTOL * np.abs(mean))
    return reduce_array(varies.astype(np.float64), reduce, device) == 0


def fit_data(X: np.ndarray, sample_weight, family: Covariance, device: torch.device,
             missing: bool, dtype: torch.dtype = torch.float32, reduce=None,
             names=None) -> FitData:
    """Sample weights checked and zero-weight rows dropped (exactly as if
    they were not there), missing entries checked (``missing``: the
    estimator marginalises them; every feature needs an observed value),
    and the data standardised by their weighted, observed moments (over
    every process's shard with ``reduce``).  ``names``: the data's column
    names (``feature_names_in_``), for the messages."""
    from .distributed import reduce_array

    w = V.check_sample_weight(sample_weight, X.shape[0])
    keep = None
    if w is not None and not bool((w > 0).all()):
        keep = w > 0
        X, w = X[keep], w[keep]
    if w is not None and bool((w == 1).all()):
        w = None        # every row once: exactly the unweighted fit
    observed_mass = None
    if missing:
        nan = np.isnan(X)
        # Over several processes every shard reports its counts (a shard
        # without NaN too), so that the totals agree on every rank.
        if nan.any() or reduce is not None:
            observed = ~nan
            counts = reduce_array(observed.sum(0).astype(np.float64), reduce, device)
            never = np.flatnonzero(counts == 0)
            if never.size:
                raise ValueError(f"X has no observed value in feature(s) "
                                 f"{feature_list(names, never)}: a "
                                 f"feature that is always missing cannot be modelled; drop it")
            observed_mass = reduce_array(observed.sum(0).astype(np.float64) if w is None
                                         else (observed * w[:, None]).sum(0), reduce, device)
    std, Xt, moments = Standardizer.fit_to(X, device, family.isotropic, dtype=dtype, weight=w,
                                           reduce=reduce)
    constant = constant_features(*value_range(X), moments[0], reduce, device)
    std, Xt, moments = exact_constants(std, Xt, moments, constant, X, family, device, dtype)
    check_overflow(std, X, family, moments, constant, reduce, device, names)
    wt = None if w is None else torch.as_tensor(w, dtype=Xt.dtype, device=device)
    unfit = wt is not None and not bool((torch.isfinite(wt) & (wt > 0)).all())
    totals = reduce_array(np.array([X.shape[0] if w is None else w.sum(), X.shape[0], unfit],
                                   dtype=np.float64), reduce, device)
    mass, n_total = float(totals[0]), int(totals[1])
    # On every rank, weighted or not: the refusal is decided on the totals,
    # so a rank without weights stops too rather than wait in the fit's next
    # collective.
    span = (1.0, 1.0) if w is None and X.shape[0] else \
        (np.inf, -np.inf) if w is None else (float(w.min()), float(w.max()))
    check_weight_range(mass, span, bool(totals[2]), Xt.dtype, reduce, device)
    return FitData(X, w, keep, std, Xt, wt, moments, mass, observed_mass, n_total, reduce,
                   constant=constant, n_local=int(X.shape[0]))


#: A ``partial_fit`` chunk is checked on at most this many of its rows (a
#: fixed-seed sample): the check of 10^5 rows in 20-D cost as much as the
#: chunk's update (from a review); ratings repeat each value many times in
#: far fewer rows.
CHUNK_CHECK_ROWS = 2048


#: ``partial_fit`` checks its chunk on each of a stream's first calls up to
#: this many, then on every this-many-th: a collapse is said at most that
#: many calls late, and a long stream pays for a check every that many
#: calls (one check of a 1,000-row chunk in 20-D cost as much as its
#: update; checks at powers of two only said a collapse up to T calls late,
#: or never: from two reviews).
CHUNK_CHECK_EVERY = 16
#: A chunk of fewer rows than this is not checked: a few rows cannot show
#: a feature's values (two to five continuous rows with whole-number
#: weights, cluster-sized gaps apart, read as a feature of few values).
CHUNK_CHECK_MIN_ROWS = 50


def checked_call(n: int, rows: int, last: int = 0) -> bool:
    """Whether a later ``partial_fit`` call checks its chunk of ``rows``
    rows (of positive weight), from ``n_partial_fits_`` after it and the
    stream's last checked call ``last`` (0: none this session): a chunk of
    at least :data:`CHUNK_CHECK_MIN_ROWS` rows, on each of the first
    :data:`CHUNK_CHECK_EVERY` calls (a stream begun by ``partial_fit``
    counts its first chunk, the fit's, as 1), then once
    :data:`CHUNK_CHECK_EVERY` calls have passed since the last check (a
    small chunk on that call hands it to the next large one: from a
    review, a 30-row chunk on call 32 put the next check at 48)."""
    last = last if last <= n else 0          # (a count from an earlier stream)
    return rows >= CHUNK_CHECK_MIN_ROWS and n >= 1 and (
        n <= CHUNK_CHECK_EVERY or n - last >= CHUNK_CHECK_EVERY)


def chunk_data(X: np.ndarray, w: Optional[np.ndarray], labels: Optional[np.ndarray] = None
               ) -> tuple[FitData, Optional[np.ndarray]]:
    """A ``partial_fit`` chunk (validated, its rows of positive weight, with
    a classifier's class indices ``labels``) as the fit-end checks read it
    (:func:`warn_discrete_features`): at most :data:`CHUNK_CHECK_ROWS` of
    its rows (of each class's), in memory, in one process, with their own moments and
    constant features, in float64 on the CPU; and those rows' labels."""
    groups = [np.arange(X.shape[0])] if labels is None else \
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if any(g.size > CHUNK_CHECK_ROWS for g in groups):
        # Per class: a rare class keeps its rows (a class of 0.1% of a
        # 50,000-row chunk kept two of a sample over the chunk: a review).
        rng = np.random.default_rng(0)
        rows = np.sort(np.concatenate([g if g.size <= CHUNK_CHECK_ROWS else
                                       rng.choice(g, CHUNK_CHECK_ROWS, replace=False)
                                       for g in groups]))
        X, w = X[rows], None if w is None else w[rows]
        labels = None if labels is None else labels[rows]
    _, moments = data_moments(X, torch.device("cpu"), weight=w)
    constant = constant_features(*value_range(X), moments[0], None, None)
    mass = float(X.shape[0] if w is None else w.sum())
    # No standardiser nor standardised copy: the checks read X and moments.
    return FitData(X, w, None, None, None, None, moments, mass, None, int(X.shape[0]),
                   constant=constant, n_local=int(X.shape[0])), labels


def exact_constants(std: Standardizer, Xt: torch.Tensor, moments: tuple, constant: np.ndarray,
                    X: np.ndarray, family: Covariance, device, dtype):
    """The standardiser, standardised data and moments with the spread of
    every constant feature exactly 0.  The weighted (and missing-value, and
    multi-process) moments divide sums, so a constant's mean is off by a
    rounding and its computed spread was that rounding (~1e-17 of its
    magnitude) rather than 0: the feature was standardised by it and its
    fitted standard deviation came out ~1e-21 of its magnitude (against
    ~1e-8 unweighted), so that new data off it by one rounding scored
    -1e12.  Recomputed only in that case (one more pass over X)."""
    mean, sd = moments
    if not bool((constant & (sd != 0)).any()):
        return std, Xt, moments
    sd = np.where(constant, 0.0, sd)
    std = Standardizer(center=std.center, scale=standard_scale(sd, mean, family.isotropic))
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        X = np.array(X)
    return std, std.apply(X, device, dtype), (mean, sd)


def check_weight_range(mass: float, span, unfit: bool, dtype: torch.dtype, reduce=None,
                       device=None) -> None:
    """Sample weights the fit's arithmetic (``dtype``) holds: each positive
    weight a positive finite number there (``unfit``: some process found
    one that is not), and their sum ``mass`` far inside its range, since
    the statistics sum weight x responsibility x squared standardised
    deviation (float32: weights summing to ~1e38 gave a wrong fit, marked
    converged).  ``span``: this process's smallest and largest positive
    weight (1 and 1 unweighted; inf and -inf without rows), for the
    message.  ``mass`` and ``unfit`` are every process's (``reduce``):
    called on every rank, each refuses with the same, global figures."""
    from .distributed import reduce_extremes

    kind = str(dtype).replace("torch.", "")
    limit = torch.finfo(dtype).max * 1e-8
    if not (unfit or mass > limit):
        return
    lo, hi = reduce_extremes(span[0], span[1], reduce, device)
    remedy = ("rescale the weights (e.g. divide them by their largest; they weigh against the "
              "priors as a count of rows)"
              + (" or fit with dtype='float64'" if dtype == torch.float32 else ""))
    where = "" if reduce is None else " (over every rank's shard)"
    if unfit:
        raise ValueError(f"sample_weight spans {float(lo):.3g} to {float(hi):.3g}{where}, beyond "
                         f"what the fit's {kind} arithmetic holds: {remedy}")
    raise ValueError(f"sample_weight sums to {mass:.3g}{where}, beyond what the fit's {kind} "
                     f"statistics hold (at most {limit:.3g}): {remedy}")


def check_chunk_weights(w: Optional[np.ndarray], dtype: torch.dtype) -> None:
    """``partial_fit``'s chunk of positive weights ``w`` (None: unweighted)
    checked as ``fit`` checks its weights (:func:`check_weight_range`):
    each one a positive number in ``dtype`` and their sum within its
    statistics' range (1e-300 rounded to 0 in float32 and was taken; 1e300
    said only that the update diverged)."""
    if w is None or not w.size:
        return
    wt = torch.from_numpy(np.asarray(w)).to(dtype)
    unfit = not bool((torch.isfinite(wt) & (wt > 0)).all())
    check_weight_range(float(w.sum()), (float(w.min()), float(w.max())), unfit, dtype)


def is_row_source(X) -> bool:
    """Whether ``X`` is read in row chunks rather than loaded: a numpy
    memmap (``np.load(path, mmap_mode="r")``), or an array-like that is not
    an in-memory array but has ``shape``, ``dtype`` and row slicing (h5py
    and zarr datasets, dask arrays)."""
    if isinstance(X, np.memmap):
        # Only a table of rows streams; other shapes take the in-memory
        # path, which reads a 1-D array as one feature and names the rest.
        return X.ndim == 2
    if isinstance(X, (np.ndarray, list, tuple, torch.Tensor)) or hasattr(X, "iloc"):
        return False
    import scipy.sparse

    if scipy.sparse.issparse(X):     # refused by the in-memory validation, with its message
        return False
    return all(hasattr(X, a) for a in ("shape", "dtype", "__getitem__")) and \
        len(getattr(X, "shape", ())) == 2


#: Step sizes of ``partial_fit``: eta_t = (t + PARTIAL_FIT_OFFSET) ** -PARTIAL_FIT_DECAY.
PARTIAL_FIT_DECAY = 0.6
PARTIAL_FIT_OFFSET = 2.0


def host_stats(stats: Stats) -> dict:
    """``partial_fit``'s running statistics as the state keeps (and a saved
    model stores) them: float64 host arrays by field name."""
    return {k: getattr(stats, k).detach().to("cpu", torch.float64).numpy() for k in STREAM_STATS}


def seeded_stream(std, params: MixtureParams, family: Covariance, mass: np.ndarray) -> dict:
    """A stream's state that starts from fitted mixtures (``params``, batch
    (G,), in the frame of ``std``) as if their fit's data, of total weight
    ``mass`` (G,), were its first chunk: the statistics per unit of weight
    that reproduce them (N_k = w_k, the moments about the means w_k Sigma_k;
    the M-step of these at weight ``mass`` gives the fitted mixture up to
    the priors' pull, O(1/mass)).  ``partial_fit`` after ``fit`` goes on
    from here, so that the next chunk updates the fit rather than replacing
    it."""
    K = params.weights.shape[-1]
    w = params.weights.detach().double()
    cov = family.dense(params.cov.detach().double(), K)                     # (G, K, D, D)
    S2 = w[..., None, None] * cov
    if not family.full_moments:
        S2 = torch.diagonal(S2, dim1=-2, dim2=-1)
    means = params.means.detach().double()
    G = w.shape[0]
    avg = Stats(torch.zeros(G, dtype=torch.float64, device=w.device), w,
                torch.zeros_like(means), S2, means)
    return {"center": np.asarray(std.center, dtype=np.float64),
            "scale": np.asarray(std.scale, dtype=np.float64),
            "t": np.ones(G, dtype=np.int64), "mass": np.asarray(mass, dtype=np.float64).copy(),
            "avg": host_stats(avg)}


def _moments(stats: Stats) -> tuple:
    return stats.loglik, stats.Nk, stats.S1, stats.S2


def stream_update(state: dict, groups, params: MixtureParams, pt, family: Covariance,
                  mask: Optional[torch.Tensor], decay: float = PARTIAL_FIT_DECAY,
                  offset: float = PARTIAL_FIT_OFFSET):
    """One step of stepwise EM (Cappe & Moulines 2009) for G mixtures
    (``params``, batch (G,), in the frame of the stream's ``state``) on one
    chunk of rows laid out per mixture (``groups``, G groups).

    Each group's E-step statistics per unit of weight are folded into its
    running average with step eta = (t + offset)^-decay when t chunks are
    already averaged (eta = 1 for its first, which starts the average), for
    a chunk of the group's mean chunk weight so far; a chunk of m times that
    weight takes the step m times over, 1 - (1 - eta)^m, so that a handful of
    rows barely moves a mixture fitted to many.  The moments are moved
    exactly to the new reference means first; the closed-form M-step then
    maximises the MAP objective of that average scaled to the group's total
    weight so far, so the priors weigh against all its data, as in a batch
    fit.  A group without rows in the chunk keeps its average, count and
    parameters.  ``state["t"]`` and ``state["mass"]`` are (G,) arrays here
    (chunks and total weight per group), ``state["avg"]`` None or
    :func:`host_stats`.  Returns the new parameters and which groups had
    rows; ``state`` is updated in place."""
    G = params.weights.shape[0]
    device, dtype = params.weights.device, params.weights.dtype
    mass = groups.mass.detach().double().cpu().numpy()
    present = mass > 0
    t = np.asarray(state["t"], dtype=np.float64)
    with torch.no_grad():
        stats = e_step(groups, params, torch.arange(G, device=device), family)
        per = torch.as_tensor(np.where(present, mass, 1.0), dtype=dtype, device=device)
        lead = lambda x, v: v.reshape((G,) + (1,) * (x.dim() - 1))
        chunk = Stats(*(x / lead(x, per) for x in (stats.loglik, stats.Nk, stats.S1, stats.S2)),
                      stats.ref)
        if state["avg"] is None:
            avg = Stats(*(torch.zeros_like(x) for x in _moments(chunk)), chunk.ref)
        else:
            avg = Stats(*(torch.as_tensor(state["avg"][k], device=device).to(dtype)
                          for k in STREAM_STATS))
        # Moments about the old means, moved exactly to the new ones.
        shift = chunk.ref - avg.ref
        S2 = family.recentre(avg.S2, avg.S1, avg.Nk, shift)
        S1 = avg.S1 - avg.Nk.unsqueeze(-1) * shift
        # Step (t + offset)^-decay for a chunk of the group's mean weight so
        # far; a chunk of another weight m takes it m / mean times over
        # (1 - (1 - eta)^(m / mean)), so that a few rows do not move a
        # mixture that many rows fitted (equal chunks: the plain schedule).
        mean = np.asarray(state["mass"], dtype=np.float64) / np.maximum(t, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(t > 0, mass / mean, 1.0)
        base = np.minimum((t + offset) ** -decay, 1.0 - 1e-12)
        eta = np.where(t == 0, 1.0, -np.expm1(ratio * np.log1p(-base)))
        eta = torch.as_tensor(eta, dtype=dtype, device=device)
        present_t = torch.as_tensor(present, device=device)
        # A group without rows keeps its average as it was (about its means).
        mix = lambda old, a, b: torch.where(lead(a, present_t),
                                            (1 - lead(a, eta)) * a + lead(a, eta) * b, old)
        avg = Stats(mix(avg.loglik, avg.loglik, chunk.loglik), mix(avg.Nk, avg.Nk, chunk.Nk),
                    mix(avg.S1, S1, chunk.S1), mix(avg.S2, S2, chunk.S2),
                    torch.where(lead(chunk.ref, present_t), chunk.ref, avg.ref))
        total = np.asarray(state["mass"], dtype=np.float64) + mass
        tt = torch.as_tensor(total, dtype=dtype, device=device)
        scaled = Stats(*(x * lead(x, tt) for x in _moments(avg)), avg.ref)
        new = m_step(scaled, params, pt, family, mask).where(present_t, params)
    state.update(t=t.astype(np.int64) + present, mass=total, avg=host_stats(avg))
    return new, present


def positive_rows(sample_weight, n: int, chunk_rows: int = 2 ** 22) -> Optional[np.ndarray]:
    """Which of ``n`` rows have positive ``sample_weight`` (an array or a
    row source, read in chunks): bool (n,), or None when every row does, no
    weights are given, none is positive, or they are not n numbers (the
    first pass over the rows, :func:`stream_data`, then refuses them with
    the row named).  NaN and negative weights count as not positive."""
    if sample_weight is None:
        return None
    try:
        if not is_row_source(sample_weight) and np.ndim(sample_weight) == 0:
            return None
        if tuple(np.shape(sample_weight)) != (n,):
            return None
        with np.errstate(invalid="ignore"):
            keep = np.concatenate([
                np.asarray(sample_weight[a:a + chunk_rows], dtype=np.float64) > 0
                for a in range(0, n, chunk_rows)])
    except (TypeError, ValueError, RuntimeError):
        return None
    return None if keep.all() or not keep.any() else keep


def stream_data(estimator, X, sample_weight, family: Covariance, device: torch.device,
                missing: bool, dtype: torch.dtype, picks: dict, reduce=None,
                chunk_rows: Optional[int] = None, labels: Optional[np.ndarray] = None,
                n_groups: int = 1, group=None) -> FitData:
    """:func:`fit_data` for out-of-core data (:func:`is_row_source`): two
    passes over the row chunks, the first validating every chunk (as
    ``check_X`` would), summing the weighted, observed counts and first
    moments and collecting the rows of ``picks`` ({name: sorted row
    indices}: the seeding and screening samples), the second the second
    moments about the mean.  A pick given as a function (``spread_rows``)
    takes the number of rows of positive weight and returns sorted indices
    among those rows: the rows an in-memory fit, which drops the rows of
    weight 0 first, would pick; with weights it is collected in the second
    pass, once that number is known.  Memory: one chunk and the samples.  With
    ``labels`` (the encoded class of every row, for the classifier) the
    per-class totals are summed too and the samples keep their labels."""
    from .distributed import reduce_array
    from .fitting import STREAM_CHUNK_ROWS, RowStream, check_unchanged, chunk_signature, read_rows

    chunk_rows = chunk_rows or STREAM_CHUNK_ROWS
    n, D = (int(v) for v in X.shape)
    w_src = None
    # Every check that can refuse this rank's shard comes before the
    # collective below (``agree``), which tells every rank: a rank that
    # raised here alone would leave the others waiting in it.
    error = None
    try:
        if n < 1 or D < 1:
            raise ValueError(f"X has shape {tuple(X.shape)}: at least one row and one feature "
                             f"are needed")
        V.check_stream_dtype(X)
        if sample_weight is not None:
            w_src = sample_weight if is_row_source(sample_weight) else \
                V.check_sample_weight(sample_weight, n,
                                      all_zero="error" if group is None else "allow")
            if w_src is not None and tuple(np.shape(w_src)) != (n,):
                raise ValueError(f"sample_weight has shape {tuple(np.shape(w_src))}, expected "
                                 f"({n},)")
    except ValueError as exc:
        error, n = exc, 0          # no pass over the rows: straight to ``agree``
    estimator.n_features_in_ = D
    if hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    s0, s1, mass = np.zeros(D), np.zeros(D), 0.0
    w_seen = np.array([np.inf, -np.inf])     # smallest and largest positive weight
    unfit = False                            # one the fit's dtype cannot hold
    np_dtype = torch.empty(0, dtype=dtype, device="cpu").numpy().dtype
    C = n_groups
    per_class = np.zeros((C, 2 + D))          # rows, weight, observed weight per feature
    collected = {k: [] for k in picks}
    # Picks among the rows of positive weight: every row without weights.
    deferred = {k: f for k, f in picks.items() if callable(f)}
    picks = {k: (f(n) if callable(f) else f) for k, f in picks.items()
             if not (callable(f) and w_src is not None)}
    n_kept = 0                                 # rows of positive weight
    v_lo, v_hi = np.full(D, np.inf), np.full(D, -np.inf)   # the kept rows' value range
    signatures = []                            # each chunk's, for the later passes
    has_missing = False
    for a in range(0, n, chunk_rows):
        try:
            chunk = read_rows(X, a, a + chunk_rows)
            w = None if w_src is None else np.asarray(w_src[a:a + chunk_rows], dtype=np.float64)
            V._check_finite(chunk, "X", None, missing, row_offset=a)
            if w is not None and not np.all(np.isfinite(w) & (w >= 0)):
                i = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
                raise ValueError(f"sample_weight must be finite and >= 0, got {w[i]} at row "
                                 f"{a + i}: weights count how often a row was seen (0 drops it)")
        except Exception as exc:      # a bad value, or a chunk that cannot be read
            # Over several processes: every rank learns of it before the
            # first collective (no rank may wait in one alone).
            error = exc
            break
        signatures.append(chunk_signature(chunk, w))
        nan = np.isnan(chunk)
        has_missing = has_missing or bool(nan.any())
        W = (~nan) * (1.0 if w is None else w[:, None])
        s0 += W.sum(0)
        s1 += (W * np.where(nan, 0.0, chunk)).sum(0)
        mass += float(chunk.shape[0] if w is None else w.sum())
        n_kept += chunk.shape[0] if w is None else int((w > 0).sum())
        c_lo, c_hi = value_range(chunk if w is None else chunk[w > 0])
        v_lo, v_hi = np.minimum(v_lo, c_lo), np.maximum(v_hi, c_hi)
        if w is not None and (w > 0).any():
            pos = w[w > 0]
            w_seen = np.array([min(w_seen[0], pos.min()), max(w_seen[1], pos.max())])
            with np.errstate(over="ignore", under="ignore"):
                cast = pos.astype(np_dtype)
            unfit = unfit or not bool(np.all(np.isfinite(cast) & (cast > 0)))
        yc = None
        if labels is not None:
            yc = np.asarray(labels[a:a + chunk.shape[0]])
            wc = np.ones(chunk.shape[0]) if w is None else w
            per_class[:, 0] += np.bincount(yc, minlength=C) if w is None else \
                np.bincount(yc, weights=(w > 0).astype(np.float64), minlength=C)
            per_class[:, 1] += np.bincount(yc, weights=wc, minlength=C)
            for d in range(D):
                per_class[:, 2 + d] += np.bincount(yc, weights=W[:, d], minlength=C)
        for k, idx in picks.items():
            lo, hi = np.searchsorted(idx, [a, a + chunk.shape[0]])
            if hi > lo:
                rows = idx[lo:hi] - a
                collected[k].append((chunk[rows], None if w is None else w[rows],
                                     None if yc is None else yc[rows]))
    from .distributed import agree
    agree(error, group, D)
    # The rows of positive weight, as an in-memory fit (which drops the
    # others first) counts them.
    totals = reduce_array(np.concatenate([s0, s1, [mass, n_kept, float(has_missing),
                                                   float(unfit)]]), reduce, device)
    s0, s1, (mass, n_total, any_missing, unfit) = totals[:D], totals[D:2 * D], totals[2 * D:]
    if mass <= 0:
        raise ValueError("sample_weight are all zero: at least one row needs a positive weight")
    # On every rank, weighted or not (as in fit_data).
    if w_src is None:
        w_seen = np.array([1.0, 1.0]) if n_kept else w_seen
    check_weight_range(float(mass), w_seen, bool(unfit), dtype, reduce, device)
    never = np.flatnonzero(s0 == 0)
    if never.size:
        raise ValueError(f"X has no observed value in feature(s) {never.tolist()}: a feature "
                         f"that is always missing cannot be modelled; drop it")
    mean = s1 / s0
    s2 = np.zeros(D)
    late = {k: f(n_kept) for k, f in deferred.items()} if w_src is not None else {}
    seen_kept = 0
    failure = None      # over several processes: raised after the pass's sum, on every rank
    for a in range(0, n, chunk_rows):
        try:
            chunk = read_rows(X, a, a + chunk_rows)
            w = None if w_src is None else np.asarray(w_src[a:a + chunk_rows], dtype=np.float64)
            check_unchanged(signatures[a // chunk_rows], chunk, w, a)
        except Exception as exc:
            if reduce is None:
                raise
            failure = failure or exc
            continue
        if late:
            pos = np.flatnonzero(w > 0)               # this chunk's kept rows, in order
            for k, idx in late.items():
                lo, hi = np.searchsorted(idx, [seen_kept, seen_kept + pos.size])
                if hi > lo:
                    rows = pos[idx[lo:hi] - seen_kept]
                    collected[k].append((chunk[rows], w[rows],
                                         None if labels is None else
                                         np.asarray(labels[a:a + chunk.shape[0]])[rows]))
            seen_kept += pos.size
        dev = np.where(np.isnan(chunk), 0.0, chunk - mean)
        with np.errstate(over="ignore"):     # an overflow is refused by check_overflow
            s2 += ((1.0 if w is None else w[:, None]) * dev * dev).sum(0)
    sd = np.sqrt(reduce_array(s2, reduce, device, error=failure, check=True) / s0)
    constant = constant_features(v_lo, v_hi, mean, reduce, device)
    sd = np.where(constant, 0.0, sd)      # not the mean's rounding (see exact_constants)
    scale = standard_scale(sd, mean, family.isotropic)
    std = Standardizer(center=mean, scale=scale)
    samples = {}
    for k, parts in collected.items():
        rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, D))
        ws = None if w_src is None else (np.concatenate([p[1] for p in parts]) if parts
                                         else np.zeros(0))
        samples[k] = (torch.as_tensor((rows - mean) / scale, dtype=dtype, device=device),
                      None if ws is None else torch.as_tensor(ws, dtype=dtype, device=device))
        if labels is not None:
            samples[k] += (torch.as_tensor(np.concatenate([p[2] for p in parts]) if parts
                                           else np.zeros(0, dtype=np.int64), device=device),)
    class_totals = None
    if labels is not None:
        per_class = reduce_array(per_class, reduce, device)
        class_totals = (per_class[:, 0].astype(np.int64), per_class[:, 1], per_class[:, 2:])
    with np.errstate(all="ignore"):
        rows = [v[0] for v in samples.values() if v[0].shape[0]]
        seen = rows[0].cpu().numpy() * scale + mean if rows else np.zeros((1, D))
        # ... with this process's value range (the sample comes back from
        # the float32 frame, which may have lost a tiny spread).
        seen = np.r_[seen, v_lo[None], v_hi[None]]
    check_overflow(std, seen, family, (mean, sd), constant, reduce, device)
    stream = RowStream(X, mean, scale, device, dtype, w_src,
                       float(mass) if labels is None else class_totals[1], bool(any_missing),
                       reduce, chunk_rows, labels,
                       None if labels is None else class_totals[0], signatures)
    return FitData(None, None, None, std, None, None, (mean, sd), float(mass),
                   s0 if any_missing else None, int(n_total), reduce, stream, samples,
                   class_totals, constant, n_kept)


def guard_stage(stage: str, params: MixtureParams, losses: torch.Tensor,
                previous: Optional[tuple[str, MixtureParams, torch.Tensor]] = None, *,
                learning_rate: Optional[float], what: str = "", depth: int = 0
                ) -> tuple[MixtureParams, torch.Tensor, torch.Tensor]:
    """The one guard against non-finite fitted state, run on the result of
    every fitting stage of both estimators (EM, SVI, discriminative
    fine-tuning).

    ``params`` and ``losses`` have one batch entry per fitted mixture (a
    class, or () for one mixture).  Entries whose loss or any parameter is
    not finite fall back to ``previous`` = (its stage's name, params,
    losses), with one ``RuntimeWarning`` naming the stage and the remedy;
    without a previous stage they are a ``ValueError``.  So a fit ends
    with finite parameters or raises, and a file is never saved from a
    diverged fit.  ``depth``: frames between the estimator's ``_fit`` and
    this call, so that the warning points at the user's ``fit`` line.
    ``learning_rate``: the SVI step size the remedy names, None for a
    stage that takes no steps (EM, a stepwise-EM ``partial_fit``).
    Returns the guarded params and losses, and which entries were kept."""
    ok = params.finite() & torch.isfinite(losses)
    if bool(ok.all()):
        return params, losses, ok
    n_bad = int((~ok).sum())
    whose = f" for {n_bad} {what}" if what else ""
    if previous is None:
        step = "" if learning_rate is None else f" / lower learning_rate (now {learning_rate})"
        # float32 leaves its range first (data or sample weights spanning
        # many decades; one row weighing 1e24 against rows of weight 1 put
        # the others ~1e10 standardised units away): float64 is a remedy.
        wider = (", or fit with dtype='float64'" if params.means.dtype == torch.float32
                 else "")
        raise ValueError(
            f"the {stage} diverged (non-finite loss or parameters){whose}: check the data and "
            f"any sample weights for extreme values{wider}, or raise the covariance prior "
            f"(Priors.scale_rate or covariance_scale){step}")
    name, prev_params, prev_losses = previous
    warnings.warn(
        f"{stage} diverged (non-finite loss or parameters){whose}; keeping the {name} solution: "
        f"lower learning_rate (now {learning_rate}) to refine it by {stage}",
        RuntimeWarning, stacklevel=4 + depth)
    return params.where(ok, prev_params), torch.where(ok, losses, prev_losses.to(losses)), ok


class MixtureBase:
    """Mixin for the estimators: settings, fit wrapper, covariance
    attributes, persistence.  Subclasses implement ``_fit``."""

    #: Rebuilt, not saved: the discrete-value findings said so far in this
    #: fit and its partial_fit stream (not repeated chunk after chunk), and
    #: the stream's last checked call.
    _persist_exclude = ("_discrete_said", "_discrete_checked")

    def _settings(self, available: bool = True) -> FitSettings:
        """The fit's settings, checked (``available``: whether the device
        must exist on this machine, as a fit needs; else its form only)."""
        s = FitSettings(
            covariance_type=V.check_option("covariance_type", self.covariance_type,
                                           COVARIANCE_TYPES),
            n_init=V.check_int("n_init", self.n_init, 1),
            # Iteration counts live in int64 tensors (10**30 overflowed in torch).
            max_iter=V.check_int("max_iter", self.max_iter, 0, MAX_ITERATIONS),
            em_max_iter=V.check_int("em_max_iter", self.em_max_iter, 0, MAX_ITERATIONS),
            tol=V.check_float("tol", self.tol, minimum=0.0, strict=False),
            learning_rate=check_learning_rate(self.learning_rate),
            device=V.resolve_device(self.device, available),
            progress=self.progress,
            dtype=self._dtype(),
        )
        # The restarts' seeds and means, at one component of one feature: a
        # huge n_init is refused before anything is drawn (seed_centres
        # checks again at the fit's K and D).
        check_result_size(f"n_init={s.n_init}", 8 * RESTART_COPIES * int(s.n_init),
                          "use fewer restarts (the default: n_init=4)")
        if s.max_iter == 0 and s.em_max_iter == 0:
            raise ValueError("max_iter=0 and em_max_iter=0 leave nothing to fit: "
                             "set em_max_iter > 0 (EM) or max_iter > 0 (SVI)")
        V.check_bool("progress", self.progress)
        return s

    def set_params(self, **params):
        """scikit-learn's, and ``priors__<field>=value`` sets one field of
        the priors: ``priors`` becomes a copy of the current
        :class:`~bayesgmm.Priors` (of ``Priors()`` when it is None: every
        field from the data) with that field replaced, so that a search can
        tune one prior, ``GridSearchCV(BayesianGMM(3),
        {"priors__weight_concentration": [1, 2, 5]})``.  The ``Priors``
        object given before is left unchanged (shared ones too).
        ``get_params`` does not list the fields (so that
        ``type(est)(**est.get_params())`` stays a copy): read them from
        ``priors``."""
        nested = {key.partition("__")[2]: params.pop(key)
                  for key in [k for k in params if k.startswith("priors__")]}
        if nested:
            names = [f.name for f in fields(Priors)]
            unknown = [k for k in nested if k not in names]
            if unknown:
                raise ValueError(f"Invalid parameter priors__{unknown[0]} for estimator "
                                 f"{type(self).__name__}: Priors has no field {unknown[0]!r}; its "
                                 f"fields are {names}")
            current = params.get("priors", self.priors)
            if current is None:
                current = Priors()
            if not isinstance(current, Priors):
                raise ValueError(f"priors__{next(iter(nested))} sets a field of a Priors, but "
                                 f"priors is {current!r}: set priors to a bayesgmm.Priors (or "
                                 f"None) first")
            params["priors"] = replace(current, **nested)
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # NaN is a missing value, not an error, with missing="marginalize".
        tags.input_tags.allow_nan = getattr(self, "missing", "error") == "marginalize"
        return tags

    def _dtype(self) -> torch.dtype:
        """The floating-point type of the fit and the predictions (the
        ``dtype`` setting; float32 for models saved before it existed)."""
        name = V.check_option("dtype", getattr(self, "dtype", "float32"), DTYPES)
        return torch.float64 if name == "float64" else torch.float32

    # ------------------------------------------------------ posterior draws
    #: The axis of the stored draws that indexes them: 0, or 1 behind the
    #: classifier's class axis.
    _DRAW_AXIS = 0

    def _draws(self) -> dict:
        """The stored posterior draws ({"weights", "means", "covariances"},
        the data's units); a clear error for a MAP fit."""
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self, ("weights_", "means_", "covariances_"))
        draws = getattr(self, "_posterior", None)
        if draws is None:
            raise ValueError(
                f"this {type(self).__name__} was fitted with inference='map', which keeps only "
                f"the MAP point: refit with inference='vi' (fast, approximate) or "
                f"inference='nuts' (exact up to Monte Carlo error) for posterior draws")
        return draws

    def posterior_samples(self, n_samples: Optional[int] = None,
                          random_state=None) -> dict:
        """Draws from the posterior of a fit with ``inference="vi"`` or "nuts".

        Parameters
        ----------
        n_samples : int, optional
            Return a random subset of this many of the stored draws (without
            replacement; the same draws of every array); all of them by
            default.
        random_state : int, RandomState or None
            Seeds the subset (default: the estimator's ``random_state``).

        Returns
        -------
        dict of str to ndarray
            :class:`BayesianGMM`: ``"weights"`` (S, K), ``"means"`` (S, K, D)
            and ``"covariances"`` (S, ...) in scikit-learn's layout of
            ``covariance_type`` ((S, K, D, D) "full", (S, D, D) "tied",
            (S, K, D) "diag", (S, K) "spherical").  :class:`GMMClassifier`:
            the same behind a class axis, (C, S, K), (C, S, K, D), (C, S,
            ...), padded components at weight 0 with NaN means and
            covariances (as ``weights_``, ``means_``).  In the data's units,
            every draw's components in the order of ``means_`` (copies).
            For NUTS the draws of the chains follow one another.

        Raises
        ------
        ValueError
            For a fit with ``inference="map"``, or ``n_samples`` above the
            number of stored draws.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesgmm import BayesianGMM
        >>> from bayesgmm.datasets import load_iris
        >>> X = load_iris()[["petal_length"]]
        >>> gmm = BayesianGMM(2, inference="vi", n_samples=200,
        ...                   random_state=0, device="cpu").fit(X)
        >>> gmm.posterior_samples()["means"].shape
        (200, 2, 1)
        >>> gmm.posterior_samples(50, random_state=0)["weights"].shape
        (50, 2)
        """
        draws = self._public_draws()
        axis = self._DRAW_AXIS
        S = draws["weights"].shape[axis]
        # Checked when unused too: a bad seed must not pass until a subset is asked.
        rs = V.check_random_state(self.random_state if random_state is None else random_state)
        if n_samples is None:
            return {k: v.copy() for k, v in draws.items()}
        n = V.check_int("n_samples", n_samples, 1)
        if n > S:
            raise ValueError(f"n_samples={n} but only {S} posterior draws are stored: use "
                             f"n_samples <= {S}, or refit with the estimator's n_samples >= {n}")
        rows = np.sort(rs.choice(S, n, replace=False))
        return {k: np.take(v, rows, axis=axis) for k, v in draws.items()}

    def _public_draws(self) -> dict:
        """The stored draws as :meth:`posterior_samples` gives them."""
        return self._draws()

    def credible_interval(self, name: str, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central posterior interval of every element of ``name``.

        Parameters
        ----------
        name : {"weights", "means", "covariances"}
        level : float in (0, 1), default 0.9
            Posterior probability inside the interval: the bounds are the
            (1 - level) / 2 and (1 + level) / 2 quantiles of the draws,
            element by element.

        Returns
        -------
        lower, upper : ndarray
            Each of the shape of the fitted attribute (``weights_``,
            ``means_``, ``covariances_``; the classifier's with its class
            axis, padded components at weight 0 and NaN means and
            covariances, as those attributes hold them), in the data's units.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesgmm import BayesianGMM
        >>> from bayesgmm.datasets import load_iris
        >>> X = load_iris()[["petal_length"]]
        >>> gmm = BayesianGMM(2, inference="vi", n_samples=200,
        ...                   random_state=0, device="cpu").fit(X)
        >>> lower, upper = gmm.credible_interval("means", level=0.9)
        >>> bool(np.all(lower <= upper)), lower.shape
        (True, (2, 1))
        """
        from .posterior import DRAW_NAMES
        draws = self._public_draws()
        if not isinstance(name, str) or name not in DRAW_NAMES:
            raise ValueError(f"name must be one of {list(DRAW_NAMES)}, got {name!r}")
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Real) \
                or not 0 < level < 1:
            raise ValueError(f"level must be a number in (0, 1), got {level!r}: e.g. 0.9 for "
                             f"the central 90% interval")
        level = float(level)
        q = np.quantile(draws[name], [(1 - level) / 2, (1 + level) / 2], axis=self._DRAW_AXIS)
        return q[0], q[1]

    def _check_hyperparameters(self) -> None:
        """Every hyperparameter checked as ``fit`` checks it, without data
        (K against the rows, init's means against the features are left to
        the fit; the device's and n_threads's form only, whose limits are
        the machine's): what ``save`` writes and a continuing
        ``partial_fit`` runs on must be settings a fit accepts."""
        from .priors import check_priors_type

        V.check_random_state(self.random_state)
        check_threads(self.n_threads, here=False)
        V.allows_missing(self)
        V.check_bool("warm_start", self.warm_start)
        check_priors_type(self.priors)
        self._check_model_hyperparameters()
        D = getattr(self, "n_features_in_", None)
        if D is not None and hasattr(self, "weights_"):
            # The user's priors against this model's features and K, as the
            # next fit resolves them (the data-dependent defaults aside).
            from . import covariance as cov_module
            from .priors import resolve_priors
            family = cov_module.get(self.covariance_type, D)
            resolve_priors(self._fit_priors(), family, self._prior_components(),
                           (np.zeros(D), np.ones(D)))

    def _warm_asked(self) -> bool:
        """Whether ``warm_start`` asks this fit to continue a fitted model."""
        return V.check_bool("warm_start", self.warm_start) and hasattr(self, "means_")

    def _fit_wrapper(self, *args):
        # The new state is built in locals and assigned at the end, but input
        # validation sets n_features_in_/feature_names_in_ up front: restore
        # them (and anything else) if the fit raises or is interrupted.
        # fit_context: autograd whatever the caller's mode (its exit restores
        # the caller's, even if a KeyboardInterrupt landed inside a
        # torch.no_grad() __enter__) and the fit's threads.
        with rollback_on_error(self), fit_context(check_threads(self.n_threads)):
            return self._fit(*args)

    # ------------------------------------------------ covariance attributes
    def _family(self) -> Covariance:
        """The covariance family of the fitted model."""
        return cov_module.get(getattr(self, "covariance_type_", self.covariance_type),
                              self.means_.shape[-1])

    @property
    def precisions_(self) -> np.ndarray:
        """The precision matrices (inverse covariances) in scikit-learn's
        shapes, as ``covariances_``: (K, D, D) "full", (D, D) "tied", (K, D)
        "diag", (K,) "spherical" (the classifier's with a leading class
        axis, NaN at padded components).  Derived from
        ``precisions_cholesky_`` (P P^T, or its square for "diag" and
        "spherical"), so it follows it through ``permute`` and ``load``."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "precisions_cholesky_")
        P = self.precisions_cholesky_
        if self.covariance_type_ in ("full", "tied"):
            return P @ np.swapaxes(P, -1, -2)
        return P * P

    def _set_covariances(self, cov: np.ndarray, family: Covariance, mask=None) -> None:
        """``covariances_``, ``precisions_cholesky_`` and ``scales_`` from
        scikit-learn-shaped covariances (leading class dim for the
        classifier; ``mask`` (C, K) marks real components, NaN elsewhere)."""
        D = self.means_.shape[-1]
        K = self.means_.shape[-2]
        self.covariance_type_ = family.name
        value = family.from_covariances(torch.from_numpy(np.asarray(cov)))
        pc = family.precisions_cholesky(value).numpy()
        lead = cov.shape[:-len(family.covariance_shape(K, D))]
        scales = np.stack([family.marginal_scales(c, K, D)
                           for c in cov.reshape((-1,) + family.covariance_shape(K, D))])
        scales = scales.reshape(lead + (K, D))
        if mask is not None and family.per_component:
            pad = ~mask
            extra = (1,) * (cov.ndim - mask.ndim)
            cov = np.where(pad.reshape(pad.shape + extra), np.nan, cov)
            pc = np.where(pad.reshape(pad.shape + extra), np.nan, pc)
        if mask is not None:
            scales = np.where(~mask[..., None], np.nan, scales)
        self.covariances_ = cov
        self.precisions_cholesky_ = pc
        self.scales_ = scales

    def _frame(self, device: torch.device, weights: np.ndarray, means: np.ndarray,
               cov: np.ndarray, family: Covariance, frame_weights: Optional[np.ndarray] = None,
               mask: Optional[np.ndarray] = None, dtype: Optional[torch.dtype] = None):
        """The fitted mixture(s) as float32 tensors on ``device`` in a
        standardised frame taken from the mixture's own moments (any affine
        frame gives the same answers; this one needs only the public fitted
        attributes), with the frame's Jacobian offset.  ``frame_weights``
        (C, K): the joint weights of all components (class prior included)
        that set the frame, by default ``weights``.  ``mask`` (C, K) marks
        the real components of padded mixtures: only they set the frame, and
        the padded ones are made neutral in the standardised frame (a unit
        covariance in the data's units could overflow float32 there)."""
        K, D = means.shape[-2:]
        w = (weights if frame_weights is None else frame_weights).reshape(-1, K)
        real = np.ones(w.shape, dtype=bool) if mask is None else mask.reshape(-1, K)
        m = np.where(real[..., None], means.reshape(-1, K, D), 0.0)
        scales = np.stack([family.marginal_scales(c, K, D)
                           for c in cov.reshape((-1,) + family.covariance_shape(K, D))])
        scales = np.where(real[..., None], scales, 0.0)
        center = np.einsum("ck,ckd->d", w, m)
        # Deviations from the centre, divided by the largest one per feature
        # before squaring: E[x^2] - E[x]^2 cancels catastrophically for data
        # at 1e8 with spreads of 1e-9, and spreads of 1e-200 would underflow.
        dev = np.where(real[..., None], m - center, 0.0)
        ref = np.maximum(scales.max((0, 1)), np.abs(dev).max((0, 1)))
        ref = np.where(ref > 0, ref, 1.0)
        var = np.einsum("ck,ckd->d", w, (scales / ref) ** 2 + (dev / ref) ** 2)
        scale = ref * np.sqrt(var)
        if family.isotropic:
            scale = np.full_like(scale, rms(scale))
        std = Standardizer(center=center, scale=scale)
        with np.errstate(all="ignore"):
            params = std.params_to_std(weights, np.where(real.reshape(weights.shape + (1,)),
                                                         means, 0.0), cov, family, device,
                                       dtype=self._dtype() if dtype is None else dtype)
        if mask is not None:
            params = masked(params, torch.as_tensor(mask, device=device), family)
        return std, params, float(np.log(std.scale).sum())

    def _check_partial_inference(self) -> None:
        """``partial_fit`` updates a MAP: refused for a posterior fit."""
        from .posterior import INFERENCE_OPTIONS

        inference = V.check_option("inference", getattr(self, "inference", "map"),
                                   INFERENCE_OPTIONS)
        if inference != "map":
            raise ValueError(
                f"partial_fit updates the MAP point chunk by chunk, which would leave the "
                f"posterior draws of inference={inference!r} stale: use fit on all the data "
                f"with inference={inference!r}, or set inference='map' and refit with fit "
                f"before partial_fit")
        if getattr(self, "_posterior", None) is not None:
            # inference is "map" now, but the fitted model still holds the
            # draws of an earlier posterior fit.
            raise ValueError(
                "partial_fit updates the MAP point chunk by chunk, but this model holds the "
                "posterior draws of its last fit, which would go stale: refit with fit "
                "(inference='map') before partial_fit")

    def _continued_priors(self, fitted: Priors, family: Covariance, K: int, D: int) -> Priors:
        """The priors a continuing ``partial_fit`` maximises against for a
        K-component mixture fitted with ``fitted``: fields the user's
        ``priors`` give replace the fitted ones (the objective from this
        chunk on); fields left None keep them, as a warm start does."""
        if self.priors is None:
            return fitted
        if not isinstance(self.priors, Priors):
            resolve_priors(self.priors, family, K, (np.zeros(D), np.ones(D)))   # names it
        given = {f: v for f, v in vars(self.priors).items() if v is not None}
        if not given:
            return fitted
        merged = replace(fitted, **given)
        resolved = resolve_priors(merged, family, K, (np.zeros(D), np.ones(D)))
        return replace(fitted, **{f: getattr(resolved, f) for f in given})

    def _impute(self, X, sample, random_state, mixtures):
        """The body of both estimators' ``impute``: ``X`` validated (NaN
        allowed, a row with every feature missing too: the mixture's
        mean fills it, or a draw from the mixture), a copy whose
        missing entries :func:`bayesgmm._predict.fill_missing` fills, as an
        array or, for a DataFrame, a DataFrame with its index and columns
        (for a tensor, a float64 tensor on its device).

        ``mixtures(rows, Xv)``: for the rows with a missing entry (positions,
        (m,)) of the validated ``Xv``, pairs (positions among them, (weights, means, covariances,
        family, real components or None)) of the mixture each set of rows is
        filled under, in data units as the fitted attributes."""
        frame = None
        try:
            import pandas as pd
            if isinstance(X, pd.DataFrame):
                frame = X
        except ImportError:  # pragma: no cover
            pass
        Xv = V.check_X(self, X, reset=False, allow_nan=True, empty_rows=True)
        V.check_bool("sample", sample)
        gen = None
        device = _predict.model_device(self)
        if sample:
            rs = V.check_random_state(self.random_state if random_state is None else random_state)
            gen = torch.Generator(device=device).manual_seed(int(rs.randint(0, 2 ** 31 - 1)))
        nan = np.isnan(Xv)
        out = Xv.copy()
        rows = np.flatnonzero(nan.any(1))
        for part, (weights, means, cov, family, real) in mixtures(rows, Xv):
            if part.size == 0:
                continue
            std, params, _ = self._frame(device, weights, means, cov, family, mask=real,
                                         dtype=torch.float64)
            _predict.fill_missing(Xv, rows[part], out, std, params.map(lambda t: t[None]),
                                  family, gen, device, self._dtype())
        if frame is not None:
            return frame.copy().__class__(out, index=frame.index, columns=frame.columns)
        if torch.is_tensor(X):       # tensors in, tensors out (float64 on X's device)
            return torch.as_tensor(out, device=X.device)
        return out

    # ---------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Save the estimator (hyperparameters and fitted state) to ``path``.

        The file is a zip archive holding the arrays as safetensors and
        everything else as JSON (see :mod:`bayesgmm.persistence`); loading it
        never runs code from the file.  The write is atomic: an interrupted
        save leaves any previous file at ``path`` intact.  Use this, not
        pickle/joblib, for files you share or receive.  An estimator that
        is not fitted raises ``NotFittedError``."""
        persistence.save(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Load an estimator of this kind saved by :meth:`save`; refuses any
        other kind.  ``device`` ("cpu", "cuda", ...) sets where the loaded
        model predicts (``device_``); by default the saved device, or the CPU
        when it is a GPU this machine lacks.  See
        :func:`bayesgmm.persistence.load`."""
        return persistence.load(path, device=device, expect=cls)

