"""bayesgmm: Bayesian Gaussian mixture models on Pyro and PyTorch.

Clustering with :class:`BayesianGMM` (MAP by SVI with ``TraceEnum_ELBO`` and an
``AutoDelta`` guide, accelerated by closed-form MAP-EM; assignments from
``infer_discrete``) and, built on the same core, classification with one
mixture per class (:class:`GMMClassifier`), for full, tied, diagonal and
spherical covariances.
"""

from .priors import Priors

from .mixture import BayesianGMM
from .classifier import GMMClassifier
from .persistence import load

__all__ = ["BayesianGMM", "GMMClassifier", "Priors", "load", "__version__"]
__version__ = "0.2.0"
