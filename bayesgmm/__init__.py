"""bayesgmm: Bayesian Gaussian mixture models on Pyro and PyTorch.

Clustering with :class:`BayesianGMM` (MAP by closed-form MAP-EM on the model's
log joint, and SVI with ``TraceEnum_ELBO`` and an ``AutoDelta`` guide) and,
built on the same core, classification with one mixture per class
(:class:`GMMClassifier`), for full, tied, diagonal and spherical covariances.
Beyond the MAP (``inference``): a variational posterior ("vi", closed-form
coordinate ascent) or NUTS draws ("nuts"), the posterior predictive,
credible intervals, a Dirichlet-process prior on the weights that chooses K
(``weight_prior="dirichlet_process"``), and label alignment across draws,
restarts and seeds (:func:`align`, :func:`component_stability`).  Sample
weights and missing values (``missing="marginalize"``) are part of the model.

Importing the package is light: torch, Pyro and scikit-learn load when an
estimator (or a submodule such as :mod:`bayesgmm.plotting`) is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["BayesianGMM", "GMMClassifier", "Priors", "load", "align", "component_stability",
           "match_components", "permute", "__version__"]

# Public names and the module that defines each, imported on first use.
_LAZY = {"BayesianGMM": "mixture", "GMMClassifier": "classifier", "Priors": "priors",
         "load": "persistence", "align": "alignment", "component_stability": "alignment",
         "match_components": "alignment", "permute": "alignment"}
_SUBMODULES = ("alignment", "classifier", "cli", "covariance", "datasets", "distributed",
               "fitting", "mixture", "models", "persistence", "plotting", "posterior", "priors",
               "variational")

if TYPE_CHECKING:  # for type checkers and IDEs: the eager imports
    from .alignment import align, component_stability, match_components, permute
    from .classifier import GMMClassifier
    from .mixture import BayesianGMM
    from .persistence import load
    from .priors import Priors


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
