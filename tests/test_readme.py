"""The README's Python examples run as written.

Every ```python block of README.md runs, in the order it appears, in one
fresh interpreter (later blocks use earlier blocks' names, as a reader
following along does), in an empty working folder (one block saves a file
there), with the library's warnings turned into errors: a user pasting them
must see no traceback and no warning.  Two kinds of block are set apart,
each for a reason said at its test: the GPU block, which runs only where
CUDA is, and the NUTS block, which is compiled here and run by the
posterior tests at a smaller size (its defaults take about 25 s).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def _is_gpu(block: str) -> bool:
    return 'device="cuda"' in block


def _is_nuts(block: str) -> bool:
    return 'inference="nuts"' in block


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # One thread, as the suite's other subprocesses: the machine is shared.
    prelude = "import torch\ntorch.set_num_threads(1)\n"
    return subprocess.run([sys.executable, "-W", "error::UserWarning", "-W",
                           "error::RuntimeWarning", "-c", prelude + code],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_readme_has_its_examples():
    blocks = _blocks()
    # A change to the fences (```py, an indented block) would make the test
    # below run nothing: the README's examples are counted here.
    assert len(blocks) >= 7
    assert sum(map(_is_gpu, blocks)) == 1 and sum(map(_is_nuts, blocks)) == 1


def test_every_cpu_example_runs_in_order_without_a_warning(tmp_path):
    chosen = [b for b in _blocks() if not _is_gpu(b) and not _is_nuts(b)]
    code = "\n".join(chosen) + "\nprint('README examples: done')\n"
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("README examples: done")
    assert out.stderr == "", out.stderr[-3000:]
    assert (tmp_path / "iris.bgmm").is_file()      # the persistence example's file


def test_the_nuts_example_compiles_and_names_what_exists():
    """The NUTS example's defaults (1000 draws, 4 chains) take ~25 s on a
    core: too long for this suite, where tests/test_posterior.py runs the
    same calls at a smaller size.  Here: it is valid Python, and every
    method and attribute it names exists on a fitted estimator's class."""
    (block,) = [b for b in _blocks() if _is_nuts(b)]
    compile(block, "README.md (NUTS example)", "exec")
    from bayesgmm import BayesianGMM

    names = set(re.findall(r"\bgmm\.(\w+)", block))
    assert {"posterior_samples", "credible_interval", "score_samples"} <= names
    for name in names - {"rhat_", "ess_"}:
        assert callable(getattr(BayesianGMM, name, None)), name
    assert {"rhat_", "ess_"} <= names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_example_runs(tmp_path):
    """The GPU example leaves X, y and X_new to the reader: the five-class
    study's data stand in for them."""
    (block,) = [b for b in _blocks() if _is_gpu(b)]
    code = textwrap.dedent("""\
        from bayesgmm.datasets import make_five_class
        X, y, truth = make_five_class(random_state=0)
        X_new, _ = truth.sample(100, random_state=1)
        """) + block + textwrap.dedent("""
        assert labels.is_cuda and proba.is_cuda and proba.dtype == torch.float64
        assert (labels.cpu().numpy() == clf.predict(X_new)).all()
        print('GPU example: done')
        """)
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("GPU example: done")
