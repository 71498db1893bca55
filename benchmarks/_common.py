"""Shared helpers of the benchmark scripts: machine description, devices,
timing, peers, scoring, markdown tables and JSON output.

Benchmark code only: nothing here is imported by the library.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------
# Machine and devices
# ----------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """What ran the benchmark: CPU, cores, torch threads, GPU, library versions."""
    import sklearn
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }
    try:
        import pyro
        info["pyro"] = pyro.__version__
    except ImportError:  # pragma: no cover - a hard dependency of bayesgmm
        info["pyro"] = None
    info["pomegranate"] = pomegranate_version()
    info["torchgmm"] = torchgmm_version()
    try:
        import bayesgmm
        info["bayesgmm"] = bayesgmm.__version__
    except ImportError:  # pragma: no cover
        info["bayesgmm"] = None
    try:
        load = os.getloadavg()
        info["load_average_1m"] = round(load[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        info["load_average_1m"] = None
    return info


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False: "
                         "run on a machine with an NVIDIA GPU, or use --device cpu")
    return name


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def torchgmm_version() -> Optional[str]:
    """torchgmm's version where it can be imported (found without importing
    it: PyTorch Lightning takes seconds to import), else None."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("torchgmm") is None:
        return None
    try:
        return version("torchgmm")
    except PackageNotFoundError:   # importable but without metadata
        return "unknown"


def pomegranate_version() -> Optional[str]:
    try:
        import pomegranate
    except ImportError:
        return None
    return getattr(pomegranate, "__version__", "unknown")


def peer_installed(name: str, skipped: list) -> bool:
    """Whether the optional peer ``name`` ("pomegranate" or "torchgmm") is
    installed; if not, a ``skipped:`` line saying how to install it is
    printed and added to ``skipped`` (a missing peer is reported, never
    silently absent)."""
    version = {"pomegranate": pomegranate_version, "torchgmm": torchgmm_version}[name]
    if version() is not None:
        return True
    skipped.append(skip_line(name, f"not installed (pip install {name}; "
                                   f"benchmarks/README.md says where)"))
    return False


def skip_line(what: str, why: str) -> str:
    line = f"skipped: {what} ({why})"
    print(line, flush=True)
    return line


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------
def time_call(fn: Callable[[], Any], device: str, repeats: int = 3, warmup: int = 1
              ) -> tuple[float, list[float], Any]:
    """Median wall time of ``fn()`` in seconds (``time.perf_counter``), after
    ``warmup`` untimed calls, synchronising the GPU around each call.

    Returns (median, all times, the last call's result)."""
    out = None
    for _ in range(warmup):
        out = fn()
        synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def read_once_floor(X: np.ndarray, device: str, repeats: int = 20) -> float:
    """Seconds to read X once on ``device``: a synchronised ``X.sum()`` on a
    float32 device tensor (the memory-bandwidth floor of any pass over X)."""
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    median, _, _ = time_call(lambda: Xt.sum(), device, repeats=repeats, warmup=3)
    return median


# ----------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------
def mixture_mean_loglik(X: np.ndarray, weights: np.ndarray, means: np.ndarray,
                        scales: np.ndarray, chunk: int = 2 ** 16) -> float:
    """Mean log-likelihood per point of a diagonal Gaussian mixture, float64,
    chunked over points so memory stays bounded at any N.  One scorer for
    every method, so that qualities are compared on the same footing."""
    from scipy.special import logsumexp

    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    with np.errstate(divide="ignore"):
        const = np.log(w) - np.log(s).sum(-1) - 0.5 * m.shape[1] * math.log(2 * math.pi)
    inv = 1.0 / s
    total = 0.0
    for a in range(0, X.shape[0], chunk):
        x = np.asarray(X[a:a + chunk], dtype=np.float64)
        z = (x[:, None, :] - m[None]) * inv[None]
        total += float(logsumexp(const[None] - 0.5 * (z * z).sum(-1), axis=1).sum())
    return total / X.shape[0]


def sklearn_mixture(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                    covariance_type: str):
    """A scikit-learn ``GaussianMixture`` holding a mixture given in its
    layout (``covariances`` as ``GaussianMixture.covariances_`` for
    ``covariance_type``), float64: scikit-learn's own scorer for every
    library's parameters (``score``, ``score_samples``)."""
    from sklearn.mixture import GaussianMixture
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    w = np.asarray(weights, dtype=np.float64)
    ref = GaussianMixture(w.shape[0], covariance_type=covariance_type)
    ref.weights_ = w / w.sum()
    ref.means_ = np.asarray(means, dtype=np.float64)
    ref.covariances_ = np.asarray(covariances, dtype=np.float64)
    ref.precisions_cholesky_ = _compute_precision_cholesky(ref.covariances_, covariance_type)
    return ref


def sklearn_mean_loglik(X: np.ndarray, weights: np.ndarray, means: np.ndarray,
                        covariances: np.ndarray, covariance_type: str) -> float:
    """Mean log-likelihood per point in float64 of a mixture in scikit-learn's
    layout, by scikit-learn's scorer (:func:`sklearn_mixture`)."""
    return float(sklearn_mixture(weights, means, covariances, covariance_type).score(
        np.asarray(X, dtype=np.float64)))


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------
def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{max(1, digits - 1)}e}"
        return f"{v:.{digits}g}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]],
                   digits: int = 4) -> str:
    """A markdown table of ``rows`` (dicts) with ``columns`` = (key, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(fmt(r.get(k), digits) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None   # strict JSON has no NaN/inf
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def default_json_path(name: str, device: str) -> Path:
    return RESULTS_DIR / f"{name}-{device}.json"


def write_json(path: Path, payload: dict, quiet: bool = False) -> Path:
    machine = payload.get("machine")
    if isinstance(machine, dict) and "torch_threads" in machine:
        # Whether torch's thread count held for the whole run: a library
        # that changes it (pomegranate's import did) makes every later
        # timing a different experiment.
        import torch

        machine["torch_threads_at_end"] = torch.get_num_threads()
        if machine["torch_threads_at_end"] != machine["torch_threads"]:
            print(f"WARNING: torch's threads changed during the run, from "
                  f"{machine['torch_threads']} to {machine['torch_threads_at_end']}: timings "
                  f"after the change ran on another thread count", file=sys.stderr, flush=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(_jsonable(payload), fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"\nwrote {path}", flush=True)
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where bayesgmm (and pomegranate) run; 'auto' takes CUDA when available")
    p.add_argument("--quick", action="store_true",
                   help="a small, fast run (smoke test of the whole pipeline; figures not meaningful)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch and BLAS/OpenMP (0: their defaults); on a "
                        "loaded machine 1 avoids thread oversubscription")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the JSON results (default: benchmarks/results/NAME-<device>.json)")
    return p


_LIMITS = []  # keeps the threadpoolctl limiter alive for the whole run


def apply_threads(n: int) -> None:
    """Limit torch's intra-op threads and the BLAS/OpenMP pools (numpy,
    scikit-learn) to ``n``; 0 leaves the defaults."""
    if n and n > 0:
        # threadpoolctl limits the pools already loaded: scikit-learn's
        # OpenMP and scipy's OpenBLAS load with these imports, else later
        # (at the first fit) with every core.
        import scipy.linalg  # noqa: F401
        import sklearn.cluster  # noqa: F401
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(n)
        _LIMITS.append(threadpool_limits(limits=n))


def header(title: str, info: dict) -> str:
    gpu = info["gpu"] or "none"
    return (f"## {title}\n\nmachine: {info['cpu']} ({info['cpu_cores']} cores, "
            f"{info['torch_threads']} torch threads), GPU: {gpu}; device: {info['device']}; "
            f"torch {info['torch']}, scikit-learn {info['sklearn']}, pyro {info['pyro']}, "
            f"pomegranate {info['pomegranate'] or 'not installed'}, "
            f"torchgmm {info.get('torchgmm') or 'not installed'}; "
            f"1-min load average at start: {info['load_average_1m']}\n")


def warn_filter() -> None:
    """Silence the convergence warnings that fixed iteration budgets provoke
    on purpose (they would flood the output)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*did not converge.*")


def argv_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


# ----------------------------------------------------------------------------
# Library pieces that may not exist yet, and peers
# ----------------------------------------------------------------------------
def gmm_classifier_class():
    """``bayesgmm.classifier.GMMClassifier``, or None while it does not exist."""
    try:
        from bayesgmm.classifier import GMMClassifier
    except ImportError:
        return None
    return GMMClassifier


def pomegranate_gmm(n_components: int, max_iter: int = 1000, tol: float = 0.1,
                    random_state: Optional[int] = None, device: str = "cpu",
                    init: str = "random", covariance_type: str = "diag"):
    """An unfitted pomegranate v1 ``GeneralMixtureModel`` of ``n_components``
    ``Normal(covariance_type=...)`` distributions, moved to ``device``;
    ``max_iter``, ``tol`` and ``init`` default to pomegranate's own.

    pomegranate's ``tol`` is on the improvement of the TOTAL log-likelihood
    (not per point); its initialisation is 3 iterations of its own k-means
    seeded by ``init``.

    Importing its distributions sets torch's CPU threads to the machine's
    count (pomegranate 1.1.2; from 1 under ``--threads 1``), which would time
    every later fit in the process, ours included, on all cores: the
    caller's setting is restored."""
    import torch

    threads = torch.get_num_threads()
    try:
        from pomegranate.distributions import Normal
        from pomegranate.gmm import GeneralMixtureModel

        model = GeneralMixtureModel([Normal(covariance_type=covariance_type)
                                     for _ in range(n_components)],
                                    init=init, max_iter=max_iter, tol=tol,
                                    random_state=random_state)
    finally:
        torch.set_num_threads(threads)
    return model.to(device) if device != "cpu" else model


def pomegranate_params(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, covariances) of a fitted pomegranate mixture of
    ``Normal``s, in scikit-learn's layout for its covariance type (diag:
    variances), float64."""
    w = model.priors.detach().double().cpu().numpy()
    m = np.stack([d.means.detach().double().cpu().numpy() for d in model.distributions])
    c = np.stack([d.covs.detach().double().cpu().numpy() for d in model.distributions])
    return w / w.sum(), m, c


def torchgmm_estimator(X: np.ndarray, n_components: int, covariance_type: str,
                       random_state: int, device: str = "cpu", max_iter: Optional[int] = None,
                       tol: Optional[float] = None):
    """torchgmm's ``GaussianMixture`` (a maintained fork of pycave on
    PyTorch Lightning), fitted with its defaults: k-means initialisation, EM
    to a change of 1e-3 in the per-point negative log-likelihood, at most 100
    epochs, covariance regularisation 1e-6; ``max_iter`` (EM iterations,
    its ``max_epochs``) and ``tol`` (its ``convergence_tolerance``; 0 runs
    every iteration) replace the defaults where given.  It takes no seed:
    its k-means++ draws its first centre from Python's ``random`` and the
    rest from torch, so ``random.seed`` and ``torch.manual_seed`` with
    ``random_state`` seed it (the same seed gives the same fit).  Lightning's progress
    bars, model summary, logger and info lines are turned off (they would
    cost time and flood the output).  The data go in as a float32 tensor on
    ``device``, as torchgmm requires."""
    import logging
    import random
    import warnings

    import torch
    from torchgmm.bayes import GaussianMixture

    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    random.seed(random_state)
    torch.manual_seed(random_state)
    trainer = {"accelerator": "gpu" if device.startswith("cuda") else "cpu", "devices": 1,
               "enable_progress_bar": False, "enable_model_summary": False, "logger": False}
    if max_iter is not None:
        trainer["max_epochs"] = max_iter
    extra = {} if tol is None else {"convergence_tolerance": tol}
    with warnings.catch_warnings():     # Lightning's own deprecation notices
        warnings.simplefilter("ignore")
        return GaussianMixture(n_components, covariance_type=covariance_type,
                               trainer_params=trainer, **extra).fit(
            torch.as_tensor(X, dtype=torch.float32, device=device))


def torchgmm_fit(X: np.ndarray, n_components: int, covariance_type: str, random_state: int,
                 device: str = "cpu", max_iter: Optional[int] = None, tol: Optional[float] = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`torchgmm_estimator`'s fit as (weights, means, covariances) in
    scikit-learn's layout, float64, and the EM iterations run."""
    model = torchgmm_estimator(X, n_components, covariance_type, random_state, device,
                               max_iter, tol)
    m = model.model_
    return (m.component_probs.detach().double().cpu().numpy(),
            m.means.detach().double().cpu().numpy(),
            m.covariances.detach().double().cpu().numpy(), int(model.num_iter_))


def pomegranate_defaults_fit(X: np.ndarray, n_components: int, covariance_type: str,
                             random_state: int, device: str = "cpu"
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pomegranate's mixture (:func:`pomegranate_gmm`) fitted at its
    defaults on a float32 tensor on ``device``; (weights, means,
    covariances) in scikit-learn's layout."""
    import torch

    model = pomegranate_gmm(n_components, random_state=random_state, device=device,
                            covariance_type=covariance_type)
    return pomegranate_params(model.fit(torch.as_tensor(X, dtype=torch.float32, device=device)))
