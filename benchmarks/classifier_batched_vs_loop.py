"""Batched per-class fitting (GMMClassifier) against a Python loop of separate
BayesianGMM fits, one per class, on the five-class data.

Same data, same settings for both: n_init restarts, closed-form MAP-EM to
``tol`` (SVI off, ``max_iter=0``), k-means++ starts, CPU float32.  The loop
fits each class's points with ``BayesianGMM(K_c, covariance_type="diag")``; the batched fit does all
classes (and all restarts) in one EM loop.  With ``--auto`` both also choose
K in 1..10 per class by BIC (the loop fits 10 BayesianGMMs per class).

Prints a markdown table of wall-clock seconds (median of ``--repeats``) and
the speed-up, plus the test accuracy of each, so the speed is not bought with
a worse fit.

    python benchmarks/classifier_batched_vs_loop.py --seeds 0,1 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import statistics
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def loop_fit(X, y, ks, n_init, tol, seed, device):
    """One BayesianGMM per class (ks: list of K, or None for BIC over 1..10);
    returns a predict function."""
    from bayesgmm import BayesianGMM

    classes = np.unique(y)
    models = []
    for i, c in enumerate(classes):
        Xc = X[y == c]
        if ks is None:
            fits = [BayesianGMM(k, covariance_type="diag", n_init=n_init, max_iter=0, tol=tol, device=device,
                                random_state=seed).fit(Xc) for k in range(1, 11)]
            models.append(min(fits, key=lambda m: m.bic(Xc)))
        else:
            models.append(BayesianGMM(ks[i], covariance_type="diag", n_init=n_init, max_iter=0, tol=tol, device=device,
                                      random_state=seed).fit(Xc))
    prior = np.log(np.bincount(np.searchsorted(classes, y)) / y.size)

    def predict(Xt):
        return classes[np.argmax(np.stack([m.score_samples(Xt) for m in models], 1) + prior, 1)]
    return predict


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of make_five_class")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--n-init", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--auto", action="store_true", help="also time K chosen by BIC in 1..10")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="threads of torch and of the BLAS/OpenMP pools (0: the defaults)")
    args = ap.parse_args(argv)

    import torch
    C.apply_threads(args.threads)       # torch's threads and the BLAS/OpenMP pools
    from bayesgmm import GMMClassifier
    from bayesgmm.datasets import make_five_class

    print(f"torch threads: {torch.get_num_threads()}, device: {args.device}\n")
    print("| seed | K | batched s | loop s | speed-up | batched acc | loop acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        X, y, truth = make_five_class(seed)
        Xt, yt = truth.sample(4000, seed + 1000)
        for mode in ["true"] + (["auto"] if args.auto else []):
            ks = truth.n_components if mode == "true" else None
            def batched():
                return GMMClassifier(ks if ks else "auto", covariance_type="diag",
                                     n_init=args.n_init, max_iter=0, tol=args.tol,
                                     device=args.device, random_state=seed).fit(X, y)

            def loop():
                return loop_fit(X, y, ks, args.n_init, args.tol, seed, args.device)

            batched(), loop()                 # one untimed run of each: first-call costs
            tb, tl = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                clf = batched()
                tb.append(time.perf_counter() - t)
                t = time.perf_counter()
                pred = loop()
                tl.append(time.perf_counter() - t)
            b, l_ = statistics.median(tb), statistics.median(tl)
            print(f"| {seed} | {mode} {ks if ks else ''} | {b:.2f} | {l_:.2f} | {l_ / b:.2f}x | "
                  f"{clf.score(Xt, yt):.4f} | {np.mean(pred(Xt) == yt):.4f} |", flush=True)


if __name__ == "__main__":
    main()
