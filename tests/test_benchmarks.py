"""The benchmark scripts run end to end (``--quick``, tiny sizes, in a
subprocess) and write JSON with the expected fields and sane values.

No timing assertions: figures on a shared test machine mean nothing; the
point is that every script, every method it compares and every field its
README describes is really produced.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_script(name: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--device", "cpu",
                           "--json", str(out), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(h in proc.stdout for h in ("| method", "| N |", "| type |", "| command |")), proc.stdout[-2000:]
    assert f"wrote {out}" in proc.stdout
    return json.loads(out.read_text())


def check_machine(result: dict, name: str, pomegranate_requested: bool = True,
                  torchgmm_requested: bool = False) -> None:
    assert result["benchmark"] == name
    assert result["quick"] is True
    m = result["machine"]
    assert m["device"] == "cpu"
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert m["cpu_cores"] >= 1
    assert m["torch"] and m["sklearn"] and m["pyro"]
    # torch's thread count held for the whole run (pomegranate's import changed it).
    assert m["torch_threads_at_end"] == m["torch_threads"]
    for peer, requested in (("pomegranate", pomegranate_requested),
                            ("torchgmm", torchgmm_requested)):
        installed = m[peer] is not None
        said_skipped = any(peer in s for s in result["skipped"])
        if requested:  # a missing peer is reported, never silently absent
            assert installed != said_skipped
        else:
            assert not said_skipped


def peers_run(result: dict) -> set:
    """The optional peers a script measured: those installed."""
    return {p for p in ("torchgmm", "pomegranate") if result["machine"][p] is not None}


def test_the_common_scorer_is_the_mixture_density(tmp_path):
    """``sklearn_mixture`` / ``sklearn_mean_loglik`` (every peer's parameters
    are scored by them) against scipy's densities, for every covariance
    layout, and against the diagonal scorer ``mixture_mean_loglik``."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    sys.path.insert(0, str(BENCH))
    try:
        import _common as C
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(0)
    K, D = 3, 2
    X = rng.normal(size=(50, D)) * 2
    w, m = np.array([0.2, 0.5, 0.3]), rng.normal(size=(K, D))
    A = rng.normal(size=(K, D, D))
    full = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    layouts = {"full": (full, full), "diag": (np.diagonal(full, 0, 1, 2),
                                              np.stack([np.diag(np.diag(c)) for c in full])),
               "spherical": (np.array([0.5, 1.0, 2.0]),
                             np.array([0.5, 1.0, 2.0])[:, None, None] * np.eye(D)),
               "tied": (full[0], np.stack([full[0]] * K))}
    for t, (cov, dense) in layouts.items():
        want = logsumexp(np.stack([np.log(w[k]) + multivariate_normal(m[k], dense[k]).logpdf(X)
                                   for k in range(K)], 1), axis=1)
        np.testing.assert_allclose(C.sklearn_mixture(w, m, cov, t).score_samples(X), want,
                                   rtol=1e-10)
        assert math.isclose(C.sklearn_mean_loglik(X, 2 * w, m, cov, t), want.mean(), rel_tol=1e-10)
    diag = layouts["diag"][0]
    assert math.isclose(C.mixture_mean_loglik(X, w, m, np.sqrt(diag)),
                        C.sklearn_mean_loglik(X, w, m, diag, "diag"), rel_tol=1e-10)


#: The two scripts benchmarks/README.md names as printing their tables only.
TABLES_ONLY = {"accuracy_five_class", "classifier_batched_vs_loop"}


def test_help_of_every_script():
    names = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
    assert {"accuracy", "streaming", *TABLES_ONLY} <= set(names)
    for name in names:
        proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        flags = ("--device",) if name in TABLES_ONLY else ("--device", "--quick", "--json")
        for flag in flags:
            assert flag in proc.stdout, (name, flag)


def test_accuracy_quick(tmp_path):
    r = run_script("accuracy", tmp_path, "--n-test-per-class", "300", "--gd-epochs", "30",
                   "--mlp-hidden", "16", "--mlp-max-iter", "30", "--max-k", "3",
                   "--bgmm-em-max-iter", "30", "--circles-components", "4",
                   "--methods", "GMMClassifier (true", "original", "sklearn GaussianMixture", "QDA")
    check_machine(r, "accuracy")
    assert r["complete"] is True
    five = r["five_class"]
    assert five["protocol"]["seeds"] == [0]
    seed0 = five["per_seed"][0]
    assert seed0["true_k"] == [7, 9, 7, 4, 2]         # make_five_class(0)'s clusters per class
    assert 0.5 < seed0["bayes_accuracy"] < 1.0
    summary = {row["method"]: row for row in five["summary"]}
    expected = {"bayesgmm GMMClassifier (true K)", "original gradient-trained GMM (true K)",
                "sklearn GaussianMixture per class (true K)",
                "sklearn GaussianMixture per class (BIC K)", "sklearn QDA"}
    assert expected <= set(summary)
    for name in expected:
        acc = seed0["accuracy"][name]
        assert 0.2 <= acc <= 1.0                         # better than chance (5 classes)
        # gap = Bayes-optimal minus accuracy, in points
        assert math.isclose(seed0["gap_points"][name], 100 * (seed0["bayes_accuracy"] - acc))
        assert summary[name]["seeds"] == 1
    # The generative mixtures are near the Bayes limit; QDA (one Gaussian per class) is far off.
    sk_gap = summary["sklearn GaussianMixture per class (true K)"]["mean_gap"]
    assert summary["sklearn QDA"]["mean_gap"] > sk_gap
    iris = {(row["task"], row["method"]): row for row in r["iris"]["rows"]}
    assert len(iris) == 4
    for row in iris.values():
        assert -0.5 <= row["min_ari"] <= row["mean_ari"] <= row["max_ari"] <= 1.0
    assert iris[("1-D petal_length, K=2 (setosa vs not)", "bayesgmm BayesianGMM")]["mean_ari"] == 1.0
    circles = {row["method"]: row for row in r["circles"]["rows"]}
    assert {"sklearn MLPClassifier", "sklearn QDA", "bayesgmm GMMClassifier (4)"} <= set(circles)
    for row in circles.values():
        assert 0 <= row["test_accuracy"] <= 100


def test_fit_speed_quick(tmp_path):
    r = run_script("fit_speed", tmp_path, "--n", "1000", "--methods", "EM (max", "sklearn")
    check_machine(r, "fit_speed", torchgmm_requested=True)
    assert r["complete"] is True
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == {"bayesgmm EM (max_iter=0)", "sklearn GaussianMixture (diag)"}
    for row in rows.values():
        assert row["N"] == 1000 and row["D"] == 2 and row["K"] == 8
        assert "error" not in row, row.get("error")
        ref = row["reference"]
        # The reference is the better of the two converged fits.
        assert ref["best"] == max(ref["bayesgmm"]["mean_loglik"], ref["sklearn"]["mean_loglik"])
        assert row["floor_ms"] > 0
        # Both EM implementations reach the optimum on this well-separated mixture.
        assert row["reached"] is True
        assert row["budget"] >= 1 and row["seconds"] > 0
        assert -1e-6 <= row["gap_nats"] <= r["tol_nats"] + 1e-12
    for ratio in r["ratios"]:
        assert ratio["ratio_to_sklearn"] > 0


def test_predict_throughput_quick(tmp_path):
    r = run_script("predict_throughput", tmp_path, "--n", "5000", "--methods", "bayesgmm", "sklearn")
    check_machine(r, "predict_throughput", pomegranate_requested=False)
    assert r["n"] == 5000 and r["n_classes"] == 5 and r["k"] == 8
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == {"bayesgmm GMMClassifier (cpu)", "sklearn GaussianMixture per class (cpu)"}
    for row in rows.values():
        assert row["N"] == 5000
        assert math.isclose(row["points_per_second"], 5000 / row["seconds"])
    # Two mixture classifiers of the same data mostly agree on the labels.
    assert rows["bayesgmm GMMClassifier (cpu)"]["agreement_with_sklearn"] > 0.8
    assert rows["sklearn GaussianMixture per class (cpu)"]["agreement_with_sklearn"] == 1.0


def test_torchgmm_peer_quick(tmp_path):
    """Where torchgmm is installed (an environment of its own: it takes
    pandas < 3), its fits are real mixtures of the data: its predictions
    agree with scikit-learn's and its EM reaches the fit_speed target."""
    import importlib.util

    import pytest
    if importlib.util.find_spec("torchgmm") is None:
        pytest.skip("torchgmm not installed (benchmarks/README.md: install it in its own environment)")
    r = run_script("predict_throughput", tmp_path, "--n", "5000", "--methods", "torchgmm", "sklearn")
    rows = {row["method"]: row for row in r["rows"]}
    assert len(rows) == 3
    for name, row in rows.items():
        assert "error" not in row, row.get("error")
        assert row["agreement_with_sklearn"] > 0.8, name
    r = run_script("fit_speed", tmp_path, "--n", "1000", "--methods", "torchgmm")
    (row,) = r["rows"]
    assert row["method"] == "torchgmm GaussianMixture (cpu)" and row["reached"] is True
    # Seeded: the same seed gives the same fit (its k-means++ draws from
    # Python's random and from torch), another seed another start.
    sys.path.insert(0, str(BENCH))
    try:
        import _common as C
    finally:
        sys.path.remove(str(BENCH))
    from bayesgmm.datasets import make_mixture
    X = make_mixture(600, 4, 2, separation=2.0, random_state=0)[0]
    a, b, c = (C.torchgmm_fit(X, 4, "diag", s, max_iter=3) for s in (3, 3, 4))
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], c[1])


def test_covariance_speed_quick(tmp_path):
    r = run_script("covariance_speed", tmp_path)
    assert r["benchmark"] == "covariance_speed" and r["quick"] is True
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == {"full", "tied", "diag", "spherical"}
    for row in rows.values():
        sk, ours = row["sklearn_runs"], row["bayesgmm_runs"]
        assert len(sk) == len(ours) == 2
        # The optimum is the best converged scikit-learn fit at its defaults,
        # so its EM from that seed, run longer at tol 0, reaches it.
        assert math.isclose(row["target_loglik"], max(run["default"]["loglik"] for run in sk))
        assert row["sklearn_reached"] == f"{sum(run['reached'] for run in sk)}/2"
        assert any(run["reached"] for run in sk)
        # Both timed by the same budget search: a budget where reached.
        for run in sk + ours:
            assert run["reached"] == ("seconds" in run) == ("iterations" in run)
            if not run["reached"]:
                assert run["gap"] > r["settings"]["tol_nats"]
        assert row["bayesgmm_default_loglik"] >= row["target_loglik"] - 1e-2
    assert r["step_rows"] == []          # no --old-tree given: reported as skipped


def test_accuracy_covariance_quick(tmp_path):
    r = run_script("accuracy_covariance", tmp_path)
    assert r["benchmark"] == "accuracy_covariance" and r["quick"] is True
    seen = {(row["data"], row["K"], row["method"]) for row in r["rows"]}
    assert len(seen) == 12            # 2 data sets x 3 K choices x 2 methods
    for row in r["rows"]:
        assert len(row["folds"]) == 2 and math.isclose(row["accuracy"], float(np.mean(row["folds"])))
        assert 0.5 <= row["accuracy"] <= 1.0      # far above chance on both data sets


def test_defaults_speed_quick(tmp_path):
    r = run_script("defaults_speed", tmp_path)
    check_machine(r, "defaults_speed", pomegranate_requested=True, torchgmm_requested=True)
    assert {(row["separation"], row["type"]) for row in r["rows"]} == \
        {(2.0, "diag"), (2.0, "full"), (6.0, "diag"), (6.0, "full")}
    peers = {f"{p} defaults" for p in peers_run(r)}
    for row, raw in zip(r["rows"], r["raw"]):
        times, lls = raw["times"], raw["loglik"]
        assert set(times) == {"bayesgmm defaults", "sklearn defaults", "sklearn n_init=4"} | peers
        assert set(lls) == set(times) and all(math.isfinite(v) for v in sum(lls.values(), []))
        # The peers' parameters are read in scikit-learn's layout: a layout
        # slip (precisions or scales for covariances) would score them far
        # off.  torchgmm's EM reaches scikit-learn's optima on the separated
        # data; pomegranate's random start can stop in a poorer one.
        sk = np.median(lls["sklearn defaults"])
        # (A peer that failed in every seed has no log-likelihood to check.)
        if lls.get("torchgmm defaults") and row["separation"] == 6.0:
            assert abs(np.median(lls["torchgmm defaults"]) - sk) < 0.05
        if lls.get("pomegranate defaults"):
            assert min(lls["pomegranate defaults"]) > sk - 3
        # A peer's failed fit is counted, not timed; ours and scikit-learn's never fail.
        failures = raw["failures"]
        assert all(len(v) + len(failures[m]) == 2 and min(v, default=1) > 0
                   for m, v in times.items())
        assert not any(failures[m] for m in times if m not in peers)
        assert all(row[f"{p} failed"] == f"{len(failures[p])}/2" for p in peers)
        ratio = np.median(np.array(times["bayesgmm defaults"]) / np.array(times["sklearn defaults"]))
        assert math.isclose(row["time ratio"], ratio)
        ours, sk4 = np.array(lls["bayesgmm defaults"]), np.array(lls["sklearn n_init=4"])
        assert row["ll >= sk n_init=4"] == f"{int(np.sum(ours >= sk4 - 1e-6))}/2"
        # Every fit is a sensible mixture of this data (not a broken one).
        assert all(abs(v - np.median(sk4)) < 0.1 for v in ours)


def test_classifier_defaults_quick(tmp_path):
    r = run_script("classifier_defaults", tmp_path)
    check_machine(r, "classifier_defaults", pomegranate_requested=False, torchgmm_requested=True)
    assert [row["type"] for row in r["rows"]] == ["diag", "full"]
    torchgmm = "torchgmm" in peers_run(r)
    for row in r["rows"]:
        seeds = [x for x in r["raw"] if x["type"] == row["type"]]
        assert len(seeds) == row["seeds"] == 1
        x = seeds[0]
        assert set(x["times"]) == {"bayesgmm", "sklearn"} | ({"torchgmm"} if torchgmm else set())
        assert ("mean gap torchgmm" in row) == torchgmm
        if torchgmm:   # a sensible classifier too (its scoring layout is right)
            assert -0.5 < row["mean gap torchgmm"] < 2
        assert math.isclose(row["time ratio"], x["bayesgmm s"] / x["sklearn s"])
        # Both are sensible classifiers of this data (within 2 points of Bayes).
        assert 0 <= row["mean gap bayesgmm"] < 2 and -0.5 < row["mean gap sklearn"] < 2


def test_classifier_defaults_tol_reaches_the_classifier(tmp_path):
    """``--tol`` is GMMClassifier's: at scikit-learn's 1e-3 its EM stops in
    fewer iterations than at its own default (the recorded n_iter_)."""
    loose = run_script("classifier_defaults", tmp_path, "--types", "diag", "--tol", "1e-3")
    assert loose["settings"]["tol"] == 1e-3
    default = run_script("classifier_defaults", tmp_path, "--types", "diag")
    assert default["settings"]["tol"] is None
    assert loose["raw"][0]["bayesgmm n_iter"] < default["raw"][0]["bayesgmm n_iter"]


def test_block_budget_quick(tmp_path):
    r = run_script("block_budget", tmp_path)
    check_machine(r, "block_budget", pomegranate_requested=False)
    full, diag = r["rows"]
    from bayesgmm import fitting
    # Each family's own constant, its shipped value among the budgets
    # compared, and every budget the same fit (the sums' order only).
    assert (full["type"], full["budget constant"], full["shipped"]) == \
        ("full", "DENSE_BLOCK_ELEMENTS", fitting.DENSE_BLOCK_ELEMENTS)
    assert (diag["type"], diag["budget constant"], diag["shipped"]) == \
        ("diag", "BLOCK_ELEMENTS", fitting.BLOCK_ELEMENTS)
    for row in (full, diag):
        assert row["budget read"] is True                   # D = 2: no expanded route
        secs = row["raw"]["seconds"]
        assert set(secs) == {"65536", "262144", "sklearn"}
        assert row["loss spread / point"] < 1e-6
        shipped = statistics.median(secs[str(row["shipped"])])
        assert math.isclose(row["2**16 / shipped"], statistics.median(secs["65536"]) / shipped)
        assert math.isclose(row["sklearn s"], statistics.median(secs["sklearn"]))


def test_em_acceleration_quick(tmp_path):
    r = run_script("em_acceleration", tmp_path)
    check_machine(r, "em_acceleration", pomegranate_requested=False)
    (row,) = r["rows"]
    assert row["type"] == "diag" and row["squarem converged"] and row["plain converged"]
    raw = row["raw"]
    # The same objective from the same starts: the accelerated fit ends no
    # worse than plain EM's (to float32 rounding), in fewer iterations.
    assert len(raw["loss_diff_per_point"]) == 2 and max(raw["loss_diff_per_point"]) < 1e-5
    assert sum(raw["it_squarem"]) < sum(raw["it_plain"])
    assert math.isclose(row["time ratio squarem/plain"],
                        statistics.median(raw["s_squarem"]) / statistics.median(raw["s_plain"]))


def test_startup_quick(tmp_path):
    r = run_script("startup", tmp_path)
    check_machine(r, "startup", pomegranate_requested=False)
    rows = {row["command"]: row for row in r["rows"]}
    assert set(rows) == set(r["raw"]) and len(rows) == 7
    assert {name: row["bar s"] for name, row in rows.items() if row["bar s"]} == {
        'python -c "import bayesgmm"': 0.5, "bayesgmm --help": 1.0, "bayesgmm demo": 4.0}
    for name, row in rows.items():
        assert len(r["raw"][name]) == 1 and row["median s"] == r["raw"][name][0] > 0
        # Every command really ran (a failure stops the script) and warned nothing.
        assert row["warning lines"] == 0, name


@pytest.mark.parametrize("features,covariance_type", [(5, "full"), (12, "full"), (12, "diag")])
def test_missing_values_quick(tmp_path, features, covariance_type):
    """At the default 5 features (the factor route), at 12 (mostly the
    precision route of ``observed_terms``), and diagonal (masked products,
    no Wishart prior to vary)."""
    r = run_script("missing_values", tmp_path, "--features", str(features),
                   "--covariance-type", covariance_type)
    assert r["benchmark"] == "missing_values" and r["quick"] is True
    rows = {(row["data"], row["method"]): row for row in r["rows"]}
    assert {row["covariance_type"] for row in r["rows"]} == {covariance_type}
    assert len(rows) == (10 if covariance_type == "full" else 8)   # 2 data sets x 5 (4) methods
    syn = {m: row for (d, m), row in rows.items() if d == f"synthetic D={features} K=3"}
    ours = syn["marginalize (bayesgmm, default priors)"]
    # The in-model fit beats both peers on held-out likelihood and means
    # (complete-case deletion where enough rows are complete), and its
    # conditional-mean imputation beats the mean and KNN imputers.
    assert ours["heldout_loglik"] > syn["mean-impute + sklearn GMM"]["heldout_loglik"]
    complete = syn["complete-case + sklearn GMM"]["heldout_loglik"]
    assert (features > 5 and complete is None) or ours["heldout_loglik"] > complete
    assert ours["mean_error"] < syn["mean-impute + sklearn GMM"]["mean_error"]
    assert ours["impute_rmse"] < min(syn["mean-impute + sklearn GMM"]["impute_rmse"],
                                     syn["KNNImputer (k=5)"]["impute_rmse"])


def test_large_data_quick(tmp_path):
    """A 2e6 x 4 memmap fitted in one process and in two under torchrun:
    both finish, the two ranks hold the same parameters, and the per-pass
    figures and peak RSS are reported."""
    r = run_script("large_data", tmp_path, "--dir", str(tmp_path))
    assert r["benchmark"] == "large_data" and r["quick"] is True
    rows = {row["processes"]: row for row in r["rows"]}
    assert set(rows) == {1, 2}
    assert rows[2]["ranks_agree"]
    for row in rows.values():
        assert row["peak_rss_mb"] < 1500 and row["em_pass_s"] > 0


def test_small_n_quick(tmp_path):
    r = run_script("small_n", tmp_path)
    assert r["benchmark"] == "small_n" and r["quick"] is True
    assert r["machine"]["device"] == "cpu" and r["machine"]["torch"]
    rows = {row["method"]: row for row in r["rows"]}
    assert len(rows) == 5 and all(row["n"] == 30 and row["seeds"] == 2 for row in rows.values())
    # Gaps to the truth are negative (no fit beats the truth on average
    # over 500 held-out points by much), and the default MAP beats maximum
    # likelihood here (n = 30: ML overfits).
    for row in rows.values():
        assert row["mean"] < 0.05 and len(row["per_seed"]) == 2
    assert rows["bayesgmm MAP (default priors)"]["mean"] > rows["sklearn GaussianMixture (ML)"]["mean"]


def test_posterior_speed_quick(tmp_path):
    r = run_script("posterior_speed", tmp_path)
    assert r["benchmark"] == "posterior_speed" and r["quick"] is True
    rows = {row["method"]: row for row in r["rows"]}
    assert rows["bayesgmm NUTS, 4 chains"]["max_rhat"] > 0.9
    assert all(row["seconds"] > 0 for row in rows.values())
    # Every fit of the synthetic data scored (quick: figures not
    # meaningful); the VI posterior predictive and the MAP beat scikit-learn's
    # variational fit at its defaults.
    lls = {m: row["heldout_loglik"] for m, row in rows.items() if row["heldout_loglik"] is not None}
    assert len(lls) == 4 and all(np.isfinite(v) for v in lls.values())
    sk = lls["sklearn BayesianGaussianMixture (default)"]
    assert lls["bayesgmm VI (default)"] > sk and lls["bayesgmm MAP (default)"] > sk


def test_calibration_quick(tmp_path):
    r = run_script("calibration", tmp_path)
    check_machine(r, "calibration", pomegranate_requested=False)
    # The simulator is the model: equal log joints, prior draws alike.
    check = r["simulator_check"]
    assert check["max_rel_log_joint_difference"] < 1e-9
    assert all(p > 1e-3 for p in check["ks_pvalues"].values())
    assert r["complete"] is True
    records = r["records"]
    # quick: 3 data sets per study, each fitted by both methods
    assert sorted((x["study"], x["method"]) for x in records) == sorted(
        [(s, m) for s in ("prior", "fixed") for m in ("nuts", "vi") for _ in range(3)])
    for x in records:
        assert "error" not in x, x.get("error")
        K = len(x["truth"]["weights"])
        D = len(x["truth"]["means"][0])
        assert sorted(x["truth_perm"]) == list(range(K))
        assert x["draws_in_map_order"]
        for name, shape in (("weights", (K,)), ("means", (K, D)), ("scales", (K, D))):
            lo, hi = (np.array(b) for b in x["interval"][name])
            covered, side = np.array(x["covered"][name]), np.array(x["side"][name])
            rank = np.array(x["rank"][name])
            assert lo.shape == hi.shape == covered.shape == rank.shape == shape
            assert np.all(lo <= hi) and np.all((rank >= 0) & (rank <= 1))
            assert np.array_equal(covered, side == 0)
        if x["study"] == "prior":
            # The fit used the simulator's prior as given.
            used = x["priors_used"]
            assert used["weight_concentration"] == [3.0, 3.0] and used["scale_shape"] == 6.0
            assert used["mean_scale"] == [3.0, 3.0] and used["scale_rate"] == [5.0, 5.0]
        else:
            # Well separated, 200 points: the aligned truth sits next to the
            # MAP, so the alignment paired the right components.
            assert np.max(np.abs(np.array(x["map"]["means"])
                                 - np.array(x["truth_aligned"]["means"]))) < 0.6
        if x["method"] == "nuts":
            # (tiny chains: an R-hat may be inf, written as null)
            assert (x["max_rhat"] is None or x["max_rhat"] > 0.9) and x["n_divergent"] >= 0
    rows = {(x["study"], x["method"], x["parameter"]): x for x in r["rows"]}
    assert len(rows) == 16
    for (study, method, name), row in rows.items():
        K, D = (2, 2) if study == "prior" else (3, 2)
        per = {"weights": K, "means": K * D, "scales": K * D, "all": K + 2 * K * D}[name]
        assert row["datasets"] == 3 and row["intervals"] == 3 * per
        # The 50% intervals lie inside the 90% ones.
        assert 0 <= row["coverage_50"] <= row["coverage_90"] <= 1
        assert math.isclose(row["below"] + row["above"], 1 - row["coverage_90"], abs_tol=1e-12)
    assert {(d["study"], d["method"]) for d in r["diagnostics"]} == \
        {(s, m) for s in ("prior", "fixed") for m in ("nuts", "vi")}


def test_dp_quick(tmp_path):
    r = run_script("dp", tmp_path, "--threads", "1")
    check_machine(r, "dp", pomegranate_requested=False)
    assert r["complete"] is True
    methods = ["bayesgmm DP (VI)", "sklearn BGMM (defaults, max_iter=100)",
               "sklearn BGMM (max_iter=1000)", "sklearn BGMM (max_iter=1000, same alpha)"]
    assert r["methods"] == methods
    # quick: true K = 1 and 3, 2 seeds each, every data set fitted by every method
    records = r["records"]
    assert sorted((x["K"], x["seed"], x["method"]) for x in records) == sorted(
        (K, s, m) for K in (1, 3) for s in (0, 1) for m in methods)
    for x in records:
        assert "error" not in x, x.get("error")
        assert x["n"] == 100 * x["K"] and sum(x["true_counts"]) == x["n"]
        assert min(x["true_counts"]) >= 30          # the weight floor: >= 30 points each
        if x["K"] > 1:
            assert x["min_distance_in_max_std"] >= 8.0
        w = np.array(x["weights_sorted"])
        assert len(w) == 10 and np.all(np.diff(w) <= 0) and math.isclose(w.sum(), 1, abs_tol=1e-6)
        # The two counts read from the weights, as the README defines them.
        assert x["k_point"] == int(np.sum(w * x["n"] >= 1))
        assert x["k_strict"] == int(np.sum(w >= 0.01))
        assert x["k_strict"] <= x["k_point"]        # n >= 100: w >= 0.01 means w n >= 1
        assert x["k_effective_correct"] == (x["k_effective"] == x["K"])
        assert x["seconds"] > 0
    summary = {row["method"]: row for row in r["summary"]}
    for name, row in summary.items():
        mine = [x for x in records if x["method"] == name]
        assert row["cases"] == 4 and row["errors"] == 0
        assert row["correct"] == sum(x["k_effective"] == x["K"] for x in mine)
        assert row["correct_strict"] == sum(x["k_strict"] == x["K"] for x in mine)
        assert math.isclose(row["mean_k"], np.mean([x["k_effective"] for x in mine]))
    # On these well-separated clusters the Dirichlet-process fit finds the
    # true K in every quick case (1 and 3 clusters, 100 points each).
    assert summary["bayesgmm DP (VI)"]["correct"] == 4
    per_k = {row["K"]: row for row in r["per_k"]}
    assert set(per_k) == {1, 3, "all"}
    for name in methods:
        assert per_k["all"][name] == {k: v for k, v in summary[name].items() if k != "method"}
        assert per_k[1][name]["cases"] == per_k[3][name]["cases"] == 2
        assert per_k[1][name]["correct"] + per_k[3][name]["correct"] == summary[name]["correct"]


def test_vi_missing_quick(tmp_path):
    r = run_script("vi_missing", tmp_path)
    check_machine(r, "vi_missing", pomegranate_requested=False)
    (row,) = r["rows"]
    assert row["type"] == "diag" and row["seeds"] == 1 and row["missing"] == 0.95
    # Ratios of interval widths (VI / NUTS), per component and feature:
    # positive and finite (quick chains are short: no claim on their size).
    ratios = np.asarray(row["per_seed"])
    assert ratios.shape == (1, 2, 3) and np.all(np.isfinite(ratios) & (ratios > 0))
    assert row["vi_seconds"] > 0 and row["nuts_seconds"] > 0


def test_pomegranate_leaves_torch_threads_alone():
    """Importing pomegranate's distributions, once torch has run a parallel
    operation, set torch's CPU threads to the machine's count, so every fit
    timed after the first pomegranate model of a benchmark ran on all cores
    whatever --threads said; the helper restores the caller's setting.  In
    a fresh interpreter (the change happens at the first import); skipped
    where pomegranate is not installed (as in CI)."""
    import importlib.util

    import pytest
    if importlib.util.find_spec("pomegranate") is None:
        pytest.skip("pomegranate not installed (benchmarks/README.md)")
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import _common as C; "
            "C.apply_threads(1); torch.randn(100000).exp().sum(); C.pomegranate_gmm(2); "
            "print(torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "1"


def test_streaming_quick(tmp_path):
    r = run_script("streaming", tmp_path)
    check_machine(r, "streaming", pomegranate_requested=False)
    gmm, clf = r["rows"]
    assert (gmm["kind"], gmm["classes"], clf["kind"], clf["classes"]) == \
        ("gmm", 1, "classifier", 3)
    from bayesgmm._base import CHUNK_CHECK_EVERY
    for row in (gmm, clf):
        raw = row["raw"]
        # 20 calls: the first (the fit) untimed, calls 2..16 checked, 17..20 not.
        assert len(raw["checked"]) == row["checked calls"] == CHUNK_CHECK_EVERY - 1
        assert len(raw["unchecked"]) == 4 and len(raw["peer"]) == 20
        assert math.isclose(row["check s"], statistics.median(raw["checked"]) -
                            statistics.median(raw["unchecked"]))
        assert math.isclose(row["per call s"], statistics.mean(raw["checked"] + raw["unchecked"]))
        assert all(0 < t < 60 for t in raw["checked"] + raw["unchecked"] + raw["peer"])


def test_vi_real_quick(tmp_path):
    r = run_script("vi_real", tmp_path)
    check_machine(r, "vi_real", pomegranate_requested=False)
    ours, theirs = r["rows"]
    assert (ours["data"], ours["type"], ours["method"]) == ("iris", "diag", "bayesgmm vi")
    assert theirs["method"] == "sklearn BayesianGaussianMixture"
    for row in (ours, theirs):
        (run,) = row["runs"]                         # --quick: one seed
        assert (row["N"], row["D"]) == (105, 4)      # the 70% training split of iris
        assert row["median fit s"] == run["fit s"] > 0
        assert 1 <= run["effective (w n >= 1)"] <= 4
        # standardised 4-D data: above one standard Gaussian's mean
        # log-likelihood (-5.68), below 0
        assert -6.0 < row["held-out loglik"] == run["held-out loglik"] < 0.0
    assert 1 <= ours["runs"][0]["n_effective_components_"] <= 4
    assert theirs["runs"][0]["n_effective_components_"] is None
