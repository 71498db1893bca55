"""Small data: the default MAP fit against maximum likelihood and scikit-learn's
variational BayesianGaussianMixture, on held-out data, in one run.

Protocol (issue 13): K=3 full-covariance Gaussians in D=2 (per seed: means
uniform in [-4, 4]^2, covariances with a random rotation and variances
uniform in [0.2, 1.5], weights Dirichlet(5, 5, 5)); n = 30, 50, 100 training
points and 5,000 held-out points from the same truth; 20 seeds.  Measured:
held-out log-likelihood per point minus the truth's (0 is the best
possible; higher is better).

Methods, all with K=3 and full covariances at the libraries' defaults:
``BayesianGMM(3)`` (MAP, default priors); its posterior predictive with
``inference="vi"`` (200 draws of the closed-form mean-field variational
posterior, averaged); the first release's default
priors (``Priors(covariance_scale=(0.1 x data std)^2)``) for comparison;
scikit-learn ``GaussianMixture(3)`` (maximum likelihood) and
``BayesianGaussianMixture(3)`` (variational, Dirichlet-process weights).
"wins" counts the seeds in which a method beats ``GaussianMixture``.

Run ``python benchmarks/small_n.py --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

K, D = 3, 2


def truth(seed: int):
    r = np.random.default_rng(seed)
    w = r.dirichlet(np.full(K, 5.0))
    m = r.uniform(-4, 4, size=(K, D))
    covs = []
    for _ in range(K):
        Q, _ = np.linalg.qr(r.normal(size=(D, D)))
        covs.append(Q @ np.diag(r.uniform(0.2, 1.5, size=D)) @ Q.T)
    return w, m, np.array(covs)


def sample(t, n: int, rng) -> np.ndarray:
    w, m, c = t
    z = rng.choice(K, size=n, p=w)
    L = np.linalg.cholesky(c)
    return m[z] + np.einsum("nij,nj->ni", L[z], rng.standard_normal((n, D)))


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[30, 50, 100])
    p.add_argument("--n-test", type=int, default=5000)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.sizes, args.n_test = 2, [30], 500
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from scipy.stats import multivariate_normal
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from bayesgmm import BayesianGMM, Priors

    info = C.machine_info(device)
    print(C.header("small_n", info))
    methods = {
        "bayesgmm MAP (default priors)":
            lambda X, s: BayesianGMM(K, random_state=s, device=device).fit(X),
        "bayesgmm VI posterior predictive (default priors)":
            lambda X, s: BayesianGMM(K, inference="vi", n_samples=200, random_state=s,
                                     device=device).fit(X),
        "bayesgmm MAP (first release's priors)":
            lambda X, s: BayesianGMM(K, random_state=s, device=device, priors=Priors(
                covariance_scale=(0.1 * X.std(0)) ** 2)).fit(X),
        "sklearn GaussianMixture (ML)":
            lambda X, s: GaussianMixture(K, random_state=s).fit(X),
        "sklearn BayesianGaussianMixture":
            lambda X, s: BayesianGaussianMixture(n_components=K, random_state=s,
                                                 max_iter=1000).fit(X),
    }
    rows = []
    for n in args.sizes:
        gaps = {m: [] for m in methods}
        secs = {m: [] for m in methods}
        for seed in range(args.seeds):
            t = truth(seed)
            rng = np.random.default_rng(1000 + seed)
            X, Xte = sample(t, n, rng), sample(t, args.n_test, rng)
            best = np.log(sum(t[0][k] * multivariate_normal(t[1][k], t[2][k]).pdf(Xte)
                              for k in range(K))).mean()
            for name, fit in methods.items():
                t0 = time.perf_counter()
                est = fit(X, seed)
                secs[name].append(time.perf_counter() - t0)
                gaps[name].append(float(est.score(Xte) - best))
        ml = np.array(gaps["sklearn GaussianMixture (ML)"])
        for name in methods:
            g = np.array(gaps[name])
            row = {"n": n, "method": name, "mean": float(g.mean()), "median": float(np.median(g)),
                   "wins_vs_ml": int((g > ml).sum()), "seeds": args.seeds,
                   "fit_seconds": float(np.median(secs[name])), "per_seed": g.tolist()}
            rows.append(row)
            print(f"  n={n} {name}: mean {row['mean']:.3f}, median {row['median']:.3f}, "
                  f"beats ML in {row['wins_vs_ml']}/{args.seeds}", flush=True)
    print(f"\nHeld-out log-likelihood per point minus the truth's, over {args.seeds} seeds\n")
    print(C.markdown_table(rows, [("n", "n"), ("method", "method"), ("mean", "mean gap"),
                                  ("median", "median gap"), ("wins_vs_ml", "beats ML (seeds)"),
                                  ("fit_seconds", "median fit s")]))
    C.write_json(args.json or C.default_json_path("small_n", device),
                 {"benchmark": "small_n", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "rows": rows})


if __name__ == "__main__":
    main()
