"""The examples in the public docstrings run as written and print what they
show, each docstring in a fresh namespace holding only its module's own
public names (as after ``from bayesgmm.module import *``): every other name
it uses (numpy's ``np`` too) is imported in it, so that it runs when pasted
into a new session."""

from __future__ import annotations

import doctest
import importlib

import pytest

import pkgutil

import bayesgmm

# Every module of the package, the private ones too (their docstrings reach
# users through the public classes: _base holds methods both estimators have).
MODULES = ["bayesgmm"] + [f"bayesgmm.{m.name}" for m in pkgutil.iter_modules(bayesgmm.__path__)
                          if m.name != "__main__"]


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen = set()
    for name in MODULES:
        module = importlib.import_module(name)
        own = {k: v for k, v in vars(module).items()
               if not k.startswith("_") and getattr(v, "__module__", None) == module.__name__}
        for test in finder.find(module, name, globs=own):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                yield pytest.param(test, id=test.name)


@pytest.mark.parametrize("test", list(_examples()))
def test_docstring_example(test):
    import matplotlib
    import matplotlib.pyplot as plt
    matplotlib.use("Agg")
    test.globs = dict(test.globs)             # each run from the module's names only
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    try:
        runner.run(test, out=report.append)
    finally:
        plt.close("all")
    assert runner.failures == 0, "".join(report)
