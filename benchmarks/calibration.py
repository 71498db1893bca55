"""Calibration of the posterior intervals of ``inference="nuts"`` and
``inference="vi"``: simulation-based calibration on data sets whose
parameters are drawn from the prior itself, and coverage on a fixed,
well-separated truth with the default priors.

The target: on at least 100 data sets drawn from the prior, the
central 90% intervals from "nuts" cover the true weights, means and scales
85-95% of the time; the coverage of "vi" is measured and stated, and so is
the coverage on fixed truths with default priors.

Studies (each data set is fitted by every method in ``--methods``, so the
methods see the same data):

* **prior** (simulation-based calibration).  Fixed hyperparameters, used as
  given by the fit (every ``Priors`` field set: :func:`bayesgmm.priors.resolve_priors`
  fills only ``None`` fields, and the standardisation inside the fit is an
  exact change of variables):
  K=2, D=2, ``covariance_type="diag"``, weights ~ Dirichlet(3, 3), each
  mean ~ Normal(0, 3) per feature, each standard deviation ~
  InverseGamma(6, 5) (mean 1, 90% of the mass in about [0.55, 1.7]).  Per
  data set: parameters drawn from that prior, then ``--n`` (100) points
  from the mixture.  The concentration 3 keeps both components populated
  in most data sets (the package refuses a concentration below 1: no MAP);
  Normal(0, 3) against unit scales puts the two means about 5 standard
  deviations apart on average, yet about one data set in ten has two
  overlapping components: identifiable-ish, not trivial.
* **fixed** (frequentist coverage of the Bayesian intervals).  One truth,
  K=3, D=2, weights (0.25, 0.35, 0.4), means (-4, -2), (4, -2), (0, 4),
  standard deviations (1, 0.6), (0.7, 1.2), (1, 1) (at least 7 standard
  deviations apart); ``--n-fixed-points`` (200) new points per data set;
  fitted with the default, data-dependent priors (``priors=None``).  No
  theorem makes this coverage 90%; near it means the default priors do not
  bias the intervals at this size.

Per data set and method, the central ``--level`` (90%) interval of every
scalar (K weights, K x D means, K x D standard deviations, the square roots
of the diagonal covariances) comes from ``credible_interval``.  Every
posterior draw is in the labelling of the fitted MAP (``weights_``,
``means_``, ``covariances_``); the truth is put in the same labelling by
the rule that relabels each NUTS draw,
:func:`bayesgmm.alignment.match_components` against the MAP with weights
and covariances (Hungarian matching of overlaps).  Why that rule: a
relabelling that is a function of the data and the parameter, applied
alike to the truth and to the draws, keeps simulation-based calibration
exact (the truth given the data is a draw from the posterior, so any
function of it is a draw from the pushed-forward posterior); matching the
truth by another rule would not.  The JSON also holds the coverage with the
truth matched to the draws' average means by Euclidean distance (the naive
rule), as a check that the figures do not hinge on the rule.

Reported per study, method and parameter type: coverage of the 90% (and
50%) intervals, its binomial standard error (intervals counted as
independent) and a standard error clustered by data set (the intervals of
one data set are correlated), the misses below and above the interval
(which side the posterior errs on), and for NUTS the fits with a max split
R-hat above 1.01 or with divergent transitions.  Before the studies the
script checks that its simulator is the model's: its log densities equal
the trace of :func:`bayesgmm.models.gmm_model` at the same values, and its
prior draws match the model's own (two-sample Kolmogorov-Smirnov).

Run ``python benchmarks/calibration.py --help``.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("nuts", "vi")
STUDIES = ("prior", "fixed")
TYPES = ("weights", "means", "scales")

# The prior study's model: small, so that 100 NUTS fits fit in an hour on
# one core, and with every hyperparameter fixed (data-independent).
PRIOR_K, PRIOR_D = 2, 2
HYPER = dict(weight_concentration=3.0, mean_loc=0.0, mean_scale=3.0, scale_shape=6.0,
             scale_rate=5.0)

# The fixed, well-separated truth.
FIXED_WEIGHTS = np.array([0.25, 0.35, 0.4])
FIXED_MEANS = np.array([[-4.0, -2.0], [4.0, -2.0], [0.0, 4.0]])
FIXED_SCALES = np.array([[1.0, 0.6], [0.7, 1.2], [1.0, 1.0]])


@dataclass
class Truth:
    weights: np.ndarray      # (K,)
    means: np.ndarray        # (K, D)
    scales: np.ndarray       # (K, D) standard deviations

    def permuted(self, perm) -> "Truth":
        return Truth(self.weights[perm], self.means[perm], self.scales[perm])

    def as_dict(self) -> dict:
        return {"weights": self.weights, "means": self.means, "scales": self.scales}


# ----------------------------------------------------------------------------
# Simulator
# ----------------------------------------------------------------------------
def draw_prior(rng: np.random.Generator, K: int, D: int, hyper: dict) -> Truth:
    """Parameters from the prior of :func:`bayesgmm.models.gmm_model` with
    "diag" covariances: Dirichlet weights, Normal means per feature, and an
    InverseGamma(shape, rate) on each standard deviation (1 / Gamma(shape,
    rate), numpy's gamma taking the scale 1 / rate)."""
    w = rng.dirichlet(np.full(K, hyper["weight_concentration"]))
    m = rng.normal(hyper["mean_loc"], hyper["mean_scale"], size=(K, D))
    s = 1.0 / rng.gamma(hyper["scale_shape"], 1.0 / hyper["scale_rate"], size=(K, D))
    return Truth(w, m, s)


def draw_data(rng: np.random.Generator, truth: Truth, n: int) -> tuple[np.ndarray, np.ndarray]:
    z = rng.choice(truth.weights.shape[0], size=n, p=truth.weights)
    return truth.means[z] + truth.scales[z] * rng.standard_normal((n, truth.means.shape[1])), z


def model_pieces(hyper: dict, K: int, D: int):
    """The fit's view of the fixed priors in data units: the covariance
    family, the resolved ``Priors`` and the prior tensors of
    :func:`~bayesgmm.models.gmm_model` (an identity standardiser, so the
    tensors are the data-unit hyperparameters)."""
    import torch

    from bayesgmm import Priors
    from bayesgmm.covariance import get
    from bayesgmm.priors import Standardizer, resolve_priors

    family = get("diag", D)
    zeros, ones = np.zeros(D), np.ones(D)
    resolved = resolve_priors(Priors(**hyper), family, K, (zeros, ones))
    pt = Standardizer(zeros, ones).priors(resolved, "cpu", torch.float64)
    return family, resolved, pt


def check_resolved(priors, hyper: dict, K: int, D: int) -> None:
    """The priors a fit used (``priors_``) are the hyperparameters given."""
    expected = {"weight_concentration": np.full(K, hyper["weight_concentration"]),
                "mean_loc": np.full(D, hyper["mean_loc"]),
                "mean_scale": np.full(D, hyper["mean_scale"]),
                "scale_shape": hyper["scale_shape"], "scale_rate": np.full(D, hyper["scale_rate"])}
    for name, value in expected.items():
        got = np.asarray(getattr(priors, name), dtype=np.float64)
        if not np.allclose(got, value, rtol=1e-12, atol=0):
            raise AssertionError(f"the fit used priors_.{name}={got.tolist()}, not the given "
                                 f"{np.asarray(value).tolist()}: the prior study needs the "
                                 f"simulator's prior")


def check_simulator(hyper: dict, K: int, D: int, n_draws: int, seed: int) -> dict:
    """Assert that the simulator is the model the fits sample.

    1. Densities: at parameters and data drawn by the simulator, the log
       joint of a trace of :func:`bayesgmm.models.gmm_model` (every site
       conditioned, assignments included) equals the sum of scipy's log
       densities of the distributions the simulator draws from (catches a
       rate read as a scale, a variance read as a standard deviation).
    2. Draws: ``n_draws`` prior draws of the simulator and of the model's
       own sites (traces of ``gmm_model`` without data) agree by a
       two-sample Kolmogorov-Smirnov test on the first weight, mean and
       standard deviation (p > 1e-3; fixed seeds, so deterministic).
    """
    import pyro
    import torch
    from pyro import poutine
    from scipy import stats

    from bayesgmm.models import gmm_model

    family, resolved, pt = model_pieces(hyper, K, D)
    check_resolved(resolved, hyper, K, D)
    rng = np.random.default_rng([seed, 99])
    worst = 0.0
    for _ in range(3):
        t = draw_prior(rng, K, D, hyper)
        X, z = draw_data(rng, t, 50)
        f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)
        cond = poutine.condition(gmm_model, data={"weights": f64(t.weights), "means": f64(t.means),
                                                  family.site: f64(t.scales),
                                                  "assignment": torch.as_tensor(z)})
        model_lp = float(poutine.trace(cond).get_trace(f64(X), pt, K, family).log_prob_sum())
        ours = (stats.dirichlet.logpdf(t.weights, np.full(K, hyper["weight_concentration"]))
                + stats.norm.logpdf(t.means, hyper["mean_loc"], hyper["mean_scale"]).sum()
                + stats.invgamma.logpdf(t.scales, hyper["scale_shape"],
                                        scale=hyper["scale_rate"]).sum()
                + np.log(t.weights[z]).sum()
                + stats.norm.logpdf(X, t.means[z], t.scales[z]).sum())
        worst = max(worst, abs(model_lp - ours) / max(1.0, abs(ours)))
        if not math.isclose(model_lp, ours, rel_tol=1e-9, abs_tol=1e-8):
            raise AssertionError(f"simulator and gmm_model disagree: log joint {ours} vs "
                                 f"{model_lp}")
    sim = [draw_prior(rng, K, D, hyper) for _ in range(n_draws)]
    pyro.set_rng_seed(seed)
    model = []
    with torch.no_grad():
        for _ in range(n_draws):
            tr = poutine.trace(gmm_model).get_trace(None, pt, K, family, 1)
            model.append((tr.nodes["weights"]["value"].numpy(), tr.nodes["means"]["value"].numpy(),
                          tr.nodes[family.site]["value"].numpy()))
    pvalues = {
        "weights[0]": stats.ks_2samp([s.weights[0] for s in sim], [m[0][0] for m in model]).pvalue,
        "means[0, 0]": stats.ks_2samp([s.means[0, 0] for s in sim],
                                      [m[1][0, 0] for m in model]).pvalue,
        "scales[0, 0]": stats.ks_2samp([s.scales[0, 0] for s in sim],
                                       [m[2][0, 0] for m in model]).pvalue,
    }
    for name, p in pvalues.items():
        if not p > 1e-3:
            raise AssertionError(f"the simulator's prior draws of {name} differ from "
                                 f"gmm_model's (KS p = {p:.2g})")
    return {"max_rel_log_joint_difference": worst, "ks_pvalues": pvalues, "n_draws": n_draws}


# ----------------------------------------------------------------------------
# One fit
# ----------------------------------------------------------------------------
def align_truth(est, truth: Truth) -> tuple[Truth, np.ndarray]:
    """The truth in the labelling of the MAP, by the rule that relabels
    each NUTS draw (``posterior.align_draws``): overlap matching with
    weights and covariances."""
    from bayesgmm.alignment import match_components

    perm = match_components(est.means_, truth.means, est.covariances_, truth.scales ** 2,
                            est.weights_, truth.weights, covariance_type="diag")
    return truth.permuted(perm), np.asarray(perm)


def align_truth_naive(draws: dict, truth: Truth) -> np.ndarray:
    """The naive rule: Hungarian matching of the truth's means to the
    draws' average means by squared Euclidean distance."""
    from scipy.optimize import linear_sum_assignment

    mean = draws["means"].mean(0)
    cost = ((mean[:, None, :] - truth.means[None]) ** 2).sum(-1)     # (K ref, K truth)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def interval_of(est, draws: dict, name: str, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``name`` in (weights, means, scales) from the estimator's
    ``credible_interval`` (scales: the square root of the variances' bounds;
    the quantiles commute with the monotone map)."""
    if name == "scales":
        lo, hi = est.credible_interval("covariances", level)
        return np.sqrt(lo), np.sqrt(hi)
    return est.credible_interval(name, level)


def draw_values(draws: dict, name: str) -> np.ndarray:
    return np.sqrt(draws["covariances"]) if name == "scales" else draws[name]


def evaluate(est, truth: Truth, level: float) -> dict:
    """Coverage, rank and diagnostics of one fitted estimator."""
    draws = est.posterior_samples()
    aligned, perm = align_truth(est, truth)
    naive = truth.permuted(align_truth_naive(draws, truth))
    out = {"truth_perm": perm, "truth_aligned": aligned.as_dict(),
           "map": {"weights": est.weights_, "means": est.means_,
                   "scales": np.sqrt(est.covariances_)},
           "n_draws": int(draws["weights"].shape[0]),
           "interval": {}, "covered": {}, "covered_50": {}, "side": {}, "rank": {},
           "covered_naive": {}}
    for name in TYPES:
        true = aligned.as_dict()[name]
        lo, hi = interval_of(est, draws, name, level)
        lo50, hi50 = interval_of(est, draws, name, 0.5)
        values = draw_values(draws, name)
        out["interval"][name] = [lo, hi]
        out["covered"][name] = (lo <= true) & (true <= hi)
        out["covered_50"][name] = (lo50 <= true) & (true <= hi50)
        # -1: the truth below the interval, +1: above, 0: inside.
        out["side"][name] = np.where(true < lo, -1, np.where(true > hi, 1, 0))
        # The SBC rank as a fraction of the draws below the truth (uniform
        # on [0, 1] for a calibrated posterior).
        out["rank"][name] = (values < true).mean(0)
        t_naive = naive.as_dict()[name]
        out["covered_naive"][name] = (lo <= t_naive) & (t_naive <= hi)
    # Whether the draws' labelling is the MAP's (their average matched to
    # the MAP by the same rule is the identity): the contract of
    # posterior_samples that the truth's alignment relies on.
    from bayesgmm.alignment import match_components
    avg = match_components(est.means_, draws["means"].mean(0), est.covariances_,
                           draws["covariances"].mean(0), est.weights_, draws["weights"].mean(0),
                           covariance_type="diag")
    out["draws_in_map_order"] = bool(np.array_equal(avg, np.arange(len(avg))))
    rhat = getattr(est, "rhat_", None)
    if rhat is not None:
        out["max_rhat"] = float(max(np.nanmax(v) for v in rhat.values()))
        out["min_ess"] = float(min(np.nanmin(v) for v in est.ess_.values()))
        out["n_divergent"] = int(est.n_divergent_)
    if hasattr(est, "elbo_"):
        out["elbo"] = float(est.elbo_)
    return out


def fit_one(method: str, X: np.ndarray, K: int, priors, seed: int, args, device: str):
    from bayesgmm import BayesianGMM

    kw = (dict(n_samples=args.nuts_samples, n_chains=args.chains, n_warmup=args.nuts_warmup)
          if method == "nuts" else dict(n_samples=args.vi_samples))
    est = BayesianGMM(K, covariance_type="diag", priors=priors, inference=method,
                      random_state=seed, device=device, n_threads=args.threads or None, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(X)
        seconds = time.perf_counter() - t0
    messages = sorted({f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught})
    return est, seconds, messages


# ----------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------
def coverage_stats(records: list, key: str, name: str) -> dict:
    """Coverage of the intervals of type ``name`` (or "all") over the
    records: the fraction, its binomial standard error, and the standard
    error of a ratio estimator clustered by data set."""
    names = TYPES if name == "all" else (name,)
    hits = [np.concatenate([np.ravel(r[key][t]) for t in names]).astype(float) for r in records]
    if not hits:
        return {"intervals": 0, "coverage": None, "se_binomial": None, "se_clustered": None}
    c = np.array([h.sum() for h in hits])
    n = np.array([h.size for h in hits], dtype=float)
    p = c.sum() / n.sum()
    m = len(hits)
    se_clu = (math.sqrt(((c - p * n) ** 2).sum() * m / max(m - 1, 1)) / n.sum()) if m > 1 else None
    return {"intervals": int(n.sum()), "coverage": float(p),
            "se_binomial": math.sqrt(p * (1 - p) / n.sum()), "se_clustered": se_clu}


def summarise(records: list, study: str, method: str) -> tuple[list, dict]:
    ok = [r for r in records if r["study"] == study and r["method"] == method and "error" not in r]
    failed = [r for r in records if r["study"] == study and r["method"] == method and "error" in r]
    rows = []
    for name in TYPES + ("all",):
        s90 = coverage_stats(ok, "covered", name)
        s50 = coverage_stats(ok, "covered_50", name)
        naive = coverage_stats(ok, "covered_naive", name)
        names = TYPES if name == "all" else (name,)
        sides = np.concatenate([np.ravel(r["side"][t]) for r in ok for t in names]) if ok else \
            np.zeros(0)
        rows.append({"study": study, "method": method, "parameter": name,
                     "datasets": len(ok), "intervals": s90["intervals"],
                     "coverage_90": s90["coverage"], "se_binomial": s90["se_binomial"],
                     "se_clustered": s90["se_clustered"],
                     "below": float((sides < 0).mean()) if sides.size else None,
                     "above": float((sides > 0).mean()) if sides.size else None,
                     "coverage_50": s50["coverage"], "coverage_90_naive": naive["coverage"]})
    diag = {"study": study, "method": method, "datasets": len(ok), "failed": len(failed),
            "median_seconds": float(np.median([r["seconds"] for r in ok])) if ok else None,
            "draws_not_in_map_order": sum(not r["draws_in_map_order"] for r in ok)}
    if method == "nuts" and ok:
        diag["rhat_above_1.01"] = sum(r["max_rhat"] > 1.01 for r in ok)
        diag["with_divergences"] = sum(r["n_divergent"] > 0 for r in ok)
        diag["median_min_ess"] = float(np.median([r["min_ess"] for r in ok]))
        good = [r for r in ok if r["max_rhat"] <= 1.01 and r["n_divergent"] == 0]
        diag["coverage_90_converged_only"] = coverage_stats(good, "covered", "all")["coverage"]
        diag["converged_datasets"] = len(good)
    if method == "vi" and ok:
        diag["with_warnings"] = sum(bool(r["warnings"]) for r in ok)
    return rows, diag


def library_state() -> dict:
    """Which library code ran: the imported package's folder and a hash of
    its sources, git HEAD and the uncommitted changes under bayesgmm/ (the
    working tree may hold work in progress)."""
    import bayesgmm

    package = Path(bayesgmm.__file__).resolve().parent

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    h = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return {"package": str(package), "git_head": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--short", "--", "bayesgmm"),
            "sources_sha256": h.hexdigest()}


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
def comma_list(allowed):
    def parse(text: str) -> list:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise ValueError(f"expected a comma-separated subset of {','.join(allowed)}, "
                             f"got {text!r}")
        return items
    parse.__name__ = "list"
    return parse


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--methods", type=comma_list(METHODS), default=list(METHODS),
                   help="comma-separated inference methods, e.g. nuts,vi")
    p.add_argument("--studies", type=comma_list(STUDIES), default=list(STUDIES),
                   help="comma-separated studies: prior (SBC), fixed (default priors)")
    p.add_argument("--n-datasets", type=int, default=100,
                   help="data sets of the prior study")
    p.add_argument("--n-fixed", type=int, default=50, help="data sets of the fixed-truth study")
    p.add_argument("--n", type=int, default=100, help="points per data set, prior study")
    p.add_argument("--n-fixed-points", type=int, default=200,
                   help="points per data set, fixed-truth study")
    p.add_argument("--nuts-samples", type=int, default=400,
                   help="NUTS draws kept, all chains together")
    p.add_argument("--nuts-warmup", type=int, default=100, help="NUTS warmup per chain")
    p.add_argument("--chains", type=int, default=4, help="NUTS chains")
    p.add_argument("--vi-samples", type=int, default=1000, help="draws of the VI posterior")
    p.add_argument("--level", type=float, default=0.9, help="credible level of the intervals")
    p.add_argument("--seed", type=int, default=0, help="base seed of the data sets and fits")
    args = p.parse_args()
    if args.quick:
        args.n_datasets, args.n_fixed = 3, 3
        args.nuts_samples, args.nuts_warmup, args.chains, args.vi_samples = 40, 20, 2, 100
    C.apply_threads(args.threads)
    device = C.resolve_device(args.device)
    from bayesgmm import Priors

    info = C.machine_info(device)
    print(C.header("calibration", info))
    out_path = args.json or C.default_json_path("calibration", device)
    check = check_simulator(HYPER, PRIOR_K, PRIOR_D, 300 if args.quick else 2000, args.seed)
    print(f"simulator check: log joint equals gmm_model's (max relative difference "
          f"{check['max_rel_log_joint_difference']:.1e}); prior draws vs the model's, KS p = "
          + ", ".join(f"{k} {v:.2f}" for k, v in check["ks_pvalues"].items()), flush=True)
    payload = {"benchmark": "calibration", "quick": args.quick, "command": C.argv_line(),
               "machine": info, "library": library_state(),
               "settings": vars(args) | {"json": str(args.json)}, "skipped": [],
               "design": {"prior": {"K": PRIOR_K, "D": PRIOR_D, "covariance_type": "diag",
                                    "hyperparameters": HYPER, "n": args.n},
                          "fixed": {"weights": FIXED_WEIGHTS, "means": FIXED_MEANS,
                                    "scales": FIXED_SCALES, "n": args.n_fixed_points,
                                    "priors": "default (None)"}},
               "simulator_check": check, "complete": False, "records": []}
    records = payload["records"]
    t_start = time.perf_counter()
    for study in args.studies:
        count = args.n_datasets if study == "prior" else args.n_fixed
        for i in range(count):
            rng = np.random.default_rng([args.seed, STUDIES.index(study), i])
            if study == "prior":
                truth = draw_prior(rng, PRIOR_K, PRIOR_D, HYPER)
                X, _ = draw_data(rng, truth, args.n)
                priors, K = Priors(**HYPER), PRIOR_K
            else:
                truth = Truth(FIXED_WEIGHTS, FIXED_MEANS, FIXED_SCALES)
                X, _ = draw_data(rng, truth, args.n_fixed_points)
                priors, K = None, FIXED_WEIGHTS.shape[0]
            seed = int(rng.integers(2 ** 31 - 1))
            for method in args.methods:
                rec = {"study": study, "method": method, "index": i, "seed": seed,
                       "n": int(X.shape[0]), "truth": truth.as_dict()}
                try:
                    est, seconds, messages = fit_one(method, X, K, priors, seed, args, device)
                    if study == "prior":
                        check_resolved(est.priors_, HYPER, PRIOR_K, PRIOR_D)
                    rec.update(seconds=seconds, warnings=messages,
                               priors_used={k: v for k, v in vars(est.priors_).items()
                                            if v is not None})
                    rec.update(evaluate(est, truth, args.level))
                except Exception as exc:  # recorded and counted, the study goes on
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                records.append(rec)
                if "error" in rec:
                    line = f"ERROR {rec['error'][:200]}"
                else:
                    cov = np.mean(np.concatenate([np.ravel(rec["covered"][t]) for t in TYPES]))
                    line = f"{rec['seconds']:.1f} s, covered {cov:.2f}"
                    if method == "nuts":
                        line += f", max R-hat {rec['max_rhat']:.3f}, divergent {rec['n_divergent']}"
                print(f"  {study} {i + 1}/{count} {method}: {line}", flush=True)
            # Saved after every data set: a long run that stops keeps its records.
            C.write_json(out_path, payload, quiet=True)
    rows, diags = [], []
    for study in args.studies:
        for method in args.methods:
            r, d = summarise(records, study, method)
            rows += r
            diags.append(d)
    payload.update(rows=rows, diagnostics=diags, complete=True,
                   total_seconds=time.perf_counter() - t_start)
    target = [r for r in rows if r["study"] == "prior" and r["method"] == "nuts"
              and r["parameter"] != "all"]
    if target:
        payload["target_met"] = all(r["coverage_90"] is not None and 0.85 <= r["coverage_90"] <= 0.95
                                    for r in target) and target[0]["datasets"] >= 100
    pct = lambda v: None if v is None else 100 * v
    table = [dict(r, coverage_90=pct(r["coverage_90"]), se_binomial=pct(r["se_binomial"]),
                  se_clustered=pct(r["se_clustered"]), below=pct(r["below"]),
                  above=pct(r["above"]), coverage_50=pct(r["coverage_50"]),
                  coverage_90_naive=pct(r["coverage_90_naive"])) for r in rows]
    lvl = f"{100 * args.level:g}"
    print(f"\nCoverage of the central {lvl}% intervals, in % (SE: binomial / clustered by data "
          f"set; below/above: truth outside the interval on that side)\n")
    print(C.markdown_table(table, [
        ("study", "study"), ("method", "method"), ("parameter", "parameter"),
        ("datasets", "data sets"), ("intervals", "intervals"), ("coverage_90", f"{lvl}% coverage"),
        ("se_binomial", "SE binomial"), ("se_clustered", "SE clustered"), ("below", "below"),
        ("above", "above"), ("coverage_50", "50% coverage"),
        ("coverage_90_naive", f"{lvl}% coverage, naive alignment")], digits=3))
    print("\nDiagnostics\n")
    diag_table = [dict(d, coverage_90_converged_only=pct(d.get("coverage_90_converged_only")))
                  for d in diags]
    print(C.markdown_table(diag_table, [
        ("study", "study"), ("method", "method"), ("datasets", "data sets"), ("failed", "failed"),
        ("median_seconds", "median fit s"), ("rhat_above_1.01", "max R-hat > 1.01"),
        ("with_divergences", "with divergences"), ("median_min_ess", "median min ESS"),
        ("converged_datasets", "fits with R-hat <= 1.01, no divergence"),
        ("coverage_90_converged_only", f"{lvl}% coverage in those"),
        ("with_warnings", "VI fits with warnings"),
        ("draws_not_in_map_order", "draws not in MAP order")], digits=3))
    if "target_met" in payload:
        print(f"\ntarget (prior study, nuts, every parameter type 85-95%, >= 100 data sets): "
              f"{'met' if payload['target_met'] else 'not met'}")
    C.write_json(out_path, payload)


if __name__ == "__main__":
    main()
