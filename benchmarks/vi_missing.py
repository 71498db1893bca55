"""Variational credible intervals with missing values against NUTS, in one run.

Protocol: two clusters of 100 points in D=3 (means 0 and 6 in every
feature, unit variances), feature 2 missing completely at random in a share
``--missing`` of the rows; ``--seeds`` data sets.  Each covariance type in
``--types`` is fitted with ``inference="vi"`` (``n_samples=2000``) and with
``inference="nuts"`` (``--chains`` chains of ``--draws`` draws after
``--warmup``), both ``missing="marginalize"``.  Measured: the width of the
central 90% credible interval of every component mean, per feature, and
its ratio VI / NUTS (1 is NUTS's width; the mean-field family is expected
a little below 1 where components do not overlap).  "diag" and
"spherical" fit the exact observed-data bound; "full" and "tied" keep the
missing coordinates as latent values (too narrow where a feature is mostly
missing: the estimator warns).

Run ``python benchmarks/vi_missing.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def data(seed: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (100, 3)), rng.normal(6, 1, (100, 3))])
    X[rng.random(200) < missing, 2] = np.nan
    return X


def widths(est) -> np.ndarray:
    """90% interval widths of the means (K, D), components ordered by the
    first feature's mean (the two fits label them independently)."""
    lo, hi = est.credible_interval("means", 0.9)
    return (hi - lo)[np.argsort(est.means_[:, 0])]


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--types", nargs="+", default=["diag", "spherical", "full"],
                   help="covariance types")
    p.add_argument("--seeds", type=int, default=3, help="data sets 0..S-1")
    p.add_argument("--missing", type=float, default=0.95, help="share of feature 2 missing")
    p.add_argument("--chains", type=int, default=2, help="NUTS chains")
    p.add_argument("--draws", type=int, default=500, help="NUTS draws per chain")
    p.add_argument("--warmup", type=int, default=300, help="NUTS warmup steps per chain")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.types, args.chains, args.draws, args.warmup = 1, ["diag"], 1, 60, 60
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from bayesgmm import BayesianGMM

    info = C.machine_info(device)
    print(C.header("VI credible intervals with missing values against NUTS", info))
    print(f"command: {C.argv_line()}\n")
    rows = []
    for t in args.types:
        ratios, seconds = [], {"vi": [], "nuts": []}
        for seed in range(args.seeds):
            X = data(seed, args.missing)
            kw = dict(covariance_type=t, missing="marginalize", random_state=seed, device=device)
            fits = {}
            for method, extra in (("vi", dict(n_samples=2000)),
                                  ("nuts", dict(n_samples=args.draws, n_warmup=args.warmup,
                                                n_chains=args.chains))):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")    # full/tied VI warns, as it should
                    fits[method] = BayesianGMM(2, inference=method, **kw, **extra).fit(X)
                seconds[method].append(time.perf_counter() - t0)
            ratios.append(widths(fits["vi"]) / widths(fits["nuts"]))
            print(f"  {t} seed {seed}: VI/NUTS width ratio, feature 2: "
                  f"{np.round(ratios[-1][:, 2], 2)}; features 0-1: "
                  f"{np.round(ratios[-1][:, :2].ravel(), 2)}", flush=True)
        r = np.stack(ratios)                                   # (seeds, K, D)
        rows.append({"type": t, "seeds": args.seeds, "missing": args.missing,
                     "ratio_missing_feature_median": float(np.median(r[..., 2])),
                     "ratio_missing_feature_min": float(r[..., 2].min()),
                     "ratio_observed_features_median": float(np.median(r[..., :2])),
                     "vi_seconds": float(np.median(seconds["vi"])),
                     "nuts_seconds": float(np.median(seconds["nuts"])),
                     "per_seed": r.tolist()})
    print(f"\n90% interval widths of the means, VI / NUTS ({args.missing:.0%} of feature 2 "
          f"missing, {args.seeds} seeds, 2 components)\n")
    print(C.markdown_table(rows, [("type", "type"),
                                  ("ratio_missing_feature_median", "mostly missing feature"),
                                  ("ratio_missing_feature_min", "its smallest"),
                                  ("ratio_observed_features_median", "observed features"),
                                  ("vi_seconds", "VI s"), ("nuts_seconds", "NUTS s")]))
    C.write_json(args.json or C.default_json_path("vi_missing", device),
                 {"benchmark": "vi_missing", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows})


if __name__ == "__main__":
    main()
