"""Classifier accuracy with full covariance against a per-class scikit-learn
``GaussianMixture(covariance_type="full")``, in one run on the same folds.

Data: scikit-learn's wine (178 x 13, 3 classes) and breast cancer (569 x 30,
2 classes), standardised inside each fold (a pipeline), 5-fold stratified
cross-validation (shuffled, seed 0).  Methods, each with K = 1, K = 2 and K
chosen per class (bayesgmm ``n_components="auto"`` by BIC over
1..``--max-k``; scikit-learn by the BIC of ``GaussianMixture`` over the same
range), class priors from the training frequencies:

* bayesgmm ``GMMClassifier(covariance_type="full")``, defaults otherwise;
* scikit-learn: one ``GaussianMixture(k, covariance_type="full")`` per
  class, its defaults (k-means init, ``reg_covar=1e-6``), combined by
  log p(x | c) + log p(c).

Run ``python benchmarks/accuracy_covariance.py --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def sklearn_per_class(k, max_k: int, covariance_type: str = "full"):
    """A per-class GaussianMixture classifier (k an int, or "bic")."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.mixture import GaussianMixture

    class PerClassGMM(ClassifierMixin, BaseEstimator):
        def __init__(self, k=1):
            self.k = k

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.models_, self.log_prior_ = [], []
            for c in self.classes_:
                Xc = X[y == c]
                if self.k == "bic":
                    fits = [GaussianMixture(j, covariance_type=covariance_type, random_state=0).fit(Xc)
                            for j in range(1, min(max_k, len(Xc)) + 1)]
                    model = min(fits, key=lambda g: g.bic(Xc))
                else:
                    model = GaussianMixture(self.k, covariance_type=covariance_type,
                                            random_state=0).fit(Xc)
                self.models_.append(model)
                self.log_prior_.append(np.log(len(Xc) / len(X)))
            return self

        def predict(self, X):
            s = np.stack([m.score_samples(X) + lp for m, lp in zip(self.models_, self.log_prior_)], 1)
            return self.classes_[s.argmax(1)]

    return PerClassGMM(k)


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--max-k", type=int, default=5)
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args()
    if args.quick:
        args.max_k, args.folds = 2, 2
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bayesgmm import GMMClassifier

    info = C.machine_info(device)
    print(C.header("accuracy_covariance", info))
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    rows = []
    for data_name, loader in (("wine", load_wine), ("breast cancer", load_breast_cancer)):
        X, y = loader(return_X_y=True)
        for k_name, k_ours, k_sk in (("1", 1, 1), ("2", 2, 2), ("BIC", "auto", "bic")):
            for method, est in (
                    ("bayesgmm GMMClassifier (full)",
                     GMMClassifier(k_ours, covariance_type="full", max_components=args.max_k,
                                   random_state=0, device=device)),
                    ("sklearn GaussianMixture per class (full)", sklearn_per_class(k_sk, args.max_k))):
                t0 = time.perf_counter()
                scores = cross_val_score(make_pipeline(StandardScaler(), est), X, y, cv=cv)
                rows.append({"data": data_name, "K": k_name, "method": method,
                             "accuracy": float(scores.mean()), "folds": scores.tolist(),
                             "seconds": time.perf_counter() - t0})
                print(f"  {data_name}, K={k_name}, {method}: {scores.mean():.4f}", flush=True)
    print(f"\n{args.folds}-fold accuracy (standardised in each fold)\n")
    print(C.markdown_table(rows, [("data", "data"), ("K", "K per class"), ("method", "method"),
                                  ("accuracy", "accuracy"), ("seconds", "seconds")]))
    C.write_json(args.json or C.default_json_path("accuracy_covariance", device),
                 {"benchmark": "accuracy_covariance", "quick": args.quick,
                  "command": C.argv_line(), "machine": info,
                  "settings": vars(args) | {"json": str(args.json)}, "rows": rows})


if __name__ == "__main__":
    main()
