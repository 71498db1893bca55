"""Dirichlet-process mixtures: does the fit find the true number of
components?  bayesgmm's ``weight_prior="dirichlet_process"`` against
scikit-learn's ``BayesianGaussianMixture`` on the same data, in one run.

Protocol (the issue's Done-when): well-separated synthetic data with true
K = 1..6, 10 seeds each (60 data sets), truncation ``n_components=10``;
counted: the cases in which the fit's number of effective components equals
the true K.  The target is >= 57 of 60 for ``n_effective_components_``.

Generator (``make_separated``, per (K, seed); D = ``--features``, default 2):
each component's covariance is ``Q diag(s^2) Q^T`` with ``Q`` a random
rotation (QR of a Gaussian matrix) and the standard deviations ``s`` uniform
in [0.5, 1.5] (axis ratio up to 3: moderate anisotropy).  The K centres are
drawn uniformly in a box of half-width ``spacing * K^(1/D)`` by rejection,
so that every pair is at least ``spacing = --separation (default 8) x the
largest standard deviation of any component`` apart: along any direction
each pair of clusters is at least 8 standard deviations apart.  Weights are
Dirichlet(5, ..., 5) with a floor: ``w = floor + (1 - K floor) Dirichlet``,
``floor = 0.3 / K``, and component k gets exactly ``round(w_k n)`` points
(the remainder to the largest), with ``n = --n-per-component (default 100)
x K``, so every cluster has at least 30 points.  The rows are shuffled.

Methods (all with ``n_components = --truncation`` and ``--covariance-type``,
default "full"):

* bayesgmm ``BayesianGMM(inference="vi", weight_prior="dirichlet_process",
  n_samples=200)`` with the process's concentration ``--alpha`` (default 1,
  the library's default) through ``Priors(weight_concentration=alpha)``.
  Counted: ``n_effective_components_`` (components that carry at least one
  point's worth of expected responsibility), and, as for scikit-learn,
  ``weights_ * n >= 1`` and the stricter ``weights_ >= 0.01``.
* scikit-learn ``BayesianGaussianMixture(weight_concentration_prior_type=
  "dirichlet_process")`` at its defaults (``max_iter=100``, concentration
  ``1 / n_components``), with ``max_iter=1000`` (its default 100 iterations
  may stop before convergence: ``converged_`` is recorded), and with
  ``max_iter=1000`` and ``weight_concentration_prior=alpha`` (the same
  concentration as bayesgmm's).  Counted: ``weights_ * n >= 1`` and
  ``weights_ >= 0.01``.

Fit time: the wall time of ``fit`` per case (``time.perf_counter``, one
untimed warm-up fit per method first), the median over cases reported.
"converged": scikit-learn's ``converged_``; for bayesgmm, that its
variational fit did not warn that it was still improving at ``max_iter``
(its ``converged_`` is the MAP start's, kept in the JSON as
``map_converged``).  Every per-case record (counts, sorted weights, time,
warnings, the true counts) is in the JSON.

Run ``python benchmarks/dp.py --help``.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OURS = "bayesgmm DP (VI)"
SK_DEFAULT = "sklearn BGMM (defaults, max_iter=100)"
SK_LONG = "sklearn BGMM (max_iter=1000)"
SK_ALPHA = "sklearn BGMM (max_iter=1000, same alpha)"


def make_separated(K: int, seed: int, n_features: int = 2, n_per_component: int = 100,
                   separation: float = 8.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Well-separated full-covariance Gaussian mixture data (see the module
    docstring): X (n, D), labels (n,), and the truth as a dict."""
    rng = np.random.default_rng([K, seed, 7])
    D = n_features
    covs, stds = [], []
    for _ in range(K):
        Q, R = np.linalg.qr(rng.standard_normal((D, D)))
        Q = Q * np.sign(np.diag(R))          # a uniformly random rotation (Haar)
        s = rng.uniform(0.5, 1.5, size=D)
        covs.append(Q @ np.diag(s ** 2) @ Q.T)
        stds.append(s)
    covs = np.array(covs)
    spacing = separation * float(np.max(stds))
    half = spacing * K ** (1.0 / D)
    means = np.zeros((K, D))
    for k in range(1, K):                    # rejection over K centres, not over data
        for _ in range(100_000):
            cand = rng.uniform(-half, half, size=D)
            if np.min(np.linalg.norm(means[:k] - cand, axis=1)) >= spacing:
                break
        else:  # pragma: no cover - the box holds K centres easily
            raise RuntimeError(f"could not place {K} centres {spacing:.3g} apart")
        means[k] = cand
    if K == 1:
        means[0] = rng.uniform(-half, half, size=D)
    n = n_per_component * K
    floor = 0.3 / K
    w = floor + (1 - K * floor) * rng.dirichlet(np.full(K, 5.0))
    counts = np.round(w * n).astype(int)
    counts[np.argmax(counts)] += n - counts.sum()
    labels = np.repeat(np.arange(K), counts)
    L = np.linalg.cholesky(covs)
    X = means[labels] + np.einsum("nij,nj->ni", L[labels], rng.standard_normal((n, D)))
    perm = rng.permutation(n)
    dist = [np.linalg.norm(means[i] - means[j]) for i in range(K) for j in range(i + 1, K)]
    truth = {"K": K, "n": n, "counts": counts, "weights": counts / n, "means": means,
             "covariances": covs, "spacing": spacing,
             "min_centre_distance": float(min(dist)) if dist else None,
             "min_distance_in_max_std": float(min(dist)) / float(np.max(stds)) if dist else None}
    return X[perm], labels[perm], truth


def counts_from_weights(weights: np.ndarray, n: int) -> dict:
    """The two effective-component counts read from fitted weights."""
    w = np.asarray(weights, dtype=np.float64)
    return {"k_point": int(np.sum(w * n >= 1.0)), "k_strict": int(np.sum(w >= 0.01))}


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                   help="true numbers of components")
    p.add_argument("--seeds", type=int, default=10, help="data sets (seeds 0..S-1) per K")
    p.add_argument("--features", type=int, default=2, help="D, the number of features")
    p.add_argument("--n-per-component", type=int, default=100,
                   help="n = this x K points per data set")
    p.add_argument("--separation", type=float, default=8.0,
                   help="minimum distance between centres, in units of the largest "
                        "within-component standard deviation")
    p.add_argument("--truncation", type=int, default=10, help="n_components of every fit")
    p.add_argument("--covariance-type", choices=["full", "tied", "diag", "spherical"],
                   default="full", help="covariance_type of every fit")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="bayesgmm's DP concentration (Priors(weight_concentration=alpha)), "
                        "also given to the 'same alpha' scikit-learn row")
    p.add_argument("--n-samples", type=int, default=200, help="bayesgmm's posterior draws kept")
    p.add_argument("--sklearn-long-max-iter", type=int, default=1000,
                   help="max_iter of the longer scikit-learn rows")
    args = p.parse_args()
    if args.quick:
        args.ks, args.seeds = [1, 3], 2
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from sklearn.mixture import BayesianGaussianMixture

    from bayesgmm import BayesianGMM, Priors

    info = C.machine_info(device)
    print(C.header("dp", info))
    T, cov = args.truncation, args.covariance_type

    def ours(X, seed):
        return BayesianGMM(n_components=T, covariance_type=cov, inference="vi",
                           weight_prior="dirichlet_process", n_samples=args.n_samples,
                           priors=Priors(weight_concentration=args.alpha), random_state=seed,
                           device=device, n_threads=args.threads or None).fit(X)

    def sklearn(max_iter, alpha=None):
        def fit(X, seed):
            return BayesianGaussianMixture(
                n_components=T, covariance_type=cov,
                weight_concentration_prior_type="dirichlet_process",
                weight_concentration_prior=alpha, max_iter=max_iter,
                random_state=seed).fit(X)
        return fit

    methods = {OURS: ours, SK_DEFAULT: sklearn(100),
               SK_LONG: sklearn(args.sklearn_long_max_iter),
               SK_ALPHA: sklearn(args.sklearn_long_max_iter, args.alpha)}

    # One untimed fit per method first (imports, first-call set-up).
    Xw, _, _ = make_separated(2, 10_000, args.features, args.n_per_component, args.separation)
    for fit in methods.values():
        fit(Xw, 0)

    records = []
    for K in args.ks:
        for seed in range(args.seeds):
            X, _, truth = make_separated(K, seed, args.features, args.n_per_component,
                                         args.separation)
            n = X.shape[0]
            for name, fit in methods.items():
                rec = {"K": K, "seed": seed, "n": n, "method": name,
                       "true_counts": truth["counts"],
                       "min_distance_in_max_std": truth["min_distance_in_max_std"]}
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        C.synchronize(device)
                        t0 = time.perf_counter()
                        est = fit(X, seed)
                        C.synchronize(device)
                        rec["seconds"] = time.perf_counter() - t0
                    rec["warnings"] = sorted({str(w.message)[:300] for w in caught})
                    w = np.asarray(est.weights_, dtype=np.float64)
                    rec.update(counts_from_weights(w, n))
                    rec["weights_sorted"] = np.sort(w)[::-1]
                    rec["converged"] = bool(est.converged_)
                    rec["n_iter"] = int(est.n_iter_)
                    if name == OURS:
                        rec["k_effective"] = int(est.n_effective_components_)
                        rec["elbo"] = float(est.elbo_)
                        # converged_ and n_iter_ are the MAP start's; the
                        # variational fit says it stopped early by a warning.
                        rec["map_converged"], rec["map_n_iter"] = rec["converged"], rec["n_iter"]
                        del rec["n_iter"]
                        rec["converged"] = not any("still improving" in m
                                                   for m in rec["warnings"])
                    else:
                        rec["k_effective"] = rec["k_point"]
                except Exception as exc:  # one failed fit must not end a long run
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    rec["traceback"] = traceback.format_exc()[-2000:]
                    print(f"  K={K} seed={seed} {name}: ERROR {rec['error']}", flush=True)
                for key in ("k_effective", "k_point", "k_strict"):
                    rec[f"{key}_correct"] = rec.get(key) == K
                records.append(rec)
            line = ", ".join(f"{r['method']}: {r.get('k_effective', 'error')}"
                             for r in records[-len(methods):])
            print(f"  K={K} seed={seed} n={n}: {line}", flush=True)

    def summarise(recs):
        ok = [r for r in recs if "error" not in r]
        mean = lambda key: float(np.mean([r[key] for r in ok])) if ok else None  # noqa: E731
        return {"cases": len(recs), "errors": len(recs) - len(ok),
                "correct": sum(r["k_effective_correct"] for r in recs),
                "correct_point": sum(r["k_point_correct"] for r in recs),
                "correct_strict": sum(r["k_strict_correct"] for r in recs),
                "mean_k": mean("k_effective"), "mean_k_point": mean("k_point"),
                "mean_k_strict": mean("k_strict"),
                "converged": sum(r.get("converged", False) for r in ok),
                "median_seconds": float(np.median([r["seconds"] for r in ok])) if ok else None}

    per_k = []
    for K in [*args.ks, "all"]:
        row = {"K": K}
        for name in methods:
            recs = [r for r in records if r["method"] == name and (K == "all" or r["K"] == K)]
            row[name] = summarise(recs)
        per_k.append(row)
    summary = [{"method": name, **per_k[-1][name]} for name in methods]

    short = {OURS: "ours", SK_DEFAULT: "sk default", SK_LONG: f"sk {args.sklearn_long_max_iter}",
             SK_ALPHA: f"sk {args.sklearn_long_max_iter} a={args.alpha:g}"}

    def flat(kind, mean_key):
        rows = []
        for row in per_k:
            out = {"K": row["K"]}
            for name in methods:
                s = row[name]
                out[f"{name} c"] = f"{s[kind]}/{s['cases']}"
                out[f"{name} m"] = s[mean_key]
            rows.append(out)
        return rows

    cols = [("K", "true K")]
    for name in methods:
        cols += [(f"{name} c", f"{short[name]}: correct"), (f"{name} m", f"{short[name]}: mean K")]
    print(f"\nEffective components (ours: n_effective_components_; scikit-learn: "
          f"weights_ * n >= 1), truncation {T}, covariance_type={cov!r}, {args.seeds} seeds "
          f"per K; 'all' is the total over the {len(args.ks) * args.seeds} cases\n")
    print(C.markdown_table(flat("correct", "mean_k"), cols, digits=3))
    print("\nStricter count: components with weights_ >= 0.01\n")
    print(C.markdown_table(flat("correct_strict", "mean_k_strict"), cols, digits=3))
    print("\nOver all cases (correct: of the cases; converged: scikit-learn's converged_, "
          "for bayesgmm no 'still improving' warning from its variational fit)\n")
    print(C.markdown_table(summary, [
        ("method", "method"), ("correct", "correct"), ("correct_point", "correct (w n >= 1)"),
        ("correct_strict", "correct (w >= 0.01)"), ("mean_k", "mean K"),
        ("converged", "converged"), ("errors", "errors"),
        ("median_seconds", "median fit s")], digits=3))
    C.write_json(args.json or C.default_json_path("dp", device),
                 {"benchmark": "dp", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "complete": True, "methods": list(methods),
                  "summary": summary, "per_k": per_k, "records": records})


if __name__ == "__main__":
    main()
