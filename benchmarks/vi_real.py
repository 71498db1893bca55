"""Dirichlet-process variational fits on small real data: bayesgmm's
``inference="vi", weight_prior="dirichlet_process"`` against scikit-learn's
``BayesianGaussianMixture(weight_concentration_prior_type="dirichlet_process")``
on the same splits, in one run.

Data: the data sets scikit-learn ships (no download): iris (150 x 4), wine
(178 x 13) and breast cancer (569 x 30), standardised on the training part.
Each seed splits 70/30 (stratified by the label, which neither method sees).
Both methods fit ``n_components = --truncation`` (default 10) with the
covariance type of the case; bayesgmm at its defaults (the process's
concentration 1), scikit-learn at its defaults and ``max_iter=1000`` (its
default 100 iterations often stop before convergence on these data).

Reported per (data, covariance type, method): the median wall time of
``fit`` over the seeds (``time.perf_counter``, one untimed warm-up fit per
data set, covariance type and method first), the effective components
(``weights_ * n >= 1``; the JSON also keeps bayesgmm's
``n_effective_components_``, ``converged_`` and the warnings of each timed
fit), and the held-out mean
log-likelihood per point (bayesgmm: its posterior predictive ``score``;
scikit-learn: its plug-in ``score``).  "diag" and "spherical" are the slow
cases of bayesgmm: their InverseGamma prior on a standard deviation is not
conjugate, so each coordinate-ascent update takes the moments of q(1/sigma)
by quadrature (``bayesgmm.variational.InverseScale``).

Run ``python benchmarks/vi_real.py --help``; ``--quick`` checks the pipeline
in seconds (its figures mean nothing).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DATA = ("iris", "wine", "breast_cancer")
TYPES = ("diag", "spherical", "full")


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", choices=DATA, default=list(DATA))
    p.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    p.add_argument("--seeds", type=int, default=3, help="splits (and fit seeds) 0..N-1")
    p.add_argument("--truncation", type=int, default=10, help="n_components of every fit")
    args = p.parse_args()
    if args.quick:
        args.data, args.types, args.seeds, args.truncation = ["iris"], ["diag"], 1, 4
    if args.seeds < 1 or args.truncation < 2:
        raise SystemExit(f"--seeds must be >= 1 and --truncation >= 2, got {args.seeds} and "
                         f"{args.truncation}")
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    import numpy as np
    from sklearn import datasets
    from sklearn.mixture import BayesianGaussianMixture
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from bayesgmm import BayesianGMM

    info = C.machine_info(device)
    print(C.header("vi_real", info))
    print(f"command: {C.argv_line()}\n")

    def bayesgmm_fit(X, t, seed):
        return BayesianGMM(args.truncation, covariance_type=t, inference="vi",
                           weight_prior="dirichlet_process", random_state=seed,
                           device=device).fit(X)

    def sklearn_fit(X, t, seed):
        return BayesianGaussianMixture(
            n_components=args.truncation, covariance_type=t, max_iter=1000, random_state=seed,
            weight_concentration_prior_type="dirichlet_process").fit(X)

    methods = {"bayesgmm vi": bayesgmm_fit, "sklearn BayesianGaussianMixture": sklearn_fit}
    rows = []
    for name in args.data:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        for t in args.types:
            per = {m: [] for m in methods}
            for seed in range(args.seeds):
                Xa, Xb = train_test_split(X, test_size=0.3, stratify=y, random_state=seed)
                scaler = StandardScaler().fit(Xa)
                Xa, Xb = scaler.transform(Xa), scaler.transform(Xb)
                for m, fit in methods.items():
                    if seed == 0:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            fit(Xa, t, seed)                       # warm-up, untimed
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        C.synchronize(device)
                        t0 = time.perf_counter()
                        model = fit(Xa, t, seed)
                        C.synchronize(device)
                        secs = time.perf_counter() - t0
                    per[m].append({
                        "seed": seed, "fit s": secs,
                        "effective (w n >= 1)": int(np.sum(model.weights_ * len(Xa) >= 1)),
                        "n_effective_components_": getattr(model, "n_effective_components_",
                                                           None),
                        "held-out loglik": float(model.score(Xb)),
                        "converged": bool(getattr(model, "converged_", True)),
                        "warnings": sorted({str(w.message)[:200] for w in caught})})
            for m, runs in per.items():
                rows.append({
                    "data": name, "type": t, "method": m, "N": len(Xa), "D": X.shape[1],
                    "median fit s": statistics.median(r["fit s"] for r in runs),
                    "effective": " ".join(str(r["effective (w n >= 1)"]) for r in runs),
                    "held-out loglik": statistics.mean(r["held-out loglik"] for r in runs),
                    "runs": runs})
                print(f"{name} {t} {m}: {C.fmt(rows[-1]['median fit s'])} s", flush=True)
    print(f"\nmedian fit time over {args.seeds} seed(s); effective components (weights_ * n "
          f">= 1) per seed; mean held-out log-likelihood per point (bayesgmm: the posterior "
          f"predictive; scikit-learn: its plug-in density)\n")
    cols = [(k, k) for k in rows[0] if k != "runs"]
    print(C.markdown_table(rows, cols) + "\n")
    C.write_json(args.json or C.default_json_path("vi_real", device),
                 {"benchmark": "vi_real", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows})


if __name__ == "__main__":
    main()
