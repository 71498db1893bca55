"""Execute every notebook in notebooks/ top to bottom, in small-size mode (CI=1).

The kernel is the interpreter running pytest: a kernelspec pointing at
``sys.executable`` is written to a temporary directory and handed to the
kernel manager directly, so nothing has to be registered beforehand (a
clean clone with ``pip install -e .[dev]`` is enough) and no other Python
installation can be picked up by accident.
"""

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["iris_petal_length", "five_class_classifier", "circles", "initialisation_and_em",
             "iris_clustering", "bayesian_inference"]
KERNEL_NAME = "bayesgmm-test"

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / KERNEL_NAME
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bayesgmm tests",
        "language": "python",
        # CI=1 selects the notebooks' small-size mode.  One torch thread:
        # the problems are tiny and the test machine's cores are shared, where
        # a thread pool costs more than it gains.
        # The inline backend explicitly: an inherited MPLBACKEND=Agg (common
        # on headless CI) would otherwise leave the notebooks without figures.
        "env": {"CI": "1", "OMP_NUM_THREADS": "1",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


def _read(name):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _images(nb):
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_small_mode(name, kernel_dir):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    nb = _read(name)
    for cell in nb.cells:  # run from a clean state, not the committed outputs
        if cell.cell_type == "code":
            cell.outputs = []
    # A last cell reports which interpreter the kernel runs.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    client = nbclient.NotebookClient(nb, km=km, timeout=300, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
    first = "".join(out.get("text", "") for out in nb.cells[1].outputs)
    assert "small-size mode" in first, first
    # No warning in small-size mode either: the committed outputs are not
    # rebuilt with every change of the library, this run is.
    warned = [out.get("text", "") for c in nb.cells if c.cell_type == "code"
              for out in c.outputs if out.get("name") == "stderr" or "Warning" in out.get("text", "")]
    assert not warned, warned
    # The figures were drawn: every notebook tells its story with (several) plots.
    assert _images(nb) >= 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_full_size_outputs(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not executed top to bottom"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not any(out.output_type == "error" for c in code for out in c.outputs)
    # No warning in the committed outputs (issue 12: none from the notebooks).
    warned = [out.get("text", "") for c in code for out in c.outputs
              if out.get("name") == "stderr" or "Warning" in out.get("text", "")]
    assert not warned, warned
    first = "".join(out.get("text", "") for out in code[0].outputs)
    assert "full-size mode" in first, "outputs must come from a full-size run"
    assert _images(nb) >= 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_public_api_only(name):
    source = "\n".join(c.source for c in _read(name).cells if c.cell_type == "code")
    private = re.findall(r"bayesgmm(?:\.\w+)*\._\w+|from bayesgmm(?:\.\w+)* import .*\b_\w+",
                         source)
    assert not private, private
    assert "load_dataset" not in source  # no downloads: shipped or generated data only


def _run_cells(sources, kernel_dir, tmp_path):
    """Execute code cells in a real kernel (the test interpreter's); the
    executed notebook."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    nbclient.NotebookClient(nb, km=km, timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_first_use_of_an_estimator_in_a_kernel_warns_nothing(kernel_dir, tmp_path):
    """Loading an estimator imports Pyro, whose MCMC logger imports
    tqdm.auto: in a kernel without ipywidgets that printed "IProgress not
    found" on the first use of an estimator, with no bar asked for.  A bar
    asked for is tqdm's text bar there, complete."""
    import importlib.util
    if importlib.util.find_spec("ipywidgets") is not None:
        pytest.skip("ipywidgets is installed: tqdm has no warning to give")
    nb = _run_cells(["from bayesgmm import BayesianGMM, GMMClassifier\n"
                     "from bayesgmm.datasets import load_iris\n"
                     "X = load_iris()[['petal_length']]\n"
                     "g = BayesianGMM(2, n_init=1, random_state=0, device='cpu').fit(X)\n"
                     "print(g.n_components_)",
                     "g.set_params(progress=True).fit(X); print('done')"], kernel_dir, tmp_path)
    quiet, asked = nb.cells
    assert not [o for o in quiet.outputs if o.get("name") == "stderr"], quiet.outputs
    assert "".join(o.get("text", "") for o in quiet.outputs).strip() == "2"
    bar = "".join(o.get("text", "") for o in asked.outputs if o.get("name") == "stderr")
    assert "BayesianGMM: 100%" in bar and "Warning" not in bar, bar
    assert "".join(o.get("text", "") for o in asked.outputs if o.get("name") == "stdout") \
        .strip() == "done"
