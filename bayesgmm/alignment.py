"""Label switching, handled: matching the components of mixtures.

A mixture's components are identified only up to a permutation: two fits
with different seeds, two MCMC chains or two posterior draws may list the
same components in different orders.  This module finds the permutation that
lines one mixture up with another and applies it.

- :func:`match_components`: permutation(s) from arrays (one mixture or a
  batch such as S posterior draws), by the assignment
  (``scipy.optimize.linear_sum_assignment``) of greatest total overlap
  between components (Bhattacharyya coefficients).
- :func:`align`: the same for two fitted estimators (:class:`BayesianGMM`,
  scikit-learn's ``GaussianMixture`` and ``BayesianGaussianMixture``).
- :func:`permute`: a copy of a fitted estimator with its components
  reordered, every per-component fitted attribute consistently.
- :func:`component_stability`: refits with several seeds, aligned to the
  best fit, and a per-component report of how well each is reproduced.

Permutation convention (the one of ``linear_sum_assignment``'s column
indices): ``perm[j]`` is the index, in the other mixture, of the component
that matches the reference's component ``j``; so ``means[..., perm, :]``
lines up with ``reference_means``, and labels ``l`` of the other mixture
become ``np.argsort(perm)[l]`` in the reference's numbering.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Iterable, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import _validation as V
from ._options import COVARIANCE_TYPES, CovarianceType

__all__ = ["align", "component_stability", "match_components", "permute"]

# Fitted attributes with one entry per component along axis 0 (BayesianGMM,
# scikit-learn's GaussianMixture and BayesianGaussianMixture).  The
# covariance-like ones hold a single shared matrix for "tied" and are then
# left alone; so is any of them that is a scalar (BayesianGaussianMixture's
# "tied" degrees_of_freedom_).
_PER_COMPONENT = ("weights_", "means_", "scales_", "mean_precision_", "degrees_of_freedom_")
_PER_COMPONENT_COVARIANCE = ("covariances_", "precisions_", "precisions_cholesky_")

# Pairwise work arrays are built for this many batch members at a time so
# that S draws of K components in D dimensions need O(K^2 D^2) memory per
# chunk, not per batch: about 2^22 float64 values (32 MB) per array.
_CHUNK_VALUES = 2 ** 22


# ------------------------------------------------------------------ inputs
def _layouts(batch: tuple, K: int, D: int) -> dict:
    """The covariance shapes of every type, without and with ``batch``."""
    base = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
    out = {}
    for name, shape in base.items():
        out[name] = [shape] + ([batch + shape] if batch else [])
    return out


def _real_array(name: str, value) -> np.ndarray:
    """``value`` as float64, refusing with ``name`` what is no array of real
    numbers: ragged nesting, text, complex numbers (numpy's own errors
    named no argument; complex parts were dropped with a warning)."""
    out = V.real_array(value, name)
    if out is None:
        raise ValueError(f"{name} must be an array of real numbers (a list of lists of one "
                         f"length, or an ndarray), got {type(value).__name__} "
                         f"{str(value)[:60]!r}")
    return out


#: Said where means or covariances hold NaN: the classifier's padding.
_PADDED = ("a GMMClassifier pads the classes with fewer components than the largest with NaN: "
           "pass each class's first n_components_[c] components, e.g. "
           "clf.means_[c][:clf.n_components_[c]], and the same of weights_ and covariances_")


def _check_means(name: str, means, batched: bool) -> np.ndarray:
    m = _real_array(name, means)
    if m.ndim < 2 or (not batched and m.ndim != 2):
        want = "(K, D) or (S, K, D)" if batched else "(K, D)"
        raise ValueError(f"{name} has shape {m.shape}, expected {want}")
    if m.shape[-2] == 0 or m.shape[-1] == 0:
        raise ValueError(f"{name} has shape {m.shape}: it needs at least one component and "
                         f"one feature")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or infinity: pass finite values"
                         + (f" ({_PADDED})" if np.isnan(m).any() else ""))
    return m


def _check_type(covariance_type) -> Optional[str]:
    if covariance_type is None:
        return None
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {list(COVARIANCE_TYPES)} or None, "
                         f"got {covariance_type!r}")
    return covariance_type


def _canonical_covariance(name: str, cov, covariance_type: Optional[str], batch: tuple,
                          K: int, D: int) -> tuple[str, np.ndarray]:
    """Covariances in any of scikit-learn's layouts as ("diag", variances of
    shape (B, K, D)) or ("full", matrices of shape (B, K, D, D)), B the
    number of batch members (no B for ``batch=()``).

    ``cov`` may carry the means' batch dimensions or none (one set shared by
    every batch member: a broadcast view, so a shared set costs no memory per
    member); with ``covariance_type=None`` the type is read from the shape,
    and a shape that fits two types (K == D: tied (D, D) or diag (K, D)) is
    an error."""
    c = _real_array(name, cov)
    layouts = _layouts(batch, K, D)
    names = [covariance_type] if covariance_type is not None else list(COVARIANCE_TYPES)
    fits = [t for t in names if c.shape in layouts[t]]
    if not fits:
        expected = ", ".join(f"{t} {' or '.join(map(str, layouts[t]))}" for t in names)
        raise ValueError(f"{name} has shape {c.shape}, which is no covariance layout for "
                         f"{K} components in {D} dimensions"
                         + (f" with batch {batch}" if batch else "") + f": expected {expected}")
    if len(fits) > 1:
        raise ValueError(f"{name} has shape {c.shape}, which could be covariance_type "
                         f"{' or '.join(map(repr, fits))} ({K} components in {D} dimensions): "
                         f"pass covariance_type (a pair, the reference's and the other's, "
                         f"when the two sides differ)")
    kind = fits[0]
    if not np.isfinite(c).all():
        raise ValueError(f"{name} contains NaN or infinity: pass finite values"
                         + (f" ({_PADDED})" if np.isnan(c).any() else ""))
    if kind in ("diag", "spherical"):
        if (c <= 0).any():
            raise ValueError(f"{name} ({kind}) has variances <= 0 (smallest {c.min():.3g}): "
                             f"variances must be positive")
        out, tail = ("diag", (K, D))
        c = c[..., None] if kind == "spherical" else c
    else:
        out, tail = ("full", (K, D, D))
        c = c[..., None, :, :] if kind == "tied" else c
    if not batch:
        return out, np.broadcast_to(c, tail)
    B = int(np.prod(batch))
    batched = c.ndim > len(tail)
    c = c.reshape((B,) + c.shape[len(batch):]) if batched else c[None]
    return out, np.broadcast_to(c, (B,) + tail)


def _check_weights(name: str, weights, shape: tuple) -> np.ndarray:
    w = _real_array(name, weights)
    if w.shape not in (shape, shape[-1:]):
        raise ValueError(f"{name} has shape {w.shape}, expected {shape}")
    if not np.isfinite(w).all() or (w < 0).any() or (w > 1 + 1e-9).any():
        raise ValueError(f"{name} must hold finite values in [0, 1], got min {w.min():.3g} "
                         f"and max {w.max():.3g}")
    return np.broadcast_to(np.clip(w, 0.0, 1.0), shape)


def _diagonal(kind: str, cov: np.ndarray) -> np.ndarray:
    return cov if kind == "diag" else np.diagonal(cov, axis1=-2, axis2=-1)


def _full(kind: str, cov: np.ndarray) -> np.ndarray:
    if kind == "full":
        return cov
    return cov[..., :, None] * np.eye(cov.shape[-1])


def _cholesky(name: str, cov: np.ndarray) -> np.ndarray:
    asym = np.abs(cov - np.swapaxes(cov, -1, -2)).max((-2, -1))
    if np.any(asym > 1e-6 * np.abs(cov).max((-2, -1))):      # float32 rounding passes
        raise ValueError(f"{name} holds a matrix that is not symmetric: covariances must be "
                         f"symmetric positive definite")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} holds a matrix that is not symmetric positive definite: "
                         f"covariances must be SPD") from None


# ------------------------------------------------------------------- costs
def _bhattacharyya(m1, kind1, c1, m2, kind2, c2) -> np.ndarray:
    """Bhattacharyya distances between the reference's components (m1 (K, D),
    c1 canonical) and every batch member's (m2 (B, K, D), c2 canonical),
    shape (B, K_reference, K_other).

    D_B = (1/8) d' S^-1 d + (1/2) log(det S / sqrt(det S1 det S2)) with
    S = (S1 + S2) / 2: symmetric, zero only for equal Gaussians, finite, and
    invariant to affine changes of units."""
    diff = m2[:, None, :, :] - m1[None, :, None, :]                        # (B, K, K, D)
    if kind1 == "diag" and kind2 == "diag":
        v1, v2 = c1[None, :, None, :], c2[:, None, :, :]
        v = 0.5 * (v1 + v2)
        maha = (diff ** 2 / v).sum(-1)
        logdet = (np.log(v).sum(-1) - 0.5 * np.log(v1).sum(-1) - 0.5 * np.log(v2).sum(-1))
    else:
        f1, f2 = _full(kind1, c1), _full(kind2, c2)
        L1 = _cholesky("reference_covariances", f1)
        L2 = _cholesky("covariances", f2)
        ld1 = 2 * np.log(np.diagonal(L1, axis1=-2, axis2=-1)).sum(-1)          # (K,)
        ld2 = 2 * np.log(np.diagonal(L2, axis1=-2, axis2=-1)).sum(-1)          # (B, K)
        S = 0.5 * (f1[None, :, None] + f2[:, None, :])                         # (B, K, K, D, D)
        L = np.linalg.cholesky(S)   # a mean of SPD matrices is SPD
        z = np.linalg.solve(L, diff[..., None])[..., 0]
        maha = (z ** 2).sum(-1)
        logdet = (2 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
                  - 0.5 * ld1[None, :, None] - 0.5 * ld2[:, None, :])
    # Rounding can take an equal pair a hair below zero.
    return np.maximum(maha / 8 + logdet / 2, 0.0)


def _frame(means: np.ndarray, variances: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Centre and per-feature scale taken from the reference: its overall
    spread (within plus between components) when covariances are given,
    else the spread of its means.  A zero spread (one component, or equal
    means in a feature) counts as 1."""
    center = means.mean(0)
    spread = means.var(0)
    if variances is not None:
        spread = spread + variances.mean(0)
    scale = np.sqrt(spread)
    return center, np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _match(ref_means, means, ref_cov=None, cov=None, ref_types=(None, None), ref_weights=None,
           weights=None) -> np.ndarray:
    """Shared by :func:`match_components` and :func:`align`: ``ref_types``
    holds the covariance type of each side (None: from the shape)."""
    r = _check_means("reference_means", ref_means, batched=False)
    m = _check_means("means", means, batched=True)
    K, D = r.shape
    if m.shape[-2:] != (K, D):
        axis, what = (-2, "components") if m.shape[-2] != K else (-1, "features")
        raise ValueError(f"means has shape {m.shape} and reference_means has shape {r.shape}: "
                         f"{m.shape[axis]} {what} against {r.shape[axis]}; matching needs the "
                         f"same numbers of components and features")
    batch = m.shape[:-2]
    if (ref_cov is None) != (cov is None):
        raise ValueError("pass both reference_covariances and covariances, or neither")
    if (ref_weights is None) != (weights is None):
        raise ValueError("pass both reference_weights and weights, or neither")
    flat = m.reshape((-1, K, D))
    B = flat.shape[0]
    if cov is not None:
        kind1, c1 = _canonical_covariance("reference_covariances", ref_cov, ref_types[0], (),
                                          K, D)
        kind2, c2 = _canonical_covariance("covariances", cov, ref_types[1], batch, K, D)
        c2 = c2 if batch else c2[None]
        center, scale = _frame(r, _diagonal(kind1, c1))
    else:
        center, scale = _frame(r, None)
        # Without covariances every component counts as N(mean, diag(scale^2)).
        kind1 = kind2 = "diag"
        c1 = np.ones((K, D))
        c2 = np.broadcast_to(1.0, (B, K, D))
    w1 = w2 = None
    if weights is not None:
        w1 = _check_weights("reference_weights", ref_weights, (K,))
        w2 = _check_weights("weights", weights, batch + (K,)).reshape(B, K)
    if K == 1:
        return np.zeros(batch + (1,), dtype=np.intp)
    # The distance is affine invariant; the standardised frame keeps the
    # Cholesky factors and solves well conditioned for data far from 0.
    r_std = (r - center) / scale
    f_std = (flat - center) / scale
    units = {"diag": scale ** 2, "full": scale[:, None] * scale[None, :]}
    if cov is not None:
        c1 = c1 / units[kind1]
    per_member = K * K * (D * D if "full" in (kind1, kind2) else D)
    step = max(1, _CHUNK_VALUES // per_member)
    perms = np.empty((B, K), dtype=np.intp)
    for start in range(0, B, step):
        part = slice(start, start + step)
        c2_std = c2[part] / units[kind2] if cov is not None else c2[part]
        energy = _bhattacharyya(r_std, kind1, c1, f_std[part], kind2, c2_std)
        if w1 is not None:
            with np.errstate(divide="ignore"):
                energy = energy - 0.5 * np.log(w1[None, :, None] * w2[part, None, :])
        # Maximising the total overlap sqrt(w w') BC = exp(-energy); scaling
        # each matrix by exp(min energy) leaves the assignment as it is and
        # keeps far-apart mixtures from underflowing to a matrix of zeros.
        low = energy.min((-2, -1), keepdims=True)
        cost = -np.exp(-(energy - np.where(np.isfinite(low), low, 0.0)))
        for i, c in enumerate(cost):
            perms[start + i] = _assign(c, energy[i])
    return perms.reshape(batch + (K,))


def _assign(cost: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """The columns that maximise the total overlap (``cost`` = minus the
    rescaled overlaps), with the pairs whose overlap underflows to 0
    (energies more than ~745 above the best pair's) matched among
    themselves by the smallest total ``energy`` (D_B - log sqrt(w w')):
    every pairing of those rows and columns overlaps by 0 at the optimum
    (one that overlapped would have been taken), so the total overlap is
    the same, and the far-apart pairs go to their nearest counterparts
    rather than to whatever order the tie left."""
    cols = linear_sum_assignment(cost)[1]
    rows = np.flatnonzero(cost[np.arange(cost.shape[0]), cols] == 0)
    if rows.size > 1:
        sub = energy[np.ix_(rows, cols[rows])]
        finite = np.isfinite(sub)
        # Zero weights give infinite energy: such pairs last, still feasible.
        top = sub[finite].max() if finite.any() else 0.0
        sub = np.where(finite, sub - top, 1.0)
        cols[rows] = cols[rows][linear_sum_assignment(sub)[1]]
    return cols


def match_components(reference_means, means, reference_covariances=None, covariances=None,
                     reference_weights=None, weights=None, *,
                     covariance_type: Optional[CovarianceType] = None) -> np.ndarray:
    """The permutation(s) that line components up with a reference mixture.

    The permutation maximises the total overlap of matched components,
    ``sum_j sqrt(w_j w'_perm[j]) BC(N_j, N'_perm[j])``, found by
    ``scipy.optimize.linear_sum_assignment``.  BC is the Bhattacharyya
    coefficient ``exp(-D_B)`` of two Gaussians, with
    ``D_B = (1/8) d' S^-1 d + (1/2) log(det S / sqrt(det S_j det S_k))``,
    ``d`` the difference of the means and ``S = (S_j + S_k) / 2``: it is 1
    for equal Gaussians, falls towards 0 as they separate, and does not
    depend on the units.  So the permutation minimises the summed squared
    Hellinger distances between the matched sub-densities ``w N(mu, S)``
    (``w = 1`` without weights).

    Why an overlap and not a distance: when the two mixtures differ (one
    fit splits a cluster that another keeps whole), some components have
    no counterpart, and an unbounded cost such as the squared Mahalanobis
    distance lets the distances of those forced mismatches, which mean
    nothing, decide how the components that do correspond are matched; an
    overlap is bounded, so the good matches decide.  The price: pairs far
    apart all overlap about equally little; the matrix-wide rescaling below
    keeps them ordered by distance, and pairs whose overlap still underflows
    to 0 are matched among themselves by the smallest total D_B (the
    total overlap is the same either way).

    Without covariances every component counts as having the same diagonal
    covariance, the per-feature spread of the reference's means (so BC
    depends on the Euclidean distance of standardised means).  The cost
    matrices of a batch are computed together (in chunks of bounded
    memory), each rescaled by its largest overlap (which leaves its
    assignment unchanged and avoids underflow), and solved one by one.

    Parameters
    ----------
    reference_means : array of shape (K, D)
        Means of the reference mixture.
    means : array of shape (K, D) or (S, K, D)
        Means of the mixture to align, or a batch of them (S posterior draws,
        chains, refits; any number of leading batch dimensions).
    reference_covariances, covariances : array, optional
        Covariances in scikit-learn's layout for ``covariance_type``: "full"
        (K, D, D), "tied" (D, D), "diag" (K, D) (variances), "spherical" (K,)
        (variances); ``covariances`` may also carry the leading batch
        dimensions of ``means`` (else one set serves every batch member).
        The two sides may have different types.  Give both or neither.
    reference_weights, weights : array of shape (K,) / (K,) or (S, K), optional
        Mixture weights.  Give both or neither.
    covariance_type : {"full", "tied", "diag", "spherical"} or a pair of them, optional
        The layout of both covariance arrays, or a pair (the reference's,
        the other's) for sides of different types.  By default each array's
        type is read from its shape; a shape that two types share (when
        K == D, a 2-D array may be "tied" (D, D) or "diag" (K, D)) raises a
        ``ValueError`` asking for it (None in a pair reads that side's shape).

    Returns
    -------
    perm : int array of shape (K,), or (S, K) for a batch
        ``perm[..., j]`` is the component of ``means`` that matches the
        reference's component j: ``np.take_along_axis(means, perm[..., None],
        -2)`` (for one mixture ``means[perm]``) lines up with
        ``reference_means``, and labels ``l`` in the other mixture's
        numbering are ``np.argsort(perm)[l]`` in the reference's.

    Raises
    ------
    ValueError
        On shapes that do not fit (different K or D; a covariance array in
        no layout), values that are not finite, variances <= 0, covariance
        matrices that are not positive definite, or weights outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]])
    >>> draws = np.stack([ref[[2, 0, 1]], ref[[1, 2, 0]] + 0.1])
    >>> match_components(ref, draws)
    array([[1, 2, 0],
           [2, 0, 1]])
    >>> perm = match_components(ref, draws[0], np.ones(3), np.ones(3), covariance_type="spherical")
    >>> draws[0][perm]
    array([[0., 0.],
           [5., 5.],
           [0., 9.]])
    """
    if isinstance(covariance_type, (tuple, list)):
        if len(covariance_type) != 2:
            raise ValueError(f"covariance_type as a pair gives the reference's type and the "
                             f"other's, got {covariance_type!r}")
        types = tuple(_check_type(t) for t in covariance_type)
    else:
        types = (_check_type(covariance_type),) * 2
    return _match(reference_means, means, reference_covariances, covariances, types,
                  reference_weights, weights)


# --------------------------------------------------------------- estimators
def _covariance_type(estimator) -> str:
    ctype = getattr(estimator, "covariance_type_", None) or getattr(estimator,
                                                                    "covariance_type", None)
    if ctype not in COVARIANCE_TYPES:
        raise ValueError(f"{type(estimator).__name__} has covariance_type {ctype!r}, expected "
                         f"one of {list(COVARIANCE_TYPES)}")
    return ctype


def _fitted(estimator, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """weights_, means_, covariances_ and the covariance type of a fitted
    single mixture."""
    from sklearn.utils.validation import check_is_fitted

    if isinstance(estimator, type) or not hasattr(estimator, "fit"):
        what = (f"the class {estimator.__name__}" if isinstance(estimator, type) else
                repr(estimator) if estimator is None else f"a {type(estimator).__name__}")
        raise ValueError(f"{role} must be a fitted mixture estimator (e.g. a fitted "
                         f"BayesianGMM or GaussianMixture), got {what}")
    check_is_fitted(estimator, ("weights_", "means_", "covariances_"))
    means = np.asarray(estimator.means_)
    if means.ndim != 2:
        raise ValueError(f"{role} ({type(estimator).__name__}) has means_ of shape "
                         f"{means.shape}: alignment works on one mixture with means_ of shape "
                         f"(K, D); for a classifier's per-class mixtures align each class's "
                         f"arrays with match_components")
    return (np.asarray(estimator.weights_), means, np.asarray(estimator.covariances_),
            _covariance_type(estimator))


def align(reference, other) -> np.ndarray:
    """The permutation that maps ``other``'s components onto ``reference``'s.

    Both are fitted mixtures with ``weights_`` (K,), ``means_`` (K, D),
    ``covariances_`` (scikit-learn's layout) and ``covariance_type_`` or
    ``covariance_type``: :class:`bayesgmm.BayesianGMM`, or scikit-learn's
    ``GaussianMixture`` and ``BayesianGaussianMixture``, in any mix and with
    different covariance types.  The cost is that of
    :func:`match_components` with weights and covariances.

    Parameters
    ----------
    reference, other : fitted mixture estimators
        With the same number of components K and features D.

    Returns
    -------
    perm : int array of shape (K,)
        ``other.means_[perm]`` lines up with ``reference.means_``;
        ``permute(other, perm)`` is ``other`` in the reference's order, and a
        label ``l`` predicted by ``other`` is ``np.argsort(perm)[l]`` in the
        reference's numbering.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import make_mixture
    >>> X, _, _ = make_mixture(300, 3, random_state=0)
    >>> a = BayesianGMM(3, n_init=1, random_state=0, device="cpu").fit(X)
    >>> b = permute(a, [2, 0, 1])
    >>> align(a, b)
    array([1, 2, 0])
    >>> bool(np.allclose(permute(b, align(a, b)).means_, a.means_))
    True
    """
    w1, m1, c1, t1 = _fitted(reference, "reference")
    w2, m2, c2, t2 = _fitted(other, "other")
    if m1.shape != m2.shape:
        K1, K2 = m1.shape[0], m2.shape[0]
        what = (f"reference has {K1} components and other has {K2}" if K1 != K2 else
                f"reference has {m1.shape[1]} features and other has {m2.shape[1]}")
        raise ValueError(f"{what} (means_ of shapes {m1.shape} and {m2.shape}): aligning needs "
                         f"the same n_components and features")
    return _match(m1, m2, c1, c2, (t1, t2), w1, w2)


def _check_perm(perm, K: int) -> np.ndarray:
    try:
        p = np.asarray(perm)
    except ValueError:           # ragged: numpy's "inhomogeneous shape"
        raise ValueError(f"perm must be a permutation of 0..{K - 1} of shape ({K},), got "
                         f"{perm!r:.80}") from None
    if p.shape != (K,) or not (np.issubdtype(p.dtype, np.integer)
                               and np.array_equal(np.sort(p), np.arange(K))):
        raise ValueError(f"perm must be a permutation of 0..{K - 1} of shape ({K},), got "
                         f"{np.array2string(p, threshold=20)} of shape {p.shape}")
    return p.astype(np.intp)


def permute(estimator, perm) -> Any:
    """A copy (``copy.deepcopy``) of a fitted mixture with its components reordered.

    Component ``j`` of the copy is component ``perm[j]`` of ``estimator``, in
    every per-component fitted attribute: ``weights_``, ``means_``,
    ``scales_``, ``covariances_``, ``precisions_`` and
    ``precisions_cholesky_`` (not for "tied", whose one matrix is shared),
    scikit-learn's ``mean_precision_``, ``degrees_of_freedom_`` and
    (Dirichlet-distribution prior) ``weight_concentration_``, and a
    per-component ``weight_concentration`` in BayesianGMM's resolved
    ``priors_`` and in the ``priors`` it was given.  So ``copy.predict(X) == np.argsort(perm)[estimator.predict(X)]``
    and the copy's ``predict_proba`` columns are ``estimator``'s taken in the
    order ``perm``.  ``partial_fit``'s running statistics are reordered too,
    so the copy's next ``partial_fit`` continues the stream as the original's
    would, in the new order.

    Parameters
    ----------
    estimator : fitted mixture estimator
        ``BayesianGMM``, or scikit-learn's ``GaussianMixture`` or
        ``BayesianGaussianMixture``.
    perm : int array of shape (K,)
        A permutation of ``0..K-1``, e.g. from :func:`align`.

    Returns
    -------
    estimator
        The reordered copy; ``estimator`` is unchanged.

    Raises
    ------
    ValueError
        For a ``perm`` that is not a permutation of ``0..K-1``, and for a
        ``BayesianGaussianMixture`` with the Dirichlet-process prior, whose
        stick-breaking posterior depends on the order of the components (no
        reordered copy predicts the same): reorder its arrays yourself, or
        fit with ``weight_concentration_prior_type="dirichlet_distribution"``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesgmm import BayesianGMM
    >>> X = np.r_[np.zeros((20, 1)), np.full((20, 1), 9.0)] + np.linspace(0, 1, 40)[:, None]
    >>> gmm = BayesianGMM(2, n_init=1, random_state=0, device="cpu").fit(X)
    >>> swapped = permute(gmm, [1, 0])
    >>> bool((swapped.predict(X) == 1 - gmm.predict(X)).all())
    True
    """
    _, means, _, ctype = _fitted(estimator, "estimator")
    K = means.shape[0]
    p = _check_perm(perm, K)
    concentration = getattr(estimator, "weight_concentration_", None)
    if isinstance(concentration, tuple):
        raise ValueError(f"{type(estimator).__name__} with the Dirichlet-process prior has a "
                         f"stick-breaking posterior that depends on the order of its components: "
                         f"no reordered copy predicts the same.  Reorder the arrays you need "
                         f"with perm, or fit with "
                         f"weight_concentration_prior_type='dirichlet_distribution'")
    out = copy.deepcopy(estimator)
    names = _PER_COMPONENT + ("weight_concentration_",)
    if ctype != "tied":
        names = names + _PER_COMPONENT_COVARIANCE
    for name in names:
        # Stored arrays only: a derived one (BayesianGMM's precisions_, a
        # property) follows the arrays it is computed from.
        value = vars(out).get(name)
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == K:
            setattr(out, name, value[p].copy())
    # A per-component concentration, in the resolved priors_ and in the
    # priors the user gave (which partial_fit reads again, and a refit):
    # component j of the copy keeps its prior.
    for name in ("priors_", "priors"):
        priors = getattr(out, name, None)
        if dataclasses.is_dataclass(priors) and hasattr(priors, "weight_concentration"):
            wc = priors.weight_concentration
            if np.ndim(wc) == 1 and np.shape(wc)[0] == K:
                setattr(out, name, dataclasses.replace(
                    priors, weight_concentration=np.asarray(wc)[p].copy()))
    # Posterior draws (inference="vi"/"nuts": dicts of arrays whose
    # component axis is 1 for the draws and 0 for their R-hat and ESS; a
    # tied covariance has none) follow the same relabelling, so the copy's
    # posterior predictive answers match its MAP labels.
    def relabel(d: dict, axis: int) -> dict:
        return {name: (np.take(np.asarray(v), p, axis=axis)
                       if not (name == "covariances" and ctype == "tied")
                       and np.ndim(v) > axis and np.shape(v)[axis] == K else np.asarray(v).copy())
                for name, v in d.items()}

    for name, axis in (("_posterior", 1), ("rhat_", 0), ("ess_", 0)):
        value = getattr(out, name, None)
        if isinstance(value, dict):
            setattr(out, name, relabel(value, axis))
    stream = getattr(out, "_stream", None)
    if stream is not None:
        # partial_fit's running statistics are per component (axis 1 of
        # each, after the batch axis; the log-likelihood has none): the
        # copy continues the stream in its new order.
        out._stream = {**stream, "avg": {
            name: v.copy() if name == "loglik" else np.take(v, p, axis=1)
            for name, v in stream["avg"].items()}}
    return out


# ---------------------------------------------------------------- stability
def _reference_index(fits: list, X) -> int:
    """The best fit: lowest ``loss_`` (BayesianGMM's MAP objective) when every
    fit has one, else highest ``score(X)``."""
    losses = [getattr(f, "loss_", None) for f in fits]
    if all(isinstance(v, (int, float, np.floating)) and np.isfinite(v) for v in losses):
        return int(np.argmin(losses))
    return int(np.argmax([f.score(X) for f in fits]))


def _mahalanobis(diff: np.ndarray, kind: str, cov: np.ndarray) -> np.ndarray:
    """sqrt(d' S_k^-1 d) for diff (S, K, D) under the canonical covariances
    (K, ...), shape (S, K)."""
    if kind == "diag":
        return np.sqrt((diff ** 2 / cov).sum(-1))
    L = _cholesky("covariances_", cov)
    z = np.linalg.solve(np.broadcast_to(L, diff.shape[:1] + L.shape), diff[..., None])[..., 0]
    return np.sqrt((z ** 2).sum(-1))


def component_stability(estimator, X, random_states: Iterable = range(5), *,
                        min_agreement: float = 0.9, max_mean_shift: float = 1.0,
                        **fit_kwargs):
    """How reproducible each component is across seeds.

    Fits a clone (``sklearn.base.clone``) of ``estimator`` with each seed in
    ``random_states``, takes as reference the fit with the lowest ``loss_``
    (BayesianGMM's MAP objective; for estimators without it, the highest
    ``score(X)``), aligns every fit to it with :func:`align`, and reports,
    for each reference component, how much the aligned components of the
    other fits move and how many of its points they claim.

    Parameters
    ----------
    estimator : mixture estimator
        Fitted or not; only its parameters are used.  It needs a
        ``random_state`` parameter.
    X : array-like of shape (n_samples, n_features)
        The data to fit and to compare hard assignments on.
    random_states : iterable of seeds, default range(5)
        At least two.
    min_agreement : float, default 0.9
        ``stable`` needs ``agreement_min >= min_agreement``.
    max_mean_shift : float, default 1.0
        ``stable`` needs ``mean_shift <= max_mean_shift`` (in the component's
        standard deviations); ``float("inf")`` leaves the shift out of it.
    **fit_kwargs
        Passed to every ``fit(X, **fit_kwargs)`` (e.g. ``sample_weight``;
        the agreement counts points unweighted).

    Returns
    -------
    pandas.DataFrame
        One row per component of the reference fit (index ``component``, the
        reference's numbering), with columns

        - ``weight``: the reference's mixture weight;
        - ``weight_min``, ``weight_max``: the smallest and largest aligned
          weight over all fits (the reference included);
        - ``mean_shift``: the largest distance, over the fits, between the
          aligned mean and the reference's mean, in units of the reference
          component's standard deviation (the Mahalanobis distance under its
          covariance; 0 for a perfectly reproduced component);
        - ``n_points``: the rows of ``X`` the reference assigns (``predict``)
          to the component;
        - ``agreement``: over the other fits and those rows, the fraction
          that the aligned fit also assigns to the component (NaN without
          rows);
        - ``agreement_min``: the same fraction for the worst single fit;
        - ``stable``: ``agreement_min >= min_agreement`` and
          ``mean_shift <= max_mean_shift`` (False for a component without
          rows).

        ``attrs["reference_random_state"]`` holds the reference fit's seed.

    Raises
    ------
    ValueError
        For fewer than two seeds, or an estimator without ``random_state``.

    Examples
    --------
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import make_mixture
    >>> X, _, _ = make_mixture(300, 2, random_state=0)
    >>> report = component_stability(BayesianGMM(2, n_init=1, device="cpu"), X,
    ...                              random_states=range(3))
    >>> report["stable"].tolist()
    [True, True]
    """
    import pandas as pd
    from sklearn.base import clone, is_classifier

    from . import _validation as V

    if isinstance(random_states, (str, bytes)) or not isinstance(random_states, Iterable):
        raise ValueError(f"random_states must be an iterable of seeds, got {random_states!r}: "
                         f"e.g. random_states=range(5)")
    seeds = list(random_states)
    min_agreement = V.check_float("min_agreement", min_agreement, strict=False)
    if min_agreement > 1:
        raise ValueError(f"min_agreement must be in [0, 1] (a share of a component's points), "
                         f"got {min_agreement}")
    if not (isinstance(max_mean_shift, (int, float, np.floating, np.integer))
            and max_mean_shift == math.inf):          # inf: the criterion switched off
        max_mean_shift = V.check_float("max_mean_shift", max_mean_shift, strict=False)
    if len(seeds) < 2:
        raise ValueError(f"random_states holds {len(seeds)} seed(s): comparing fits needs at "
                         f"least 2, e.g. random_states=range(5)")
    if isinstance(estimator, type) or not hasattr(estimator, "get_params"):
        what = f"the class {estimator.__name__}" if isinstance(estimator, type) else \
            repr(estimator)
        raise ValueError(f"estimator must be an unfitted estimator instance to clone and fit, "
                         f"e.g. BayesianGMM(3), got {what}")
    if "random_state" not in estimator.get_params(deep=False):
        raise ValueError(f"{type(estimator).__name__} has no random_state parameter: "
                         f"component_stability refits it with different seeds")
    if is_classifier(estimator):
        raise ValueError(f"component_stability compares the clusters of a clustering "
                         f"estimator (e.g. BayesianGMM), got the classifier "
                         f"{type(estimator).__name__}: check each class's mixture with a "
                         f"BayesianGMM fitted to that class's rows")
    fits = []
    for s in seeds:
        fits.append(clone(estimator).set_params(random_state=s).fit(X, **fit_kwargs))
        if len(fits) == 1 and not all(hasattr(fits[0], a) for a in
                                      ("weights_", "means_", "covariances_")):
            raise ValueError(f"component_stability compares the components of mixture "
                             f"estimators, and a fitted {type(estimator).__name__} has no "
                             f"weights_, means_ and covariances_: pass a mixture estimator, "
                             f"e.g. BayesianGMM(3) or scikit-learn's GaussianMixture(3)")
    ks = [len(np.asarray(f.weights_)) for f in fits]
    if len(set(ks)) > 1:
        raise ValueError(f"the fits with random_states {list(seeds)} have {ks} components: "
                         f"components can only be matched between fits with the same K (with "
                         f"n_components='auto' each seed may choose its own); pass a fixed "
                         f"n_components, e.g. the K most seeds chose")
    ref_i = _reference_index(fits, X)
    ref = fits[ref_i]
    others = [f for i, f in enumerate(fits) if i != ref_i]
    w_ref, m_ref, c_ref, t_ref = _fitted(ref, "reference")
    K, D = m_ref.shape
    perms = np.stack([align(ref, f) for f in fits])                             # (F, K)
    weights = np.take_along_axis(np.stack([np.asarray(f.weights_) for f in fits]), perms, 1)
    means = np.take_along_axis(np.stack([np.asarray(f.means_) for f in fits]),
                               perms[..., None], 1)                             # (F, K, D)
    kind, cov = _canonical_covariance("covariances_", c_ref, t_ref, (), K, D)
    shift = _mahalanobis(means - m_ref, kind, cov).max(0)
    labels = np.asarray(ref.predict(X))
    n_points = np.bincount(labels, minlength=K)
    # Each other fit's labels in the reference's numbering, then per
    # component the share of the reference's rows they keep.
    inverse = np.argsort(np.delete(perms, ref_i, 0), axis=1)                    # (F-1, K)
    other = np.stack([inv[np.asarray(f.predict(X))] for inv, f in zip(inverse, others)])
    agree = (other == labels).astype(np.float64)                                # (F-1, N)
    kept = np.stack([np.bincount(labels, weights=a, minlength=K) for a in agree])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = kept / n_points                                                 # (F-1, K)
    agreement = np.where(n_points > 0, share.mean(0), np.nan)
    agreement_min = np.where(n_points > 0, share.min(0), np.nan)
    stable = (n_points > 0) & (np.nan_to_num(agreement_min) >= min_agreement) & \
        (shift <= max_mean_shift)
    report = pd.DataFrame({
        "weight": np.asarray(w_ref, dtype=np.float64),
        "weight_min": weights.min(0), "weight_max": weights.max(0),
        "mean_shift": shift, "n_points": n_points, "agreement": agreement,
        "agreement_min": agreement_min, "stable": stable,
    }, index=pd.RangeIndex(K, name="component"))
    report.attrs["reference_random_state"] = seeds[ref_i]
    return report
