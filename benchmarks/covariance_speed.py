"""Fit speed per covariance type against scikit-learn, and the diagonal EM
step against the previous release, in one run.

1. **Time to the optimum** (default: N = 1e5, D = 8, K = 8, every covariance
   type).  Data: K Gaussian components with random rotations and axis
   ratios up to 10 (seed 0).  For each initialisation seed 0..S-1,
   scikit-learn's ``GaussianMixture(covariance_type=t, random_state=seed)``
   is fitted at its defaults (one k-means init, tol 1e-3; timed too, the
   ``sklearn_default_s`` of the JSON); the best of these converged mean
   log-likelihoods per point is the optimum.  Then each library's EM from
   one k-means start (scikit-learn's ``GaussianMixture(..., max_iter=b,
   tol=0)``; bayesgmm's ``BayesianGMM(K, covariance_type=t, n_init=1,
   max_iter=0, em_max_iter=b, tol=0, init="kmeans", random_state=seed)``)
   is fitted to convergence (``--max-budget``); if it lands within
   ``--tol-nats`` of the optimum (scored by the same float64 code for both),
   the smallest budget b that does is found by bisection and timed (median
   of ``--repeats``): the same search for both, so that neither is timed
   with a stopping rule the other is spared.  Both land in a worse local
   optimum from some seeds: the table gives how many seeds reach the
   optimum and the median time over those.  Also timed: bayesgmm with its
   defaults.
2. **Diagonal EM step, this release against another checkout**
   (``--old-tree PATH``, a checkout of an earlier release, e.g. made with
   ``git worktree add /tmp/old <commit>``): time per EM iteration at N = 1e5,
   D = 2, K = 8 (``make_mixture(N, 8, 2)``, one restart from the same
   k-means++ seeding), from (t(b2) - t(5)) / (b2 - 5) of each tree's own EM
   loop run for exactly b iterations.  The earlier release is imported under
   another name so that both run in one process, alternately, five rounds:
   on a shared machine the speed of a whole process varies by 3x from run to
   run, so only a ratio measured side by side means anything.  Skipped
   without ``--old-tree``.

Run ``python benchmarks/covariance_speed.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import inspect
import sys
import time
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


def time_to_target(args, X, ctype: str, target: float, fit) -> dict:
    """The smallest EM budget b whose ``fit(b)`` (one k-means start, tol 0,
    exactly b iterations) is within ``--tol-nats`` of ``target``, timed
    (median of ``--repeats``); not reached when the converged fit (budget
    ``--max-budget``) is not.  The same search for both libraries, so that
    neither is timed with a stopping rule the other is spared."""
    def gap(est):
        return target - C.sklearn_mean_loglik(X, est.weights_, est.means_, est.covariances_,
                                              ctype)

    final_gap = gap(fit(args.max_budget))
    if final_gap > args.tol_nats:
        return {"reached": False, "gap": final_gap}
    lo, hi = 0, args.max_budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gap(fit(mid)) <= args.tol_nats:
            hi = mid
        else:
            lo = mid
    t, times, _ = C.time_call(lambda: fit(hi), "cpu", repeats=args.repeats)
    return {"reached": True, "iterations": hi, "seconds": t, "times": times}


def _load_tree(path: str, name: str):
    """Import the ``bayesgmm`` package of a checkout under another name, so
    that two releases run side by side in one process."""
    import importlib.util

    init = Path(path) / "bayesgmm" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _em_runner(pkg, X, K: int):
    """run(b): exactly b EM iterations (tol -1) of one restart from the same
    k-means++ seeding, with the package's own EM loop."""
    import torch

    if hasattr(pkg, "covariance"):       # this release: the one inference core
        fitting, cov = pkg.fitting, pkg.covariance
        fam = cov.get("diag", X.shape[1])
        std, Xt, mom = pkg.priors.Standardizer.fit_to(X, "cpu")
        pt = std.priors(pkg.priors.resolve_priors(None, fam, K, mom), "cpu")
        groups = fitting.Groups.single(Xt)
        cen = torch.as_tensor(fitting.seed_centres([Xt], K, 1, "kmeans++", [0]), dtype=Xt.dtype)
        mask = torch.ones(1, 1, K, dtype=torch.bool)
        start = fitting.initial_params(groups, cen, mask, pt, fam)
        # Plain updates: the step itself, as the first release's loop runs it
        # (SQUAREM's cycles are timed by em_acceleration.py).
        accelerated = "accelerate" in inspect.signature(fitting.em_fit).parameters
        plain = {"accelerate": False} if accelerated else {}
        return lambda b: fitting.em_fit(groups, start, mask, pt, fam, b, -1.0, **plain)
    inf = pkg.inference                   # the first release
    std, Xt, mom = inf.Standardizer.fit_to(X, "cpu")
    pt = std.priors(inf.resolve_priors(None, X, K, mom), "cpu")
    start = inf.initial_params(Xt, K, 1, "kmeans++", pt, [0])
    return lambda b: inf.em_fit(Xt, start, pt, b, -1.0)


def step_times(old_tree: str, n: float, b2: int, rounds: int) -> dict:
    """ms per diagonal EM step (N = n, D = 2, K = 8) of this tree and of
    ``old_tree``, measured alternately in one process, ``rounds`` times each:
    (t(b2) - t(5)) / (b2 - 5), each t the median of 3 runs."""
    import statistics

    import bayesgmm
    from bayesgmm.datasets import make_mixture

    old = _load_tree(old_tree, "bayesgmm_old")
    X, *_ = make_mixture(int(n), 8, 2, random_state=0)
    runners = {"this tree": _em_runner(bayesgmm, X, 8), "old tree": _em_runner(old, X, 8)}

    def t(run, b):
        t0 = time.perf_counter()
        out = run(b)
        assert out.n_iter == b, (out.n_iter, b)   # tol=-1: every iteration runs
        return time.perf_counter() - t0

    out = {name: [] for name in runners}
    for run in runners.values():
        t(run, 5)
    for _ in range(rounds):
        for name, run in runners.items():
            t1 = statistics.median(t(run, 5) for _ in range(3))
            t2 = statistics.median(t(run, b2) for _ in range(3))
            out[name].append(1e3 * (t2 - t1) / (b2 - 5))
    return out


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e5)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the default fit")
    p.add_argument("--seeds", type=int, default=5,
                   help="initialisation seeds 0..S-1 for the time-to-optimum comparison")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol-nats", type=float, default=1e-3,
                   help="how close to scikit-learn's mean log-likelihood counts as reached")
    p.add_argument("--max-budget", type=int, default=200,
                   help="EM iterations of the converged fit (tol 0)")
    p.add_argument("--old-tree", default=None,
                   help="checkout of an earlier release for the diagonal EM step comparison")
    args = p.parse_args()
    if args.quick:
        args.n, args.d, args.k, args.repeats, args.max_budget, args.seeds = 2000, 3, 3, 1, 64, 2
    C.apply_threads(args.threads)
    C.warn_filter()
    from sklearn.mixture import GaussianMixture

    info = C.machine_info("cpu")
    print(C.header("covariance_speed", info))
    X = make_data(int(args.n), args.d, args.k, args.seed)
    rows = []
    from bayesgmm import BayesianGMM
    for ctype in args.types:
        seeds = list(range(args.seeds))
        defaults = []
        for seed in seeds:
            t_sk, _, sk = C.time_call(
                lambda: GaussianMixture(args.k, covariance_type=ctype, random_state=seed).fit(X),
                "cpu", repeats=args.repeats)
            ll = C.sklearn_mean_loglik(X, sk.weights_, sk.means_, sk.covariances_, ctype)
            defaults.append({"seconds": t_sk, "iterations": int(sk.n_iter_), "loglik": ll})
        # The converged optimum: the best of scikit-learn's converged fits
        # (at its defaults, tol 1e-3).
        target = max(r["loglik"] for r in defaults)

        def sk_fit(budget, seed):
            return GaussianMixture(args.k, covariance_type=ctype, random_state=seed,
                                   max_iter=budget, tol=0.0).fit(X)

        def our_fit(budget, seed):
            return BayesianGMM(args.k, covariance_type=ctype, n_init=1, max_iter=0,
                               em_max_iter=budget, tol=0.0, init="kmeans", random_state=seed,
                               device="cpu").fit(X)

        sk_runs = [time_to_target(args, X, ctype, target, lambda b, s=seed: sk_fit(b, s))
                   | {"default": defaults[seed]} for seed in seeds]
        ours = [time_to_target(args, X, ctype, target, lambda b, s=seed: our_fit(b, s))
                for seed in seeds]
        t_def, _, g = C.time_call(lambda: BayesianGMM(args.k, covariance_type=ctype,
                                                      random_state=args.seed, device="cpu").fit(X),
                                  "cpu", repeats=1, warmup=0)
        ll_def = C.sklearn_mean_loglik(X, g.weights_, g.means_, g.covariances_, ctype)
        both = [i for i in range(len(seeds)) if sk_runs[i]["reached"] and ours[i]["reached"]]
        med = lambda v: float(np.median(v)) if len(v) else None
        sk_med = med([r["seconds"] for r in sk_runs if r["reached"]])
        our_med = med([o["seconds"] for o in ours if o["reached"]])
        rows.append({
            "method": ctype, "target_loglik": target,
            "sklearn_reached": f"{sum(r['reached'] for r in sk_runs)}/{len(seeds)}",
            "sklearn_s": sk_med,
            "sklearn_em_iter": med([r["iterations"] for r in sk_runs if r["reached"]]),
            "sklearn_default_s": med([r["seconds"] for r in defaults]),
            "bayesgmm_reached": f"{sum(o['reached'] for o in ours)}/{len(seeds)}",
            "bayesgmm_em_s": our_med,
            "bayesgmm_em_iter": med([o["iterations"] for o in ours if o["reached"]]),
            "ratio": (our_med / sk_med) if our_med and sk_med else None,
            "ratio_same_seeds": med([ours[i]["seconds"] / sk_runs[i]["seconds"] for i in both]),
            "bayesgmm_default_s": t_def, "bayesgmm_default_loglik": ll_def,
            "sklearn_runs": sk_runs, "bayesgmm_runs": ours,
        })
        print(f"  {ctype}: done", flush=True)
    cols = [("method", "method (covariance_type)"), ("sklearn_reached", "sklearn seeds at optimum"),
            ("sklearn_s", "sklearn s to optimum (median)"), ("sklearn_em_iter", "sklearn iters"),
            ("bayesgmm_reached", "bayesgmm seeds at optimum"),
            ("bayesgmm_em_s", "bayesgmm EM s to optimum (median)"),
            ("bayesgmm_em_iter", "EM iters"), ("ratio", "ratio of medians"),
            ("ratio_same_seeds", "ratio, seeds both reach"),
            ("bayesgmm_default_s", "bayesgmm defaults s"),
            ("target_loglik", "optimum loglik/pt"), ("bayesgmm_default_loglik", "defaults loglik/pt")]
    print(f"\nN={int(args.n)}, D={args.d}, K={args.k}, seeds 0..{args.seeds - 1}: wall time to "
          f"within {args.tol_nats} nats/point of the optimum (the best converged scikit-learn "
          f"fit), one k-means start each, each library at the smallest EM budget that reaches "
          f"it (tol 0), for the seeds that reach it\n")
    print(C.markdown_table(rows, cols))
    step_rows = []
    if args.old_tree:
        n_step = 2000 if args.quick else 1e5
        b2 = 10 if args.quick else 45
        times = step_times(args.old_tree, n_step, b2, 1 if args.quick else 5)
        ratios = [a / b for a, b in zip(times["this tree"], times["old tree"])]
        for name, ts in times.items():
            step_rows.append({"method": name, "step_ms": float(np.median(ts)), "runs_ms": ts,
                              "ratio_to_old": float(np.median(ratios)) if name == "this tree"
                              else 1.0})
        print(f"\nDiagonal EM step, N={int(n_step)}, D=2, K=8, one restart, both trees in one "
              f"process, alternating (median of {len(ratios)} rounds)\n")
        print(C.markdown_table(step_rows, [("method", "method"), ("step_ms", "ms per EM step"),
                                           ("ratio_to_old", "ratio to old (median per round)")]))
    else:
        C.skip_line("diagonal EM step against an earlier release", "no --old-tree given")
    C.write_json(args.json or C.default_json_path("covariance_speed", "cpu"),
                 {"benchmark": "covariance_speed", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "rows": rows, "step_rows": step_rows})


if __name__ == "__main__":
    main()
