"""GMMClassifier on the five-class study against the Bayes-optimal classifier.

Protocol (issue 3): for every seed, ``make_five_class(seed)`` gives 10,000
training points and the true per-class mixtures; 20,000 fresh test points
come from ``truth.sample(4000, random_state=seed + 1000)``; the gap is the
Bayes-optimal accuracy (``truth.bayes_predict``) minus the classifier's, in
percentage points.  The bar: mean gap <= 0.15, every seed <= 0.5, both with
the true K per class and with ``n_components="auto"``.

Prints one markdown row per seed and mode, then the summary.

    python benchmarks/accuracy_five_class.py --seeds 0-9
    python benchmarks/accuracy_five_class.py --seeds 0-2 --discriminative-steps 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-9", help="seeds, '0-9' or '0,3,5' (default 0-9)")
    ap.add_argument("--modes", nargs="+", default=["true", "auto"], choices=["true", "auto"],
                    help="true K per class and/or n_components='auto'")
    ap.add_argument("--n-init", type=int, default=4)
    ap.add_argument("--max-iter", type=int, default=0,
                    help="SVI steps after EM (default 0: EM only)")
    ap.add_argument("--tol", type=float, default=1e-6, help="GMMClassifier tol (default 1e-6, its default)")
    ap.add_argument("--discriminative-steps", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="threads of torch and of the BLAS/OpenMP pools (0: defaults)")
    args = ap.parse_args(argv)

    C.apply_threads(args.threads)       # torch's threads and the BLAS/OpenMP pools
    from bayesgmm import GMMClassifier
    from bayesgmm.datasets import make_five_class

    gaps = {m: [] for m in args.modes}
    print("| seed | mode | true K | fitted K | Bayes acc | acc | gap (points) | fit s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in _seeds(args.seeds):
        X, y, truth = make_five_class(seed)
        Xt, yt = truth.sample(4000, seed + 1000)
        bayes = float(np.mean(truth.bayes_predict(Xt) == yt))
        for mode in args.modes:
            k = truth.n_components if mode == "true" else "auto"
            t = time.perf_counter()
            clf = GMMClassifier(k, covariance_type="diag", n_init=args.n_init, max_iter=args.max_iter, tol=args.tol,
                                discriminative_steps=args.discriminative_steps, device=args.device,
                                random_state=seed).fit(X, y)
            dt = time.perf_counter() - t
            acc = clf.score(Xt, yt)
            gap = 100 * (bayes - acc)
            gaps[mode].append(gap)
            print(f"| {seed} | {mode} | {truth.n_components} | {clf.n_components_.tolist()} | "
                  f"{bayes:.4f} | {acc:.4f} | {gap:.3f} | {dt:.1f} |", flush=True)
    print()
    print("| mode | seeds | mean gap | max gap | meets bar (mean <= 0.15, max <= 0.5) |")
    print("| --- | --- | --- | --- | --- |")
    for mode, g in gaps.items():
        g = np.asarray(g)
        print(f"| {mode} | {g.size} | {g.mean():.3f} | {g.max():.3f} | "
              f"{bool(g.mean() <= 0.15 and g.max() <= 0.5)} |")


if __name__ == "__main__":
    main()
