"""Pyro, imported once without tqdm's notebook warning.

Importing Pyro imports its MCMC logger, which imports ``tqdm.auto``; in a
Jupyter kernel without ipywidgets that import warns "IProgress not found.
Please update jupyter and ipywidgets" on the first use of an estimator,
though no bar was asked for.  Every module of the package that imports
Pyro imports this one first, so that Pyro's first import happens here, with
that one warning filtered.  A bar the user asks for (``progress=True``)
is then tqdm's text bar in such a kernel (tqdm decides once, at that
import), as it would be after the warning; with ipywidgets, its widget.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import pyro  # noqa: F401
