"""Fit speed to a given quality: wall time until the mean log-likelihood per
training point is within ``--tol-nats`` (1e-3) of the converged optimum.

For every (N, D) with K = 8 components (data: ``bayesgmm.datasets.make_mixture``
with K = 8 true components, ``random_state=0``):

1. Reference optimum: the best mean log-likelihood of bayesgmm's and
   scikit-learn's converged fits (tight tolerances, several restarts), run
   first (scikit-learn's only up to ``--ref-sklearn-max-n`` points).  All qualities are computed by one float64 scorer from each
   method's fitted weights, means and scales.
2. Time to quality, per method: fits with iteration budgets 1, 2, 4, ...
   (EM iterations or SVI steps; one restart; tol switched off so the budget
   is what runs) until one reaches the quality, then bisection between the
   last failing and the first passing budget.  The smallest passing budget
   is timed again (``time.perf_counter``, GPU synchronised; median of
   ``--repeats``).  The wall time is the whole ``fit`` call: input
   conversion, initialisation and iterations.  A method that does not reach
   the quality within ``--max-budget`` iterations or ``--time-cap`` seconds
   of searching is reported as not reached, with its best gap.
3. Time per step: (t(b2) - t(b1)) / (iterations(b2) - iterations(b1)) from
   two fits, which removes the set-up cost.  Floor: a synchronised ``X.sum()``
   on a float32 device tensor (reading X once).

Methods: bayesgmm with default settings (as a user calls it: n_init=4, EM
then SVI; timed once as is), bayesgmm EM only (``max_iter=0``; from its
default k-means++ seeding, and from a full k-means start), bayesgmm pure
SVI (``em_max_iter=0``), scikit-learn ``GaussianMixture(covariance_type="diag")``
(CPU), pomegranate ``GeneralMixtureModel`` (diag ``Normal``) and torchgmm
``GaussianMixture`` (diag; its k-means start, given the same epoch budget;
``random.seed(seed)`` and ``torch.manual_seed(seed)``)
when installed.

Run ``python benchmarks/fit_speed.py --help``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

Params = tuple  # (weights, means, scales, n_iter)


# ----------------------------------------------------------------------------
# Methods: budget -> fitted (weights, means, scales, iterations run)
# ----------------------------------------------------------------------------
def bayesgmm_fit(X, K, device, seed, **kw) -> Params:
    from bayesgmm import BayesianGMM

    g = BayesianGMM(K, covariance_type="diag", device=device, random_state=seed, **kw).fit(X)
    return g.weights_, g.means_, g.scales_, g.n_iter_


def sklearn_fit(X, K, seed, max_iter, tol=0.0, n_init=1) -> Params:
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(K, covariance_type="diag", max_iter=max_iter, tol=tol, n_init=n_init,
                        random_state=seed).fit(X)
    return g.weights_, g.means_, np.sqrt(g.covariances_), g.n_iter_


def pomegranate_fit(X, K, device, seed, max_iter) -> Params:
    import torch

    # The host-to-device copy is part of the fit, as it is for bayesgmm.
    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    # tol=-inf: pomegranate stops when the improvement drops below tol, so
    # this runs exactly max_iter iterations.
    model = C.pomegranate_gmm(K, max_iter, -math.inf, seed, device).fit(Xt)
    w, m, var = C.pomegranate_params(model)
    return w, m, np.sqrt(var), max_iter


def torchgmm_budget_fit(X, K, device, seed, max_iter) -> Params:
    # tol=0: every one of the max_iter EM iterations runs.  torchgmm hands
    # the same max_epochs on to its k-means start (k-means++, then at most
    # max_iter Lloyd epochs); that start and the host-to-device copy are
    # part of the fit, as they are for bayesgmm.
    w, m, var, it = C.torchgmm_fit(X, K, "diag", seed, device, max_iter=max_iter, tol=0.0)
    return w, m, np.sqrt(var), it


def budget_methods(args, device: str, K: int, skipped: list) -> dict[str, dict]:
    """name -> {"fit": fn(X, budget) -> Params, "cap": max budget, "step": what a budget counts}."""
    seed = args.seed
    methods = {
        "bayesgmm EM (max_iter=0)": {
            "fit": lambda X, b: bayesgmm_fit(X, K, device, seed, n_init=1, em_max_iter=b,
                                             max_iter=0, tol=0.0),
            "cap": args.max_budget, "unit": "EM iteration"},
        # Same EM from a full k-means start (scikit-learn's KMeans, as
        # GaussianMixture's default init): fewer EM iterations, costlier init.
        "bayesgmm EM, init=kmeans (max_iter=0)": {
            "fit": lambda X, b: bayesgmm_fit(X, K, device, seed, n_init=1, em_max_iter=b,
                                             max_iter=0, tol=0.0, init="kmeans"),
            "cap": args.max_budget, "unit": "EM iteration"},
        "bayesgmm SVI (em_max_iter=0)": {
            "fit": lambda X, b: bayesgmm_fit(X, K, device, seed, n_init=1, em_max_iter=0,
                                             max_iter=b, tol=0.0),
            "cap": args.max_svi_budget, "unit": "SVI step"},
    }
    if device == "cpu":
        methods["sklearn GaussianMixture (diag)"] = {
            "fit": lambda X, b: sklearn_fit(X, K, seed, max_iter=b),
            "cap": args.max_budget, "unit": "EM iteration"}
    else:
        skipped.append(C.skip_line("sklearn GaussianMixture on " + device,
                                   "scikit-learn runs on the CPU only; run with --device cpu"))
    for peer, estimator, peer_fit in (("pomegranate", "GeneralMixtureModel", pomegranate_fit),
                                      ("torchgmm", "GaussianMixture", torchgmm_budget_fit)):
        if C.peer_installed(peer, skipped):
            methods[f"{peer} {estimator} ({device})"] = {
                "fit": lambda X, b, peer_fit=peer_fit: peer_fit(X, K, device, seed, max_iter=b),
                "cap": args.max_budget, "unit": "EM iteration"}
    if args.methods:
        methods = {m: v for m, v in methods.items()
                   if any(s.lower() in m.lower() for s in args.methods)}
    return methods


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------
def reference_optimum(X, K, device, args) -> dict:
    """Converged fits with tight tolerances; the best is the reference."""
    out = {}
    t0 = time.perf_counter()
    w, m, s, it = bayesgmm_fit(X, K, device, args.seed, n_init=args.ref_n_init,
                               em_max_iter=args.ref_max_iter, max_iter=0, tol=1e-10)
    out["bayesgmm"] = {"mean_loglik": C.mixture_mean_loglik(X, w, m, s), "n_iter": it,
                       "seconds": time.perf_counter() - t0}
    if X.shape[0] <= args.ref_sklearn_max_n:
        t0 = time.perf_counter()
        w, m, s, it = sklearn_fit(X, K, args.seed, max_iter=args.ref_max_iter, tol=1e-10,
                                  n_init=args.ref_n_init)
        out["sklearn"] = {"mean_loglik": C.mixture_mean_loglik(X, w, m, s), "n_iter": it,
                          "seconds": time.perf_counter() - t0}
    out["best"] = max(v["mean_loglik"] for v in out.values())
    return out


def time_to_quality(fit: Callable, X, target: float, cap: int, time_cap: float, device: str,
                    repeats: int) -> dict:
    """Smallest budget whose fit reaches ``target`` (doubling, then bisection
    to 1/16 of the budget), and the median wall time of a fit at it."""
    cache: dict[int, tuple[float, int, float]] = {}
    spent = 0.0

    def quality(b: int) -> float:
        nonlocal spent
        if b not in cache:
            t0 = time.perf_counter()
            w, m, s, it = fit(X, b)
            C.synchronize(device)
            dt = time.perf_counter() - t0
            spent += dt
            cache[b] = (C.mixture_mean_loglik(X, w, m, s), int(it), dt)
        return cache[b][0]

    fit(X, 1)  # warm-up: imports, allocator, kernels
    C.synchronize(device)
    b, passing = 1, None
    while True:
        if quality(b) >= target:
            passing = b
            break
        if b >= cap or spent > time_cap:
            break
        b = min(2 * b, cap)
    best_ll = max(v[0] for v in cache.values())
    if passing is None:
        return {"reached": False, "budget": None, "seconds": None,
                "gap_nats": target - best_ll, "searched_up_to": b,
                "search_seconds": spent}
    lo = passing // 2 if passing > 1 else 0
    hi = passing
    while hi - lo > max(1, hi // 16) and spent <= time_cap:
        mid = (lo + hi) // 2
        if quality(mid) >= target:
            hi = mid
        else:
            lo = mid
    seconds, times, _ = C.time_call(lambda: fit(X, hi), device, repeats=repeats, warmup=0)
    return {"reached": True, "budget": hi, "iterations_run": cache[hi][1], "seconds": seconds,
            "all_seconds": times, "gap_nats": target - cache[hi][0], "search_seconds": spent}


def time_per_step(fit: Callable, X, b1: int, b2: int, device: str, repeats: int) -> Optional[float]:
    """(t(b2) - t(b1)) / (iterations(b2) - iterations(b1)), seconds."""
    t1, _, r1 = C.time_call(lambda: fit(X, b1), device, repeats=repeats, warmup=1)
    t2, _, r2 = C.time_call(lambda: fit(X, b2), device, repeats=repeats, warmup=0)
    steps = int(r2[3]) - int(r1[3])
    if steps <= 0:
        return None  # converged before b1: no steps to divide by
    return max(t2 - t1, 0.0) / steps


def run_case(N: int, D: int, args, device: str, skipped: list) -> list[dict]:
    from bayesgmm.datasets import make_mixture

    K = args.k
    X, _, _ = make_mixture(N, K, D, separation=args.separation, random_state=args.seed)
    ref = reference_optimum(X, K, device, args)
    target = ref["best"] - args.tol_nats
    floor = C.read_once_floor(X, device)
    sk_ref = (f"sklearn {ref['sklearn']['mean_loglik']:.6f}" if "sklearn" in ref else
              f"no sklearn reference above N={args.ref_sklearn_max_n:.0e}")
    print(f"\nN={N:.0e} D={D}: reference mean log-lik {ref['best']:.6f} "
          f"(bayesgmm {ref['bayesgmm']['mean_loglik']:.6f}, {sk_ref}); "
          f"read-once floor {1e3 * floor:.4f} ms", flush=True)
    repeats = args.repeats if N <= 100_000 else max(1, min(args.repeats, 2))
    rows = []
    base = {"N": N, "D": D, "K": K, "reference_mean_loglik": ref["best"], "floor_ms": 1e3 * floor}

    # Default settings: one call, as a user makes it.
    from bayesgmm import BayesianGMM
    if not args.methods or any(s.lower() in "bayesgmm default" for s in args.methods):
        try:
            def default_fit():
                g = BayesianGMM(K, covariance_type="diag", device=device, random_state=args.seed).fit(X)
                return g
            if N > 100_000:
                # One-off costs (CUDA kernels loaded on first use, cuBLAS
                # handles, autograd) paid on a small fit, not in the timing.
                BayesianGMM(K, covariance_type="diag", device=device, random_state=args.seed).fit(X[:10_000])
                C.synchronize(device)
            seconds, _, g = C.time_call(default_fit, device, repeats=1 if N > 100_000 else repeats,
                                        warmup=0 if N > 100_000 else 1)
            ll = C.mixture_mean_loglik(X, g.weights_, g.means_, g.scales_)
            rows.append({**base, "method": "bayesgmm default (n_init=4, EM then SVI)",
                         "reached": bool(ll >= target), "budget": None,
                         "iterations": int(g.n_iter_), "seconds": seconds,
                         "gap_nats": ref["best"] - ll, "step_ms": None})
        except Exception as exc:
            rows.append({**base, "method": "bayesgmm default (n_init=4, EM then SVI)",
                         "error": f"{type(exc).__name__}: {exc}"})
        print(f"  {rows[-1]['method']}: {rows[-1].get('seconds')}", flush=True)

    for name, spec in budget_methods(args, device, K, skipped).items():
        try:
            res = time_to_quality(spec["fit"], X, target, spec["cap"], args.time_cap, device, repeats)
            b1 = 2
            b2 = b1 + (args.step_budget if N <= 100_000 else max(3, args.step_budget // 4))
            if "SVI" in name:
                b2 = b1 + 2 * (b2 - b1)
            step = time_per_step(spec["fit"], X, b1, b2, device, repeats)
            row = {**base, "method": name, "unit": spec["unit"], "reached": res["reached"],
                   "budget": res["budget"], "iterations": res.get("iterations_run"),
                   "seconds": res["seconds"],
                   # time_to_quality reports target - ll; the table shows optimum - ll
                   "gap_nats": res["gap_nats"] + args.tol_nats,
                   "step_ms": None if step is None else 1e3 * step,
                   "step_over_floor": None if step is None else step / floor,
                   "search_seconds": res["search_seconds"]}
            if not res["reached"]:
                row["searched_up_to"] = res["searched_up_to"]
        except Exception as exc:  # e.g. out of memory at large N: a result, not a crash
            row = {**base, "method": name, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(f"  {name}: reached={row.get('reached')} budget={row.get('budget')} "
              f"time={row.get('seconds')} step_ms={row.get('step_ms')} {row.get('error', '')}",
              flush=True)
    for r in rows:
        r["reference"] = ref
    return rows


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, nargs="+", default=None,
                   help="sample sizes (default: 1e3 1e4 1e5 on CPU; 1e3 ... 1e7 on GPU; "
                        "add 1e6 on CPU explicitly, it takes several minutes on 2 cores)")
    p.add_argument("--d", type=int, nargs="+", default=[2, 16], help="numbers of features")
    p.add_argument("--k", type=int, default=8, help="components (true and fitted)")
    p.add_argument("--separation", type=float, default=3.0,
                   help="make_mixture separation of the true components (in largest scales)")
    p.add_argument("--tol-nats", type=float, default=1e-3,
                   help="quality: mean log-likelihood per point within this of the optimum")
    p.add_argument("--seed", type=int, default=0, help="data and fit seed")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median); 2 at N > 1e5")
    p.add_argument("--max-budget", type=int, default=1024, help="largest EM budget tried")
    p.add_argument("--max-svi-budget", type=int, default=4096, help="largest SVI budget tried")
    p.add_argument("--time-cap", type=float, default=120.0,
                   help="seconds of searching per method and case before giving up")
    p.add_argument("--step-budget", type=int, default=20,
                   help="iterations between the two fits that time one step")
    p.add_argument("--ref-n-init", type=int, default=4, help="restarts of the reference fits")
    p.add_argument("--ref-max-iter", type=int, default=3000, help="EM cap of the reference fits")
    p.add_argument("--ref-sklearn-max-n", type=float, default=1e6,
                   help="largest N with a scikit-learn reference fit (its converged EM takes "
                        "minutes beyond); above it the reference is bayesgmm's converged "
                        "--ref-n-init restarts alone")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only methods whose names contain one of these strings "
                        "('default', 'EM', 'SVI', 'sklearn', 'pomegranate')")
    args = p.parse_args(argv)
    device = C.resolve_device(args.device)
    if args.n is None:
        args.n = [1e3, 1e4, 1e5] if device == "cpu" else [1e3, 1e4, 1e5, 1e6, 1e7]
    if args.quick:
        args.n = [min(n, 2000) for n in args.n[:1]]
        args.d = args.d[:1]
        args.repeats = 1
        args.max_svi_budget = min(args.max_svi_budget, 64)
        args.time_cap = min(args.time_cap, 5.0)
        args.step_budget = min(args.step_budget, 4)
        args.ref_n_init = 1
        args.ref_max_iter = min(args.ref_max_iter, 300)
    C.apply_threads(args.threads)
    C.warn_filter()
    info = C.machine_info(device)
    print(C.header("Fit speed to quality", info), flush=True)
    skipped: list = []
    rows = []
    path = args.json or C.default_json_path("fit_speed", device)

    def payload(complete: bool, ratios=()) -> dict:
        return {"benchmark": "fit_speed", "command": C.argv_line(), "quick": args.quick,
                "complete": complete, "machine": info, "skipped": skipped,
                "tol_nats": args.tol_nats, "k": args.k,
                "settings": {k: v for k, v in vars(args).items() if k != "json"},
                "rows": rows, "ratios": list(ratios)}

    for N in [int(n) for n in args.n]:
        for D in args.d:
            rows.extend(run_case(N, D, args, device, skipped))
            # Saved after every case, so an interrupted long run keeps what it measured.
            C.write_json(path, payload(False), quiet=True)

    ratios = []
    for N in sorted({r["N"] for r in rows}):
        for D in sorted({r["D"] for r in rows}):
            case = {r["method"]: r for r in rows if r["N"] == N and r["D"] == D}
            sk = case.get("sklearn GaussianMixture (diag)")
            if not sk or not sk.get("reached"):
                continue
            for name, r in case.items():
                if name.startswith("bayesgmm") and r.get("reached"):
                    ratios.append({"N": N, "D": D, "method": name,
                                   "ratio_to_sklearn": r["seconds"] / sk["seconds"]})
    print(f"\n### Time to within {args.tol_nats:g} nats/point of the optimum (K={args.k})\n")
    print(C.markdown_table(rows, [
        ("N", "N"), ("D", "D"), ("method", "method"), ("reached", "reached"),
        ("budget", "iterations needed"), ("seconds", "time to quality (s)"),
        ("gap_nats", "gap at that budget (nats)"), ("step_ms", "time per step (ms)"),
        ("floor_ms", "read-X floor (ms)"), ("step_over_floor", "step / floor")]))
    if ratios:
        print("\n### bayesgmm / scikit-learn time-to-quality ratio (<= 1 means bayesgmm is faster)\n")
        print(C.markdown_table(ratios, [("N", "N"), ("D", "D"), ("method", "bayesgmm method"),
                                        ("ratio_to_sklearn", "ratio")]))
        target = [r for r in ratios if r["N"] == 100_000 and r["D"] == 2]
        for r in target:
            print(f"CPU target (N=1e5, D=2, K=8): {r['method']} / sklearn = {r['ratio_to_sklearn']:.3f}")
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"error: N={r['N']} D={r['D']} {r['method']}: {r['error']}")
    result = payload(True, ratios)
    C.write_json(path, result)
    return result


if __name__ == "__main__":
    main()
