"""String options and input rules shared by the estimators, the command
line and the plots, in a module that imports nothing heavy (``bayesgmm
--help`` reads them without loading torch)."""

from __future__ import annotations

from typing import Literal

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: What NaN entries of X are (the ``missing`` setting of both estimators).
MISSING_OPTIONS = ("error", "marginalize")
#: Floating-point types of fits and predictions (the ``dtype`` setting).
DTYPES = ("float32", "float64")
#: How far beyond the MAP a fit goes (the ``inference`` setting).
INFERENCE_OPTIONS = ("map", "vi", "nuts")
#: The prior of the mixture weights (the ``weight_prior`` setting): a
#: Dirichlet, or the truncated stick-breaking (Dirichlet-process) prior.
WEIGHT_PRIORS = ("dirichlet", "dirichlet_process")
#: The running sufficient statistics ``BayesianGMM.partial_fit`` keeps (and a
#: saved model stores) in its ``_stream`` state: the fields of
#: ``bayesgmm.fitting.Stats``, in order, per unit of weight.
STREAM_STATS = ("loglik", "Nk", "S1", "S2", "ref")
#: The keys of that state: the frame (centre and scale of the
#: standardisation), the chunks averaged, their total weight, the average.
STREAM_KEYS = ("center", "scale", "t", "mass", "avg")


def check_bool(name: str, value) -> bool:
    """A true/false setting: True or False only (numpy's bool too); a string
    such as "no" is true to ``if`` and would do what it asks not to.  Here,
    free of imports, so that :mod:`bayesgmm.plotting` takes it without
    loading scikit-learn; the estimators call it as ``V.check_bool``."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def is_text(value) -> bool:
    """Whether a label is text (str or bytes), as against a number: the one
    test the classifier's label checks and the plotting helpers share."""
    return isinstance(value, (str, bytes))


def is_number_column(col) -> bool:
    """Whether a pandas column holds real numbers (bool included, complex
    not): the columns the estimators fit, the command line offers and the
    plots draw; an object column holding only numbers too (after
    astype(object), a concat, Decimal values), and a categorical column
    whose categories are numbers, as scikit-learn takes them."""
    import pandas as pd
    if isinstance(col.dtype, pd.CategoricalDtype):
        # Numbers as categories (pd.cut's codes relabelled, a rating): their
        # values, as scikit-learn reads them; labels as categories are not.
        cats = col.cat.categories
        return bool(pd.api.types.is_numeric_dtype(cats) and not pd.api.types.is_bool_dtype(cats)
                    and not pd.api.types.is_complex_dtype(cats)) or cats.size == 0
    if pd.api.types.is_object_dtype(col):
        return pd.api.types.infer_dtype(col, skipna=True) in (
            "integer", "floating", "mixed-integer-float", "decimal", "empty")
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_complex_dtype(col)
