"""Priors in the data's units, their resolution from the data, and the
affine change of units between the data and the standardised frame the fits
run in.

:class:`Priors` is what users write; :func:`resolve_priors` fills the
data-dependent defaults (numpy, data units); :class:`Standardizer` turns
resolved priors and fitted parameters into tensors in standardised units and
back (exact changes of variables), and gives the loss offset between the
two frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import _validation as V
from .covariance import Covariance

ArrayLike = Union[float, Sequence[float]]

# Spreads below this count as zero: 0.1 x a subnormal spread underflows to a
# zero prior rate, and dividing by one loses all precision.
_TINY = 1e-290


#: Arrays of at most this many entries are shown whole in a Priors repr.
REPR_FULL_SIZE = 8


@dataclass(frozen=True)
class Priors:
    """Hyperparameters of the Bayesian Gaussian mixture, in the data's units.

    Every field may be left as ``None`` to take a default that is resolved
    from the data at fit time (so that results do not depend on the data's
    units); the resolved values are stored on the fitted estimator as
    ``priors_``.  Which covariance fields apply depends on
    ``covariance_type``: ``scale_*`` for "diag" and "spherical" (and "full"
    with one feature), ``covariance_*`` for "full" and "tied"; the fields a
    type does not use are ignored (so one ``Priors`` serves a sweep over
    types; they are still checked: a value no type takes is an error), and
    ``priors_`` holds only the ones it used.

    Parameters
    ----------
    weight_concentration : float or array of shape (n_components,), default 1.0
        Dirichlet concentration of the mixture weights.  Must be >= 1 for a
        MAP fit: below 1 the Dirichlet density is unbounded at the edge of
        the simplex, so the MAP estimate does not exist.  ``BayesianGMM``
        with ``inference="vi"`` or "nuts" takes any positive value: below 1
        the prior favours few components, and the posterior switches
        surplus ones off (delete moves, as with the Dirichlet process).
        With ``weight_prior="dirichlet_process"`` it is the process's
        concentration alpha.
    mean_loc : float or array of shape (n_features,), default: data mean
        Mean of the Normal prior on each component mean.
    mean_scale : float or array of shape (n_features,), default: 2 x data std
        Standard deviation of the Normal prior on each component mean.
    scale_shape : float, default 1.0
        Shape of the InverseGamma prior on each component standard deviation
        ("diag", "spherical").
    scale_rate : float or array of shape (n_features,), default: (scale_shape + 1) sqrt(2) x the seeding's spread
        Rate of that InverseGamma ("spherical": one float, from the root mean
        of the features' spreads).  Default ``(scale_shape + 1) sqrt(2) x s``
        (``2 sqrt(2) x s`` at the default shape 1), with ``s`` the
        within-cluster standard deviation of a k-means++ seeding (see
        below): the prior's mode, rate / (shape + 1), is then sqrt(2) x a
        typical component's spread whatever the shape.  Any positive rate
        keeps the scales away from zero (no singular components).
    covariance_dof : float, default n_features + 2
        Degrees of freedom nu of the Wishart prior on each precision matrix
        ("full", "tied"); must exceed n_features + 1, so that a component
        with no points still has a MAP covariance, Psi / (nu - D - 1).
        With missing entries (``missing="marginalize"``) the default is
        ``n_features + 1 + 1/q`` (see below).
    covariance_scale : float, array of shape (n_features,) or (n_features, n_features)
        Psi, in squared data units (a float or a vector means a diagonal
        Psi): the Wishart prior on each precision matrix has scale matrix
        Psi^-1 (equivalently, each covariance has an inverse-Wishart prior
        with scale Psi; Psi acts as nu - D - 1 prior points' scatter).
        Default ``2 x s^2`` per feature (``s`` as for ``scale_rate``): with
        the default nu = D + 2, one point's worth of scatter at twice a
        typical component's variance.  The MAP covariance is
        ``(Psi + S_k) / (nu - D - 1 + N_k)``.

    With missing entries, each covariance entry is estimated only from the
    rows that observe both its features, so the default Wishart prior
    counts as ``1/q`` points instead of one (nu = D + 1 + 1/q, Psi = 2 s^2
    / q): ``q`` is the fraction of the data's weight observing both
    features of an entry, averaged over the D x D entries and reckoned
    from each feature's observed fraction p_i as if features went missing
    independently (p_i p_j off the diagonal, p_i on it; about (1 - f)^2
    with a fraction f missing at random).  Against the data observed for
    each entry the prior then weighs what it weighs on complete data
    (where q = 1 and the defaults above hold exactly).  On wine with 30%
    of its entries missing (``benchmarks/missing_values.py``) this took
    the full-covariance fit from behind mean imputation's parameter error
    and ``KNNImputer``'s RMSE to ahead of both.

    The default covariance priors are empirical Bayes, scaled to the spread
    of one cluster rather than of the whole data: ``s^2`` is the
    within-cluster variance per feature of the partition a k-means++
    seeding with K centres induces after one Lloyd step (each point to its
    nearest seed, the seeds to their clusters' means, each point to its
    nearest mean; pooled over the components and, for the classifier, the
    classes; with ``n_components="auto"``, K the largest that the data's
    weight allows, up to ``max_components``), floored per feature, relative
    to the data's spread, at 1e-3 of the widest feature's (a feature whose
    clusters are constant).  The seeding has its
    own fixed seed, so the priors depend on the data and K only (not on
    ``random_state``, ``n_init`` or ``init``; above 16,384 rows they are
    measured on a fixed-seed sample of the rows' positions, so they then
    depend on the rows' order too).  A prior with its mode above
    a typical component's spread keeps a component fitted to a handful of points from shrinking
    onto them, so the defaults beat maximum likelihood on held-out data at
    small n (``benchmarks/small_n.py``), where the first release's
    ``0.1 x data std`` lost in nearly every seed; scaled to the data's
    spread instead, the prior widened well-separated clusters (hundreds of
    times tighter than the data) by a visible amount even at thousands of
    points, and merged two of iris's species.  The price: a component much
    tighter than the typical one, or strongly correlated, is widened (or
    decorrelated) by about one point's worth of ``2 s^2`` (a few percent of
    its variance at 50 points, next to clusters of similar spread).  Set
    ``covariance_scale`` / ``scale_rate`` smaller where that matters, or
    ``Priors.pyro_iris()`` for the original study's fixed values.  Without
    a seeding (:func:`resolve_priors` called without ``spread``) the
    defaults fall back to ``0.1 x`` the data's spread.

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
    covariance_dof: Optional[float] = None
    covariance_scale: Optional[ArrayLike] = None

    def __repr__(self) -> str:
        """The fields given; those left None (resolved from the data at fit
        time) are left out, as scikit-learn's reprs leave out defaults.  On
        one line, arrays of more than :data:`REPR_FULL_SIZE` entries
        summarised by numpy (a fitted 20-feature model's priors took 87
        lines)."""
        def show(v) -> str:
            if hasattr(v, "detach") and hasattr(v, "cpu") and v.numel() > REPR_FULL_SIZE:
                v = v.detach().cpu().numpy()          # a large tensor: summarised as numbers
            if isinstance(v, np.ndarray) and v.size > REPR_FULL_SIZE:
                with np.printoptions(threshold=REPR_FULL_SIZE, edgeitems=2, precision=4):
                    text = " ".join(repr(v).split())
                # numpy 2 names the shape of a summarised array; numpy 1 not
                return text if "shape=" in text else f"{text} (shape {v.shape})"
            return repr(v)

        given = ", ".join(f"{f.name}={show(getattr(self, f.name))}" for f in fields(self)
                          if getattr(self, f.name) is not None)
        return f"Priors({given})"

    def _key(self) -> tuple:
        """The fields as hashable values: each given one as its shape and
        float64 entries, so that equal hyperparameters compare equal
        however they were written (1.0, np.float64(1.0); [1, 2], an
        array)."""
        def key(v):
            if v is None:
                return None
            try:
                a = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):     # not numbers: refused at fit time
                return ("unconverted", repr(v))
            return a.shape, tuple(a.ravel().tolist())
        return tuple(key(getattr(self, f.name)) for f in fields(self))

    # By value, arrays included (the generated methods compared arrays
    # with ==, ambiguous for more than one entry, and could not hash them).
    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def pyro_iris(cls) -> "Priors":
        """The fixed hyperparameters of Pyro's iris GMM study:
        Dirichlet(1, ..., 1), Normal(0, 10), InverseGamma(1, 1)."""
        return cls(weight_concentration=1.0, mean_loc=0.0, mean_scale=10.0,
                   scale_shape=1.0, scale_rate=1.0)


@dataclass(frozen=True)
class PriorTensors:
    """Resolved hyperparameters as tensors in the model's (standardised) units.

    ``concentration`` (K,); ``mean_loc``, ``mean_scale`` (D,); then the
    covariance family's: ``scale_shape`` (0-d) and ``scale_rate`` ((D,) or
    0-d), or ``dof`` (0-d), ``psi`` (D, D) and its log-determinant."""

    concentration: torch.Tensor
    mean_loc: torch.Tensor
    mean_scale: torch.Tensor
    scale_shape: Optional[torch.Tensor] = None
    scale_rate: Optional[torch.Tensor] = None
    dof: Optional[torch.Tensor] = None
    psi: Optional[torch.Tensor] = None
    logdet_psi: Optional[torch.Tensor] = None

    def with_concentration(self, concentration: torch.Tensor) -> "PriorTensors":
        return replace(self, concentration=concentration)

    def to(self, dtype: torch.dtype) -> "PriorTensors":
        """Every floating-point tensor in ``dtype`` (the float64 evaluations
        of losses and the variational engine)."""
        cast = lambda t: t.to(dtype) if t is not None and t.is_floating_point() else t
        return PriorTensors(**{k: cast(getattr(self, k)) for k in self.__dataclass_fields__})


@dataclass
class MixtureParams:
    """Weights (..., K), means (..., K, D) and the covariance family's site
    value ``cov`` (see :mod:`bayesgmm.covariance`), as tensors.

    The leading ``...`` is a batch of independent mixtures (restarts,
    classes, candidate K)."""

    weights: torch.Tensor
    means: torch.Tensor
    cov: torch.Tensor

    def select(self, index) -> "MixtureParams":
        return MixtureParams(self.weights[index], self.means[index], self.cov[index])

    def map(self, fn) -> "MixtureParams":
        return MixtureParams(fn(self.weights), fn(self.means), fn(self.cov))

    def where(self, cond: torch.Tensor, other: "MixtureParams") -> "MixtureParams":
        """Self where ``cond`` (the batch shape) holds, ``other`` elsewhere."""
        def pick(a, b):
            c = cond.reshape(cond.shape + (1,) * (a.dim() - cond.dim()))
            return torch.where(c, a, b)
        return MixtureParams(pick(self.weights, other.weights), pick(self.means, other.means),
                             pick(self.cov, other.cov))

    def finite(self) -> torch.Tensor:
        """Whether every parameter of each mixture of the batch is finite."""
        nb = self.weights.dim() - 1
        ok = lambda t: torch.isfinite(t).reshape(t.shape[:nb] + (-1,)).all(-1)
        return ok(self.weights) & ok(self.means) & ok(self.cov)

    def detach(self) -> "MixtureParams":
        return self.map(lambda t: t.detach())


def rms(v: np.ndarray) -> float:
    """Root mean square, scaled first so that tiny or huge values neither
    underflow nor overflow when squared."""
    top = float(np.max(np.abs(v)))
    if not (np.isfinite(top) and top > 0):
        return top
    return top * float(np.sqrt(np.mean((v / top) ** 2)))


def spread_of(sd: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-feature spreads ``sd`` with a fallback for constant features: their
    magnitude (1e-3 of it), and 1 for an all-zero feature."""
    fallback = np.where(np.abs(mean) > _TINY, 1e-3 * np.abs(mean), 1.0)
    return np.where(sd > _TINY, sd, fallback)


def standard_scale(sd: np.ndarray, mean: np.ndarray, isotropic: bool) -> np.ndarray:
    """The standardiser's per-feature scale from the data's (mean, sd): the
    spread, else (a constant feature, ``sd`` 0) the magnitude, else 1; for
    an isotropic family one common value, their root mean square."""
    scale = np.where(sd > _TINY, sd, np.where(np.abs(mean) > _TINY, np.abs(mean), 1.0))
    return np.full_like(scale, rms(scale)) if isotropic else scale


# The default covariance priors' mode, in units of the seeding's spread.
SPREAD_FACTOR = math.sqrt(2.0)
# The smallest within-cluster spread, relative to the data's, that the
# default priors take as measured (below: rounding, and below what float32
# data resolve); see resolve_priors.
RESOLVED_SPREAD = 1e-6


def pair_coverage(observed: Optional[np.ndarray], mass: float) -> float:
    """The fraction of the data's weight in which a covariance entry's two
    features are both observed, averaged over the D x D entries (the
    diagonal's: the feature's own observed fraction), reckoning features
    missing independently of each other: from each feature's observed
    weight ``observed`` (D,) out of ``mass``.  1.0 without missing entries
    (``observed`` None)."""
    if observed is None or mass <= 0:
        return 1.0
    p = np.clip(np.asarray(observed, dtype=np.float64) / float(mass), 0.0, 1.0)
    D = p.size
    return float((p.sum() ** 2 - (p ** 2).sum() + p.sum()) / D ** 2) if D else 1.0


def check_priors_type(priors) -> "Priors":
    """``priors`` (None: ``Priors()``, every field from the data), refusing
    anything but a :class:`Priors`."""
    if priors is None:
        return Priors()
    if not isinstance(priors, Priors):
        raise ValueError(
            f"priors must be a bayesgmm.Priors instance or None, got {type(priors).__name__}: "
            f"build one with bayesgmm.Priors(...)")
    return priors


def resolve_priors(priors: Optional[Priors], family: Covariance, n_components: int,
                   moments: tuple[np.ndarray, np.ndarray],
                   spread: Optional[np.ndarray] = None, coverage: float = 1.0) -> Priors:
    """Fill every ``None`` field of ``priors`` that ``family`` uses from the
    data's per-feature (mean, standard deviation) ``moments`` and, for the
    covariance priors, the seeding's within-cluster variance ``spread``
    (D,) in data units (:func:`bayesgmm.fitting.seeded_spread`; without it
    0.1 x the data's spread), and check all.

    ``coverage`` (:func:`pair_coverage`, 1 without missing entries): the
    default Wishart prior counts as ``1 / coverage`` points, not one, so
    that against the data observed for each covariance entry it weighs
    what it weighs on complete data.

    Returns a :class:`Priors` of float64 numpy values: ``weight_concentration``
    (K,), ``mean_loc``/``mean_scale`` (D,), and the family's own fields
    (the others None).  Raises ``ValueError`` naming any value of the wrong
    shape or out of range."""
    priors = check_priors_type(priors)
    mean, sd = moments
    D = mean.shape[0]
    std = spread_of(np.asarray(sd, dtype=np.float64), np.asarray(mean, dtype=np.float64))
    # The default scale of the covariance priors: the mode at twice the
    # seeding's spread, else 0.1 x the data's spread.  Each feature's
    # spread, relative to its data's, is floored at 1e-3 of the largest
    # relative spread (where a feature's clusters are constant): the
    # prior's variances then stay within 1e6 of each other, which float32
    # covariances and their solves keep apart; relative, so that clusters
    # tight in every feature (far apart against their spread) keep their
    # own scale (a floor at 1e-3 of the data's spread made two clusters of
    # sd 1, 2e5 apart, fit with variance 41).  A relative spread below
    # RESOLVED_SPREAD counts as none: clusters of identical points leave
    # ~1e-8 of rounding there (float64), which would otherwise set the
    # prior, differently for float32 and float64 data or for weighted and
    # repeated rows.
    typical = 0.1 * std
    if spread is not None:
        cluster_sd = np.sqrt(np.maximum(np.asarray(spread, dtype=np.float64), 0.0))
        relative = np.where(np.isfinite(cluster_sd), cluster_sd / std, 1.0)
        relative = np.where(relative >= RESOLVED_SPREAD, relative, 0.0)
        widest = float(relative.max()) if relative.size else 0.0
        typical = SPREAD_FACTOR * std * np.maximum(relative, 1e-3 * (widest if widest > 0
                                                                     else 1.0))

    def numbers(name: str, value) -> np.ndarray:
        """``value`` as float64, refusing what only converts to numbers:
        strings ("3") and booleans (True), as the estimators' settings do."""
        out = V.real_array(value, f"Priors.{name}")
        if out is None:
            raise ValueError(f"Priors.{name} must be a number or an array of numbers, got "
                             f"{value!r}: give numbers, e.g. 1.0")
        return out

    def vector(name: str, value, default, size: int, what: str) -> np.ndarray:
        if value is None:
            return np.asarray(default, dtype=np.float64)
        arr = numbers(name, value)
        if arr.ndim == 0:
            arr = np.full(size, float(arr))
        if arr.shape != (size,):
            raise ValueError(
                f"Priors.{name} must be a scalar or have shape ({size},) (one value per {what}), "
                f"got shape {arr.shape} ({np.array2string(arr, threshold=8)}): give one value "
                f"for all, or {size}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Priors.{name} must be finite, got {arr.tolist()}: give finite "
                             f"numbers, or None for the default")
        return arr

    def positive_float(name: str, value, default: float, why: str = "") -> float:
        v = default if value is None else value
        if not np.isscalar(v) and np.ndim(v) != 0:
            raise ValueError(f"Priors.{name} must be a positive float{why}, got {v!r}")
        v = float(numbers(name, v))
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"Priors.{name} must be a positive float, got {v}: give a finite "
                             f"number > 0, or None for the default")
        return v

    conc = vector("weight_concentration", priors.weight_concentration,
                  np.ones(n_components), n_components, "component")
    if np.any(conc < 1):
        raise ValueError(
            f"Priors.weight_concentration must be >= 1, got {conc.tolist()}: below 1 the "
            f"Dirichlet density is unbounded at the simplex edge and no MAP estimate exists; "
            f"use 1.0 for a flat prior (BayesianGMM with inference='vi' or inference='nuts' "
            f"takes any positive concentration: its posterior exists)")
    mean_loc = vector("mean_loc", priors.mean_loc, mean, D, "feature")
    mean_scale = vector("mean_scale", priors.mean_scale, 2.0 * std, D, "feature")
    if np.any(mean_scale <= 0):
        raise ValueError(f"Priors.mean_scale must be > 0, got {mean_scale.tolist()}: a "
                         f"standard deviation is positive (large values make the prior weak)")
    out = dict(weight_concentration=conc, mean_loc=mean_loc, mean_scale=mean_scale)

    def scale_fields(isotropic: bool) -> dict:
        """The InverseGamma's fields (diag, spherical), resolved and checked."""
        shape = positive_float("scale_shape", priors.scale_shape, 1.0)
        # The InverseGamma's mode, rate / (shape + 1), at the typical spread
        # (the first release's fallback: rate 0.1 x std whatever the shape).
        rate_factor = shape + 1.0 if spread is not None else 1.0
        if isotropic:
            rate = np.float64(positive_float("scale_rate", priors.scale_rate,
                                             rate_factor * rms(typical),
                                             f" (covariance_type '{family.name}' has one scale "
                                             f"per component, the same for every feature)"))
        else:
            rate = vector("scale_rate", priors.scale_rate, rate_factor * typical, D, "feature")
            if np.any(rate <= 0):
                raise ValueError(f"Priors.scale_rate must be > 0, got {rate.tolist()}: an "
                                 f"InverseGamma's rate is positive (about (scale_shape + 1) x "
                                 f"the component spread you expect)")
        return dict(scale_shape=shape, scale_rate=rate)

    def covariance_fields() -> dict:
        """The Wishart's fields (full, tied), resolved and checked."""
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        points = 1.0 / coverage
        dof = positive_float("covariance_dof", priors.covariance_dof, D + 1.0 + points)
        if dof <= D + 1:
            raise ValueError(
                f"Priors.covariance_dof must exceed n_features + 1 = {D + 1}, got {dof}: the "
                f"Wishart MAP covariance (Psi + S_k) / (nu - D - 1 + N_k) needs it; "
                f"use the default n_features + 2 = {D + 2}")
        psi = priors.covariance_scale
        if psi is None:
            psi = np.diag(points * typical ** 2)
        else:
            psi = numbers("covariance_scale", psi)
            if psi.ndim == 0:
                psi = np.eye(D) * float(psi)
            elif psi.shape == (D,):
                psi = np.diag(psi)
            if psi.shape != (D, D):
                raise ValueError(
                    f"Priors.covariance_scale must be a float, shape ({D},) or ({D}, {D}), "
                    f"got shape {psi.shape}")
            ok = np.all(np.isfinite(psi)) and np.allclose(psi, psi.T)
            if ok:
                try:
                    np.linalg.cholesky(psi)
                except np.linalg.LinAlgError:
                    ok = False
            if not ok:
                raise ValueError(
                    f"Priors.covariance_scale must be a finite symmetric positive definite "
                    f"matrix (or positive variances), got {psi.tolist()}")
        return dict(covariance_dof=dof, covariance_scale=psi)

    # The fields the family does not use are ignored (one Priors serves a
    # sweep over types), but a value that no type could use is refused all
    # the same (scale_rate=-1 passed with full covariances); an unused
    # scale_rate may be one value or one per feature.
    if "scale_rate" in family.prior_fields:
        out.update(scale_fields(family.isotropic))
        if priors.covariance_dof is not None or priors.covariance_scale is not None:
            covariance_fields()
    else:
        out.update(covariance_fields())
        if priors.scale_shape is not None or priors.scale_rate is not None:
            scale_fields(isotropic=False)
    return Priors(**out)


# Which Priors field each resolved tensor comes from, for error messages.
_PRIOR_FIELD = {"concentration": "weight_concentration", "mean_loc": "mean_loc",
                "mean_scale": "mean_scale", "scale_shape": "scale_shape",
                "scale_rate": "scale_rate", "dof": "covariance_dof",
                "psi": "covariance_scale", "logdet_psi": "covariance_scale"}
_POSITIVE = ("concentration", "mean_scale", "scale_shape", "scale_rate", "dof")
_UNITLESS = ("concentration", "scale_shape", "dof")


def _check_representable(tensors: dict, p: "Priors", dtype) -> None:
    """Refuse priors that the fit's arithmetic cannot hold: in the
    standardised units, every value finite and every positive quantity
    above the dtype's smallest normal number (a value 1e300 times the data's
    scale overflows float32 to inf; 1e-300 times it underflows to 0)."""
    tiny = torch.finfo(dtype).tiny
    for key, value in tensors.items():
        bad = ~torch.isfinite(value).all() or (key in _POSITIVE and bool((value < tiny).any()))
        if key == "psi" and not bad:
            bad = bool((torch.diagonal(value, dim1=-2, dim2=-1) < tiny).any())
        if bad:
            name = _PRIOR_FIELD[key]
            kind = str(dtype).replace('torch.', '')
            if key in _UNITLESS:     # counts and shapes: not in the data's units
                small = bool(torch.isfinite(value).all())
                raise ValueError(
                    f"Priors.{name}={np.asarray(getattr(p, name)).ravel()[:4].tolist()} is "
                    f"beyond what the fit's {kind} arithmetic holds (it becomes "
                    f"{'0' if small else 'inf'} there): give a "
                    f"{'larger' if small else 'smaller'} value (the fit's sums need room "
                    f"inside {kind}'s range, ~{torch.finfo(dtype).max:.0e})"
                    + (", or fit with dtype='float64'" if dtype == torch.float32 else ""))
            raise ValueError(
                f"Priors.{name}={np.asarray(getattr(p, name)).ravel()[:4].tolist()} is too far "
                f"from the data's scale for the fit's {str(dtype).replace('torch.', '')} "
                f"arithmetic (it becomes {'0' if bool(torch.isfinite(value).all()) else 'inf'} "
                f"once the data are standardised): give a value within ~1e30 of the data's "
                f"scale (for the location and scales of the data, in its units), or None for "
                f"the default")


def data_moments(X: np.ndarray, device, weight: Optional[np.ndarray] = None, reduce=None
                 ) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray]]:
    """X as a float64 tensor on ``device`` and its per-feature (mean,
    standard deviation) in float64 numpy, as :meth:`Standardizer.fit_to`
    describes them (weighted, over observed entries, over every process
    with ``reduce``)."""
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        X = np.array(X)   # pandas 3 hands out read-only arrays; torch warns on those
    Xd = torch.as_tensor(X, dtype=torch.float64, device=device)
    nan = torch.isnan(Xd)
    if weight is None and reduce is None and not bool(nan.any()):
        mean, sd = Xd.mean(0).cpu().numpy(), Xd.std(0, correction=0).cpu().numpy()
    else:
        w = (torch.ones(Xd.shape[0], dtype=torch.float64, device=device) if weight is None
             else torch.as_tensor(weight, dtype=torch.float64, device=device))
        W = w.unsqueeze(-1) * ~nan                                       # (n, D)
        tot, s1 = W.sum(0), (W * torch.nan_to_num(Xd)).sum(0)
        if reduce is not None:
            reduce([tot, s1])
        mu = s1 / tot
        dev = torch.where(nan, torch.zeros_like(Xd), Xd - mu)
        s2 = (W * dev * dev).sum(0)
        if reduce is not None:
            reduce([s2])
        mean, sd = mu.cpu().numpy(), torch.sqrt(s2 / tot).cpu().numpy()
    return Xd, (mean, sd)


@dataclass(frozen=True)
class Standardizer:
    """Affine map x' = (x - center) / scale, per feature, and its effect on
    priors, parameters and the loss.  For an isotropic family (spherical)
    ``scale`` has one common value."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit_to(cls, X: np.ndarray, device, isotropic: bool = False, dtype=torch.float32,
               weight: Optional[np.ndarray] = None, reduce=None
               ) -> tuple["Standardizer", torch.Tensor, tuple[np.ndarray, np.ndarray]]:
        """The standardiser of ``X``, the standardised data as a ``dtype``
        tensor on ``device``, and the raw per-feature (mean, standard
        deviation) in float64: weighted by ``weight`` (n,) when given (as
        repeated rows would be), over the observed entries of each feature
        when X has missing ones (NaN, kept as NaN), and over every process's
        shard with ``reduce`` (:func:`bayesgmm.distributed.reducer`).

        X goes to the device once, in float64; the moments and the affine map
        are computed there (host numpy took ~1 s for these at N = 1e7 on the
        GPU machine, against ~50 ms for the copy and device arithmetic)."""
        Xd, (mean, sd) = data_moments(X, device, weight, reduce)
        scale = standard_scale(sd, mean, isotropic)
        std = cls(center=mean, scale=scale)
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(mean))):
            return std, Xd.to(dtype), (mean, sd)   # the caller reports the overflow
        shift = torch.as_tensor(mean, dtype=torch.float64, device=device)
        div = torch.as_tensor(scale, dtype=torch.float64, device=device)
        return std, ((Xd - shift) / div).to(dtype), (mean, sd)

    def _t(self, v, device, dtype):
        # A copy (parameters and priors, small): a fitted attribute the user
        # made read-only warned torch's "not writable" through as_tensor.
        return torch.tensor(np.asarray(v, dtype=np.float64), dtype=dtype, device=device)

    def apply(self, X: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
        """(X - center) / scale as a ``dtype`` tensor on ``device``, computed
        there in float64 (NaN entries stay NaN)."""
        t = lambda v: torch.as_tensor(v, dtype=torch.float64, device=device)
        return ((t(X) - t(self.center)) / t(self.scale)).to(dtype)

    def priors(self, p: Priors, device, dtype=torch.float32) -> PriorTensors:
        """Resolved priors in standardised units (exact changes of variables:
        Normal(m, s) on a mean becomes Normal((m - c)/a, s/a), InverseGamma(k, b)
        on a standard deviation InverseGamma(k, b/a), and a Wishart scale
        matrix Psi becomes A^-1 Psi A^-1)."""
        t = lambda v: self._t(v, device, dtype)
        out = dict(concentration=t(p.weight_concentration),
                   mean_loc=t((p.mean_loc - self.center) / self.scale),
                   mean_scale=t(p.mean_scale / self.scale))
        if p.scale_rate is not None:
            rate = np.asarray(p.scale_rate, dtype=np.float64)
            out["scale_shape"] = t(p.scale_shape)
            out["scale_rate"] = t(rate / (self.scale if rate.ndim else self.scale[0]))
        if p.covariance_scale is not None:
            psi = np.asarray(p.covariance_scale) / np.outer(self.scale, self.scale)
            out["dof"] = t(p.covariance_dof)
            out["psi"] = t(psi)
            out["logdet_psi"] = t(np.linalg.slogdet(psi)[1])
        _check_representable(out, p, dtype)
        return PriorTensors(**out)

    def params_to_std(self, weights, means, cov, family: Covariance, device,
                      dtype=torch.float32) -> MixtureParams:
        """Fitted arrays (data units; ``cov`` as scikit-learn's covariances_)
        as standardised tensors."""
        t = lambda v: self._t(v, device, dtype)
        # torch.tensor copies: ``cov`` can be a read-only view (a tied
        # classifier's shared matrix broadcast to its components), on which
        # torch.from_numpy warned "The given NumPy array is not writable".
        # On the CPU by name, as from_numpy was: not torch's default device.
        cpu = torch.device("cpu")
        value = family.from_covariances(torch.tensor(np.asarray(cov, dtype=np.float64),
                                                     device=cpu))
        value = family.to_units(value, torch.tensor(np.asarray(1.0 / self.scale,
                                                               dtype=np.float64), device=cpu))
        return MixtureParams(t(weights), t((np.asarray(means) - self.center) / self.scale),
                             value.to(device=device, dtype=dtype))

    def params_from_std(self, params: MixtureParams, family: Covariance):
        """Numpy (weights, means, covariances_) in the data's units."""
        w = params.weights.detach().double().cpu().numpy()
        w = w / w.sum(-1, keepdims=True)  # exactly on the simplex in float64
        m = params.means.detach().double().cpu().numpy() * self.scale + self.center
        value = family.to_units(params.cov.detach().double().cpu(),
                                torch.tensor(np.asarray(self.scale, dtype=np.float64),
                                             device=torch.device("cpu")))
        return w, m, family.covariances(value).numpy()

    def loss_offset(self, n_samples, n_components: int, family: Covariance,
                    n_observed: Optional[np.ndarray] = None) -> float:
        """Loss(original units) - loss(standardised units): every data point
        (``n_samples``: the total sample weight) and every component mean
        picks up the Jacobian 1/prod(scale), and the covariance site its own
        (:meth:`Covariance.log_jacobian`).  With missing entries each point
        picks up only its observed features' scales: ``n_observed`` (D,) is
        the weight of the observed entries per feature."""
        log_a = np.log(self.scale)
        data = (n_samples * log_a.sum() if n_observed is None
                else float(np.dot(n_observed, log_a)))
        return float(data + n_components * log_a.sum() + family.log_jacobian(log_a, n_components))
