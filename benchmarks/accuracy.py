"""Accuracy side by side: the five-class study against the Bayes limit, iris
clustering ARI, and the two-ring (circles) study.

Five-class protocol (issue 3): for every seed, ``make_five_class(seed)``
gives 10,000 training points and the true per-class mixtures; 20,000 fresh
test points come from ``truth.sample(4000, random_state=seed + 1000)`` (as in
benchmarks/accuracy_five_class.py); the
Bayes-optimal accuracy is that of ``truth.bayes_predict`` on them, and each
method's gap is Bayes-optimal minus its accuracy, in percentage points.

Methods: bayesgmm ``GMMClassifier`` (true K per class, and "auto"); the
original study's gradient-trained PyTorch GMM classifier (re-implemented
below: it lives only in this benchmark); scikit-learn per-class
``GaussianMixture`` (diag) with the true K and with K chosen by BIC in
1..10; scikit-learn ``MLPClassifier``; QDA; pomegranate per-class
``GeneralMixtureModel`` (true K) when installed.

Run ``python benchmarks/accuracy.py --help``.
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


# ----------------------------------------------------------------------------
# The original study's classifier (benchmark code only)
# ----------------------------------------------------------------------------
class GradientGMMClassifier:
    """Per-class diagonal Gaussian mixtures trained by gradient descent, as in
    the original PyTorch GMM-classifier study.

    Every class c has learnable mixture logits (K_c,), means (K_c, D) and
    log-scales (K_c, D); the class logit of a point is
    log p(x | c) = logsumexp_k(log_softmax(logits)_k + log N(x | mu_ck, exp(log_s_ck)))
    plus log p(c) (training frequencies).  All parameters are trained
    together by Adam on the cross-entropy of these class logits over all
    training data (full batch), i.e. the negative log of p(c | x) built from
    the class-conditional likelihoods.  Means start at random training
    points of their class, log-scales at 0 (unit scale) and logits at 0
    (equal weights): the usual initialisation of such write-ups.  Classes
    are padded to the largest K and batched (no Python loop over classes).
    """

    def __init__(self, n_components: Sequence[int], *, epochs: int = 2000, lr: float = 0.01,
                 objective: str = "ce", random_state: int = 0, device: str = "cpu"):
        self.n_components = list(n_components)
        self.epochs = epochs
        self.lr = lr
        self.objective = objective
        self.random_state = random_state
        self.device = device

    def _class_loglik(self, X):
        import torch

        x = X.unsqueeze(0).unsqueeze(-2)                                  # (1, N, 1, D)
        mu = self.means_.unsqueeze(1)                                     # (C, 1, K, D)
        ls = self.log_scales_.unsqueeze(1)
        comp = (-0.5 * ((x - mu) * torch.exp(-ls)) ** 2 - ls
                - 0.5 * math.log(2 * math.pi)).sum(-1)                    # (C, N, K)
        logw = torch.log_softmax(self.logits_.masked_fill(~self.mask_, -math.inf), -1)
        return torch.logsumexp(comp + logw.unsqueeze(1), -1).T           # (N, C)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GradientGMMClassifier":
        import torch

        g = torch.Generator().manual_seed(self.random_state)
        self.classes_, yi = np.unique(y, return_inverse=True)
        n_classes, D = len(self.classes_), X.shape[1]
        Kmax = max(self.n_components)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device)
        yt = torch.as_tensor(yi, device=self.device)
        means = torch.zeros(n_classes, Kmax, D)
        for c in range(n_classes):   # K_c random points per class, once, at init
            pts = np.flatnonzero(yi == c)
            pick = torch.randperm(len(pts), generator=g)[: Kmax] % len(pts)
            means[c] = torch.as_tensor(X[pts[pick.numpy()]], dtype=torch.float32)
        self.mask_ = (torch.arange(Kmax).unsqueeze(0)
                      < torch.tensor(self.n_components).unsqueeze(1)).to(self.device)
        self.means_ = means.to(self.device).requires_grad_(True)
        self.log_scales_ = torch.zeros(n_classes, Kmax, D, device=self.device, requires_grad=True)
        self.logits_ = torch.zeros(n_classes, Kmax, device=self.device, requires_grad=True)
        counts = np.bincount(yi, minlength=n_classes)
        self.log_prior_ = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32,
                                                    device=self.device))
        opt = torch.optim.Adam([self.means_, self.log_scales_, self.logits_], lr=self.lr)
        for _ in range(self.epochs):
            opt.zero_grad()
            ll = self._class_loglik(Xt)
            if self.objective == "ce":
                loss = torch.nn.functional.cross_entropy(ll + self.log_prior_, yt)
            else:  # "nll": each class's mixture on its own points (generative)
                loss = -ll.gather(1, yt.unsqueeze(1)).mean()
            loss.backward()
            opt.step()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            ll = self._class_loglik(torch.as_tensor(X, dtype=torch.float32, device=self.device))
            return self.classes_[(ll + self.log_prior_).argmax(1).cpu().numpy()]


# ----------------------------------------------------------------------------
# Per-class peers
# ----------------------------------------------------------------------------
class PerClassSklearnGMM:
    """scikit-learn ``GaussianMixture`` (diag) per class; predict is the
    argmax of ``score_samples`` + log class frequency.  ``n_components``: a
    list (one K per class) or a range of K to choose from by BIC."""

    def __init__(self, n_components: Optional[Sequence[int]] = None,
                 bic_range: Optional[Sequence[int]] = None, random_state: int = 0):
        self.n_components = n_components
        self.bic_range = bic_range
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.mixture import GaussianMixture

        self.classes_, yi = np.unique(y, return_inverse=True)
        self.models_, self.chosen_k_ = [], []
        for c in range(len(self.classes_)):
            Xc = X[yi == c]
            ks = [self.n_components[c]] if self.bic_range is None else list(self.bic_range)
            fits = [GaussianMixture(k, covariance_type="diag", random_state=self.random_state).fit(Xc)
                    for k in ks if k <= len(Xc)]
            best = min(fits, key=lambda m: m.bic(Xc))
            self.models_.append(best)
            self.chosen_k_.append(best.n_components)
        counts = np.bincount(yi)
        self.log_prior_ = np.log(counts / counts.sum())
        return self

    def decision(self, X):
        return np.stack([m.score_samples(X) for m in self.models_], 1) + self.log_prior_

    def predict(self, X):
        return self.classes_[self.decision(X).argmax(1)]


class PerClassPomegranate:
    """pomegranate ``GeneralMixtureModel`` of diagonal ``Normal`` per class
    (true K); predict is the argmax of ``log_probability`` + log class
    frequency (what pomegranate's ``BayesClassifier`` computes)."""

    def __init__(self, n_components: Sequence[int], random_state: int = 0, device: str = "cpu",
                 max_iter: int = 1000, tol: float = 0.1):
        self.n_components = list(n_components)
        self.random_state = random_state
        self.device = device
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        import torch

        self.classes_, yi = np.unique(y, return_inverse=True)
        self.models_ = []
        for c in range(len(self.classes_)):
            Xc = torch.as_tensor(X[yi == c], dtype=torch.float32, device=self.device)
            m = C.pomegranate_gmm(self.n_components[c], self.max_iter, self.tol,
                                  self.random_state, self.device)
            self.models_.append(m.fit(Xc))
        counts = np.bincount(yi)
        self.log_prior_ = np.log(counts / counts.sum())
        return self

    def predict(self, X):
        import torch

        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            ll = torch.stack([m.log_probability(Xt) for m in self.models_], 1).double().cpu().numpy()
        return self.classes_[(ll + self.log_prior_).argmax(1)]


# ----------------------------------------------------------------------------
# Studies
# ----------------------------------------------------------------------------
def bgmm_kwargs(args) -> dict:
    """bayesgmm settings given on the command line (library defaults otherwise)."""
    kw = {}
    if args.bgmm_max_iter is not None and args.bgmm_max_iter >= 0:
        kw["max_iter"] = args.bgmm_max_iter
    if args.bgmm_em_max_iter is not None:
        kw["em_max_iter"] = args.bgmm_em_max_iter
    return kw


def five_class_methods(args, device: str, skipped: list) -> dict[str, Callable]:
    """name -> factory(true_ks, seed) returning an unfitted estimator."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.neural_network import MLPClassifier

    methods: dict[str, Callable] = {}
    GMMClassifier = C.gmm_classifier_class()
    if GMMClassifier is None:
        skipped.append(C.skip_line("bayesgmm GMMClassifier", "bayesgmm.classifier not importable yet"))
    else:
        kw = bgmm_kwargs(args)
        methods["bayesgmm GMMClassifier (true K)"] = lambda ks, seed: GMMClassifier(covariance_type="diag",
            n_components=list(ks), device=device, random_state=seed, **kw)
        methods["bayesgmm GMMClassifier (auto)"] = lambda ks, seed: GMMClassifier(covariance_type="diag",
            n_components="auto", device=device, random_state=seed, **kw)
    methods["original gradient-trained GMM (true K)"] = lambda ks, seed: GradientGMMClassifier(
        ks, epochs=args.gd_epochs, lr=args.gd_lr, random_state=seed, device=device)
    methods["sklearn GaussianMixture per class (true K)"] = lambda ks, seed: PerClassSklearnGMM(
        n_components=ks, random_state=seed)
    methods["sklearn GaussianMixture per class (BIC K)"] = lambda ks, seed: PerClassSklearnGMM(
        bic_range=range(1, args.max_k + 1), random_state=seed)
    methods["sklearn MLPClassifier"] = lambda ks, seed: MLPClassifier(
        hidden_layer_sizes=tuple(args.mlp_hidden), max_iter=args.mlp_max_iter, random_state=seed)
    methods["sklearn QDA"] = lambda ks, seed: QuadraticDiscriminantAnalysis()
    if C.peer_installed("pomegranate", skipped):
        methods["pomegranate GeneralMixtureModel per class (true K)"] = \
            lambda ks, seed: PerClassPomegranate(ks, random_state=seed, device=device)
    if args.methods:
        keep = [m for m in methods if any(s.lower() in m.lower() for s in args.methods)]
        methods = {m: methods[m] for m in keep}
    return methods


def five_class_study(args, device: str, skipped: list,
                     on_seed: Optional[Callable[[list], None]] = None) -> dict:
    from bayesgmm.datasets import make_five_class

    methods = five_class_methods(args, device, skipped)
    per_seed = []
    for seed in args.seeds:
        X, y, truth = make_five_class(seed)
        Xte, yte = truth.sample(args.n_test_per_class, random_state=seed + 1000)
        bayes = float((truth.bayes_predict(Xte) == yte).mean())
        row = {"seed": seed, "true_k": truth.n_components, "bayes_accuracy": bayes,
               "accuracy": {}, "gap_points": {}, "fit_seconds": {}}
        for name, make in methods.items():
            est = make(truth.n_components, seed)
            t0 = time.perf_counter()
            try:
                est.fit(X, y)
            except Exception as exc:  # a peer failing is a result, not a crash of the suite
                row["accuracy"][name] = None
                row.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"  seed {seed}: {name} failed: {exc}", flush=True)
                continue
            C.synchronize(device)
            row["fit_seconds"][name] = time.perf_counter() - t0
            acc = float((np.asarray(est.predict(Xte)) == yte).mean())
            row["accuracy"][name] = acc
            row["gap_points"][name] = 100 * (bayes - acc)
        print(f"  seed {seed}: Bayes-optimal {100 * bayes:.2f}%; gaps (points): " + "; ".join(
            f"{n}: {row['gap_points'].get(n, float('nan')):+.2f}" for n in methods), flush=True)
        per_seed.append(row)
        if on_seed is not None:
            on_seed(per_seed)

    summary = []
    bayes_all = np.array([r["bayes_accuracy"] for r in per_seed])
    summary.append({"method": "Bayes-optimal (true mixtures)", "mean_accuracy": 100 * bayes_all.mean(),
                    "mean_gap": 0.0, "max_gap": 0.0, "mean_fit_s": None})
    for name in methods:
        gaps = np.array([r["gap_points"][name] for r in per_seed if name in r["gap_points"]])
        accs = np.array([r["accuracy"][name] for r in per_seed if r["accuracy"].get(name) is not None])
        times = np.array([r["fit_seconds"][name] for r in per_seed if name in r["fit_seconds"]])
        summary.append({
            "method": name, "seeds": int(gaps.size),
            "mean_accuracy": 100 * accs.mean() if accs.size else None,
            "mean_gap": gaps.mean() if gaps.size else None,
            "max_gap": gaps.max() if gaps.size else None,
            "mean_fit_s": times.mean() if times.size else None,
        })
    return {"protocol": {"seeds": list(args.seeds), "train": "make_five_class(seed): 2000 per class",
                         "test": f"truth.sample({args.n_test_per_class}, random_state=seed + 1000)",
                         "gap": "100 * (Bayes-optimal accuracy - accuracy), percentage points"},
            "settings": {"bayesgmm": bgmm_kwargs(args) or "library defaults",
                         "original_gradient_gmm": {"epochs": args.gd_epochs, "lr": args.gd_lr,
                                                   "optimizer": "Adam, full batch",
                                                   "objective": "cross-entropy of class logits",
                                                   "init": "means at random class points, "
                                                           "log-scales 0, logits 0",
                                                   "components": "true K per class"},
                         "mlp": {"hidden_layer_sizes": list(args.mlp_hidden),
                                 "max_iter": args.mlp_max_iter},
                         "bic_range": [1, args.max_k]},
            "summary": summary, "per_seed": per_seed}


def iris_study(args, device: str) -> dict:
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from bayesgmm import BayesianGMM
    from bayesgmm.datasets import load_iris

    iris = load_iris()
    tasks = {
        "1-D petal_length, K=2 (setosa vs not)": (
            iris[["petal_length"]].to_numpy(), (iris["species"] == "setosa").to_numpy().astype(int), 2),
        "4-D, K=3 (species)": (
            iris.drop(columns="species").to_numpy(),
            iris["species"].astype("category").cat.codes.to_numpy(), 3),
    }
    rows = []
    for task, (X, truth, K) in tasks.items():
        for method in ("bayesgmm BayesianGMM", "sklearn GaussianMixture (diag)"):
            aris = []
            for seed in args.seeds:
                if method.startswith("bayesgmm"):
                    labels = BayesianGMM(K, covariance_type="diag", device=device, random_state=seed).fit_predict(X)
                else:
                    labels = GaussianMixture(K, covariance_type="diag", random_state=seed).fit_predict(X)
                aris.append(adjusted_rand_score(truth, labels))
            aris = np.array(aris)
            rows.append({"task": task, "method": method, "mean_ari": aris.mean(),
                         "min_ari": aris.min(), "max_ari": aris.max(), "seeds": int(aris.size)})
    return {"rows": rows}


def circles_study(args, device: str, skipped: list) -> dict:
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from bayesgmm.datasets import make_circles

    X, y = make_circles(1000, noise=0.01, random_state=42)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=42)
    methods = {}
    GMMClassifier = C.gmm_classifier_class()
    if GMMClassifier is None:
        skipped.append(C.skip_line("circles: bayesgmm GMMClassifier",
                                   "bayesgmm.classifier not importable yet"))
    else:
        k = args.circles_components
        methods[f"bayesgmm GMMClassifier ({k})"] = lambda: GMMClassifier(covariance_type="diag",
            n_components=k if k == "auto" else int(k), device=device, random_state=0,
            **bgmm_kwargs(args))
    methods["sklearn MLPClassifier"] = lambda: MLPClassifier(
        hidden_layer_sizes=tuple(args.mlp_hidden), max_iter=args.mlp_max_iter, random_state=0)
    methods["sklearn QDA"] = lambda: QuadraticDiscriminantAnalysis()
    rows = []
    for name, make in methods.items():
        t0 = time.perf_counter()
        est = make().fit(Xtr, ytr)
        rows.append({"method": name, "test_accuracy": 100 * float((est.predict(Xte) == yte).mean()),
                     "fit_s": time.perf_counter() - t0})
    return {"protocol": "make_circles(1000, noise=0.01, random_state=42); "
                        "train_test_split(test_size=0.2, random_state=42)", "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)),
                   help="five-class (and iris) seeds")
    p.add_argument("--n-test-per-class", type=int, default=4000,
                   help="fresh test points per class (5 classes)")
    p.add_argument("--gd-epochs", type=int, default=2000,
                   help="Adam epochs of the original gradient-trained classifier")
    p.add_argument("--gd-lr", type=float, default=0.01)
    p.add_argument("--mlp-hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--mlp-max-iter", type=int, default=1000)
    p.add_argument("--max-k", type=int, default=10, help="BIC range 1..max-k for sklearn")
    p.add_argument("--bgmm-max-iter", type=int, default=0,
                   help="GMMClassifier max_iter (SVI steps after EM); 0 = EM only, as in "
                        "accuracy_five_class.py; -1 = the library default (1000; slow on CPU)")
    p.add_argument("--bgmm-em-max-iter", type=int, default=None,
                   help="GMMClassifier em_max_iter; default: the library's")
    p.add_argument("--circles-components", default="auto",
                   help="n_components of the bayesgmm classifier in the circles study "
                        "('auto' or an int)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only the five-class methods whose names contain one of these strings")
    p.add_argument("--studies", nargs="+", default=["five_class", "iris", "circles"],
                   choices=["five_class", "iris", "circles"])
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.n_test_per_class = min(args.n_test_per_class, 1000)
        args.gd_epochs = min(args.gd_epochs, 200)
        args.mlp_max_iter = min(args.mlp_max_iter, 200)
    device = C.resolve_device(args.device)
    C.apply_threads(args.threads)
    C.warn_filter()
    info = C.machine_info(device)
    print(C.header("Accuracy", info), flush=True)
    skipped: list = []
    result = {"benchmark": "accuracy", "command": C.argv_line(), "quick": args.quick,
              "machine": info, "skipped": skipped}

    if "five_class" in args.studies:
        print(f"Five-class study, seeds {args.seeds}:", flush=True)
        t0 = time.perf_counter()
        path = args.json or C.default_json_path("accuracy", device)

        def save_partial(per_seed):
            # An interrupted long run keeps the seeds it finished.
            C.write_json(path, {**result, "complete": False,
                                "five_class": {"per_seed": per_seed}}, quiet=True)
        five = five_class_study(args, device, skipped, save_partial)
        five["seconds"] = time.perf_counter() - t0
        result["five_class"] = five
        print("\n### Five-class study: accuracy and gap to the Bayes-optimal classifier\n")
        print(C.markdown_table(five["summary"], [
            ("method", "method"), ("seeds", "seeds"), ("mean_accuracy", "mean accuracy (%)"),
            ("mean_gap", "mean gap (points)"), ("max_gap", "max gap (points)"),
            ("mean_fit_s", "mean fit time (s)")]))
    if "iris" in args.studies:
        t0 = time.perf_counter()
        iris = iris_study(args, device)
        iris["seconds"] = time.perf_counter() - t0
        result["iris"] = iris
        print("\n### Iris clustering: adjusted Rand index over seeds\n")
        print(C.markdown_table(iris["rows"], [
            ("task", "task"), ("method", "method"), ("mean_ari", "mean ARI"),
            ("min_ari", "min ARI"), ("max_ari", "max ARI"), ("seeds", "seeds")]))
    if "circles" in args.studies:
        t0 = time.perf_counter()
        circ = circles_study(args, device, skipped)
        circ["seconds"] = time.perf_counter() - t0
        result["circles"] = circ
        print("\n### Two rings (circles): test accuracy\n")
        print(C.markdown_table(circ["rows"], [
            ("method", "method"), ("test_accuracy", "test accuracy (%)"), ("fit_s", "fit time (s)")]))
    result["complete"] = True
    C.write_json(args.json or C.default_json_path("accuracy", device), result)
    return result


if __name__ == "__main__":
    main()
