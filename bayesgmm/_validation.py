"""Input checks shared by the estimators.

Every check raises ``ValueError`` with the offending value and a remedy, so
that bad input never reaches torch."""

from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Any, Optional

import numpy as np

from sklearn.utils.validation import validate_data

from ._options import check_bool, is_number_column  # noqa: F401  (check_bool: V.check_bool)


class InputTypeError(ValueError, TypeError):
    """Input of a kind scikit-learn refuses with a ``TypeError``: a
    ``ValueError``, as every bad input here, and that ``TypeError`` too
    (``except TypeError`` in scikit-learn-style code works)."""


class NonNumericError(InputTypeError):
    """Input that holds something other than numbers (numpy and
    scikit-learn raise ``TypeError`` for it)."""


def _numbers_as_text(column) -> bool:
    """Whether every value of a text column (pandas) is a number written
    as text ('1.5', '2e3'), with at least one value."""
    import pandas as pd
    values = column.dropna()
    if values.empty or not all(isinstance(v, str) for v in values):
        return False
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def _describe_values(values: Any) -> str:
    """A short description of an argument that is not numbers: its dtype
    and first value (an array's repr, cut, ended mid-line)."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError, RuntimeError):
        return type(values).__name__
    if arr.ndim == 0 and arr.dtype.kind == "O":
        return type(values).__name__
    v = arr.flat[0] if arr.size else None
    first = f", first {getattr(v, 'item', lambda: v)()!r}" if arr.size else ""
    return f"{type(values).__name__} of dtype {arr.dtype}{first}"


def as_array_like(X: Any, name: str = "X", allow_nan: bool = False,
                  empty_rows: bool = False) -> Any:
    """Turn torch tensors into numpy and 1-D input into one feature, keeping
    DataFrames (for their feature names) and checking every value is a finite
    number (or NaN, a missing entry, with ``allow_nan``; a row with every
    feature missing only with ``empty_rows``, :func:`check_missing_rows`)."""
    try:
        import torch
        if isinstance(X, torch.Tensor):
            X = _tensor_data(X, name).cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if np.ma.isMaskedArray(X):
        # Masked entries are missing values (NaN): marginalised with
        # missing="marginalize", refused with the usual remedy otherwise.
        try:
            X = np.ma.filled(np.ma.asarray(X).astype(np.float64), np.nan)
        except OverflowError:
            raise _too_large(np.ma.getdata(X), name, None) from None
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_frame()
    if pd is not None and isinstance(X, pd.DataFrame):
        twice = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        if twice:
            raise ValueError(
                f"{name} has column(s) named more than once: {twice}; give each column its own "
                f"name (e.g. df.loc[:, ~df.columns.duplicated()] keeps the first of each)")
        numeric = [is_number_column(X[c]) for c in X.columns]
        bad = [str(c) for c, ok in zip(X.columns, numeric) if not ok]
        if bad:
            good = [c for c, ok in zip(X.columns, numeric) if ok]
            # Numbers stored as text (astype(str), or a column read as text
            # by a reader told not to convert) are named as such, with the
            # conversion (decimal commas, '1,5', do not convert: generic).
            texts = [str(c) for c, ok in zip(X.columns, numeric)
                     if not ok and _numbers_as_text(X[c])]
            if texts and len(texts) == len(bad):
                c = next(c for c in X.columns if str(c) == texts[0])
                example = X[c].dropna().iloc[0]
                raise NonNumericError(
                    f"{name}'s column(s) {texts} hold numbers written as text ({texts[0]}: "
                    f"{example!r}): convert them, e.g. df.astype({{{texts[0]!r}: float}}) or "
                    f"df.apply(pd.to_numeric)")
            select = (f"select the numeric columns (df[{good!r}]) or encode the others as "
                      f"numbers" if good else "encode them as numbers")
            raise NonNumericError(f"{name} has non-numeric column(s) {bad}: {select}")
        held = [c for c in X.columns if X[c].dtype == object]
        if held:
            # Numbers held as objects (df.astype(object), a column of mixed
            # types): pandas' missing value pd.NA there made numpy's float
            # conversion fail with a TypeError (from an audit).  Converted
            # on a shallow copy: the user's frame is left as it is.
            X = X.copy(deep=False)
            labels = row_labels(X)
            for c in held:
                try:
                    X[c] = pd.to_numeric(X[c]).to_numpy(dtype=np.float64, na_value=np.nan)
                except OverflowError:
                    raise _too_large(X[c].to_numpy(), name, str(c), labels) from None
        values = X.to_numpy(dtype=np.float64, na_value=np.nan)
        _check_finite(values, name, [str(c) for c in X.columns], allow_nan,
                      index=row_labels(X), empty_rows=empty_rows)
        return X
    if X is None or (isinstance(X, (dict, set, frozenset, str, bytes))
                     and not hasattr(X, "tocsr")):      # scipy's dok sparse is a dict
        raise NonNumericError(f"{name} must be a 2-D array-like of numbers (an array, a "
                              f"DataFrame, a list of rows or a tensor), got {type(X).__name__}")
    if isinstance(X, (list, tuple, numbers.Number)) or hasattr(X, "__array__"):
        try:
            arr = np.asarray(X)
        except ValueError as exc:       # rows of different lengths
            raise ValueError(f"{name} must have the same number of values in every row (a 2-D "
                             f"array of numbers), got rows of different lengths: {exc}") from None
        if arr.dtype.kind in "mM":
            what = "dates or times" if arr.dtype.kind == "M" else "time spans"
            raise NonNumericError(
                f"{name} holds {what} ({arr.dtype}), not numbers: convert them to numbers in a "
                f"unit you choose, e.g. (X - X.min()) / np.timedelta64(1, 'D') for days")
        if arr.dtype.names is not None and len(arr.dtype.names) == 1:
            arr = arr[arr.dtype.names[0]]    # one field: one feature, as before
        if arr.dtype.names is not None:     # a structured (record) array
            raise NonNumericError(
                f"{name} is a structured array (fields {list(arr.dtype.names)}), not a 2-D "
                f"array of numbers: convert it with numpy.lib.recfunctions."
                f"structured_to_unstructured({name}) (one column per field)")
        if arr.dtype.kind in "OUSV":
            try:
                arr = arr.astype(np.float64)
            except OverflowError:
                raise _too_large(arr, name, None) from None
            except (TypeError, ValueError) as exc:
                raise NonNumericError(
                    f"{name} must contain numbers, got an array of dtype {arr.dtype} ({exc}): "
                    f"convert it to float or drop the non-numeric columns") from None
        if arr.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} must be real-valued; take the real part "
                             f"or the magnitude first")
        _check_dimensions(arr, name)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.dtype.kind in "fiub" and arr.ndim == 2:
            _check_finite(arr, name, None, allow_nan, empty_rows=empty_rows)
        return arr
    if not _passes_through(X) and not _numeric_sequence(X):
        raise NonNumericError(f"{name} must be a 2-D array-like of numbers (an array, a "
                              f"DataFrame, a list of rows or a tensor), got {type(X).__name__}")
    return X


def row_labels(frame) -> Any:
    """A DataFrame's index for messages that name a row, or None where it is
    the default 0..N-1 (the row number says it)."""
    import pandas as pd
    index = frame.index
    default = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    return None if default else index


def _numeric_sequence(X: Any) -> bool:
    """Whether numpy makes an array of ``X`` (a deque of rows, a memoryview,
    any sequence), left to scikit-learn's conversion as before; an object
    it can only wrap (``object()``, a generator) is no data."""
    try:
        arr = np.asarray(X)
    except Exception:
        return False
    return not (arr.ndim == 0 and arr.dtype == object)


def _passes_through(X: Any) -> bool:
    """Whether ``X``, neither a list nor an array, is left to scikit-learn's
    own checks: sparse matrices (refused there with their remedy) and data
    frames of other libraries (the dataframe interchange protocol)."""
    return hasattr(X, "tocsr") or hasattr(X, "__dataframe__") or \
        hasattr(X, "__arrow_c_stream__") or hasattr(X, "__array_interface__")


def _check_dimensions(arr: np.ndarray, name: str) -> None:
    """Refuse a scalar or an array of more than 2 dimensions, with a remedy
    (scikit-learn's own messages name neither the argument nor a fix)."""
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a 2-D array of numbers (rows of features), got a "
                         f"scalar {arr.item()!r}: pass [[value]] for one point of one feature")
    if arr.ndim > 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a {arr.ndim}-D array "
                         f"of shape {arr.shape}: give each sample one row, e.g. "
                         f"np.asarray({name}).reshape(len({name}), -1) to flatten each sample's "
                         f"values into features")


def _tensor_data(X, name: str = "X"):
    """A tensor's values in a dtype numpy and the kernels take: refuses
    tensors without data (the "meta" device); half precisions (bfloat16,
    float16, float8) are widened to float32 exactly."""
    import torch

    X = X.detach()
    if X.device.type == "meta":
        raise ValueError(f"{name} is a tensor on the 'meta' device, which has shapes but no "
                         f"values: pass a tensor with data (e.g. on 'cpu' or 'cuda')")
    if X.is_floating_point() and X.dtype not in (torch.float32, torch.float64):
        X = X.float()
    return X


#: Element types of a flat list that :func:`real_array` converts at once.
_PLAIN_NUMBERS = {int, float, np.float64, np.float32, np.int64, np.int32}


def real_array(value: Any, name: str = "value", *, booleans: bool = False) -> Optional[np.ndarray]:
    """``value`` (a number, nested lists, an array or a tensor) as a new
    float64 array, or None where it is not an array of real numbers: ragged
    nesting, text (even "3", which numpy would convert), complex numbers,
    objects that are not numbers, and booleans unless ``booleans`` (the one
    rule of every numeric setting and argument; each caller words its own
    refusal, with its remedy).  ``name`` names a meta tensor's refusal."""
    if type(value).__module__.split(".")[0] == "torch":
        import torch
        if isinstance(value, torch.Tensor):
            value = _tensor_data(value, name).cpu().numpy()
    bad = (str, bytes, complex, np.complexfloating, type(None)) \
        + (() if booleans else (bool, np.bool_))
    kinds = "USVcO" if booleans else "USVcbO"

    def refused(v) -> bool:
        # An element that is itself an array or tensor (0-d or not) by its
        # dtype: np.array('0.5') or torch.tensor(True) in a list.
        if isinstance(v, bad):
            return True
        if isinstance(v, (int, float)):         # np.float64 too: no array look-up
            return False
        dtype = getattr(v, "dtype", None)
        if dtype is None:
            return False
        return (dtype if isinstance(dtype, np.dtype) else np.asarray(v).dtype).kind in kinds

    try:
        if isinstance(value, (list, tuple)):
            # A flat list of Python numbers (10**7 weights) at C speed;
            # anything else element by element: np.asarray([True, 2.0])
            # would hide the boolean in a float array.
            if set(map(type, value)) <= _PLAIN_NUMBERS:
                return np.array(value, dtype=np.float64)
            given = np.asarray(value, dtype=object)
        else:       # arrays and array-likes (a Series) through their own dtype
            given = np.asarray(value)
        if given.dtype == object:
            if any(refused(v) for v in given.ravel().tolist()):
                return None
            return np.array(value, dtype=np.float64)
        if given.dtype.kind in kinds:
            return None
        return np.array(given, dtype=np.float64)
    except OverflowError:
        # A Python int beyond float64's range (10**400): +-inf, as a float
        # that large would be, so that each caller's refusal of non-finite
        # values says it (it was "must hold numbers": from an audit).
        def big(v) -> float:
            try:
                return float(v)
            except OverflowError:
                return math.inf if v > 0 else -math.inf
        try:
            return np.vectorize(big, otypes=[np.float64])(np.asarray(value, dtype=object))
        except (TypeError, ValueError):
            return None
    except (TypeError, ValueError):  # ragged, or objects that are not numbers
        return None


def int_digits(v: int) -> int:
    """The decimal digits of the integer ``|v|``, without ``str`` (which
    Python refuses past 4,300 digits)."""
    a = abs(int(v))
    d = int((max(a.bit_length(), 1) - 1) * 0.30102999566398120) + 1
    while a >= 10 ** d:
        d += 1
    while d > 1 and a < 10 ** (d - 1):
        d -= 1
    return d


def big_int_text(v: int) -> str:
    """An integer beyond float64's range, for a message: its sign and digits."""
    return f"{'a negative' if v < 0 else 'an'} integer of {int_digits(v)} digits"


def first_overflow(values) -> Optional[tuple]:
    """The position (an index tuple) and value of the first entry of
    ``values`` that ``float`` cannot hold (a Python int past ~1.8e308), or
    None."""
    for at, v in np.ndenumerate(np.asarray(values, dtype=object)):
        try:
            float(v)
        except OverflowError:
            return at, v
        except (TypeError, ValueError):
            continue
    return None


def _too_large(values, name: str, column: Optional[str], index=None) -> ValueError:
    """The error for a number beyond float64's range held as a Python int
    (an int of 10**400 made numpy's conversion raise a bare OverflowError:
    from an audit), naming its place (``index``: a DataFrame's row labels,
    when not the default 0..N-1)."""
    found = first_overflow(values)
    where = ""
    if found is not None:
        at, v = found
        row = f"row {at[0]}" + (f" (index label {index[at[0]]!r})" if index is not None else "")
        place = f"column {column!r}, {row}" if column is not None else \
            row + (f", column {at[1]}" if len(at) > 1 else "")
        where = f" ({place}: {big_int_text(v)})"
    return ValueError(f"{name} holds a number beyond float64's range (about 1.8e308){where}: "
                      f"rescale the feature (e.g. divide it by a power of ten, or take its "
                      f"logarithm) or drop the row")


def _check_finite(arr: np.ndarray, name: str, columns: Optional[list],
                  allow_nan: bool = False, row_offset: int = 0, index=None,
                  empty_rows: bool = False) -> None:
    """Refuse inf (and NaN unless ``allow_nan``) naming the column;
    ``row_offset``: where ``arr`` starts in the whole input (blocks);
    ``index``: a DataFrame's row labels (not the default 0..N-1), named
    next to the row's position; ``empty_rows``: rows with every feature
    missing pass (a prediction's), else they are refused (a fit's)."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    # Fast path without an (N, D) boolean temporary (predicting on 1e8 points
    # must not allocate per-element masks): NaN or inf anywhere makes the sum
    # non-finite; a finite sum proves every value finite.  Only an overflowing
    # sum of finite values falls through to the element-wise check.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return
    finite = np.isfinite(arr) | (np.isnan(arr) if allow_nan else False)
    if allow_nan and not empty_rows:
        check_missing_rows(np.isnan(arr), name, row_offset, index)
    if finite.all():
        return
    col = int(np.where(~finite.all(axis=0))[0][0])
    label = f"column {col}" + (f" ({columns[col]!r})" if columns else "")
    bad = arr[:, col][~finite[:, col]]
    if row_offset or arr.shape[0] > 1:
        i = int(np.flatnonzero(~finite[:, col])[0])
        label += f", row {row_offset + i}" + ("" if index is None else
                                              f" (index label {index[[i]].tolist()[0]!r})")
    if np.isnan(bad).any():
        raise ValueError(f"{name} contains NaN in {label} (missing values): set "
                         f"missing='marginalize' to use the observed features of those rows, "
                         f"or remove or impute them (e.g. df.dropna())")
    raise ValueError(f"{name} contains inf in {label} (value {bad[0]}): remove or clip "
                     f"infinite values")


def check_missing_rows(nan, name: str = "X", row_offset: int = 0, index=None) -> None:
    """Refuse rows whose every feature is missing (``nan``: (N, D) bool,
    numpy or torch) from a fit: they carry no information for a mixture
    over the features.  (Predictions take them: with nothing observed the
    density is 1, so a row's assignment is the weights', its class the
    class prior, its score 0 and its imputation the mixture's mean.)
    ``index``: a DataFrame's row labels, named next to the positions."""
    empty = nan.all(1) if nan.shape[1] else nan[:, :0].any(1)
    if bool(empty.any()):
        at = [int(i) for i in (np.flatnonzero(empty) if isinstance(empty, np.ndarray)
                               else empty.nonzero().squeeze(1).cpu())[:5]]
        rows = [row_offset + i for i in at]
        more = "..." if int(empty.sum()) > 5 else ""
        labels = "" if index is None else f", index label(s) {index[at].tolist()}{more}"
        raise ValueError(f"{name} has {int(empty.sum())} row(s) with every feature missing "
                         f"(row(s) {rows}{more}{labels}): drop them, e.g. "
                         f"df.dropna(how='all')")


def check_sample_weight(sample_weight: Any, n_samples: int,
                        all_zero: str = "error") -> Optional[np.ndarray]:
    """``sample_weight`` as a float64 array (n_samples,), or None: one
    non-negative finite number per row, not all zero.  ``all_zero``: "error";
    "shard" (one in-memory shard of several processes': the message says
    every rank needs a row of positive weight); "allow" (a streamed shard,
    whose total is checked over all ranks)."""
    if sample_weight is None:
        return None
    w = real_array(sample_weight, "sample_weight", booleans=True)   # a copy: never the caller's
    if w is None:
        try:
            dtype = np.asarray(sample_weight).dtype
        except (TypeError, ValueError, RuntimeError):
            dtype = None
        if dtype is not None and dtype.kind == "c":
            raise ValueError(f"sample_weight must be real numbers, got complex values (dtype "
                             f"{dtype}): take their real part or magnitude")
        raise NonNumericError(f"sample_weight must hold numbers, got "
                              f"{_describe_values(sample_weight)}: convert it, e.g. "
                              f"np.asarray(sample_weight, dtype=float) where its values are "
                              f"numbers written as text")
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight has shape {w.shape}, expected ({n_samples},): one "
                         f"weight per row of X")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sample_weight must be finite and >= 0, got {w[i]} at row {i}: "
                         f"weights count how often a row was seen (0 drops it)")
    if all_zero != "allow" and not (w > 0).any():
        if all_zero == "shard":
            raise ValueError("sample_weight of this rank's shard are all zero: in a fit over "
                             "several processes every rank's in-memory shard needs at least one "
                             "row of positive weight (leave such a rank out of the process "
                             "group, or give the shards as memmaps, whose weights are checked "
                             "over all ranks together)")
        raise ValueError("sample_weight are all zero: at least one row needs a positive weight")
    if not np.isfinite(w.sum()):
        raise ValueError(f"sample_weight sum overflows float64 (largest {w.max():.3g}): "
                         f"rescale the weights")
    return w


def _ndim(X: Any) -> int:
    """Dimensions of array-like input, without np.ndim: array-likes that
    implement only ``__array__`` (scikit-learn's ``_NotAnArray``) refuse
    numpy's array-function protocol."""
    nd = getattr(X, "ndim", None)
    if isinstance(nd, int):
        return nd
    try:
        return np.asarray(X).ndim
    except ValueError:           # ragged rows: as_array_like names them
        return 2


def allows_missing(estimator) -> bool:
    """Whether ``estimator`` takes missing values (``missing="marginalize"``);
    its ``missing`` setting is validated here."""
    from ._options import MISSING_OPTIONS

    return check_option("missing", getattr(estimator, "missing", "error"),
                        MISSING_OPTIONS) == "marginalize"


def _shape_error(message: str, estimator) -> ValueError:
    """scikit-learn's words for a shape error of X first (its checks match
    them), then the remedy (on a line of its own after scikit-learn's
    lists of feature names)."""
    remedy = _shape_remedy(message, estimator)
    if "\n" in message.strip():
        return ValueError(f"{message.rstrip()}\n{remedy[0].upper()}{remedy[1:]}")
    return ValueError(f"{message.rstrip('.')}: {remedy}")


def _shape_remedy(message: str, estimator) -> Optional[str]:
    """The remedy for scikit-learn's shape errors of X (no rows, no
    columns, another number of features than the fit's), or None."""
    if "0 sample(s)" in message:
        return ("X needs at least one row (a filter or selection that matched no rows gives "
                "none)")
    if "0 feature(s)" in message:
        return "X needs at least one column (feature)"
    if "feature names should match those that were passed during fit" in message:
        names = list(map(str, getattr(estimator, "feature_names_in_", [])))
        return (f"pass the columns the model was fitted on, in that order: X[{names!r}] (a "
                f"DataFrame's columns are matched by name)")
    if "features, but" in message and "is expecting" in message:
        names = getattr(estimator, "feature_names_in_", None)
        n = getattr(estimator, "n_features_in_", None)
        which = f" {list(map(str, names))}" if names is not None else ""
        return f"give the {n} feature(s) the model was fitted on{which}, in that order"
    return None


def check_X(estimator, X: Any, *, reset: bool, allow_nan: Optional[bool] = None,
            empty_rows: bool = False) -> np.ndarray:
    """Validate ``X`` for ``estimator`` (sets ``n_features_in_`` and
    ``feature_names_in_`` when ``reset``) and return a float64 (N, D) array.
    NaN (missing) entries are kept when the estimator marginalises them;
    rows with every feature missing only with ``empty_rows`` (predictions:
    :func:`check_missing_rows`)."""
    n_expected = getattr(estimator, "n_features_in_", None)
    if not reset and n_expected not in (None, 1) and not _is_series(X) and _ndim(X) == 1 \
            and getattr(getattr(X, "dtype", None), "names", None) is None:    # not structured
        raise ValueError(
            f"Expected 2-D input with {n_expected} features, got a 1-D array of {len(X)} "
            f"value(s). Reshape your data with X.reshape(1, -1) if it is one sample")
    if allow_nan is None:
        allow_nan = allows_missing(estimator)
    X = as_array_like(X, allow_nan=allow_nan, empty_rows=empty_rows)
    try:
        X = validate_data(estimator, X, reset=reset, dtype=np.float64, ensure_min_samples=1,
                          ensure_all_finite="allow-nan" if allow_nan else True)
    except TypeError as exc:
        if "Feature names are only supported if all input features have string names" \
                not in str(exc):
            raise
        raise InputTypeError(str(exc)) from None     # said as scikit-learn says it
    except ValueError as exc:
        if _shape_remedy(str(exc), estimator) is None:
            raise
        raise _shape_error(str(exc), estimator) from None
    # Contiguous and writeable: torch takes neither negative strides (X[::-1])
    # nor read-only buffers (pandas 3) without a copy or a warning.
    if not (X.flags.c_contiguous and X.flags.writeable):
        X = np.array(X, order="C")
    return X


def _warn_unnamed(estimator) -> None:
    """scikit-learn's warning for input without column names given to an
    estimator fitted on a DataFrame (validate_data says it for arrays; a
    tensor or an out-of-core array, checked here, has no names either, and
    its columns' order cannot be checked)."""
    if hasattr(estimator, "feature_names_in_"):
        warnings.warn(f"X does not have valid feature names, but {type(estimator).__name__} was "
                      f"fitted with feature names", UserWarning)


def check_stream_dtype(X) -> None:
    """Refuse out-of-core input whose dtype is not numbers.  In memory,
    numbers written as text are converted (as ``np.asarray(X, float)``
    would); read block by block they are not: say so, with both ways out."""
    kind = np.dtype(X.dtype).kind
    if kind in "fiub":
        return
    text = (" (text: numbers written as text are converted only for data in memory)"
            if kind in "US" else "")
    raise NonNumericError(
        f"X must hold numbers, got an out-of-core array of dtype {X.dtype}{text}: store it as "
        f"numbers (e.g. np.save of X.astype(float)), or pass it in memory (np.asarray(X))")


def check_X_rows(estimator, X) -> Any:
    """Validate out-of-core input (a memmap, h5py, zarr or dask array) for
    a fitted estimator without reading it: 2-D, numbers, at least one row,
    the fitted number of features.  Its values are checked block by block
    as they are read."""
    shape = tuple(int(v) for v in X.shape)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {shape}")
    check_stream_dtype(X)
    if shape[0] == 0:
        raise _shape_error(f"Found array with 0 sample(s) (shape={shape}) while a minimum of 1 "
                           f"is required.", estimator)
    n_expected = getattr(estimator, "n_features_in_", None)
    if n_expected is not None and shape[1] != n_expected:
        raise _shape_error(f"X has {shape[1]} features, but {type(estimator).__name__} is "
                           f"expecting {n_expected} features as input.", estimator)
    _warn_unnamed(estimator)
    return X


def check_X_tensor(estimator, X) -> "torch.Tensor":
    """Validate a torch tensor given to a fitted estimator's prediction
    methods without moving it off its device: 2-D (1-D only for a
    one-feature model), real numbers, the fitted number of features, at
    least one row, every value finite.  Returns it as an (N, D) tensor."""
    import torch

    n_expected = getattr(estimator, "n_features_in_", None)
    X = _tensor_data(X)
    if X.is_complex():
        raise ValueError(f"X must hold real numbers, got a tensor of dtype {X.dtype}: "
                         f"take its real part or magnitude (X.real, X.abs())")
    if X.dtype == torch.bool:
        # 0 and 1, as fit reads a bool tensor and scikit-learn a bool array.
        X = X.to(torch.float32)
    if X.ndim == 1:
        if n_expected not in (None, 1):
            raise ValueError(
                f"Expected 2-D input with {n_expected} features, got a 1-D tensor of "
                f"{X.shape[0]} value(s). Reshape it with X.reshape(1, -1) if it is one sample")
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D tensor (n_samples, n_features), got shape "
                         f"{tuple(X.shape)}")
    if X.shape[0] == 0:
        raise _shape_error(f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a "
                           f"minimum of 1 is required.", estimator)
    if n_expected is not None and X.shape[1] != n_expected:
        raise _shape_error(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                           f"expecting {n_expected} features as input.", estimator)
    if X.is_floating_point():
        # One reduction on the device: a finite sum proves every value finite.
        with torch.no_grad():
            if not bool(torch.isfinite(torch.sum(X, dtype=torch.float64))):
                allow_nan = allows_missing(estimator)
                finite = torch.isfinite(X) | (torch.isnan(X) if allow_nan else False)
                if not bool(finite.all()):
                    col = int((~finite.all(0)).nonzero()[0, 0])
                    bad = X[:, col][~finite[:, col]]
                    if bool(torch.isnan(bad).any()):
                        raise ValueError(f"X contains NaN in column {col} (missing values): "
                                         f"set missing='marginalize' to use the observed "
                                         f"features of those rows, or remove or impute them")
                    raise ValueError(f"X contains inf in column {col} (value {float(bad[0])}): "
                                     f"remove or clip infinite values")
    _warn_unnamed(estimator)
    return X


def _is_series(X) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return False
    return isinstance(X, pd.Series)


def check_int(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return int(value)


def check_random_state(value: Any, name: str = "random_state") -> np.random.RandomState:
    """scikit-learn's ``check_random_state``, its errors naming ``name``
    and what it takes (numpy's own says only "Seed must be between 0 and
    2**32 - 1")."""
    from sklearn.utils import check_random_state as sk_check_random_state
    try:
        if isinstance(value, (bool, np.bool_)):    # not a seed (numpy takes it as 0 or 1)
            raise ValueError
        return sk_check_random_state(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be None, an integer from 0 to 2**32 - 1 or a "
                         f"numpy.random.RandomState, got {value!r}") from None


def check_float(name: str, value: Any, *, minimum: float = 0.0, strict: bool = True) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:            # an int beyond float64's range (10**400)
        value = math.inf if value > 0 else -math.inf
    ok = np.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        finite = "" if np.isfinite(value) else "a finite number "
        raise ValueError(f"{name} must be {finite}{'>' if strict else '>='} {minimum}, "
                         f"got {value}")
    return value


def check_option(name: str, value: Any, options: tuple) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def resolve_device(device: Any, available: bool = True):
    """'auto' -> cuda when available else cpu; 'cpu'/'cuda'/'cuda:N' or a
    torch.device are taken as given, after checking CUDA exists (unless
    ``available`` is False: the setting's form only, for a model kept or
    saved on a machine other than the one it fits on)."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) and device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and available and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available on this machine: "
                         f"use device='cpu' or 'auto'")
    if dev.type == "cuda" and available and dev.index is not None \
            and dev.index >= torch.cuda.device_count():
        # Else "CUDA error: invalid device ordinal" at the first allocation.
        raise ValueError(f"device={device!r} but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s), numbered from 0: use device='cuda' or 'cuda:N' with N "
                         f"below {torch.cuda.device_count()}")
    if dev.type == "mps":
        raise ValueError(f"device={device!r}: Apple's MPS backend is not supported, because the "
                         f"fits choose between restarts and stages by losses evaluated in "
                         f"float64, which MPS does not have: use device='cpu' (or 'cuda')")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def physical_memory() -> Optional[int]:
    """This machine's memory in bytes, where the OS says (None elsewhere)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_result_size(setting: str, nbytes: float, remedy: str) -> None:
    """Refuse before any work a result that alone would exceed this machine's
    memory (``nbytes``: its size, in Python ints where a setting may be
    any int: float products of 10**400 overflowed; ``setting``: what asked
    for it, as the user wrote it, e.g. "n_samples=1000000000"), with a ``ValueError``
    naming it: numpy's ``MemoryError`` or torch's allocator error came from
    deep inside, some only after a whole fit."""
    total = physical_memory()
    if total is not None and nbytes > total:
        try:
            size = f"{nbytes / 2 ** 30:.3g}"
        except OverflowError:        # an int size past float64's range (n_init=10**400)
            size = f"1e{int_digits(int(nbytes) // 2 ** 30) - 1}"
        raise ValueError(f"{setting} asks for about {size} GiB, more than this "
                         f"machine's {total / 2 ** 30:.3g} GiB of memory: {remedy}")
