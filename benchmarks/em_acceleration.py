"""SQUAREM-accelerated EM against plain EM and scikit-learn's EM, from the
same starts, to the same tolerance, side by side in one run.

Data: ``bayesgmm.datasets.make_mixture(N, K, D, separation=s)`` (seed 0)
for each separation in ``--separations`` (overlapping at 1.5-2, where EM
creeps; separated at 6).  For each covariance type, ``--restarts``
k-means++ seedings (seeds 0..R-1, the estimators' own seeding code) start
three fits, each run to ``--tol`` nats per point per iteration:

* bayesgmm's MAP-EM accelerated by SQUAREM (the default engine), the R
  restarts as one batch (``bayesgmm.fitting.em_fit``);
* the same EM with ``accelerate=False`` (plain updates), the same batch;
* scikit-learn's ``GaussianMixture(covariance_type=t, tol=tol,
  max_iter=--max-iter, means_init=seeds)``, one fit per restart (its tol is
  the same quantity: the change of the mean log-likelihood bound per
  point; it maximises the likelihood, without priors).

After one untimed run of each, the two bayesgmm engines and scikit-learn
alternate ``--repeats`` times (medians): ``time.perf_counter`` around the
``em_fit`` call for bayesgmm (its data standardised, seeded and
initialised beforehand: the EM engine alone), around scikit-learn's R fits
together (each ``fit`` with its input checks and its initialisation from
``means_init``: more than its EM, so the comparison with scikit-learn is
of iterations first, and of time only roughly).  Reported: the median and largest iterations per restart, the
time, the time ratio accelerated / plain, and how far the accelerated
fit's final loss is from plain EM's, per point (negative: lower, i.e.
better; both are MAP losses of the same objective from the same start).

The engines run on the CPU only (``--device`` is not used).

Run ``python benchmarks/em_acceleration.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TYPES = ("full", "tied", "diag", "spherical")


def engines(X: np.ndarray, K: int, covariance_type: str, restarts: int, tol: float,
            max_iter: int):
    """The two bayesgmm EM runs from R k-means++ seedings (standardised
    data, the default priors), and the seeds in the data's units."""
    import torch

    from bayesgmm import covariance, fitting
    from bayesgmm._base import fit_data, seeded_priors

    family = covariance.get(covariance_type, X.shape[1])
    # The estimators' own data preparation and default priors (scaled to
    # the spread of a k-means++ seeding with its own fixed seed).
    data = fit_data(X, None, family, torch.device("cpu"), False)
    std, Xt = data.std, data.Xt
    pt = std.priors(seeded_priors(None, family, K, data, [Xt], None, [K]), "cpu")
    groups = fitting.Groups.single(Xt)
    seeds = fitting.seed_centres([Xt], K, restarts, "kmeans++", list(range(restarts)))
    centres = torch.as_tensor(seeds, dtype=Xt.dtype)
    mask = torch.ones(restarts, 1, K, dtype=torch.bool)
    start = fitting.initial_params(groups, centres, mask, pt, family)

    def run(accelerate: bool):
        return fitting.em_fit(groups, start, mask, pt, family, max_iter, tol,
                              accelerate=accelerate)

    return run, seeds[:, 0] * std.scale + std.center


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--d", type=int, default=2)
    p.add_argument("--separations", type=float, nargs="+", default=[1.5, 2.0, 6.0])
    p.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--max-iter", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.n, args.separations, args.types, args.restarts, args.repeats = \
            1000, [2.0], ["diag"], 2, 1
    C.apply_threads(args.threads)
    C.warn_filter()
    from sklearn.mixture import GaussianMixture

    from bayesgmm.datasets import make_mixture

    info = C.machine_info("cpu")
    print(C.header("em_acceleration", info))
    print(f"command: {C.argv_line()}\n")
    rows = []
    for sep in args.separations:
        X, _, _ = make_mixture(args.n, args.k, args.d, separation=sep, random_state=0)
        for t in args.types:
            run, means = engines(X, args.k, t, args.restarts, args.tol, args.max_iter)
            def sklearn_fits():
                return [GaussianMixture(args.k, covariance_type=t, tol=args.tol,
                                        max_iter=args.max_iter, means_init=means[r],
                                        random_state=r).fit(X)
                        for r in range(args.restarts)]

            traces, secs = {}, {True: [], False: [], "sklearn": []}
            for accelerate in (True, False):          # one untimed run each
                traces[accelerate] = run(accelerate)
            sk = sklearn_fits()
            for _ in range(args.repeats):
                for engine in (True, False, "sklearn"):
                    t0 = time.perf_counter()
                    run(engine) if engine != "sklearn" else sklearn_fits()
                    secs[engine].append(time.perf_counter() - t0)
            sk_s = statistics.median(secs["sklearn"])
            fast, plain = traces[True], traces[False]
            it_fast = fast.iterations.flatten().tolist()
            it_plain = plain.iterations.flatten().tolist()
            it_sk = [int(g.n_iter_) for g in sk]
            diff = (fast.losses[:, 0, -1] - plain.losses[:, 0, -1]).numpy() / args.n
            t_fast, t_plain = statistics.median(secs[True]), statistics.median(secs[False])
            rows.append({
                "separation": sep, "type": t,
                "iterations squarem (median/max)": f"{statistics.median(it_fast):g}/{max(it_fast)}",
                "iterations plain": f"{statistics.median(it_plain):g}/{max(it_plain)}",
                "iterations sklearn": f"{statistics.median(it_sk):g}/{max(it_sk)}",
                "squarem s": t_fast, "plain s": t_plain, "sklearn s": sk_s,
                "time ratio squarem/plain": t_fast / t_plain,
                "loss squarem - plain / pt (median)": float(np.median(diff)),
                "loss squarem - plain / pt (max)": float(np.max(diff)),
                "squarem converged": bool(fast.converged), "plain converged": bool(plain.converged),
                "sklearn converged": f"{sum(g.converged_ for g in sk)}/{len(sk)}",
                "raw": {"it_squarem": it_fast, "it_plain": it_plain, "it_sklearn": it_sk,
                        "s_squarem": secs[True], "s_plain": secs[False],
                        "loss_diff_per_point": diff.tolist()},
            })
            print(f"separation {sep}, {t}: iterations {rows[-1]['iterations squarem (median/max)']}"
                  f" vs {rows[-1]['iterations plain']} (sklearn {rows[-1]['iterations sklearn']}),"
                  f" {t_fast:.3f} s vs {t_plain:.3f} s (sklearn {sk_s:.3f} s)", flush=True)
    cols = [(k, k) for k in rows[0] if k != "raw"]
    print(f"\nN = {args.n}, D = {args.d}, K = {args.k}, {args.restarts} restarts, "
          f"tol = {args.tol:g} nats per point\n")
    print(C.markdown_table(rows, cols))
    C.write_json(args.json or C.default_json_path("em_acceleration", "cpu"),
                 {"benchmark": "em_acceleration", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows})


if __name__ == "__main__":
    main()
