"""Mixtures fitted to data with entries missing completely at random:
bayesgmm's ``missing="marginalize"`` against complete-case deletion and mean
imputation followed by scikit-learn's ``GaussianMixture``, and
``BayesianGMM.impute`` against scikit-learn's ``SimpleImputer(mean)`` and
``KNNImputer``, in one run on the same data.

Data: (a) synthetic, D=5 (``--features``), K=3 overlapping full-covariance Gaussians (means
and covariances drawn per seed, weights 0.5/0.3/0.2), 600 training and 5,000
held-out points; (b) scikit-learn's wine (178 x 13), standardised, 70/30
split per seed.  Entries of the training data are hidden completely at
random at each rate (no row left empty); the held-out data are complete.

Measured per seed, then averaged (times: the median):

* held-out log-likelihood per point (higher is better);
* parameter error: max |mu - mu_ref| over features, averaged over the
  components matched by the Hungarian algorithm, in standardised units of
  the data (the reference: the true means for synthetic data, the means of
  the same method fitted on the complete training data for wine);
* imputation RMSE over the hidden entries (in the data's units for
  synthetic data, standardised for wine);
* each fit's wall time, the fit alone, after one untimed fit of each library
  (the median over seeds; the imputers' are not timed).

Methods (all with K=3, full covariances or ``--covariance-type``, the
libraries' default settings):
"marginalize" = ``BayesianGMM(missing="marginalize")`` with its default
priors, and with a covariance prior worth D points of half each feature's
variance (``Priors(covariance_dof=2D+1, covariance_scale=D/2 x variance)``;
Wishart priors only: full and tied);
"complete-case +
sklearn GMM" = ``GaussianMixture`` on the rows without missing entries (not
fitted when fewer such rows than the components need); "mean-impute +
sklearn GMM" = ``SimpleImputer(mean)`` then ``GaussianMixture``.

Run ``python benchmarks/missing_values.py --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

K = 3
OURS = "marginalize (bayesgmm, default priors)"
OURS_PRIOR = "marginalize (bayesgmm, prior: D points)"


def synthetic(seed: int, n_train: int, n_test: int, D: int = 5):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2.0, (K, D))
    covs = []
    for _ in range(K):
        A = rng.normal(size=(D, D))
        covs.append(A @ A.T / D + 0.3 * np.eye(D))
    w = np.array([0.5, 0.3, 0.2])

    def draw(n):
        z = rng.choice(K, n, p=w)
        return np.stack([rng.multivariate_normal(means[k], covs[k]) for k in z])

    return draw(n_train), draw(n_test), means


def wine(seed: int):
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    tr, te = train_test_split(X, test_size=0.3, random_state=seed, stratify=y)
    sc = StandardScaler().fit(tr)
    return sc.transform(tr), sc.transform(te), None


def hide(X: np.ndarray, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    Xm = X.copy()
    Xm[rng.random(X.shape) < rate] = np.nan
    empty = np.isnan(Xm).all(1)
    keep_col = rng.integers(0, X.shape[1], empty.sum())
    Xm[np.flatnonzero(empty), keep_col] = X[np.flatnonzero(empty), keep_col]
    return Xm


def mean_error(means: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    cost = np.abs((means[:, None, :] - ref[None, :, :]) / scale).max(-1)
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--wine-rate", type=float, default=0.3)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--features", type=int, default=5,
                   help="D of the synthetic data (the speed of wide fits: e.g. --features 30 "
                        "--n-train 5000 --rates 0.1 0.3)")
    p.add_argument("--covariance-type", default="full",
                   choices=["full", "tied", "diag", "spherical"],
                   help="covariance type of every mixture fitted (the data stay full)")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.rates, args.n_train, args.n_test = 1, [0.3], 300, 1000
    C.apply_threads(args.threads)
    C.warn_filter()
    device = C.resolve_device(args.device)
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.mixture import GaussianMixture

    from bayesgmm import BayesianGMM, Priors

    info = C.machine_info(device)
    print(C.header("missing_values", info))

    def fit_ours(X, prior: bool = False):
        # prior=True: a Wishart prior worth D points of half each feature's
        # variance (nu = 2D + 1, Psi = D x 0.5 x variance): the default
        # (nu = D + 2, Psi = 2 s^2, one point's worth of scatter at twice a
        # typical component's variance) leaves full covariances of 13
        # features from ~40 points per component poorly determined in
        # poorly observed directions.
        D = X.shape[1]
        priors = (Priors(covariance_dof=2 * D + 1, covariance_scale=D * 0.5 * np.nanvar(X, 0))
                  if prior else None)
        return BayesianGMM(K, covariance_type=cov_type, missing="marginalize", priors=priors,
                           random_state=0, device=device).fit(X)

    def fit_sk(X):
        return GaussianMixture(K, covariance_type=cov_type, random_state=0).fit(X)

    def timed(fit):
        """A fit and its wall time (the fit alone: scoring comes after)."""
        t0 = time.perf_counter()
        est = fit()
        return est, time.perf_counter() - t0

    cov_type = args.covariance_type
    wishart = cov_type in ("full", "tied")
    ours_methods = ((OURS, "ours"), (OURS_PRIOR, "prior")) if wishart else ((OURS, "ours"),)

    cases = ([(f"synthetic D={args.features} K=3", r) for r in args.rates]
             + [("wine", args.wine_rate)])
    rows = []
    # One untimed fit of each library first: the first fit in a process
    # pays one-off costs (imports, allocations) that the others do not.
    warm = hide(synthetic(0, 200, 1, args.features)[0], cases[0][1], 0)
    fit_ours(warm)
    fit_sk(SimpleImputer().fit_transform(warm))
    for data_name, rate in cases:
        acc: dict = {}
        for seed in range(args.seeds):
            Xtr, Xte, truth = (synthetic(seed, args.n_train, args.n_test, args.features)
                               if data_name != "wine" else wine(seed))
            Xm = hide(Xtr, rate, seed)
            miss = np.isnan(Xm)
            scale = Xtr.std(0)
            complete = Xm[~miss.any(1)]
            if truth is None:            # wine: each method's own complete-data fit
                ref = {"ours": fit_ours(Xtr).means_, "sk": fit_sk(Xtr).means_}
                if wishart:
                    ref["prior"] = fit_ours(Xtr, True).means_
            else:
                ref = {"ours": truth, "prior": truth, "sk": truth}
            results, fitted = {}, {}
            for method, key in ours_methods:
                est, sec = timed(lambda: fit_ours(Xm, key == "prior"))
                fitted[key] = est
                results[method] = (est.score(Xte), mean_error(est.means_, ref[key], scale), sec)
            # Complete-case: needs more complete rows than one full component's parameters.
            if complete.shape[0] > K * (Xtr.shape[1] + 1):
                cc, sec = timed(lambda: fit_sk(complete))
                results["complete-case + sklearn GMM"] = (
                    cc.score(Xte), mean_error(cc.means_, ref["sk"], scale), sec)
            else:
                results["complete-case + sklearn GMM"] = (np.nan, np.nan, np.nan)
            mi, sec = timed(lambda: fit_sk(SimpleImputer().fit_transform(Xm)))
            results["mean-impute + sklearn GMM"] = (mi.score(Xte),
                                                    mean_error(mi.means_, ref["sk"], scale), sec)
            rmse = lambda Z: float(np.sqrt(((Z - Xtr)[miss] ** 2).mean()))
            imputes = {OURS: rmse(fitted["ours"].impute(Xm)),
                       **({OURS_PRIOR: rmse(fitted["prior"].impute(Xm))} if wishart else {}),
                       "complete-case + sklearn GMM": np.nan,
                       "mean-impute + sklearn GMM": rmse(SimpleImputer().fit_transform(Xm)),
                       "KNNImputer (k=5)": rmse(KNNImputer().fit_transform(Xm))}
            for method, rm in imputes.items():
                ll, err, sec = results.get(method, (np.nan, np.nan, np.nan))
                a = acc.setdefault(method, {"ll": [], "err": [], "rmse": [], "sec": [],
                                            "complete_rows": []})
                a["ll"].append(ll)
                a["err"].append(err)
                a["rmse"].append(rm)
                a["sec"].append(sec)
                a["complete_rows"].append(int(complete.shape[0]))
        for method, a in acc.items():
            nanmean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row = {"data": data_name, "missing": rate, "method": method,
                   "covariance_type": cov_type,
                   "heldout_loglik": nanmean(a["ll"]), "mean_error": nanmean(a["err"]),
                   "impute_rmse": nanmean(a["rmse"]),
                   "fit_seconds": (float(np.nanmedian(a["sec"])) if np.isfinite(a["sec"]).any()
                                   else float("nan")),
                   "seeds": args.seeds, "complete_rows": float(np.mean(a["complete_rows"])),
                   "per_seed": {k: a[k] for k in ("ll", "err", "rmse", "sec")}}
            rows.append(row)
            print(f"  {data_name}, {rate:.0%} missing, {method}: ll {row['heldout_loglik']:.4f}, "
                  f"mean error {row['mean_error']:.4f}, impute RMSE {row['impute_rmse']:.4f}",
                  flush=True)
    print(f"\nMeans over {args.seeds} seed(s); held-out data complete; n/a: not applicable or "
          f"too few complete rows\n")
    print(C.markdown_table(rows, [("data", "data"), ("missing", "missing"), ("method", "method"),
                                  ("heldout_loglik", "held-out log-lik / point"),
                                  ("mean_error", "mean error (sd units)"),
                                  ("impute_rmse", "impute RMSE"),
                                  ("fit_seconds", "fit s"),
                                  ("complete_rows", "complete rows")]))
    C.write_json(args.json or C.default_json_path("missing_values", device),
                 {"benchmark": "missing_values", "quick": args.quick,
                  "command": C.argv_line(), "machine": info,
                  "settings": vars(args) | {"json": str(args.json)}, "rows": rows})


if __name__ == "__main__":
    main()
