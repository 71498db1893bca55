"""Posterior inference, timed side by side: NUTS on iris ``petal_length``
(K=2, 4 chains, the estimator's defaults: 300 warmup and 1000 kept draws)
with its R-hat, and variational inference (``inference="vi"``, closed-form
mean-field VB from the MAP, the estimator's defaults: the whole fit, MAP
stage included, to its tolerance) on N=1e5, D=2, K=8 against
scikit-learn's ``BayesianGaussianMixture`` on the same data (at its
defaults, whose tol=1e-3 stops after a few iterations, and run to
convergence with max_iter=1000, tol=1e-6), each with its held-out
log-likelihood per point (10,000 fresh points from the same mixture).

Issue 13's targets: NUTS on iris under a minute on the CPU with R-hat <
1.01; "vi" at N=1e5 in no more time than ``BayesianGaussianMixture``.

Timing: NUTS, the median of ``--repeats`` runs (seeds 0..); at N=1e5, one
untimed fit of each method, then ``--fit-repeats`` rounds (seeds 0..) in
which the four methods alternate, medians per method (a shared machine
then slows them alike).

Run ``python benchmarks/posterior_speed.py --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--vi-max-iter", type=int, default=1000,
                   help="max_iter of the VI fit (iterations of coordinate ascent)")
    p.add_argument("--repeats", type=int, default=3, help="NUTS runs on iris (seeds 0..)")
    p.add_argument("--fit-repeats", type=int, default=5,
                   help="fits of each method at N (seeds 0.., methods alternating)")
    args = p.parse_args()
    if args.quick:
        args.n, args.vi_max_iter, args.repeats, args.fit_repeats = 2000, 50, 1, 1
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from sklearn.mixture import BayesianGaussianMixture

    from bayesgmm import BayesianGMM
    from bayesgmm.datasets import load_iris, make_mixture

    info = C.machine_info(device)
    print(C.header("posterior_speed", info))
    rows = []
    petal = load_iris()[["petal_length"]]
    kw = dict(n_samples=40, n_warmup=20) if args.quick else {}
    secs, rhat = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        g = BayesianGMM(2, inference="nuts", random_state=r, device=device, **kw).fit(petal)
        secs.append(time.perf_counter() - t0)
        rhat.append(max(float(np.max(v)) for v in g.rhat_.values()))
    rows.append({"case": "iris petal_length, K=2", "method": "bayesgmm NUTS, 4 chains",
                 "seconds": float(np.median(secs)), "all_seconds": secs,
                 "max_rhat": float(np.max(rhat)), "heldout_loglik": None})
    print(f"  NUTS iris: median {np.median(secs):.1f} s over {args.repeats}, max R-hat "
          f"{np.max(rhat):.4f}", flush=True)
    X, _, truth = make_mixture(args.n, 8, 2, random_state=0)
    # Held-out points: a fresh draw of 10,000 from the same mixture (an
    # earlier version took the tail of a second make_mixture(random_state=0)
    # call, whose stream repeated 1,350 of the training points).
    Xte, _ = truth.sample(np.random.default_rng(1).multinomial(10_000, truth.weights),
                          random_state=1)
    fits = {
        "bayesgmm VI (default)": lambda s: BayesianGMM(
            8, covariance_type="diag", inference="vi", max_iter=args.vi_max_iter,
            random_state=s, device=device).fit(X),
        "bayesgmm MAP (default)": lambda s: BayesianGMM(
            8, covariance_type="diag", random_state=s, device=device).fit(X),
        "sklearn BayesianGaussianMixture (default)": lambda s: BayesianGaussianMixture(
            n_components=8, covariance_type="diag", random_state=s).fit(X),
        "sklearn BayesianGaussianMixture (max_iter=1000, tol=1e-6)": lambda s:
            BayesianGaussianMixture(n_components=8, covariance_type="diag", random_state=s,
                                    max_iter=1000, tol=1e-6).fit(X),
    }
    # One untimed fit of each first (one-off costs: lazy imports, first
    # calls), then the methods alternate within each repeat (seed r), so
    # that a shared, noisy machine slows them alike.
    for fit in fits.values():
        fit(0)
    secs = {name: [] for name in fits}
    lls = {name: [] for name in fits}
    for r in range(args.fit_repeats):
        for name, fit in fits.items():
            t0 = time.perf_counter()
            est = fit(r)
            secs[name].append(time.perf_counter() - t0)
            lls[name].append(float(est.score(Xte)))
    for name in fits:
        rows.append({"case": f"make_mixture N={args.n}, D=2, K=8 (diag)", "method": name,
                     "seconds": float(np.median(secs[name])), "all_seconds": secs[name],
                     "max_rhat": None, "heldout_loglik": float(np.median(lls[name]))})
        print(f"  {name}: median {np.median(secs[name]):.2f} s, held-out "
              f"{np.median(lls[name]):.4f}", flush=True)
    print()
    print(C.markdown_table(rows, [("case", "case"), ("method", "method"),
                                  ("seconds", "median s"), ("max_rhat", "max R-hat"),
                                  ("heldout_loglik", "held-out log-lik / point")]))
    C.write_json(args.json or C.default_json_path("posterior_speed", device),
                 {"benchmark": "posterior_speed", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "rows": rows})


if __name__ == "__main__":
    main()
