"""Plotting helpers for fitted mixtures and classifiers (matplotlib/seaborn).

Every helper but :func:`plot_pairs` takes ``ax=None`` (a new figure is
made when it is ``None``), draws on that axes and returns it;
:func:`plot_pairs` makes a figure of its own and returns seaborn's
``PairGrid``.  None calls ``show()``.  matplotlib and seaborn are imported
inside the functions, so ``import bayesgmm`` (and ``import bayesgmm.plotting``)
stays light for code that never draws.

The mixture helpers read the public fitted attributes ``weights_``,
``means_``, ``covariances_`` and ``covariance_type_`` of a
:class:`~bayesgmm.BayesianGMM` and turn the covariances, whatever their
type ("full", "tied", "diag" or "spherical"), into full (K, D, D) matrices
with :func:`bayesgmm.covariance.get` ``(...).matrices``.  A component is
drawn through the marginal of those matrices on the plotted feature(s): a
1-D curve uses the variance on the diagonal, a 2-D ellipse the
eigen-decomposition of the 2 x 2 sub-covariance, so full and tied
components are tilted and diagonal and spherical ones axis-aligned, and
every curve, ellipse and contour is exact.  A scikit-learn
``GaussianMixture`` of any ``covariance_type`` is accepted too (same
``covariances_`` shapes), so the two can be drawn side by side.  The
classifier helpers only use the scikit-learn classifier interface
(``predict``, ``classes_``), so they work with any classifier;
:func:`plot_decision_regions` can add a :class:`~bayesgmm.GMMClassifier`'s
class components as ellipses.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from bayesgmm import BayesianGMM
>>> from bayesgmm.datasets import load_iris
>>> from bayesgmm.plotting import plot_density_1d
>>> X = load_iris()[["petal_length"]]
>>> gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
>>> ax = plot_density_1d(gmm, X)
>>> len(ax.lines)  # two weighted components and the mixture
3
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Sequence

import numpy as np

from ._options import check_bool, is_number_column, is_text

__all__ = ["plot_loss_history", "plot_density_1d", "plot_assignments", "plot_clusters_2d",
           "plot_decision_regions", "plot_confusion_matrix", "plot_pairs"]


# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------
def _closes_its_figures_on_error(fn):
    """A helper that fails after making a figure (its own axes, or
    seaborn's pairplot grid) closes it: an empty figure would otherwise
    appear at the next ``plt.show()`` or notebook cell.  Figures that were
    open before the call are left alone."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib.pyplot as plt
        before = set(plt.get_fignums())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            raise
    return wrapper


def _host(values) -> np.ndarray:
    """Labels or values as a numpy array: a tensor (the answer of a
    prediction method given a tensor, possibly on a GPU) copied to the host."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_no_missing(name: str, labels: np.ndarray, remedy: str) -> None:
    """Refuse missing labels (NaN, None, pd.NA) in ``labels``, naming the
    first row (matplotlib's TypeError and scikit-learn's "contains NaN"
    named neither)."""
    import pandas as pd

    if labels.dtype.kind not in "fcO":
        return
    missing = np.flatnonzero(pd.isna(labels))
    if missing.size:
        raise ValueError(f"{name} has {missing.size} missing label(s) (NaN or None; first at "
                         f"row {int(missing[0])}): {remedy}")


def _new_axes(ax):
    if ax is not None:
        from matplotlib.axes import Axes
        if not isinstance(ax, Axes):
            raise ValueError(f"ax must be a matplotlib Axes (e.g. from plt.subplots()) or None, "
                             f"got {type(ax).__name__}")
        return ax
    import matplotlib.pyplot as plt
    _, ax = plt.subplots()
    return ax


def _refuse_pipeline(estimator) -> None:
    """A fitted scikit-learn Pipeline ending in a mixture, refused with the
    call that draws it: "call fit(X) first" sent the user the wrong way, and
    pipe[-1] with the raw X drew the mixture in the scaled units over the
    unscaled data."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps and hasattr(steps[-1][-1], "weights_"):
        raise ValueError(
            f"{type(estimator).__name__} is not a mixture: these helpers draw the mixture in "
            f"the units it was fitted in, so pass the final step and the data as it sees them: "
            f"plot(pipe[-1], pipe[:-1].transform(X))")


def _mixture_params(estimator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (K,), means (K, D), covariance matrices (K, D, D)) of a fitted mixture."""
    if not hasattr(estimator, "weights_") or not hasattr(estimator, "means_"):
        _refuse_pipeline(estimator)
        raise ValueError(
            f"{type(estimator).__name__} is not a fitted mixture (no weights_/means_): "
            "call fit(X) first")
    weights = np.asarray(estimator.weights_, dtype=np.float64)
    means = np.asarray(estimator.means_, dtype=np.float64)
    if means.ndim != 2 or weights.shape != means.shape[:1]:
        raise ValueError(
            f"{type(estimator).__name__} has weights_ of shape {weights.shape} and means_ of "
            f"shape {means.shape}: these helpers draw one mixture (weights (K,), means (K, D)); "
            "for a GMMClassifier use plot_decision_regions(..., ellipses=True)")
    return weights, means, _covariance_matrices(estimator, *means.shape)


def _covariance_matrices(estimator, K: int, D: int) -> np.ndarray:
    """Full (..., K, D, D) covariance matrices of ``estimator``'s components,
    with any leading dimensions of its ``covariances_`` (a classifier's
    classes), from :func:`bayesgmm.covariance.get`, which knows the shape of
    ``covariances_`` of every covariance type (BayesianGMM's and
    scikit-learn's are the same).  An estimator with ``scales_`` but no
    ``covariances_`` is read as diagonal."""
    name = type(estimator).__name__
    kind = getattr(estimator, "covariance_type_", getattr(estimator, "covariance_type", None))
    if hasattr(estimator, "covariances_"):
        cov = np.asarray(estimator.covariances_, dtype=np.float64)
    elif hasattr(estimator, "scales_"):
        kind, cov = "diag", np.square(np.asarray(estimator.scales_, dtype=np.float64))
    else:
        raise ValueError(f"{name} has no covariances_: call fit(X) first")
    return _as_matrices(cov, kind, K, D, name)


def _as_matrices(cov: np.ndarray, kind, K: int, D: int, name: str) -> np.ndarray:
    """``cov`` in scikit-learn's layout of ``kind`` for K components in D
    features, behind any leading dimensions (classes, draws), as full
    (..., K, D, D) matrices."""
    from .covariance import COVARIANCE_TYPES, get

    try:
        family = get(kind, D)
    except ValueError:
        raise ValueError(
            f"{name} has covariance_type={kind!r}: these helpers draw mixtures with "
            f"covariance_type in {list(COVARIANCE_TYPES)} (BayesianGMM, GMMClassifier or "
            "scikit-learn's GaussianMixture)") from None
    one = family.covariance_shape(K, D)
    lead = cov.shape[:max(cov.ndim - len(one), 0)]
    if cov.shape[len(lead):] != one:
        raise ValueError(f"{name}.covariances_ has shape {cov.shape}, not that of "
                         f"covariance_type={kind!r} for {K} components in {D} feature(s): {one}")
    mats = [family.matrices(c, K, D) for c in cov.reshape((-1,) + one)]
    return np.stack(mats).reshape(lead + (K, D, D))


def _ellipse_geometry(cov2: np.ndarray, n_sigma: float) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the n-sigma contour of a 2-D
    Gaussian with covariance ``cov2`` (2, 2), for matplotlib's ``Ellipse``.

    The semi-axes are n * sqrt(eigenvalue) along the eigenvectors.  The
    width is taken along the eigenvector closer to the x axis, so the angle
    lies in [-45, 45] degrees and a diagonal covariance gives angle 0 with
    width and height 2 n sigma_x and 2 n sigma_y."""
    vals, vecs = np.linalg.eigh(cov2)
    i = int(np.argmax(np.abs(vecs[0])))
    v = vecs[:, i] * (1.0 if vecs[0, i] >= 0 else -1.0)
    axes = 2.0 * n_sigma * np.sqrt(np.clip(vals, 0.0, None))
    return float(axes[i]), float(axes[1 - i]), float(np.degrees(np.arctan2(v[1], v[0])))


def _marginal_density(points: np.ndarray, weights, means, covs, features) -> np.ndarray:
    """Mixture density marginalised onto ``features`` (d of them) at
    ``points`` (G, d): ``weights`` (K,), ``means`` (K, D), ``covs`` (K, D, D)
    for one mixture, or with a leading draw axis (S, ...) for the average
    of S mixtures (a posterior predictive), computed a block of draws at a
    time."""
    idx = list(features)
    w, m, c = (np.asarray(a, dtype=np.float64) for a in (weights, means, covs))
    if w.ndim == 1:
        w, m, c = w[None], m[None], c[None]
    m = m[..., idx]                                                   # (S, K, d)
    c = c[..., idx, :][..., idx]                                      # (S, K, d, d)
    prec = np.linalg.inv(c)
    norm = np.sqrt(np.linalg.det(2 * np.pi * c))                      # (S, K)
    out = np.zeros(points.shape[0])
    step = max(1, 2 ** 22 // max(1, points.shape[0] * w.shape[1]))   # bounded memory
    for a in range(0, w.shape[0], step):
        d = points[None, None] - m[a:a + step, :, None, :]             # (s, K, G, d)
        q = np.einsum("skgi,skij,skgj->skg", d, prec[a:a + step], d)
        out += np.einsum("sk,skg->g", w[a:a + step] / norm[a:a + step], np.exp(-0.5 * q))
    return out / w.shape[0]


def _predictive_draws(estimator, plug_in) -> Optional[tuple]:
    """(weights (S, K), means (S, K, D), covariance matrices (S, K, D, D)) of
    the posterior draws whose average is ``estimator``'s density (its
    ``score_samples``), or None where that density is the point estimate's
    (a MAP fit, ``plug_in=True``, a mixture without draws)."""
    if check_bool("plug_in", plug_in) or getattr(estimator, "_posterior", None) is None:
        return None
    draws = estimator.posterior_samples()
    w, m = draws["weights"], draws["means"]
    return w, m, _as_matrices(draws["covariances"], estimator.covariance_type_,
                              m.shape[1], m.shape[2], type(estimator).__name__)


def _as_2d(X, name: str = "X", allow_nan: bool = False,
           estimator=None) -> tuple[np.ndarray, list[str]]:
    """Data as a float (N, D) array and its column names (DataFrame names;
    for an array, the ``estimator``'s ``feature_names_in_`` when it was
    fitted on a DataFrame of as many columns; else x0, x1...).
    ``allow_nan``: NaN (a missing entry) passes, for helpers that leave a
    row out of a panel where a plotted feature is missing; infinities never
    do."""
    import pandas as pd
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        bad = _text_columns(X)
        if bad:
            raise ValueError(f"{name} has non-numeric column(s) {bad}: select the numeric "
                             f"columns (e.g. df.drop(columns={bad!r})) or encode them as numbers")
        try:
            arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
        except OverflowError:               # a Python int past float64's range (10**400)
            raise _column_too_large(X, name) from None
    else:
        try:
            arr = _host(X)                      # a tensor possibly on a GPU
        except ValueError:                      # numpy's "inhomogeneous shape"
            import reprlib
            raise ValueError(f"{name} must have the same number of values in every row (a 2-D "
                             f"array of numbers), got rows of different lengths: "
                             f"{reprlib.repr(X)}") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        names = [f"x{j}" for j in range(arr.shape[1] if arr.ndim == 2 else 0)]
        fitted = getattr(estimator, "feature_names_in_", None)
        if fitted is not None and len(fitted) == len(names):
            names = [str(c) for c in fitted]     # the names the model knows its features by
        try:
            arr = arr.astype(np.float64, copy=False)   # numbers as text ("1.5") too, as fit
        except OverflowError:               # a Python int past float64's range (10**400)
            from ._validation import _too_large
            raise _too_large(arr, name, None) from None
        except (TypeError, ValueError):
            if arr.ndim == 2:       # (else the shape is the problem, said below)
                # The columns that hold text, named as a DataFrame's are (a
                # text array's numbers are text too: "1.5" converts).
                bad = [n for n, col in zip(names, arr.T) if not _converts(col)]
                raise ValueError(f"{name} has non-numeric column(s) {bad} (an array of dtype "
                                 f"{arr.dtype}): select the numeric columns or encode them as "
                                 f"numbers") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got an array of shape {arr.shape}: "
                         "pass (n_samples, n_features) data")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no rows: pass the data to plot")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name} has a non-finite value ({arr[i, j]}) in row {i}, column {j}: "
                         f"plots need finite values{' or NaN for a missing entry' if allow_nan else ''}; "
                         f"drop those rows first (e.g. X[np.isfinite(X).all(axis=1)])")
    return arr, names


def _column_too_large(frame, name: str) -> ValueError:
    """The library's error for a DataFrame holding an int past float64's
    range, naming its column (and row label, when not 0..N-1)."""
    from ._validation import _too_large, first_overflow, row_labels
    values = frame.to_numpy(dtype=object)
    found = first_overflow(values)
    j = found[0][1] if found is not None else 0
    return _too_large(values[:, j], name, str(frame.columns[j]), row_labels(frame))


def _text_columns(frame) -> list[str]:
    """The names of ``frame``'s columns that do not hold numbers."""
    return [str(c) for j, c in enumerate(frame.columns) if not is_number_column(frame.iloc[:, j])]


def _converts(column: np.ndarray) -> bool:
    """Whether an array's column converts to float (numbers, or numbers as text)."""
    try:
        column.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _observed(X: np.ndarray, f: int, names: Sequence[str]) -> np.ndarray:
    """The rows whose feature ``f`` is observed (not NaN): those a 1-D
    panel can place; an error when there are none."""
    present = ~np.isnan(X[:, f])
    if not present.any():
        raise ValueError(f"feature {names[f]!r} is missing (NaN) in every row of X: "
                         f"there is nothing to draw on it")
    return present


#: Float64 values held per grid point at the least (coordinates, scores
#: of every class or component, the image): the size a huge ``grid_size``
#: is refused by before any work.
GRID_POINT_VALUES = 16


def _check_grid_size(grid_size, dims: int = 1) -> int:
    """``grid_size``: an int >= 2 whose grid (``grid_size ** dims`` points)
    fits in this machine's memory (10**5 on a 2-D plot asked numpy for
    75 GiB)."""
    if isinstance(grid_size, (bool, np.bool_)) or not isinstance(grid_size, (int, np.integer)) \
            or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
    from ._validation import check_result_size
    check_result_size(f"grid_size={int(grid_size)}",
                        8 * GRID_POINT_VALUES * int(grid_size) ** dims,
                        f"use a smaller grid_size (a {'square ' if dims == 2 else ''}grid of "
                        f"grid_size{'**2' if dims == 2 else ''} points)")
    return int(grid_size)


def _check_positive(name: str, value) -> float:
    """A size (sigma, a marker size, a panel height): a finite number > 0."""
    if isinstance(value, (bool, np.bool_)) or \
            not isinstance(value, (int, float, np.integer, np.floating)) or \
            not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_limits(name: str, lim) -> Optional[tuple[float, float]]:
    if lim is None:
        return None
    try:
        lo, hi = (float(v) for v in lim)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lower, upper) of numbers, got {lim!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with lower < upper, got {lim!r}")
    return lo, hi


def _check_feature(feature, names: Sequence[str], n_features: int,
                   positional: bool = True) -> int:
    """Column index of ``feature`` (an int or a column name).
    ``positional``: X is an array, whose columns are also x0, x1, ... when
    ``names`` are the estimator's feature names (not for a DataFrame, whose
    names are its own: "x1" there is a column or nothing)."""
    if isinstance(feature, str):
        if feature not in names:
            # An array's positional name (x0, x1, ...) also when the names
            # are the estimator's feature names.
            j = int(feature[1:]) if positional and re.fullmatch(r"x\d+", feature) \
                else n_features
            if j < n_features:
                return j
            raise ValueError(f"feature={feature!r} is not a column of X; columns are {list(names)}")
        return list(names).index(feature)
    if isinstance(feature, (int, np.integer)) and not isinstance(feature, bool):
        if not 0 <= int(feature) < n_features:
            raise ValueError(f"feature={feature} is out of range for {n_features} feature(s): "
                             f"use 0 <= feature < {n_features}")
        return int(feature)
    raise ValueError(f"feature must be a column index or name, got {feature!r}")


def _check_columns(estimator, estimator_d: int, X, arr: np.ndarray) -> None:
    """``X`` has the estimator's features: as many, and for a DataFrame
    against an estimator fitted on one, the same names in the same order
    (the parameters are read by position, so a reordered frame would draw
    one feature's data with another's parameters)."""
    if arr.shape[1] != estimator_d:
        raise ValueError(f"X has {arr.shape[1]} feature(s) but {type(estimator).__name__} was "
                         f"fitted on {estimator_d}: pass the data it was fitted on")
    fitted = getattr(estimator, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if columns is None and hasattr(X, "to_frame") and getattr(X, "name", None) is not None:
        columns = [X.name]                              # a pandas Series: one named column
    if fitted is not None and columns is not None and \
            [str(c) for c in columns] != [str(c) for c in fitted]:
        raise ValueError(f"X's columns {[str(c) for c in columns]} are not those the estimator "
                         f"was fitted on, in that order: {[str(c) for c in fitted]}; pass "
                         f"X[{[str(c) for c in fitted]}]")


def _positional(X) -> bool:
    """Whether X's columns may be named x0, x1, ...: an array, an unnamed
    Series or a DataFrame of default (RangeIndex) columns, not one with
    names of its own."""
    import pandas as pd
    if isinstance(X, pd.Series):
        return X.name is None
    if isinstance(X, pd.DataFrame):
        return isinstance(X.columns, pd.RangeIndex)
    return True


def _label_kinds(a: np.ndarray) -> tuple:
    """(a text label of ``a`` or None, a label of ``a`` that is not text or
    None): by the dtype, or for object arrays by the values."""
    if a.size == 0:
        return None, None
    if a.dtype.kind in "US":
        return str(a.flat[0]), None
    if a.dtype.kind != "O":
        return None, a.flat[0].item()
    text = next((v for v in a.flat if is_text(v)), None)
    other = next((v for v in a.flat if not is_text(v)), None)
    return text, other.item() if isinstance(other, np.generic) else other


#: The legend entry of points whose label is missing (NaN or None).
MISSING_LABEL = "(no label)"


def _label_values(labels: np.ndarray) -> tuple[np.ndarray, list]:
    """Labels with the missing ones (NaN, None) as :data:`MISSING_LABEL`,
    and their distinct values: sorted where they sort (else in order of
    appearance), the missing one last.  (``np.unique`` raised a TypeError
    on text labels with NaN, and ``labels == nan`` left those points out.)"""
    import pandas as pd
    missing = np.asarray(pd.isna(labels), dtype=bool)
    present = list(pd.unique(labels[~missing]))
    try:
        present = sorted(present)
    except TypeError:
        pass
    if not missing.any():
        return labels, present
    out = np.asarray(labels, dtype=object).copy()
    out[missing] = MISSING_LABEL
    return out, present + [MISSING_LABEL]


def _labels_palette(values: list, K: int, others: bool = False) -> dict:
    """:func:`_label_palette` for :func:`_label_values`' values, the
    missing label in grey."""
    palette = _label_palette([v for v in values if v is not MISSING_LABEL], K, others)
    if values and values[-1] is MISSING_LABEL:
        palette[MISSING_LABEL] = (0.6, 0.6, 0.6)
    return palette


def _named(estimator, X, arr: np.ndarray):
    """``X`` as ``estimator.predict`` takes it without scikit-learn's "X does
    not have valid feature names" warning: as given when it is pandas data
    (its columns were checked) or the estimator knows no feature names,
    else its values ``arr`` under the estimator's ``feature_names_in_`` (an
    array, list or tensor, or a prediction grid, has none)."""
    import pandas as pd
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None or isinstance(X, (pd.DataFrame, pd.Series)):
        return X
    return pd.DataFrame(arr, columns=list(fitted))


def _row_labels(labels, n_rows: int, estimator=None, X=None,
                arr: Optional[np.ndarray] = None) -> np.ndarray:
    """One label per row: the given ones, checked, or ``estimator.predict(X)``
    (``arr``: X's values, for :func:`_named`)."""
    if labels is None:
        labels = estimator.predict(_named(estimator, X, arr))
    labels = _host(labels)
    if labels.shape != (n_rows,):
        raise ValueError(f"labels has shape {labels.shape} but X has {n_rows} rows: "
                         "pass one label per row of X")
    return labels


def _shown(weights: np.ndarray, n_rows: int, estimator=None) -> np.ndarray:
    """The components worth drawing: those that carried at least half a row
    of the data they were fitted to (a Dirichlet-process or sparse prior's
    switched-off components, weight ~1e-3 among a few hundred points, would
    otherwise be drawn as clusters where there are none).  The rows of the
    fit (and of later ``partial_fit`` calls) where the model records them
    (a bayesgmm mixture's; a classifier's per class, ``weights`` (C, K)),
    in rows, not weight (weights summing to 1 hid every component), so
    that the picture is the same whatever rows are plotted (from an audit:
    a component of weight 0.04 vanished on 10 held-out rows, and
    switched-off ones came back on 5,000); for a file saved before they
    were recorded, its fit's weight (``_fit_mass``, ``class_count_``); else
    (a scikit-learn model) the ``n_rows`` plotted."""
    w = np.asarray(weights, dtype=np.float64)
    rows = getattr(estimator, "_class_rows" if w.ndim == 2 else "_rows_seen", None)
    if rows is None:
        # A file saved before rows were recorded: its fit's weight (the
        # release before this one drew by it), else the rows plotted.
        rows = getattr(estimator, "class_count_" if w.ndim == 2 else "_fit_mass", None)
    if rows is None:
        rows = max(n_rows, 1)
    else:
        rows = np.asarray(rows, dtype=np.float64)
        rows = rows[:, None] if rows.ndim == 1 else float(rows)
    return w * rows >= 0.5


def _component_palette(n: int):
    """n colours, colour i the same whatever n: seaborn's current palette
    (ten colours by default), then hues spread around the husl circle by
    the golden ratio, so that components beyond the tenth do not repeat the
    first ones' colours."""
    import seaborn as sns
    base = list(sns.color_palette())
    if n <= len(base):
        return base[:max(n, 1)]
    return base + [sns.husl_palette(1, h=(i * 0.6180339887) % 1.0)[0]
                   for i in range(n - len(base))]


def _is_component_index(values, K: int) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               and 0 <= v < K for v in values)


def _label_palette(values, K: int, others: bool = False) -> dict:
    """{label: colour} for a labelling's ``values``: labels that are
    component indices (integers 0..K-1) take their component's colour, as
    every helper draws component k; any other labelling (or ``others``:
    one that is never the components') takes the colours after the K
    components', so that no colour means both a component and, say, a
    species."""
    values = list(values)
    if not others and _is_component_index(values, K):
        colours = _component_palette(K)
        return {v: colours[int(v)] for v in values}
    colours = _component_palette(K + len(values))[K:]
    return {v: colours[i] for i, v in enumerate(values)}


# ----------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------
@_closes_its_figures_on_error
def plot_loss_history(estimator, ax=None, *, restarts: bool = True, logy: bool = False):
    """Loss (negative log joint / ELBO) per iteration, every restart distinguishable.

    Draws one thin line per restart from ``restart_losses_`` (labelled
    "restart r") and the kept restart's whole history ``losses_`` (EM
    iterations then SVI steps) as a thick black line labelled
    "kept (restart b)"; point t is the loss after t updates, and a dotted
    line marks where SVI took over, where it did.  After later
    ``partial_fit`` calls the history is that of the fit they continued,
    and the label says "before partial_fit".  After ``inference="vi"`` or
    ``"nuts"`` it is the MAP stage's history that started the posterior
    (the VI's iterations and NUTS's draws are not in it: ``elbo_`` and
    ``rhat_``/``ess_`` report those).

    Parameters
    ----------
    estimator : fitted BayesianGMM (or anything with ``losses_``,
        ``restart_losses_`` and ``best_restart_``)
    ax : matplotlib Axes, optional
    restarts : bool, default True
        Draw the individual restarts; False draws only the kept history.
    logy : bool, default False
        Plot ``loss - min(loss) + 1`` on a log axis, which shows the late,
        small improvements that a linear axis flattens.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> gmm = BayesianGMM(2, n_init=3, random_state=0, device="cpu").fit(
    ...     load_iris()[["petal_length"]])
    >>> len(plot_loss_history(gmm).lines)  # 3 restarts + the kept history
    4
    """
    for attr in ("losses_", "restart_losses_", "best_restart_"):
        if not hasattr(estimator, attr):
            _refuse_pipeline(estimator)
            if hasattr(estimator, "class_losses_"):       # a fitted GMMClassifier
                raise ValueError(f"{type(estimator).__name__} keeps no per-iteration loss "
                                 f"history ({attr}): plot_loss_history draws a BayesianGMM fit")
            raise ValueError(f"{type(estimator).__name__} has no {attr}: call fit(X) first")
    restarts, logy = check_bool("restarts", restarts), check_bool("logy", logy)
    ax = _new_axes(ax)
    kept = np.asarray(estimator.losses_, dtype=np.float64)
    histories = [np.asarray(h, dtype=np.float64) for h in estimator.restart_losses_]
    every = np.concatenate([kept] + histories) if restarts else kept
    finite = every[np.isfinite(every)]
    shift = (finite.min() - 1.0) if (logy and finite.size) else 0.0

    # Point t is the loss after t updates (the histories hold the loss
    # before each update, then the final one), so x runs from 0.
    if restarts:
        colors = _component_palette(len(histories))
        for r, h in enumerate(histories):
            ax.plot(np.arange(h.size), h - shift, color=colors[r], lw=1, alpha=0.8,
                    label=f"restart {r}")
    # After partial_fit the history is the fit's that the stream continued.
    streamed = getattr(estimator, "n_partial_fits_", 0) > 1
    ax.plot(np.arange(kept.size), kept - shift, color="black", lw=2.2,
            ls="--" if restarts else "-",
            label=f"kept (restart {estimator.best_restart_})"
                  + (", before partial_fit" if streamed else ""))
    em = histories[estimator.best_restart_] if histories else kept
    svi = kept.size > em.size
    if svi:
        # SVI continued after EM (where EM stopped short): mark the handover.
        ax.axvline(em.size - 0.5, color="0.4", ls=":", lw=1.2, label="EM -> SVI")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    pure_svi = getattr(estimator, "em_max_iter", None) == 0     # restart_losses_ are SVI's
    ax.set_xlabel("updates (EM, then SVI steps)" if svi else
                  "SVI steps" if pure_svi else "EM updates")
    ax.set_ylabel("loss - min + 1 (log scale)" if logy else "loss (negative log joint)")
    if logy:
        ax.set_yscale("log")
    ax.legend(loc="best", fontsize="small")
    return ax


@_closes_its_figures_on_error
def plot_density_1d(estimator, X, ax=None, *, feature=0, rug: bool = True,
                    grid_size: int = 400, labels=None, plug_in: bool = False):
    """Data, each weighted component density and the mixture density, in 1-D.

    For a multivariate fit the curves are the marginals on ``feature``
    (exact for every covariance type): component k is drawn as
    ``w_k N(x | mu_kf, sqrt(Sigma_k[f, f]))`` and the mixture is their sum.
    After ``inference="vi"`` or "nuts" the components are the point
    estimates (``weights_``, ``means_``, ``covariances_``) and the black
    curve is the posterior predictive, the density ``score_samples``
    gives (the average over the draws of each draw's mixture), labelled
    "posterior predictive"; ``plug_in=True`` draws the point estimates'
    mixture instead.

    Parameters
    ----------
    estimator : fitted BayesianGMM or scikit-learn GaussianMixture (any covariance_type)
    X : array-like or DataFrame of shape (n_samples, n_features), or 1-D
    ax : matplotlib Axes, optional
    feature : int or str, default 0
        Column to draw (index, or name when X is a DataFrame).
    rug : bool, default True
        Rug of the data along the x axis (one tick per point); False draws
        nothing for the data.
    grid_size : int, default 400
        Number of points at which the densities are evaluated.
    labels : array-like of shape (n_samples,), optional
        Colour the rug by these labels (e.g. the true species): labels
        0..K-1 (e.g. ``gmm.predict(X)``) in their components' colours, any
        other labelling in colours after them; missing labels (NaN, None)
        in grey.
    plug_in : bool, default False
        For a fit with posterior draws, draw the point estimates' mixture
        rather than the posterior predictive.

    X may hold NaN (missing entries, as a ``missing="marginalize"`` fit
    takes them): a point whose ``feature`` is missing has no place on the
    axis and is left out of the rug.  A DataFrame must have the columns the
    estimator was fitted on, in that order.

    Returns
    -------
    matplotlib Axes
        Lines: the K components (labelled "component k (w=...)") then the
        mixture (labelled "mixture", or "posterior predictive").

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> X = load_iris()[["petal_length"]]
    >>> ax = plot_density_1d(BayesianGMM(2, random_state=0, device="cpu").fit(X), X)
    >>> [line.get_label() for line in ax.lines][-1]
    'mixture'
    """
    import seaborn as sns
    from scipy.stats import norm

    weights, means, covs = _mixture_params(estimator)
    Xa, names = _as_2d(X, allow_nan=True, estimator=estimator)
    _check_columns(estimator, means.shape[1], X, Xa)
    f = _check_feature(feature, names, Xa.shape[1], _positional(X))
    grid_size = _check_grid_size(grid_size)
    rug = check_bool("rug", rug)
    draws = _predictive_draws(estimator, plug_in)
    present = _observed(Xa, f, names)
    if labels is not None:
        labels = _row_labels(labels, Xa.shape[0])[present]
    x = Xa[present, f]
    ax = _new_axes(ax)
    mu, s = means[:, f], np.sqrt(covs[:, f, f])
    # The grid covers the data and 3 scales beyond every component, so no
    # curve is cut off mid-bump.
    lo = min(x.min(), (mu - 3 * s).min())
    hi = max(x.max(), (mu + 3 * s).max())
    grid = np.linspace(lo, hi, int(grid_size))
    comp = weights[:, None] * norm.pdf(grid[None, :], mu[:, None], s[:, None])  # (K, G)
    colors = _component_palette(len(weights))
    # The components are drawn above the mixture: where one component
    # carries the density the two curves coincide, and a mixture drawn on
    # top hid every component but its flat tails.  The mixture is a wide
    # grey band, so that it shows beside them there (a thin line under a
    # component's was hidden wholly where the components do not overlap,
    # and its legend entry named nothing to be seen).
    for k in np.flatnonzero(_shown(weights, x.size, estimator)):
        ax.plot(grid, comp[k], color=colors[k], lw=2.2, zorder=3,
                label=f"component {k} (w={weights[k]:.2f})")
    band = dict(color="0.72", lw=6.0, zorder=2, solid_capstyle="round")
    if draws is None:
        ax.plot(grid, comp.sum(0), label="mixture", **band)
    else:
        ax.plot(grid, _marginal_density(grid[:, None], *draws, [f]),
                label="posterior predictive", **band)
    if rug:
        if labels is None:
            sns.rugplot(x=x, ax=ax, color="0.3", height=0.04)
        else:
            # Missing labels (NaN, None) in grey: seaborn leaves their rows out.
            labels, values = _label_values(labels)
            sns.rugplot(x=x, hue=labels, hue_order=values, ax=ax, height=0.04, legend=False,
                        palette=_labels_palette(values, len(weights)))
    ax.set_xlabel(names[f])
    ax.set_ylabel("density")
    ax.legend(loc="best", fontsize="small")
    return ax


@_closes_its_figures_on_error
def plot_assignments(X, assignments, ax=None, *, feature=0, hue=None,
                     kind: Literal["swarm", "strip"] = "swarm", size: float = 3.0,
                     n_components: Optional[int] = None):
    """The data of one feature by assigned cluster, as a swarm or strip plot.

    One column per cluster (x axis), the feature's values on the y axis, as
    in Pyro's iris study; ``hue`` colours the points by another labelling
    (e.g. the true species), so that a mixed cluster is visible at a glance.

    Parameters
    ----------
    X : array-like or DataFrame of shape (n_samples, n_features), or 1-D
    assignments : array-like of shape (n_samples,)
        Cluster of each point, e.g. ``gmm.predict(X)``.
    ax : matplotlib Axes, optional
    feature : int or str, default 0
    hue : array-like of shape (n_samples,), optional
        Colour by these labels; by default points are coloured by cluster
        (cluster k in component k's colour, as the other helpers draw it,
        whichever clusters are present); ``hue`` labels take colours after
        the clusters', missing ones (NaN, None) grey as "(no label)".
    kind : {"swarm", "strip"}, default "swarm"
        A swarm never overlaps points (slow above a few thousand points);
        a strip jitters them.
    size : float, default 3
        Marker size.
    n_components : int, optional
        How many components the mixture behind ``assignments`` has (e.g.
        ``gmm.n_components_``): ``hue`` labels then take the colours after
        all of them, as :func:`plot_density_1d` and :func:`plot_clusters_2d`
        colour the same labels, also when the last components carry no
        point (a Dirichlet-process fit).  By default the colours after the
        largest cluster index present.

    A point whose ``feature`` is missing (NaN) is left out.

    Returns
    -------
    matplotlib Axes
        One point collection per cluster (seaborn draws a column at a time).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> ax = plot_assignments(np.array([1.0, 1.1, 5.0, 5.2]), [0, 0, 1, 1], kind="strip")
    >>> len(ax.collections)
    2
    """
    import pandas as pd
    import seaborn as sns

    if isinstance(X, pd.DataFrame) and isinstance(feature, str):
        # The one column drawn (others may be text, e.g. species): a name
        # not among them is said as such, before any check of the others.
        j = _check_feature(feature, [str(c) for c in X.columns], X.shape[1], positional=False)
        X = X.iloc[:, [j]]     # by position: a column named 1 is matched by "1" too
    positional = _positional(X)
    X, names = _as_2d(X, allow_nan=True)
    f = _check_feature(feature, names, X.shape[1], positional)
    z = _host(assignments)
    if z.shape != (X.shape[0],):
        raise ValueError(f"assignments has shape {z.shape} but X has {X.shape[0]} rows: "
                         "pass one cluster label per row of X")
    _check_no_missing("assignments", z, "every row needs a cluster; drop the rows without one "
                                        "(hue colours missing labels of another labelling)")
    if kind not in ("swarm", "strip"):
        raise ValueError(f"kind must be 'swarm' or 'strip', got {kind!r}")
    size = _check_positive("size", size)
    if hue is not None:
        hue = _host(hue)
        if hue.shape != (X.shape[0],):
            raise ValueError(f"hue has shape {hue.shape} but X has {X.shape[0]} rows: "
                             "pass one label per row of X")
    present = _observed(X, f, names)
    z = z[present]
    # Column names of the seaborn call's own (a feature named "cluster" or
    # "colour" would otherwise be overwritten by the labels).
    x_key, y_key, hue_key = "\0cluster", "\0value", "\0colour"
    df = pd.DataFrame({x_key: z, y_key: X[present, f]})
    order = list(np.unique(z))
    # Clusters that are component indices take their components' colours,
    # whichever of them are present (empty clusters keep theirs), as the
    # other helpers draw them; another labelling takes the colours after
    # the clusters', so that no colour means both a cluster and, say, a
    # species.
    indices = _is_component_index(order, float("inf"))
    n_clusters = int(max(order)) + 1 if indices else len(order)
    if n_components is not None:
        if isinstance(n_components, (bool, np.bool_)) or \
                not isinstance(n_components, (int, np.integer)) or n_components < n_clusters:
            raise ValueError(f"n_components must be an int >= {n_clusters} (the clusters of "
                             f"assignments), got {n_components!r}")
        n_clusters = int(n_components)
    if hue is None:
        df[hue_key] = z
        hue_order = order
        # (clusters that are not component indices take the first colours)
        palette = _label_palette(order, n_clusters if indices else 0)
        legend = False
    else:
        # Missing labels (NaN, None) in grey as their own entry: seaborn
        # leaves their rows out (and listed NaN in the legend).
        df[hue_key], hue_order = _label_values(hue[present])
        palette = _labels_palette(hue_order, n_clusters, others=True)
        legend = "auto"
    ax = _new_axes(ax)
    plot = sns.swarmplot if kind == "swarm" else sns.stripplot
    plot(data=df, x=x_key, y=y_key, hue=hue_key, order=order, hue_order=hue_order,
         palette=palette, size=size, ax=ax, legend=legend)
    if hue is not None and ax.get_legend() is not None:
        ax.get_legend().set_title(None)
    ax.set_xlabel("cluster")
    ax.set_ylabel(names[f])
    return ax


def _ellipse_patches(ax, means, covs, fx, fy, sigmas, colors, lw: float = 2.0,
                     shown: Optional[np.ndarray] = None):
    """n-sigma ellipses of every component (finite means only: a
    classifier's padded components are skipped; and only those ``shown``)
    on features (fx, fy): the first of ``sigmas`` solid with line width
    ``lw``, the others dashed and thinner."""
    from matplotlib.patches import Ellipse
    idx = [fx, fy]
    for k in range(means.shape[0]):
        if not np.all(np.isfinite(means[k, idx])) or (shown is not None and not shown[k]):
            continue
        cov2 = covs[k][np.ix_(idx, idx)]
        for n_sigma in sigmas:
            width, height, angle = _ellipse_geometry(cov2, n_sigma)
            ax.add_patch(Ellipse((means[k, fx], means[k, fy]), width=width, height=height,
                                 angle=angle, fill=False, edgecolor=colors[k],
                                 lw=lw if n_sigma == sigmas[0] else lw / 2,
                                 ls="-" if n_sigma == sigmas[0] else "--"))


@_closes_its_figures_on_error
def plot_clusters_2d(estimator, X, ax=None, *, features=(0, 1), labels=None,
                     sigmas: Sequence[float] = (1.0, 2.0), contours: bool = False,
                     grid_size: int = 150, s: float = 12.0, plug_in: bool = False):
    """Points coloured by assignment with each component's sigma ellipses.

    Parameters
    ----------
    estimator : fitted BayesianGMM or scikit-learn GaussianMixture (any covariance_type)
    X : array-like or DataFrame of shape (n_samples, n_features), n_features >= 2
    ax : matplotlib Axes, optional
    features : pair of int or str, default (0, 1)
        The two columns to draw; for D > 2 the ellipses and contours are
        the components' (exact) marginals on them.
    labels : array-like of shape (n_samples,), optional
        Colours of the points; default ``estimator.predict(X)``.  Labels
        0..K-1 take their components' colours (those of the ellipses), any
        other labelling (e.g. species) colours after them; missing labels
        (NaN, None) are drawn in grey as "(no label)".
    sigmas : float or sequence of float, default (1, 2)
        One ellipse per component and value (solid for the first, dashed
        for the rest), from the eigen-decomposition of the component's
        2 x 2 covariance on ``features``: tilted for full and tied
        covariances, axis-aligned for diagonal and spherical ones; empty
        draws none.
    contours : bool, default False
        Also draw contour lines of the mixture's (marginal) density: the
        posterior predictive after ``inference="vi"`` or "nuts" (the
        density ``score_samples`` gives), unless ``plug_in=True``.  The
        ellipses are the point estimates' components.
    grid_size : int, default 150
        Grid resolution of the contours.
    s : float, default 12
        Marker size.
    plug_in : bool, default False
        Contours of the point estimates' mixture for a fit with draws.

    X may hold NaN where the estimator takes it (``missing="marginalize"``):
    the labels come from the observed features, and a point missing one of
    the two plotted features is not drawn.  A DataFrame must have the
    columns the estimator was fitted on, in that order.

    Returns
    -------
    matplotlib Axes
        One point collection per label value (legend entries "cluster k",
        or the labels given), ``len(sigmas)`` ellipse patches per component
        and one "x" marker collection for the means, and a contour set when
        ``contours=True``.  A component expected to carry less than half of
        one of X's points (one a Dirichlet-process prior switched off) gets
        no ellipse and no marker; :func:`plot_density_1d` and
        :func:`plot_pairs` leave it out likewise.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> X = load_iris()[["petal_length", "petal_width"]]
    >>> ax = plot_clusters_2d(BayesianGMM(3, random_state=0, device="cpu").fit(X), X)
    >>> len(ax.patches)  # 3 components x (1 and 2 sigma)
    6
    """
    weights, means, covs = _mixture_params(estimator)
    Xa, names = _as_2d(X, allow_nan=True, estimator=estimator)
    _check_columns(estimator, means.shape[1], X, Xa)
    if Xa.shape[1] < 2:
        raise ValueError("plot_clusters_2d needs at least 2 features, got 1: "
                         "use plot_density_1d for 1-D data")
    if isinstance(features, (str, bytes)) or not hasattr(features, "__len__") \
            or len(features) != 2:
        raise ValueError(f"features must name exactly 2 columns (a pair of column indices or "
                         f"names, e.g. (0, 1)), got {features!r}")
    fx, fy = (_check_feature(f, names, Xa.shape[1], _positional(X)) for f in features)
    if fx == fy:
        raise ValueError(f"features must name two different columns, got {features!r} "
                         f"(both column {fx}): use plot_density_1d for one feature")
    given = labels is not None
    labels = _row_labels(labels, Xa.shape[0], estimator, X, Xa)
    try:
        sigmas = [float(v) for v in np.atleast_1d(np.asarray(sigmas, dtype=np.float64))]
    except (TypeError, ValueError):
        raise ValueError(f"sigmas must be a number or a sequence of numbers, got "
                         f"{sigmas!r}") from None
    if not all(np.isfinite(v) and v > 0 for v in sigmas):   # empty: no ellipses
        raise ValueError(f"sigmas must be positive finite numbers, got {sigmas}")
    s = _check_positive("s", s)
    contours = check_bool("contours", contours)
    check_bool("plug_in", plug_in)             # also where no contour needs it
    draws = None
    if contours:
        grid_size = _check_grid_size(grid_size, 2)
        draws = _predictive_draws(estimator, plug_in)
    ax = _new_axes(ax)
    K = len(weights)
    labels, values = _label_values(labels)
    # Points whose labels are component indices share their component's
    # (ellipse's) colour; another labelling takes colours after them.
    palette = _labels_palette(values, K)
    placed = ~np.isnan(Xa[:, [fx, fy]]).any(1)
    for v in values:
        m = (labels == v) & placed
        ax.scatter(Xa[m, fx], Xa[m, fy], s=s, color=palette[v], alpha=0.7, edgecolors="none",
                   label=str(v) if given else f"cluster {v}")
    shown = _shown(weights, Xa.shape[0], estimator)
    _ellipse_patches(ax, means, covs, fx, fy, sigmas, _component_palette(K), shown=shown)
    ax.scatter(means[shown, fx], means[shown, fy], marker="x", color="black", s=60,
               label="means")
    if contours:
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        gx, gy = np.meshgrid(np.linspace(x0, x1, grid_size), np.linspace(y0, y1, grid_size))
        mixture = (weights, means, covs) if draws is None else draws
        dens = _marginal_density(np.column_stack([gx.ravel(), gy.ravel()]), *mixture,
                                 [fx, fy]).reshape(gx.shape)
        ax.contour(gx, gy, dens, levels=8, colors="0.4", linewidths=0.7)
    ax.set_xlabel(names[fx])
    ax.set_ylabel(names[fy])
    ax.legend(loc="best", fontsize="small", markerscale=1.5)
    return ax


# ----------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------
@_closes_its_figures_on_error
def plot_decision_regions(classifier, X, y, ax=None, *, grid_size: int = 200,
                          margin: float = 0.1, s: float = 10.0, alpha: float = 0.25,
                          ellipses: bool = False, sigma: float = 2.0,
                          xlim: Optional[Sequence[float]] = None,
                          ylim: Optional[Sequence[float]] = None):
    """A fitted 2-D classifier's decision regions with the (training) points.

    Uses only ``classifier.predict`` and ``classifier.classes_``, so any
    scikit-learn classifier can be drawn; ``ellipses=True`` also draws the
    class mixtures' components of a :class:`~bayesgmm.GMMClassifier`.

    Parameters
    ----------
    classifier : fitted classifier on 2 features
    X : array-like of shape (n_samples, 2)
    y : array-like of shape (n_samples,)
        True labels of the points (values from ``classifier.classes_``).
    ax : matplotlib Axes, optional
    grid_size : int, default 200
        Points per axis at which ``predict`` is evaluated; each grid point
        colours its cell with the class ``predict`` gives there (no
        interpolation between classes).
    margin : float, default 0.1
        Grid margin around the data, as a fraction of the data's range.
    xlim, ylim : pair of float, optional
        The window (lower, upper) of each axis, e.g. wider than the data to
        show what the classifier does far from it; default the data's
        range and ``margin``.
    s, alpha : float
        Marker size; opacity of the filled regions.
    ellipses : bool, default False
        Draw the ``sigma``-ellipse of every component of every class, in
        the class's colour, from the eigen-decomposition of its covariance
        matrix (tilted for full and tied covariances).  Needs a mixture
        classifier: ``means_`` (n_classes, K, 2), ``covariances_`` and
        ``covariance_type_`` as :class:`~bayesgmm.GMMClassifier` has them;
        padded components (NaN means) are skipped.
    sigma : float, default 2
        Size of the ellipses, in standard deviations.

    A point with a missing (NaN) feature is not drawn.

    Returns
    -------
    matplotlib Axes
        A mesh of the predicted class indices into ``classes_`` (the
        regions), one contour set per class predicted somewhere on the grid
        when more than one is (its region's boundary; a boundary between two
        classes is drawn once from each side), one point collection per class, labelled by the class,
        and with ``ellipses=True`` one ellipse patch per real component.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    >>> from bayesgmm.datasets import make_circles
    >>> X, y = make_circles(200, noise=0.05, random_state=0)
    >>> ax = plot_decision_regions(QuadraticDiscriminantAnalysis().fit(X, y), X, y)
    >>> [t.get_text() for t in ax.get_legend().texts]
    ['0', '1']
    """
    import pandas as pd

    if not hasattr(classifier, "classes_"):
        fitted = hasattr(classifier, "means_") or hasattr(classifier, "weights_")
        raise ValueError(
            f"{type(classifier).__name__} is a mixture, not a classifier (it has no classes_): "
            f"plot_decision_regions draws classifiers; use plot_clusters_2d for a mixture"
            if fitted else
            f"{type(classifier).__name__} has no classes_: call fit(X, y) first")
    classes = np.asarray(classifier.classes_)
    Xa, names = _as_2d(X, allow_nan=True, estimator=classifier)
    if Xa.shape[1] != 2:
        raise ValueError(f"decision regions are drawn in 2-D but X has {Xa.shape[1]} "
                         "features: select two features (and fit the classifier on them)")
    _check_columns(classifier, getattr(classifier, "n_features_in_", 2), X, Xa)
    y = _host(y)
    if y.shape != (Xa.shape[0],):
        raise ValueError(f"y has shape {y.shape} but X has {Xa.shape[0]} rows: "
                         "pass one label per row of X")
    grid_size = _check_grid_size(grid_size, 2)
    unknown = ~np.isin(y, classes)
    if unknown.any():
        raise ValueError(f"y contains labels not in classifier.classes_: "
                         f"{list(np.unique(y[unknown]))[:5]}; pass labels the classifier knows")
    window = [_check_limits(name, lim) for name, lim in (("xlim", xlim), ("ylim", ylim))]
    if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, (int, float, np.number)) \
            or not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0 (a fraction of the data's range), "
                         f"got {margin!r}")
    s = _check_positive("s", s)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number)) \
            or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number from 0 to 1 (the regions' opacity), "
                         f"got {alpha!r}")
    ellipses = check_bool("ellipses", ellipses)
    if ellipses:
        sigma = _check_positive("sigma", sigma)
        means = np.asarray(getattr(classifier, "means_", np.empty(0)), dtype=np.float64)
        if means.ndim != 3 or means.shape[0] != len(classes) or means.shape[2] != 2:
            raise ValueError(
                f"ellipses=True needs a mixture classifier with means_ of shape "
                f"(n_classes, K, 2) such as GMMClassifier; {type(classifier).__name__} has "
                f"{'no means_' if means.size == 0 else f'means_ of shape {means.shape}'}")
        covs = _covariance_matrices(classifier, means.shape[1], 2)
        weights = getattr(classifier, "weights_", None)
        shown = None if weights is None else _shown(weights, Xa.shape[0], classifier)
    placed = ~np.isnan(Xa).any(1)
    if not placed.any():
        raise ValueError("every row of X has a missing (NaN) feature: there is no point to draw")
    ax = _new_axes(ax)
    lo, hi = Xa[placed].min(0), Xa[placed].max(0)
    pad = margin * np.where(hi > lo, hi - lo, 1.0)
    axes = [np.linspace(*(lim if lim is not None else (lo[j] - pad[j], hi[j] + pad[j])),
                        grid_size) for j, lim in enumerate(window)]
    gx, gy = np.meshgrid(*axes)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    # Class labels may be strings or non-contiguous ints: colour by index.
    # The grid has the feature names the classifier saw, if any (whatever
    # X is: one fitted on an array would warn about names, one fitted on a
    # DataFrame about their absence).
    index = pd.Index(classes).get_indexer(
        np.asarray(classifier.predict(_named(classifier, grid, grid))))
    Z = index.reshape(gx.shape)
    colors = _component_palette(len(classes))
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(colors[: len(classes)])
    # Each cell in its predicted class's colour: a filled contour of the
    # class index would interpolate, and paint class 1 between classes 0
    # and 2 where predict never gives it.  Each region's boundary is the
    # half-level of its own indicator.
    ax.pcolormesh(gx, gy, Z, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, alpha=alpha,
                  shading="nearest", edgecolors="none")
    for i in np.unique(Z):
        inside = (Z == i).astype(float)
        if 0.0 < inside.mean() < 1.0:
            ax.contour(gx, gy, inside, levels=[0.5], colors="0.2", linewidths=0.8)
    for i, c in enumerate(classes):
        m = (y == c) & placed
        ax.scatter(Xa[m, 0], Xa[m, 1], s=s, color=colors[i], edgecolors="white",
                   linewidths=0.3, label=str(c))
        if ellipses:
            _ellipse_patches(ax, means[i], covs[i], 0, 1, [float(sigma)],
                             [colors[i]] * means.shape[1], lw=1.0,
                             shown=None if shown is None else shown[i])
    ax.set_xlim(axes[0][0], axes[0][-1])
    ax.set_ylim(axes[1][0], axes[1][-1])
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(loc="best", title="class", fontsize="small", markerscale=1.5)
    return ax


@_closes_its_figures_on_error
def plot_confusion_matrix(y_true, y_pred, ax=None, *, labels=None,
                          normalize: Optional[Literal["true", "pred", "all"]] = None,
                          cmap: str = "Blues"):
    """Confusion matrix (scikit-learn's numbers) as an annotated heatmap.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    ax : matplotlib Axes, optional
    labels : array-like, optional
        Row/column order; default the sorted union of both label sets.
    normalize : {"true", "pred", "all"} or None
        As in :func:`sklearn.metrics.confusion_matrix`: rows, columns or
        all cells sum to 1.
    cmap : str, default "Blues"

    Returns
    -------
    matplotlib Axes
        Rows are true labels, columns predicted labels; one annotation
        per cell.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = plot_confusion_matrix(["a", "a", "b"], ["a", "b", "b"])
    >>> [t.get_text() for t in ax.texts]
    ['1', '1', '0', '1']
    """
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    if isinstance(cmap, str):
        import matplotlib
        if cmap not in matplotlib.colormaps:
            raise ValueError(f"cmap must name a matplotlib colormap (e.g. 'Blues', 'viridis'), "
                             f"got {cmap!r}")
    y_true, y_pred = _host(y_true), _host(y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one label per sample), got an array of shape "
                             f"{y.shape}: pass labels, e.g. y.ravel() for a column or "
                             f"y.argmax(axis=1) for one-hot rows")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}: "
                         "pass one prediction per true label")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        _check_no_missing(name, y, "drop the rows without a label from both y_true and y_pred")
    # Decided on the values' kinds (numpy would turn [0, 1] beside strings
    # into '0', '1', and scikit-learn refuse without a remedy).
    kinds = [_label_kinds(a) for a in (y_true, y_pred)]
    text = next((t for t, _ in kinds if t is not None), None)
    other = next((o for _, o in kinds if o is not None), None)
    if text is not None and other is not None:
        raise ValueError(
            f"y_true and y_pred mix label types (e.g. {text!r} and {other!r}): a confusion "
            f"matrix compares labels of one kind; for clusters against classes use "
            f"pd.crosstab(y_true, y_pred), or map the clusters to class names first")
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    labels = np.asarray(labels)
    cm = confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    ax = _new_axes(ax)
    sns.heatmap(cm, annot=True, fmt="d" if normalize is None else ".2f", cmap=cmap, cbar=False,
                square=True, xticklabels=[str(v) for v in labels],
                yticklabels=[str(v) for v in labels], ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return ax


# ----------------------------------------------------------------------------
# Multivariate fits
# ----------------------------------------------------------------------------
@_closes_its_figures_on_error
def plot_pairs(estimator, X, *, labels=None, ellipses: bool = True, sigma: float = 2.0,
               vars: Optional[Sequence] = None, height: float = 2.0, **pairplot_kws: Any):
    """Pair plot of a multivariate fit, coloured by cluster (seaborn ``pairplot``).

    Parameters
    ----------
    estimator : fitted BayesianGMM or scikit-learn GaussianMixture (any covariance_type)
    X : array-like or DataFrame of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,), optional
        Colours; default ``estimator.predict(X)`` (labels 0..K-1 in their
        components' colours, any other labelling in colours after them;
        missing labels, NaN or None, in grey as "(no label)").
    ellipses : bool, default True
        Draw each component's ``sigma``-ellipse on every off-diagonal panel
        (the marginal on that panel's pair of features).
    sigma : float, default 2
    vars : sequence of column names or indices, optional
        Columns to draw; default all.
    height : float, default 2
        Height of each panel in inches.
    **pairplot_kws
        Passed to :func:`seaborn.pairplot` (e.g. ``diag_kind="hist"``).

    The diagonal panels are seaborn's (kernel density estimates of each
    cluster's points), not the fitted components.  X may hold NaN where the
    estimator takes it (``missing="marginalize"``): each panel leaves out
    the points missing one of its features.  A DataFrame must have the
    columns the estimator was fitted on, in that order.

    Returns
    -------
    seaborn.PairGrid
        A figure-level grid, so a grid rather than an axes is returned
        (``grid.axes`` is the (D, D) array of panels, ``grid.figure`` the figure).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from bayesgmm import BayesianGMM
    >>> from bayesgmm.datasets import load_iris
    >>> X = load_iris().drop(columns="species")
    >>> g = plot_pairs(BayesianGMM(3, random_state=0, device="cpu").fit(X), X)
    >>> g.axes.shape
    (4, 4)
    """
    import pandas as pd
    import seaborn as sns

    weights, means, covs = _mixture_params(estimator)
    Xa, names = _as_2d(X, allow_nan=True, estimator=estimator)
    _check_columns(estimator, means.shape[1], X, Xa)
    if vars is not None and (isinstance(vars, (str, bytes)) or not hasattr(vars, "__iter__")):
        raise ValueError(f"vars must be a list of columns (indices or names), got {vars!r}: "
                         f"e.g. vars=[{vars!r}, ...]")
    cols = list(range(Xa.shape[1])) if vars is None else [
        _check_feature(v, names, Xa.shape[1], _positional(X)) for v in vars]
    if not cols or len(set(cols)) != len(cols):
        raise ValueError(f"vars must name at least one column, each once, got {vars!r}")
    sigma = _check_positive("sigma", sigma)
    height = _check_positive("height", height)
    ellipses = check_bool("ellipses", ellipses)
    # The legend's title: what colours the points (a Series' own name).
    title = "cluster" if labels is None else (
        str(labels.name) if isinstance(labels, pd.Series) and labels.name is not None
        else "label")
    labels = _row_labels(labels, Xa.shape[0], estimator, X, Xa)
    K = len(weights)
    df = pd.DataFrame(Xa[:, cols], columns=[names[j] for j in cols])
    hue_key = "cluster"
    while hue_key in df.columns:        # a feature of that name keeps its values
        hue_key = "_" + hue_key
    labels, hue_order = _label_values(labels)
    df[hue_key] = labels
    palette = _labels_palette(hue_order, K)
    for key, instead in (("ax", "it draws a figure of its own: use grid.figure, or "
                                "plot_clusters_2d(..., ax=ax) for one panel"),
                         ("hue", "the points are coloured by cluster: pass labels= to colour "
                                 "them by other labels")):
        if key in pairplot_kws:
            raise ValueError(f"plot_pairs takes no {key}=: {instead}")
    kws = dict(hue=hue_key, hue_order=hue_order, palette=palette, height=height)
    if pairplot_kws.get("kind", "scatter") == "scatter":
        kws["plot_kws"] = {"s": 12, "alpha": 0.7}     # scatter's keywords only
    kws.update(pairplot_kws)
    grid = sns.pairplot(df, vars=[names[j] for j in cols], **kws)
    if grid.legend is not None:
        grid.legend.set_title(title)        # not the column's stand-in name
    if ellipses:
        colors = _component_palette(K)
        shown = _shown(weights, Xa.shape[0], estimator)
        for i, fy in enumerate(cols):
            for j, fx in enumerate(cols):
                ax = grid.axes[i, j]
                if i != j and ax is not None:
                    _ellipse_patches(ax, means, covs, fx, fy, [sigma], colors, shown=shown)
    return grid
