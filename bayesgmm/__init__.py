"""bayesgmm: Bayesian Gaussian mixture models on Pyro and PyTorch.

Clustering with :class:`BayesianGMM` (MAP by SVI with ``TraceEnum_ELBO`` and an
``AutoDelta`` guide, assignments from ``infer_discrete``) and, built on it,
classification with one mixture per class.
"""

from .models import Priors
from .mixture import BayesianGMM
from .persistence import load
from .classifier import GMMClassifier

__all__ = ["BayesianGMM", "GMMClassifier", "Priors", "load", "__version__"]
__version__ = "0.1.0"
