"""GMMClassifier with its defaults against five per-class scikit-learn fits, side by side.

The bar of issue 12: on the five-class study (``make_five_class(seed)``,
10,000 training points, five classes of overlapping 2-D mixtures),
``GMMClassifier(true K per class, covariance_type=t)`` with its defaults
must fit in no more time than five per-class scikit-learn
``GaussianMixture(K_c, covariance_type=t)`` fits at their defaults, with
its gap to the Bayes-optimal accuracy no larger than before.

For each seed in ``--seeds`` and each type in ``--types``, the two fits run
alternately ``--repeats`` times (``time.perf_counter`` around the whole
``fit`` call, or the loop of five sklearn fits), after one untimed warm-up
of each; the median per seed is kept.  Accuracy on 20,000 fresh points from
the true mixtures (``truth.sample(4000, seed + 1000)``); the gap is the
Bayes-optimal accuracy (``truth.bayes_predict``) minus each classifier's, in
percentage points (scikit-learn's per-class mixtures are combined with the
empirical class priors, as GMMClassifier's are).  Where torchgmm is
installed, five per-class torchgmm ``GaussianMixture`` fits at its defaults
run beside them (``random.seed(seed)`` and ``torch.manual_seed(seed)``; scored by scikit-learn's
scorer on their parameters), else a ``skipped:`` line says so.

``--tol`` sets GMMClassifier's tolerance (default: its own) to measure how
its fit time trades against its gap; scikit-learn's fits keep their defaults.

Run ``python benchmarks/classifier_defaults.py --help``; ``--quick`` checks the
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


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--types", nargs="+", default=["diag", "full"], help="covariance types")
    p.add_argument("--seeds", type=int, default=10, help="five-class seeds 0..S-1")
    p.add_argument("--repeats", type=int, default=3, help="timed fits per seed and method")
    p.add_argument("--tol", type=float, default=None,
                   help="GMMClassifier's tol (default: its own, 1e-6): how the fit time and "
                        "the gap trade against each other; scikit-learn keeps its defaults")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.repeats = 1, 1
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)

    from sklearn.mixture import GaussianMixture

    from bayesgmm import GMMClassifier
    from bayesgmm.datasets import make_five_class

    info = C.machine_info(device)
    print(C.header("GMMClassifier defaults against per-class scikit-learn fits", info))
    print(f"command: {C.argv_line()}\n")

    def ours(X, y, ks, t, seed):
        tol = {} if args.tol is None else {"tol": args.tol}
        return GMMClassifier(list(ks), covariance_type=t, device=device,
                             random_state=seed, **tol).fit(X, y)

    def sklearn(X, y, ks, t, seed):
        return [GaussianMixture(int(k), covariance_type=t, random_state=seed).fit(X[y == c])
                for c, k in enumerate(ks)]

    methods = {"bayesgmm": ours, "sklearn": sklearn}
    skipped = []
    if C.peer_installed("torchgmm", skipped):
        def torchgmm(X, y, ks, t, seed):
            return [C.sklearn_mixture(*C.torchgmm_fit(X[y == c], int(k), t, seed, device)[:3], t)
                    for c, k in enumerate(ks)]
        methods["torchgmm"] = torchgmm

    rows, raw = [], []
    for t in args.types:
        per_seed = []
        for seed in range(args.seeds):
            X, y, truth = make_five_class(seed)
            ks = truth.n_components
            Xt, yt = truth.sample(4000, seed + 1000)
            bayes = float(np.mean(truth.bayes_predict(Xt) == yt))
            for fit in methods.values():             # warm-up: first-call costs
                fit(X, y, ks, t, seed)
            times = {name: [] for name in methods}
            fitted = {}
            for _ in range(args.repeats):
                for name, fit in methods.items():
                    C.synchronize(device)
                    t0 = time.perf_counter()
                    fitted[name] = fit(X, y, ks, t, seed)
                    C.synchronize(device)
                    times[name].append(time.perf_counter() - t0)
            # The per-class peers combined with the empirical class priors, as
            # GMMClassifier's mixtures are.
            log_prior = np.log(np.bincount(y) / y.size)
            gaps = {"bayesgmm": 100 * (bayes - fitted["bayesgmm"].score(Xt, yt))}
            for name in methods:
                if name != "bayesgmm":
                    pred = np.argmax(np.stack([m.score_samples(Xt) for m in fitted[name]], 1)
                                     + log_prior, 1)
                    gaps[name] = 100 * (bayes - float(np.mean(pred == yt)))
            rec = {"type": t, "seed": seed, "true K": list(map(int, ks)), "times": times,
                   "bayesgmm n_iter": int(fitted["bayesgmm"].n_iter_)}
            for name in methods:
                rec[f"{name} s"] = statistics.median(times[name])
                rec[f"gap {name}"] = gaps[name]
            rec["ratio"] = rec["bayesgmm s"] / rec["sklearn s"]
            per_seed.append(rec)
            print(f"{t}, seed {seed}: " + ", ".join(
                f"{name} {rec[f'{name} s']:.3f} s (gap {gaps[name]:.3f})" for name in methods),
                flush=True)
        raw += per_seed
        col = lambda k: np.array([r[k] for r in per_seed])
        rows.append({"type": t, "seeds": len(per_seed),
                     "bayesgmm s": float(np.median(col("bayesgmm s"))),
                     "sklearn s": float(np.median(col("sklearn s"))),
                     "time ratio": float(np.median(col("ratio"))),
                     "time <= sk": f"{int(np.sum(col('ratio') <= 1))}/{len(per_seed)}",
                     "mean gap bayesgmm": float(col("gap bayesgmm").mean()),
                     "max gap bayesgmm": float(col("gap bayesgmm").max()),
                     "mean gap sklearn": float(col("gap sklearn").mean())}
                    | ({"torchgmm s": float(np.median(col("torchgmm s"))),
                        "mean gap torchgmm": float(col("gap torchgmm").mean())}
                       if "torchgmm" in methods else {}))
    print(f"\nfive-class study, 10,000 training points; medians over seeds of the median of "
          f"{args.repeats} fits; gaps to the Bayes-optimal accuracy in points\n")
    print(C.markdown_table(rows, [("type", "type"), ("seeds", "seeds"),
                                  ("bayesgmm s", "GMMClassifier (s)"),
                                  ("sklearn s", "5 x GaussianMixture (s)"),
                                  ("time ratio", "time ratio"), ("time <= sk", "time <= sk"),
                                  ("mean gap bayesgmm", "mean gap, ours"),
                                  ("max gap bayesgmm", "max gap, ours"),
                                  ("mean gap sklearn", "mean gap, sklearn")]
                          + ([("torchgmm s", "5 x torchgmm (s)"),
                              ("mean gap torchgmm", "mean gap, torchgmm")]
                             if "torchgmm" in methods else []), digits=4))
    C.write_json(args.json or C.default_json_path("classifier_defaults", device),
                 {"benchmark": "classifier_defaults", "quick": args.quick,
                  "command": C.argv_line(), "machine": info,
                  "settings": vars(args) | {"json": str(args.json)}, "skipped": skipped,
                  "rows": rows, "raw": raw})


if __name__ == "__main__":
    main()
