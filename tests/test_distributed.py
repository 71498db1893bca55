"""Fits over several processes: two real processes started by ``torchrun``
(gloo on the CPU, a free port, a time bound), each fitting its own shard
with ``process_group=WORLD``; both must end with the same parameters, equal
to a one-process fit on the union of the shards."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bayesgmm import BayesianGMM, GMMClassifier
from bayesgmm.covariance import COVARIANCE_TYPES

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from bayesgmm import BayesianGMM, GMMClassifier, Priors
    from bayesgmm.distributed import exit_process

    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = np.load(sys.argv[2])
    X, w, y, cut = data["X"], data["w"], data["y"], int(data["cut"])
    shard = slice(0, cut) if rank == 0 else slice(cut, None)   # uneven shards
    result = {}
    for ct in %(types)r:
        for variant in ("plain", "weighted", "missing"):
            Xs = X[shard].copy()
            kw = {}
            if variant == "missing":
                Xs = data["Xm"][shard]
                kw["missing"] = "marginalize"
            gmm = BayesianGMM(3, covariance_type=ct, random_state=0, device="cpu",
                              dtype="float64", **kw)
            gmm.fit(Xs, sample_weight=w[shard] if variant == "weighted" else None,
                    process_group=dist.group.WORLD)
            result[f"{ct}-{variant}"] = {k: getattr(gmm, k).tolist() for k in
                                         ("weights_", "means_", "covariances_")} | {
                "loss_": gmm.loss_, "n_iter_": gmm.n_iter_}
    for ct in %(types)r:
        for variant in ("plain", "weighted", "auto"):
            clf = GMMClassifier("auto" if variant == "auto" else 2, covariance_type=ct,
                                max_components=3, random_state=0, device="cpu", dtype="float64")
            clf.fit(X[shard], y[shard], sample_weight=w[shard] if variant == "weighted" else None,
                    process_group=dist.group.WORLD)
            result[f"clf-{ct}-{variant}"] = {k: getattr(clf, k).tolist() for k in
                                             ("weights_", "means_", "covariances_",
                                              "class_prior_", "n_components_")} | {
                "loss_": clf.loss_, "classes_": clf.classes_.tolist()}
    # A shard that is refused stops every rank (none waits alone).
    try:
        bad = X[shard].copy()
        if rank == 1:
            bad[0, 0] = np.nan
        BayesianGMM(2, device="cpu").fit(bad, process_group=dist.group.WORLD)
        result["refused"] = "no error"
    except ValueError as exc:
        result["refused"] = str(exc)
    # random_state=None: rank 0's seeds serve every rank (one fit, not two).
    gmm = BayesianGMM(3, n_init=2, em_max_iter=20, max_iter=0, device="cpu", dtype="float64")
    gmm.fit(X[shard], process_group=dist.group.WORLD)
    result["unseeded"] = gmm.means_.tolist()

    def refusal(fit):
        try:
            fit()
            return "no error"
        except ValueError as exc:
            return str(exc)

    # Shards whose columns differ in order, and estimators that differ.
    import pandas as pd
    df = pd.DataFrame(X[shard], columns=["a", "b", "c"])
    result["columns"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
        df if rank == 0 else df[["b", "a", "c"]], process_group=dist.group.WORLD))
    result["settings"] = refusal(lambda: BayesianGMM(2 + rank, device="cpu", random_state=0).fit(
        X[shard], process_group=dist.group.WORLD))
    result["clf_settings"] = refusal(lambda: GMMClassifier(
        2, covariance_type="full" if rank == 0 else "diag", device="cpu").fit(
        X[shard], y[shard], process_group=dist.group.WORLD))
    # Numeric labels on one rank, text on the other: refused on both (the
    # union made every class a string, rank 0's predictions "0" for its 0).
    # Integers and floats are one kind: the classes are floats, equal to
    # the integers.
    yn = (y[shard] == "b").astype(np.int64)
    ys = yn if rank == 0 else yn.astype(str)
    result["label_kinds"] = refusal(lambda: GMMClassifier(1, device="cpu", random_state=0).fit(
        X[shard], ys, process_group=dist.group.WORLD))
    yf = yn if rank == 0 else yn.astype(float)
    mixed_numbers = GMMClassifier(1, device="cpu", random_state=0).fit(
        X[shard], yf, process_group=dist.group.WORLD)
    result["int_float_accuracy"] = float(np.mean(mixed_numbers.predict(X[shard]) == yn))
    # A memmap shard refused by rank 1 (weights of the wrong length) stops
    # rank 0 too, at once; an all-zero in-memory weight shard is named.
    np.save(f"{out}/shard{rank}.npy", X[shard])
    mm = np.load(f"{out}/shard{rank}.npy", mmap_mode="r")
    ws = np.ones(len(mm)) if rank == 0 else np.ones(len(mm) - 1)
    result["memmap_refused"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
        mm, sample_weight=ws, process_group=dist.group.WORLD))
    result["zero_shard"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
        X[shard], sample_weight=np.ones(len(mm)) * (rank == 0), process_group=dist.group.WORLD))
    # Two restarts at one optimum, their losses apart in the last bits
    # (which way depends on how the sums were taken): the same one is kept.
    rng = np.random.default_rng(0)
    c5 = rng.normal(0, 4, (3, 5))
    X5 = np.concatenate([rng.normal(c5[i], 1.0, (80, 5)) for i in range(3)])
    X5 = X5[rng.permutation(len(X5))]
    tie = BayesianGMM(3, covariance_type="tied", n_init=2, em_max_iter=100, max_iter=50,
                      random_state=0, device="cpu", dtype="float64")
    tie.fit(X5[:50] if rank == 0 else X5[50:], process_group=dist.group.WORLD)
    result["tie"] = {"means_": tie.means_.tolist(), "best": tie.best_restart_}
    # warm_start continues each rank's own fitted model: they must agree.
    WORLD = dist.group.WORLD
    warm = dict(warm_start=True, em_max_iter=30, max_iter=0, device="cpu", random_state=0)
    alone = BayesianGMM(3, **warm).fit(X[shard])                   # each rank's own data
    result["warm_differ"] = refusal(lambda: alone.fit(X[shard], process_group=WORLD))
    result["warm_differ_kept"] = alone.means_.tolist()
    est = BayesianGMM(3, **warm)
    if rank == 0:
        est.fit(X[shard])
    result["warm_one_rank"] = refusal(lambda: est.fit(X[shard], process_group=WORLD))
    clf = GMMClassifier(2, **warm).fit(X[shard], y[shard])
    result["warm_clf"] = refusal(lambda: clf.fit(X[shard], y[shard], process_group=WORLD))
    shared = BayesianGMM(3, **warm).fit(X[shard], process_group=WORLD)
    shared.fit(X[shard], process_group=WORLD)                      # the same model: continues
    result["warm_shared"] = shared.means_.tolist()
    # Shards held differently (a memmap on one rank, an array on the
    # other) take paths with different collectives: refused on every rank.
    result["mixed"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
        mm if rank == 0 else X[shard], process_group=WORLD))
    result["mixed_clf"] = refusal(lambda: GMMClassifier(2, device="cpu").fit(
        X[shard] if rank == 0 else mm, y[shard], process_group=WORLD))

    class Changing:
        """A row source (as an h5py dataset) whose rows change after its
        first ``after`` passes."""
        def __init__(self, A, after):
            self.A, self.after, self.passes = A, after, 0
            self.shape, self.dtype = A.shape, A.dtype

        def __getitem__(self, key):
            if isinstance(key, slice) and not key.start:
                self.passes += 1
            return np.array(self.A[key]) + (1.0 if self.passes > self.after else 0.0)

    # A shard that changes on rank 1 during the moments' second pass, or
    # during EM: every rank stops with an error (before: rank 0 waited).
    for after in (1, 3):
        result[f"changed{after}"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
            mm if rank == 0 else Changing(mm, after), process_group=WORLD))
    # Parameters that differ below numpy's printed precision (or in the
    # middle of a large array) are told apart.
    result["close_priors"] = refusal(lambda: BayesianGMM(2, device="cpu", priors=Priors(
        mean_loc=np.array([0.0, 0.0, 1.0 + 1e-10 * rank]))).fit(X[shard], process_group=WORLD))
    # A bad random_state on one rank is refused before any collective.
    result["bad_seed"] = refusal(lambda: BayesianGMM(
        2, device="cpu", random_state=np.random.RandomState(0) if rank == 0 else "a seed").fit(
        X[shard], process_group=WORLD))
    # Values around 0 below 1e-290 on rank 0 only (rank 1 holds zeros):
    # refused on every rank, with one remedy sized on the values of both
    # (rank 1's own rows said 1e+300 and then by 1e+17).
    n_shard = X[shard].shape[0]
    tiny = np.c_[X[shard][:, :1], 1e-300 * (-1.0) ** np.arange(n_shard) if rank == 0
                 else np.zeros(n_shard)]
    result["tiny"] = refusal(lambda: BayesianGMM(2, device="cpu", covariance_type="diag").fit(
        tiny, process_group=WORLD))
    # Weights beyond float32 on rank 1 only, rank 0 unweighted: every rank
    # stops with the span of both ranks' weights (rank 0 waited in the fit's
    # next collective until gloo's timeout), in memory, from a memmap, and
    # in the classifier.
    huge = np.ones(n_shard)
    huge[0] = 1e300
    for key, fit in (
            ("huge_w", lambda w: BayesianGMM(2, device="cpu").fit(X[shard], sample_weight=w,
                                                                  process_group=WORLD)),
            ("huge_w_mm", lambda w: BayesianGMM(2, device="cpu").fit(mm, sample_weight=w,
                                                                     process_group=WORLD)),
            ("huge_w_clf", lambda w: GMMClassifier(1, device="cpu").fit(
                X[shard], y[shard], sample_weight=w, process_group=WORLD))):
        result[key] = refusal(lambda: fit(huge if rank == 1 else None))
    # Values whose variance overflows float64 on rank 1 only: one remedy,
    # sized on the largest (rank 0 was told to divide X by 1).
    big = X[shard].copy()
    if rank == 1:
        big[0, 0] = 1e200
    result["overflow"] = refusal(lambda: BayesianGMM(2, device="cpu").fit(
        big, process_group=WORLD))
    # Out-of-core shards of uneven size whose union fits in the seeding
    # sample (made small here: 400 rows, of which rank 1 holds 220, more
    # than half): the seeds are the union's, so the fit is the one-process
    # fit's (each rank kept at most 400 / 2 rows, and rank 1 seeded from a
    # subsample of its own).
    import bayesgmm.fitting
    modules = (bayesgmm.fitting,)          # the estimators read it from there
    saved = bayesgmm.fitting.SEED_SAMPLE_SIZE
    union = dict(n_init=1, random_state=0, device="cpu", dtype="float64")
    try:
        for mod in modules:
            mod.SEED_SAMPLE_SIZE = 400
        gm = BayesianGMM(3, **union).fit(mm, process_group=WORLD)
        cm = GMMClassifier(2, **union).fit(mm, y[shard], process_group=WORLD)
        result["mm_union"] = {"means_": gm.means_.tolist(), "loss_": gm.loss_,
                              "clf_means_": cm.means_.tolist(), "clf_loss_": cm.loss_}
        # Beyond the sample (100 rows of 360): each rank's share of it, the
        # same fit on both ranks.
        for mod in modules:
            mod.SEED_SAMPLE_SIZE = 100
        gm = BayesianGMM(3, **union).fit(mm, process_group=WORLD)
        cm = GMMClassifier(2, **union).fit(mm, y[shard], process_group=WORLD)
        result["mm_share"] = {"means_": gm.means_.tolist(), "clf_means_": cm.means_.tolist()}
    finally:
        for mod in modules:
            mod.SEED_SAMPLE_SIZE = saved
    # The fit-end checks run on each rank's own shard (they were skipped
    # over several processes): whole-number ratings, on which components
    # sit on single values, and a copied column, dependent on its original.
    import warnings
    rr = np.random.default_rng(0)
    ratings = np.round(np.r_[rr.normal(3, 1, 180), rr.normal(7, 1, 180)])[rr.permutation(360)]
    ratings = ratings[:140, None] if rank == 0 else ratings[140:, None]
    copied = np.c_[X[shard], 2.54 * X[shard][:, 0]]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        BayesianGMM(10, covariance_type="diag", random_state=0, device="cpu").fit(
            ratings, process_group=WORLD)
        GMMClassifier(5, covariance_type="diag", random_state=0, device="cpu").fit(
            ratings, (ratings[:, 0] > 5).astype(int), process_group=WORLD)
        BayesianGMM(2, covariance_type="full", random_state=0, device="cpu").fit(
            copied, process_group=WORLD)
    result["checks"] = [str(w.message) for w in rec]
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(result, fh)
    dist.destroy_process_group()
    exit_process(0)   # gloo's C++ teardown could still abort a finished rank
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (n, 3)) for c, n in ((0, 150), (5, 120), (-5, 90))])
    y = np.repeat(["a", "b", "b"], (150, 120, 90))      # class "b": two clusters
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.2] = np.nan
    Xm[np.isnan(Xm).all(1), 0] = 0.0
    w = rng.integers(0, 4, len(X)).astype(float)
    return X, Xm, w, y, 140


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    X, Xm, w, y, cut = _data()
    np.savez(tmp / "data.npz", X=X, Xm=Xm, w=w, y=y, cut=cut)
    (tmp / "script.py").write_text(SCRIPT % {"types": list(COVARIANCE_TYPES)})
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         str(tmp / "script.py"), str(tmp), str(tmp / "data.npz")],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, (X, Xm, w, y)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("variant", ["plain", "weighted", "missing"])
def test_two_processes_equal_one_fit_on_the_union(two_ranks, covariance_type, variant):
    (r0, r1), (X, Xm, w, y) = two_ranks
    key = f"{covariance_type}-{variant}"
    # Both ranks hold the very same parameters (the same reduced numbers).
    assert r0[key] == r1[key]
    kw = {"missing": "marginalize"} if variant == "missing" else {}
    one = BayesianGMM(3, covariance_type=covariance_type, random_state=0, device="cpu",
                      dtype="float64", **kw).fit(
        Xm if variant == "missing" else X, sample_weight=w if variant == "weighted" else None)
    # Restarts that reach the same optimum in another labelling tie to
    # ~1e-12: float reassociation may pick another of them, so components
    # are compared in the order of their means.
    got = {k: np.array(v) for k, v in r0[key].items() if k.endswith("_")}
    o_got, o_one = np.argsort(got["means_"][:, 0]), np.argsort(one.means_[:, 0])
    for name in ("weights_", "means_", "covariances_"):
        a, b = got[name], getattr(one, name)
        if not (name == "covariances_" and covariance_type == "tied"):
            a, b = a[o_got], b[o_one]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert r0[key]["loss_"] == pytest.approx(one.loss_, rel=1e-9)


def test_a_refused_shard_stops_every_rank(two_ranks):
    (r0, r1), _ = two_ranks
    assert "NaN in column 0" in r1["refused"]
    assert "other rank(s) of the process group refused their shard" in r0["refused"]


def test_a_tiny_spread_on_one_rank_gets_one_remedy_on_every_rank(two_ranks):
    (r0, r1), _ = two_ranks
    for r in (r0, r1):
        assert "spread too small for float64 variances (feature 1: values within 1e-300" in \
            r["tiny"] and r["tiny"].endswith("rescale X, e.g. multiply it by 1e+300"), r["tiny"]


def test_weights_or_values_refused_on_one_rank_stop_every_rank_with_one_message(two_ranks):
    (r0, r1), _ = two_ranks
    for key in ("huge_w", "huge_w_mm", "huge_w_clf"):
        for r in (r0, r1):
            assert r[key].startswith("sample_weight spans 1 to 1e+300 (over every rank's shard), "
                                     "beyond what the fit's float32 arithmetic holds"), r[key]
    for r in (r0, r1):
        assert r["overflow"] == ("X has values too large to fit in float64 arithmetic in "
                                 "feature(s) [0] (largest magnitude 1e+200): rescale them, e.g. "
                                 "divide them by 1e+200")


def test_uneven_memmap_shards_within_the_seed_sample_seed_from_their_union(two_ranks):
    (r0, r1), (X, _, _, y) = two_ranks
    union = dict(n_init=1, random_state=0, device="cpu", dtype="float64")
    one = BayesianGMM(3, **union).fit(X)
    clf = GMMClassifier(2, **union).fit(X, y)
    for r in (r0, r1):
        got = r["mm_union"]
        assert got["loss_"] == pytest.approx(one.loss_, rel=1e-12)
        assert got["clf_loss_"] == pytest.approx(clf.loss_, rel=1e-12)
        np.testing.assert_allclose(got["means_"], one.means_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["clf_means_"], clf.means_, rtol=1e-9, atol=1e-12)
    # Beyond the seeding sample: the ranks fit one mixture, near the union's.
    assert r0["mm_share"] == r1["mm_share"]
    np.testing.assert_allclose(np.sort(np.asarray(r0["mm_share"]["means_"]), 0),
                               np.sort(one.means_, 0), atol=0.3)


def test_ranks_share_rank_0s_seeds_without_a_random_state(two_ranks):
    (r0, r1), _ = two_ranks
    assert r0["unseeded"] == r1["unseeded"]


def test_ranks_refuse_shards_or_estimators_that_differ(two_ranks):
    (r0, r1), _ = two_ranks
    for r in (r0, r1):
        assert "different columns (names or order): rank 0: ['a', 'b', 'c']; rank 1: ['b', 'a', " \
               "'c']" in r["columns"]
        assert "different parameters: n_components: rank 0 2, rank 1 3" in r["settings"]
        assert "covariance_type: rank 0 'full', rank 1 'diag'" in r["clf_settings"]


def test_ranks_refuse_labels_mixing_text_and_numbers(two_ranks):
    (r0, r1), _ = two_ranks
    for r in (r0, r1):
        assert r["label_kinds"].startswith("the processes' y labels mix text and numbers (rank 0: "
                                           "number labels (int64, e.g. 0); rank 1: text labels")
        assert r["label_kinds"].endswith("give every rank labels of one type written the same "
                                         "way (all integers, or all strings made by one rule: "
                                         "0.0 and 0 become the strings '0.0' and '0')")
        # Integer and float labels stay numbers: predictions equal each rank's y.
        assert r["int_float_accuracy"] > 0.8


def test_restarts_tied_to_the_last_bits_keep_the_one_process_choice(two_ranks):
    (r0, r1), _ = two_ranks
    rng = np.random.default_rng(0)
    c5 = rng.normal(0, 4, (3, 5))
    X5 = np.concatenate([rng.normal(c5[i], 1.0, (80, 5)) for i in range(3)])
    X5 = X5[rng.permutation(len(X5))]
    one = BayesianGMM(3, covariance_type="tied", n_init=2, em_max_iter=100, max_iter=50,
                      random_state=0, device="cpu", dtype="float64").fit(X5)
    for r in (r0, r1):
        assert r["tie"]["best"] == one.best_restart_
        np.testing.assert_allclose(r["tie"]["means_"], one.means_, rtol=1e-6, atol=1e-9)


def test_warm_start_needs_the_same_fitted_model_on_every_rank(two_ranks):
    # Before: ranks that had fitted their own shards silently ended with
    # different models; a rank without a fit left the other waiting in a
    # collective (30 minutes); models of different K aborted a process.
    (r0, r1), (X, *_) = two_ranks
    for r in (r0, r1):
        assert "warm_start=True continues each rank's fitted model, and the ranks hold " \
               "different ones (their values differ by up to" in r["warm_differ"]
        assert "rank 0: shapes [(3,), (3, 3), (3, 3, 3)]" in r["warm_one_rank"]
        assert "rank 1: none (a fresh fit)" in r["warm_one_rank"]
        assert "fit with warm_start=False first" in r["warm_clf"]
    # The refused fit kept each rank's model; a shared one continues alike.
    assert r0["warm_differ_kept"] != r1["warm_differ_kept"]
    assert r0["warm_shared"] == r1["warm_shared"]


def test_a_refused_memmap_shard_stops_every_rank(two_ranks):
    # Before, rank 0 waited in a collective (30 minutes by default).
    (r0, r1), _ = two_ranks
    assert "sample_weight has shape" in r1["memmap_refused"]
    assert "other rank(s) of the process group refused their shard" in r0["memmap_refused"]
    assert "every rank's in-memory shard needs at least one row of positive weight" \
        in r1["zero_shard"]
    assert "refused their shard" in r0["zero_shard"]


def test_shards_held_differently_changed_or_with_close_parameters_stop_every_rank(two_ranks):
    # (From an independent audit.) Each of these left a rank waiting in a
    # collective (30 minutes by default) or, for parameters that differed
    # below numpy's printed precision, fitted different models silently.
    (r0, r1), _ = two_ranks
    for r in (r0, r1):
        for key in ("mixed", "mixed_clf"):
            assert "the ranks hold their shards differently (rank 0: " in r[key]
            assert "give every rank an in-memory array, or every rank an out-of-core" in r[key]
        assert "different parameters: priors" in r["close_priors"]
    for after in (1, 3):
        assert "X changed during the fit: rows 0 to" in r1[f"changed{after}"]
        assert "1 other rank(s) of the process group failed to read their shard during the " \
               "fit" in r0[f"changed{after}"]
    assert "random_state must be None, an integer" in r1["bad_seed"]
    assert "other rank(s) of the process group refused their shard" in r0["bad_seed"]


def test_fit_end_checks_run_on_every_rank_s_shard(two_ranks):
    """The checks that end a fit (components on single values of a discrete
    feature, linearly dependent features) read each rank's own rows: every
    rank says them (they were skipped over several processes)."""
    ranks, _ = two_ranks
    for r in ranks:
        said = r["checks"]
        assert any(m.startswith("BayesianGMM: components ") and "sit on a single value of "
                   "feature(s) 0" in m for m in said), said
        assert any(m.startswith("GMMClassifier: class 0: ") and "single value" in m
                   for m in said), said
        assert any("linear combinations of earlier ones (up to rounding): 3 of [0]" in m
                   for m in said), said


def test_process_group_needs_an_initialised_group():
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        BayesianGMM(2, device="cpu").fit(np.random.default_rng(0).normal(size=(50, 2)),
                                         process_group=object())


@pytest.mark.filterwarnings("ignore:n_components='auto' chose the largest K")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("variant", ["plain", "weighted", "auto"])
def test_two_processes_classifier_equals_one_fit(two_ranks, covariance_type, variant):
    from bayesgmm import GMMClassifier

    (r0, r1), (X, Xm, w, y) = two_ranks
    key = f"clf-{covariance_type}-{variant}"
    assert r0[key] == r1[key]
    one = GMMClassifier("auto" if variant == "auto" else 2, covariance_type=covariance_type,
                        max_components=3, random_state=0, device="cpu", dtype="float64").fit(
        X, y, sample_weight=w if variant == "weighted" else None)
    got = r0[key]
    assert got["classes_"] == one.classes_.tolist()
    np.testing.assert_array_equal(got["n_components_"], one.n_components_)
    np.testing.assert_allclose(got["class_prior_"], one.class_prior_, rtol=1e-12)
    assert got["loss_"] == pytest.approx(one.loss_, rel=1e-9)
    # Per class, components in the order of their means (restarts may tie).
    means = np.array(got["means_"])
    for c in range(len(one.classes_)):
        k = int(one.n_components_[c])
        a, b = means[c, :k], one.means_[c, :k]
        np.testing.assert_allclose(a[np.argsort(a[:, 0])], b[np.argsort(b[:, 0])],
                                   rtol=1e-6, atol=1e-9)


def test_exit_process_flushes_runs_atexit_and_keeps_the_code():
    """The ending of torchrun workers (scripts, the CLI, the benchmark):
    buffered output and atexit handlers are not lost, the status is kept."""
    code = textwrap.dedent('''
        import atexit, sys
        from bayesgmm.distributed import exit_process
        atexit.register(lambda: print("atexit ran", flush=False))
        sys.stdout.write("buffered, ")     # to a pipe: block-buffered
        sys.stderr.write("err")
        exit_process(3)
        print("not reached")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "buffered, atexit ran\n"
    assert proc.stderr == "err"
