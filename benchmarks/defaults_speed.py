"""Default settings against scikit-learn's, side by side in one run.

The bar of issue 12: ``BayesianGMM(K, covariance_type=t)`` with its defaults
(4 restarts, screened on a subsample for large N; EM, then SVI only where EM
stopped short) must take no more time than scikit-learn's default
``GaussianMixture(K, covariance_type=t)`` (one k-means start, tol 1e-3) and
reach a mean log-likelihood per point at least that of scikit-learn with
``n_init=4``.

Data: ``bayesgmm.datasets.make_mixture(N, K, D, separation=s)`` (seed 0), for
each separation in ``--separations`` (2: overlapping components, EM needs
tens of iterations; 6: separated, a few).  For each seed in ``--seeds`` the
fits run one after the other on the same data, each timed once
(``time.perf_counter``, the whole ``fit`` call), after one untimed warm-up
fit of each at seed 0 (imports, first-call costs).  Reported: the median
time over seeds, the median mean log-likelihood per training point (all
scored by one float64 scorer from each fit's parameters), and in how many
seeds bayesgmm's log-likelihood is at least scikit-learn's ``n_init=4`` one
(to 1e-6 nats) and its time at most scikit-learn's default one.

The PyTorch peers run beside them at their defaults, on bayesgmm's device,
where installed (else a ``skipped:`` line): torchgmm's ``GaussianMixture``
(the maintained fork of pycave: k-means start, tol 1e-3 on the per-point
NLL; ``random.seed`` and ``torch.manual_seed`` with the seed seed it) and pomegranate's
``GeneralMixtureModel`` of ``Normal(covariance_type=t)`` (its k-means start,
tol 0.1 on the total log-likelihood).  Every fit returns its weights, means
and covariances, scored by scikit-learn's float64 scorer.  A peer's fit that
raises is counted in its "failed" column (the error printed and kept in the
JSON) and left out of its medians; bayesgmm's and scikit-learn's must fit.

Run ``python benchmarks/defaults_speed.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _params(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, covariances) of a fitted bayesgmm or scikit-learn
    mixture, in scikit-learn's layout."""
    return model.weights_, model.means_, model.covariances_


#: Methods whose failures are counted rather than raised (pomegranate's
#: default random k-means start can leave a component without points:
#: an IndexError from its fit at D = 50).
PEERS = ("torchgmm defaults", "pomegranate defaults")


def _attempt(m: str, fit, X, t: str, seed: int, what: str):
    """(parameters, None), or for a peer whose fit raises (None, the error
    as text, also printed): a peer failing is a result, not the end of the
    run; bayesgmm's and scikit-learn's errors propagate."""
    try:
        return fit(X, t, seed), None
    except Exception as exc:
        if m not in PEERS:
            raise
        error = f"{what}: {type(exc).__name__}: {exc}"
        print(f"  {m} failed, {error}", flush=True)
        return None, error


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e5, help="training points")
    p.add_argument("--d", type=int, default=2, help="features")
    p.add_argument("--k", type=int, default=8, help="components (true and fitted)")
    p.add_argument("--types", nargs="+", default=["diag", "full"],
                   help="covariance types")
    p.add_argument("--separations", nargs="+", type=float, default=[2.0, 6.0],
                   help="make_mixture separations (data sets)")
    p.add_argument("--seeds", type=int, default=5, help="random_state 0..S-1 of every fit")
    args = p.parse_args()
    if args.quick:
        args.n, args.seeds = 5e3, 2
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)

    from sklearn.mixture import GaussianMixture

    from bayesgmm import BayesianGMM
    from bayesgmm.datasets import make_mixture

    info = C.machine_info(device)
    print(C.header("Defaults against scikit-learn's", info))
    print(f"command: {C.argv_line()}\n")
    N, K, D = int(args.n), args.k, args.d
    methods = {
        "bayesgmm defaults": lambda X, t, s: _params(BayesianGMM(
            K, covariance_type=t, device=device, random_state=s).fit(X)),
        "sklearn defaults": lambda X, t, s: _params(GaussianMixture(
            K, covariance_type=t, random_state=s).fit(X)),
        "sklearn n_init=4": lambda X, t, s: _params(GaussianMixture(
            K, covariance_type=t, n_init=4, random_state=s).fit(X)),
    }
    # The PyTorch peers, where installed, on bayesgmm's device.
    skipped = []
    if C.peer_installed("torchgmm", skipped):
        methods["torchgmm defaults"] = lambda X, t, s: C.torchgmm_fit(X, K, t, s, device)[:3]
    if C.peer_installed("pomegranate", skipped):
        methods["pomegranate defaults"] = lambda X, t, s: C.pomegranate_defaults_fit(
            X, K, t, s, device)
    rows, raw = [], []
    for sep in args.separations:
        X, _, _ = make_mixture(N, K, D, separation=sep, random_state=0)
        for t in args.types:
            times = {m: [] for m in methods}
            lls = {m: [] for m in methods}
            failures = {m: [] for m in methods}
            for m, fit in methods.items():     # warm-up (not counted): imports, first-call costs
                _attempt(m, fit, X[:2000], t, 0, "warm-up")
            for seed in range(args.seeds):
                for m, fit in methods.items():
                    C.synchronize(device)
                    t0 = time.perf_counter()
                    params, error = _attempt(m, fit, X, t, seed, f"seed {seed}")
                    C.synchronize(device)
                    if error is not None:
                        failures[m].append(error)
                        continue
                    times[m].append(time.perf_counter() - t0)
                    lls[m].append(C.sklearn_mean_loglik(X, *params, t))
            ours, sk4 = np.array(lls["bayesgmm defaults"]), np.array(lls["sklearn n_init=4"])
            t_ours, t_sk = np.array(times["bayesgmm defaults"]), np.array(times["sklearn defaults"])
            row = {"n": N, "separation": sep, "type": t}
            for m in methods:
                row[f"{m} s"] = statistics.median(times[m]) if times[m] else math.nan
                row[f"{m} ll"] = statistics.median(lls[m]) if lls[m] else math.nan
                if m in PEERS:
                    row[f"{m} failed"] = f"{len(failures[m])}/{args.seeds}"
            row["ll >= sk n_init=4"] = f"{int(np.sum(ours >= sk4 - 1e-6))}/{args.seeds}"
            row["time <= sk default"] = f"{int(np.sum(t_ours <= t_sk))}/{args.seeds}"
            row["time ratio"] = statistics.median(t_ours / t_sk)
            rows.append(row)
            raw.append({"separation": sep, "type": t, "times": times, "loglik": lls,
                        "failures": failures})
            print(f"separation {sep}, {t}: " + ", ".join(
                f"{m} {row[f'{m} s']:.3f} s / {row[f'{m} ll']:.5f}" for m in methods), flush=True)
    cols = [("n", "N"), ("separation", "separation"), ("type", "type")]
    for m in methods:
        cols += [(f"{m} s", f"{m} (s)"), (f"{m} ll", f"{m} ll/pt")]
        if m in PEERS:
            cols += [(f"{m} failed", f"{m} failed")]
    cols += [("time ratio", "time / sklearn default"), ("time <= sk default", "time <= sk"),
             ("ll >= sk n_init=4", "ll >= sk n_init=4")]
    print(f"\nN = {N}, D = {D}, K = {K}; medians over {args.seeds} seeds\n")
    print(C.markdown_table(rows, cols, digits=5))
    C.write_json(args.json or C.default_json_path("defaults_speed", device),
                 {"benchmark": "defaults_speed", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": skipped, "n": N, "d": D, "k": K, "rows": rows, "raw": raw})


if __name__ == "__main__":
    main()
