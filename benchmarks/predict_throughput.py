"""Classifier prediction throughput: points per second of ``predict`` on N
points (default 1e7 on GPU, 1e6 on CPU), 5 classes, 8 components per class,
D = 2.

Every classifier is fitted on the five-class study's training data
(``make_five_class(0)``, 10,000 points) with 8 components per class; the N
test points are fresh draws from the same process.  The timed call is the
whole ``predict``: numpy float64 in, labels out (host-device copies
included), median of ``--repeats`` after a warm-up call, GPU synchronised.
On CUDA, bayesgmm and pomegranate are also timed the way a GPU pipeline
calls them: a float32 CUDA tensor in, a CUDA tensor of labels out (the test
set is copied to the GPU once, before timing).

Methods: bayesgmm ``GMMClassifier`` (EM-only fit, ``max_iter=0``: the fit
does not change the cost of prediction), scikit-learn per-class
``GaussianMixture`` (diag; argmax of ``score_samples`` + log prior),
pomegranate per-class ``GeneralMixtureModel`` (argmax of
``log_probability`` + log prior) and torchgmm per-class ``GaussianMixture``
(its estimator's ``score_samples``, which runs a Lightning ``predict``
loop, and its fitted module's forward called directly) when installed.  ``agreement`` is the
fraction of points on which a method's labels equal scikit-learn's.

Run ``python benchmarks/predict_throughput.py --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def tensor_input(predict: Callable, device: str) -> Callable:
    """``predict`` called the GPU user's way: a float32 tensor on ``device``
    in, a tensor of labels out (no host round trip).  The test set is copied
    to the device once, on the first (untimed, warm-up) call."""
    import torch

    cache: dict = {}

    def run(Z):
        if id(Z) not in cache:
            cache.clear()
            cache[id(Z)] = torch.as_tensor(Z, dtype=torch.float32, device=device)
        return predict(cache[id(Z)])
    return run


def fit_methods(X, y, K: int, device: str, seed: int, fit_iter: int, skipped: list,
                wanted: Optional[Sequence[str]] = None) -> dict[str, Callable]:
    """name -> predict function (numpy (N, D) -> labels), each fitted on (X, y);
    only the methods whose names contain one of ``wanted`` (all when None)."""
    import torch
    from sklearn.mixture import GaussianMixture

    classes, yi = np.unique(y, return_inverse=True)
    counts = np.bincount(yi)
    log_prior = np.log(counts / counts.sum())
    out: dict[str, Callable] = {}

    def want(name: str) -> bool:
        return not wanted or any(s.lower() in name.lower() for s in wanted)

    GMMClassifier = C.gmm_classifier_class()
    if not want("bayesgmm"):
        pass
    elif GMMClassifier is not None:
        clf = GMMClassifier(covariance_type="diag", n_components=K, max_iter=0, em_max_iter=fit_iter, device=device,
                            random_state=seed).fit(X, y)
        out[f"bayesgmm GMMClassifier ({device})"] = clf.predict
        if device == "cuda":
            out[f"bayesgmm GMMClassifier ({device}, CUDA tensor in and out)"] = \
                tensor_input(clf.predict, device)
    else:
        # Stand-in until the classifier exists: per-class BayesianGMM densities.
        from bayesgmm import BayesianGMM
        skipped.append(C.skip_line("bayesgmm GMMClassifier", "not importable; timing a stand-in "
                                   "(per-class BayesianGMM.score_samples argmax)"))
        gmms = [BayesianGMM(K, covariance_type="diag", max_iter=0, em_max_iter=fit_iter, device=device,
                            random_state=seed).fit(X[yi == c]) for c in range(len(classes))]
        out[f"bayesgmm per-class BayesianGMM stand-in ({device})"] = lambda Z: classes[np.argmax(
            np.stack([g.score_samples(Z) for g in gmms], 1) + log_prior, 1)]

    if want("sklearn"):
        sk = [GaussianMixture(K, covariance_type="diag", max_iter=fit_iter,
                              random_state=seed).fit(X[yi == c]) for c in range(len(classes))]
        out["sklearn GaussianMixture per class (cpu)"] = lambda Z: classes[np.argmax(
            np.stack([g.score_samples(Z) for g in sk], 1) + log_prior, 1)]

    if want("pomegranate") and C.peer_installed("pomegranate", skipped):
        pg = []
        for c in range(len(classes)):
            Xc = torch.as_tensor(X[yi == c], dtype=torch.float32, device=device)
            pg.append(C.pomegranate_gmm(K, fit_iter, 0.1, seed, device).fit(Xc))
        lp = torch.as_tensor(log_prior, dtype=torch.float32, device=device)

        def pom_labels(Zt):   # class indices of a tensor of points, on its device
            with torch.no_grad():
                return (torch.stack([m.log_probability(Zt) for m in pg], 1) + lp).argmax(1)

        def pom_predict(Z):
            Zt = torch.as_tensor(Z, dtype=torch.float32, device=device)
            return classes[pom_labels(Zt).cpu().numpy()]
        out[f"pomegranate GeneralMixtureModel per class ({device})"] = pom_predict
        if device == "cuda":
            out[f"pomegranate GeneralMixtureModel per class ({device}, CUDA tensor in and out)"] = \
                tensor_input(pom_labels, device)
    if want("torchgmm") and C.peer_installed("torchgmm", skipped):
        import warnings
        # At its default 100 epochs: torchgmm hands max_epochs on to its
        # k-means start too, and --quick's 10 left a class's fit NaN.
        tg = [C.torchgmm_estimator(X[yi == c], K, "diag", seed, device)
              for c in range(len(classes))]
        lp_t = torch.as_tensor(log_prior, dtype=torch.float32, device=device)

        def tg_predict(Z):     # its estimator API: score_samples gives each point's NLL
            Zt = torch.as_tensor(Z, dtype=torch.float32, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nll = torch.stack([m.score_samples(Zt).reshape(-1) for m in tg], 1)
            return classes[(lp_t.cpu() - nll.cpu()).argmax(1).numpy()]

        def tg_labels(Zt):     # its fitted module's forward: (log responsibilities, log p(x))
            with torch.no_grad():
                return (torch.stack([m.model_(Zt)[1] for m in tg], 1) + lp_t).argmax(1)
        out[f"torchgmm GaussianMixture per class ({device}, score_samples)"] = tg_predict
        out[f"torchgmm GaussianMixture per class ({device}, module forward)"] = \
            lambda Z: classes[tg_labels(torch.as_tensor(Z, dtype=torch.float32,
                                                        device=device)).cpu().numpy()]
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=None,
                   help="points to predict (default 1e7 on GPU, 1e6 on CPU)")
    p.add_argument("--k", type=int, default=8, help="components per class")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-iter", type=int, default=100,
                   help="EM iterations of the fits (prediction cost does not depend on them)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only methods whose names contain one of these strings")
    args = p.parse_args(argv)
    device = C.resolve_device(args.device)
    if args.n is None:
        args.n = 1e7 if device == "cuda" else 1e6
    if args.quick:
        args.n = min(args.n, 20_000)
        args.repeats = 1
        args.fit_iter = min(args.fit_iter, 10)
    N = int(args.n)
    C.apply_threads(args.threads)
    C.warn_filter()
    info = C.machine_info(device)
    print(C.header("Classifier prediction throughput", info), flush=True)
    skipped: list = []

    from bayesgmm.datasets import make_five_class
    X, y, truth = make_five_class(args.seed)
    n_classes = truth.n_classes
    Xte, _ = truth.sample(-(-N // n_classes), random_state=args.seed + 1)
    Xte = np.ascontiguousarray(Xte[:N])
    methods = fit_methods(X, y, args.k, device, args.seed, args.fit_iter, skipped, args.methods)

    rows, labels = [], {}
    for name, predict in methods.items():
        try:
            seconds, times, out = C.time_call(lambda: predict(Xte), device, repeats=args.repeats)
        except Exception as exc:  # e.g. out of memory: a result, not a crash
            rows.append({"method": name, "N": N, "error": f"{type(exc).__name__}: {exc}"})
            print(f"  {name}: failed: {exc}", flush=True)
            continue
        if hasattr(out, "cpu"):  # tensor outputs: labels compared on the host, after timing
            out = out.cpu().numpy()
            if "pomegranate" in name:
                out = np.unique(y)[out]
        labels[name] = np.asarray(out)
        rows.append({"method": name, "N": N, "seconds": seconds, "all_seconds": times,
                     "points_per_second": N / seconds})
        print(f"  {name}: {seconds:.4g} s, {N / seconds:.3g} points/s", flush=True)
    ref = next((v for k, v in labels.items() if k.startswith("sklearn")), None)
    for r in rows:
        if ref is not None and r["method"] in labels:
            r["agreement_with_sklearn"] = float((labels[r["method"]] == ref).mean())
    print(f"\n### predict throughput, N={N:.0e}, {n_classes} classes x {args.k} components, D=2\n")
    print(C.markdown_table(rows, [("method", "method"), ("N", "N"), ("seconds", "predict time (s)"),
                                  ("points_per_second", "points / s"),
                                  ("agreement_with_sklearn", "agreement with sklearn")]))
    result = {"benchmark": "predict_throughput", "command": C.argv_line(), "quick": args.quick,
              "machine": info, "skipped": skipped, "n": N, "n_classes": n_classes, "k": args.k,
              "rows": rows}
    C.write_json(args.json or C.default_json_path("predict_throughput", device), result)
    return result


if __name__ == "__main__":
    main()
