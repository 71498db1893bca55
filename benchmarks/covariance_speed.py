"""Fit speed per covariance type against scikit-learn, and the diagonal EM
step against the previous release, in one run.

1. **Time to scikit-learn's optimum** (default: N = 1e5, D = 8, K = 8, every
   covariance type).  Data: K Gaussian components with random rotations
   and axis ratios up to 10 (seed 0).  scikit-learn's
   ``GaussianMixture(covariance_type=t)`` with its defaults (one k-means
   init, tol 1e-3) is timed (median of ``--repeats``), and its converged
   mean log-likelihood per point is the target.  bayesgmm
   ``BayesianGMM(K, covariance_type=t, n_init=1, max_iter=0, init="kmeans")``
   (EM only from a k-means start, like scikit-learn's) is then fitted with
   EM budgets 1, 2, 4, ... (tol 0) until its mean log-likelihood (scored by
   the same float64 code for both) reaches the target minus ``--tol-nats``,
   bisected to the smallest such budget, which is timed (median).  Also
   timed: bayesgmm with its defaults (4 restarts, EM then SVI).
2. **Diagonal EM step, this release against another checkout**
   (``--old-tree PATH``, a checkout of an earlier release, e.g. made with
   ``git worktree add /tmp/old <commit>``): time per EM iteration at N = 1e5,
   D = 2, K = 8 (``make_mixture(N, 8, 2)``, one restart from the same
   k-means++ seeding), from (t(b2) - t(b1)) / (b2 - b1) of each tree's own
   EM loop run for exactly b iterations, each tree in a subprocess.
   Skipped without ``--old-tree``.

Run ``python benchmarks/covariance_speed.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TYPES = ("full", "tied", "diag", "spherical")


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """K rotated, elongated Gaussian components (weights from a Dirichlet)."""
    from scipy.stats import special_ortho_group

    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(k, 5.0))
    counts = rng.multinomial(n, w)
    parts = []
    for j in range(k):
        Q = special_ortho_group.rvs(d, random_state=seed * 100 + j) if d > 1 else np.ones((1, 1))
        sd = rng.uniform(0.1, 1.0, d)
        cov = Q @ np.diag(sd ** 2) @ Q.T
        parts.append(rng.multivariate_normal(rng.uniform(-4, 4, d), cov, counts[j]))
    X = np.concatenate(parts)
    return X[rng.permutation(n)]


def mean_loglik(X: np.ndarray, weights, means, cov_matrices) -> float:
    """Mean log-likelihood per point, float64, from full covariance matrices."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    lp = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(X)
                   for w, m, c in zip(weights, means, cov_matrices)], axis=-1)
    return float(logsumexp(lp.reshape(len(X), -1), axis=-1).mean())


def matrices(est, ctype: str) -> np.ndarray:
    from bayesgmm import covariance

    K, D = est.means_.shape
    return covariance.get(ctype, D).matrices(np.asarray(est.covariances_), K, D)


def time_to_target(args, X, ctype: str, target: float) -> dict:
    from bayesgmm import BayesianGMM

    def fit(budget):
        return BayesianGMM(args.k, covariance_type=ctype, n_init=1, max_iter=0, em_max_iter=budget,
                           tol=0.0, init="kmeans", random_state=args.seed, device="cpu").fit(X)

    def gap(est):
        return target - mean_loglik(X, est.weights_, est.means_, matrices(est, ctype))

    budget, best_gap, passing = 1, np.inf, None
    failing = 0
    while budget <= args.max_budget:
        g = gap(fit(budget))
        best_gap = min(best_gap, g)
        if g <= args.tol_nats:
            passing = budget
            break
        failing = budget
        budget *= 2
    if passing is None:
        return {"reached": False, "best_gap": best_gap}
    lo, hi = failing, passing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gap(fit(mid)) <= args.tol_nats:
            hi = mid
        else:
            lo = mid
    t, times, _ = C.time_call(lambda: fit(hi), "cpu", repeats=args.repeats)
    return {"reached": True, "iterations": hi, "seconds": t, "times": times}


_STEP_SCRIPT = r"""
import json, sys, time, statistics
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]) or torch.get_num_threads())
from bayesgmm.datasets import make_mixture
X, *_ = make_mixture(int(float(sys.argv[3])), 8, 2, random_state=0)
K, b1, b2 = 8, 5, int(sys.argv[4])
try:      # this release: the one inference core
    from bayesgmm import fitting, covariance
    from bayesgmm.priors import Standardizer, resolve_priors
    fam = covariance.get("diag", 2)
    std, Xt, mom = Standardizer.fit_to(X, "cpu")
    pt = std.priors(resolve_priors(None, fam, K, mom), "cpu")
    groups = fitting.Groups.single(Xt)
    cen = torch.as_tensor(fitting.seed_centres([Xt], K, 1, "kmeans++", [0]), dtype=Xt.dtype)
    mask = torch.ones(1, 1, K, dtype=torch.bool)
    start = fitting.initial_params(groups, cen, mask, pt, fam)
    run = lambda b: fitting.em_fit(groups, start, mask, pt, fam, b, -1.0)
except ImportError:   # the first release: bayesgmm.inference
    from bayesgmm import inference as I
    std, Xt, mom = I.Standardizer.fit_to(X, "cpu")
    pt = std.priors(I.resolve_priors(None, X, K, mom), "cpu")
    start = I.initial_params(Xt, K, 1, "kmeans++", pt, [0])
    run = lambda b: I.em_fit(Xt, start, pt, b, -1.0)
def fit(b):
    t0 = time.perf_counter()
    out = run(b)
    assert out.n_iter == b, (out.n_iter, b)   # tol=-1: every iteration runs
    return time.perf_counter() - t0
fit(b1)
t1 = statistics.median(fit(b1) for _ in range(5))
t2 = statistics.median(fit(b2) for _ in range(5))
print(json.dumps({"step_ms": 1e3 * (t2 - t1) / (b2 - b1)}))
"""


def step_time(tree: str, threads: int, n: float, b2: int) -> float:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", _STEP_SCRIPT, tree, str(threads), str(n), str(b2)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["step_ms"]


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e5)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol-nats", type=float, default=1e-3,
                   help="how close to scikit-learn's mean log-likelihood counts as reached")
    p.add_argument("--max-budget", type=int, default=1024)
    p.add_argument("--old-tree", default=None,
                   help="checkout of an earlier release for the diagonal EM step comparison")
    args = p.parse_args()
    if args.quick:
        args.n, args.d, args.k, args.repeats, args.max_budget = 2000, 3, 3, 1, 64
    C.apply_threads(args.threads)
    C.warn_filter()
    from sklearn.mixture import GaussianMixture

    info = C.machine_info("cpu")
    print(C.header("covariance_speed", info))
    X = make_data(int(args.n), args.d, args.k, args.seed)
    rows = []
    for ctype in args.types:
        t_sk, times_sk, sk = C.time_call(
            lambda: GaussianMixture(args.k, covariance_type=ctype, random_state=args.seed).fit(X),
            "cpu", repeats=args.repeats)
        sk_cov = np.asarray(sk.covariances_)
        from bayesgmm import covariance
        target = mean_loglik(X, sk.weights_, sk.means_,
                             covariance.get(ctype, args.d).matrices(sk_cov, args.k, args.d))
        ours = time_to_target(args, X, ctype, target)
        from bayesgmm import BayesianGMM
        t_def, _, g = C.time_call(lambda: BayesianGMM(args.k, covariance_type=ctype,
                                                      random_state=args.seed, device="cpu").fit(X),
                                  "cpu", repeats=1, warmup=0)
        ll_def = mean_loglik(X, g.weights_, g.means_, matrices(g, ctype))
        rows.append({
            "method": f"{ctype}", "sklearn_s": t_sk, "sklearn_iter": int(sk.n_iter_),
            "sklearn_loglik": target,
            "bayesgmm_em_s": ours.get("seconds"), "bayesgmm_em_iter": ours.get("iterations"),
            "reached": ours["reached"], "best_gap": ours.get("best_gap"),
            "ratio": (ours["seconds"] / t_sk) if ours["reached"] else None,
            "bayesgmm_default_s": t_def, "bayesgmm_default_loglik": ll_def,
        })
        print(f"  {ctype}: done", flush=True)
    cols = [("method", "method (covariance_type)"), ("sklearn_s", "sklearn s"), ("sklearn_iter", "sk iters"),
            ("bayesgmm_em_s", "bayesgmm EM s to sk optimum"), ("bayesgmm_em_iter", "EM iters"),
            ("ratio", "ratio"), ("bayesgmm_default_s", "bayesgmm defaults s"),
            ("sklearn_loglik", "sk loglik/pt"), ("bayesgmm_default_loglik", "defaults loglik/pt")]
    print(f"\nN={int(args.n)}, D={args.d}, K={args.k}: time to scikit-learn's converged "
          f"log-likelihood (within {args.tol_nats} nats/point)\n")
    print(C.markdown_table(rows, cols))
    step_rows = []
    if args.old_tree:
        here = str(Path(__file__).resolve().parents[1])
        n_step = 2000 if args.quick else 1e5
        b2 = 10 if args.quick else 45
        for name, tree in (("this tree", here), ("old tree", args.old_tree)):
            step_rows.append({"method": name, "tree": tree,
                              "step_ms": step_time(tree, args.threads, n_step, b2)})
        print(f"\nDiagonal EM step, N={int(n_step)}, D=2, K=8, one restart\n")
        print(C.markdown_table(step_rows, [("method", "method"), ("step_ms", "ms per EM step")]))
    else:
        C.skip_line("diagonal EM step against an earlier release", "no --old-tree given")
    C.write_json(args.json or C.default_json_path("covariance_speed", "cpu"),
                 {"benchmark": "covariance_speed", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "rows": rows, "step_rows": step_rows})


if __name__ == "__main__":
    main()
