"""Out-of-core fits: data read in row chunks from a memmap (``np.load(...,
mmap_mode="r")``) give the in-memory fit, for every covariance type, with
weights and missing values, with and without restart screening; predictions
on a memmap stream too."""

import copy
import warnings

import numpy as np
import pytest

from bayesgmm import BayesianGMM, GMMClassifier
from bayesgmm import fitting
from bayesgmm.covariance import COVARIANCE_TYPES

CPU = dict(device="cpu", random_state=0)


@pytest.fixture
def small_chunks(monkeypatch):
    # Many chunks (and a short last one) from small data.
    monkeypatch.setattr(fitting, "STREAM_CHUNK_ROWS", 700)


def _data(n=(900, 700, 500), seed=0, D=3):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 1.0 + 0.3 * i, (m, D))
                        for i, (c, m) in enumerate(zip((0.0, 5.0, -5.0), n))])
    return X[rng.permutation(len(X))]


def _memmap(tmp_path, name, A):
    np.save(tmp_path / f"{name}.npy", A)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def _assert_same_fit(a, b, rtol=1e-6):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9)
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_blockwise_fit_equals_in_memory_fit(tmp_path, small_chunks, covariance_type):
    X = _data()
    kw = dict(covariance_type=covariance_type, dtype="float64", **CPU)
    mem = BayesianGMM(3, **kw).fit(X)
    streamed = BayesianGMM(3, **kw).fit(_memmap(tmp_path, "x", X))
    _assert_same_fit(streamed, mem)
    assert streamed.n_iter_ == mem.n_iter_ and streamed.n_features_in_ == 3


def test_blockwise_fit_with_weights_and_missing_values(tmp_path, small_chunks):
    X = _data()
    rng = np.random.default_rng(1)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.2] = np.nan
    Xm[np.isnan(Xm).all(1), 0] = 0.0
    w = rng.integers(1, 4, len(X)).astype(float)
    kw = dict(dtype="float64", missing="marginalize", **CPU)
    mem = BayesianGMM(3, **kw).fit(Xm, sample_weight=w)
    streamed = BayesianGMM(3, **kw).fit(_memmap(tmp_path, "x", Xm),
                                         sample_weight=_memmap(tmp_path, "w", w))
    _assert_same_fit(streamed, mem)


def test_blockwise_fit_screens_the_same_rows(tmp_path, monkeypatch):
    """Past 4 x SCREEN_ROWS rows the restarts are screened on a subsample:
    the streamed fit reads the same rows in its first pass."""
    monkeypatch.setattr(fitting, "STREAM_CHUNK_ROWS", 10_000)
    X = _data(n=(16_000, 12_000, 9_000), D=2)
    assert fitting.screen_rows(len(X), 3) is not None
    kw = dict(dtype="float64", **CPU)
    mem = BayesianGMM(3, **kw).fit(X)
    streamed = BayesianGMM(3, **kw).fit(_memmap(tmp_path, "x", X))
    _assert_same_fit(streamed, mem)
    assert streamed.best_restart_ == mem.best_restart_


@pytest.mark.filterwarnings("ignore:n_components='auto' chose the largest K")
@pytest.mark.parametrize("estimator", ["BayesianGMM", "auto", "GMMClassifier"])
def test_past_the_seed_sample_the_streamed_fit_seeds_from_the_in_memory_fits_rows(
        tmp_path, monkeypatch, estimator):
    """Past SEED_SAMPLE_SIZE rows (100,000; 1,000 here) without screening
    (n_init=1, "auto", the classifier), a fit seeds from a sample of the
    rows.  The streamed fit kept one sample in its pass while the in-memory
    fit drew another per restart inside the seeding (the classifier: none),
    so from 200,000 rows the two were different fits (components
    permuted, or a loss 10.7 apart for the classifier; the large-data audit
    of stop 50).  Both now seed from seed_rows' sample."""
    monkeypatch.setattr(fitting, "SEED_SAMPLE_SIZE", 1_000)
    monkeypatch.setattr(fitting, "STREAM_CHUNK_ROWS", 700)
    X = _data(D=2)
    w = np.random.default_rng(3).integers(0, 3, len(X)).astype(float)
    assert (w > 0).sum() > fitting.SEED_SAMPLE_SIZE
    kw = dict(n_init=1, em_max_iter=30, max_iter=0, dtype="float64", **CPU)
    if estimator == "GMMClassifier":
        y = np.where(X[:, 0] > 2.5, "hi", "lo")
        make = lambda: GMMClassifier(2, **kw)
        fit = lambda est, A, W: est.fit(A, y, sample_weight=W)
    else:
        make = lambda: BayesianGMM("auto" if estimator == "auto" else 3, max_components=4, **kw)
        fit = lambda est, A, W: est.fit(A, sample_weight=W)
    seen = []
    real = fitting.seed_centres
    monkeypatch.setattr(fitting, "seed_centres", lambda points, *a, **k: (
        seen.append([len(p) for p in points]), real(points, *a, **k))[1])
    for module in ("bayesgmm.mixture", "bayesgmm.classifier"):
        monkeypatch.setattr(f"{module}.seed_centres", fitting.seed_centres)
    mem = fit(make(), X, w)
    streamed = fit(make(), _memmap(tmp_path, "x", X), _memmap(tmp_path, "w", w))
    # Each fit seeds twice, the default priors' spread (the mixture's on the
    # rows spread_rows picks, here all), then the restarts: those, in memory
    # and streamed, saw the sample, not every row of positive weight.
    assert len(seen) == 4
    assert all(sum(n) <= fitting.SEED_SAMPLE_SIZE + 2 * fitting.MIN_CLASS_SEED_ROWS
               for n in seen[1::2])
    _assert_same_fit(streamed, mem, rtol=1e-9)


def test_zero_weights_past_the_spread_sample_give_the_fit_without_those_rows(tmp_path):
    """Past SPREAD_SAMPLE_SIZE rows the default priors' spread is measured
    on a sample of the rows of positive weight, streamed or not (the
    streamed fit sampled among all rows: priors 1e-3 apart)."""
    from bayesgmm._base import SPREAD_SAMPLE_SIZE

    X = _data(n=(11_000, 8_000, 5_000), D=2)
    w = np.random.default_rng(2).integers(0, 4, len(X)).astype(float)
    assert (w > 0).sum() > SPREAD_SAMPLE_SIZE
    kw = dict(n_init=1, em_max_iter=5, max_iter=0, dtype="float64", **CPU)
    mem = BayesianGMM(3, **kw).fit(X, sample_weight=w)
    kept = BayesianGMM(3, **kw).fit(X[w > 0], sample_weight=w[w > 0])
    streamed = BayesianGMM(3, **kw).fit(_memmap(tmp_path, "x", X), sample_weight=w)
    for other in (kept, streamed):
        np.testing.assert_allclose(other.priors_.covariance_scale, mem.priors_.covariance_scale,
                                   rtol=1e-12)
        _assert_same_fit(other, mem, rtol=1e-9)


def test_zero_weight_rows_decide_no_screening_seeding_or_size(tmp_path, monkeypatch):
    """Rows of weight 0 are the rows removed, streamed as in memory: whether
    restarts are screened (and on which rows), the seeding sample and the
    n that n_components is checked against count only the rows of positive
    weight (the streamed fit counted every row: it screened 40,000 rows
    where the in-memory fit saw 20,000 and did not, means 0.02 apart)."""
    monkeypatch.setattr(fitting, "STREAM_CHUNK_ROWS", 10_000)
    X = _data(n=(16_000, 14_000, 10_000), D=2)
    w = np.where(np.random.default_rng(3).random(len(X)) < 0.5, 0.0, 1.0)
    assert fitting.screen_rows(len(X), 3) is not None
    assert fitting.screen_rows(int((w > 0).sum()), 3) is None
    kw = dict(n_init=2, em_max_iter=100, max_iter=0, dtype="float64", **CPU)
    mem = BayesianGMM(3, **kw).fit(X, sample_weight=w)
    streamed = BayesianGMM(3, **kw).fit(_memmap(tmp_path, "x", X),
                                        sample_weight=_memmap(tmp_path, "w", w))
    _assert_same_fit(streamed, mem, rtol=1e-9)
    assert streamed.n_iter_ == mem.n_iter_
    few = np.zeros(200)
    few[[3, 50, 120]] = 1.0
    for source in (X[:200], _memmap(tmp_path, "x200", X[:200])):
        with pytest.raises(ValueError, match="n_components=5 but only 3 sample"):
            BayesianGMM(5, **CPU).fit(source, sample_weight=few)


def test_streamed_classifier_leaves_out_a_class_of_zero_weight(tmp_path):
    X = _data(D=2)
    y = np.where(X[:, 0] > 2.5, 1, 0)
    y[:40] = 2
    w = np.where(y == 2, 0.0, 1.0)
    kw = dict(dtype="float64", **CPU)
    fits = []
    for source, weights in ((X, w), (_memmap(tmp_path, "x", X), _memmap(tmp_path, "w", w))):
        with pytest.warns(UserWarning, match=r"every row of class\(es\) \[2\] has sample_weight 0"):
            fits.append(GMMClassifier(2, **kw).fit(source, y, sample_weight=weights))
    mem, streamed = fits
    np.testing.assert_array_equal(streamed.classes_, [0, 1])
    for name in ("weights_", "means_", "covariances_", "class_prior_"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(mem, name), rtol=1e-6,
                                   atol=1e-9)


def _rare_class_data():
    """3000 rows, a class of two of them (5 units off the rest)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 2))
    y = np.zeros(3000, dtype=int)
    y[[10, 20]] = 1
    X[[10, 20]] += 5.0
    return X, y


def test_a_rare_class_keeps_rows_in_the_streamed_seeding_sample(tmp_path, monkeypatch):
    """Past the seeding sample's size the streamed classifier seeds from a
    sample over all classes; a class of two rows missed it and the fit
    raised from scikit-learn's k-means++ ("n_clusters ... Got 0").  The
    sample now keeps rows of every class, and the fit is the in-memory
    one, which seeds from the same sample (before it seeded from all 3000
    rows, and the two agreed to 1e-4, the two-row class to 5%: the MAP
    leans on the default priors, whose spread is measured on the seeding
    sample)."""
    monkeypatch.setattr(fitting, "SEED_SAMPLE_SIZE", 400)
    X, y = _rare_class_data()
    kw = dict(dtype="float64", n_init=1, **CPU)
    mem = GMMClassifier(1, **kw).fit(X, y)
    streamed = GMMClassifier(1, **kw).fit(_memmap(tmp_path, "x", X), y)
    np.testing.assert_array_equal(streamed.class_count_, [2998, 2])
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(mem, name), rtol=1e-9,
                                   atol=1e-12)


def test_a_rare_class_keeps_rows_in_a_process_groups_seeding_sample(tmp_path, monkeypatch):
    """The same over a process group (one real gloo process): past the
    seeding sample's size each rank seeds from its share of a sample,
    which must keep rows of every class."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    monkeypatch.setattr(fitting, "SEED_SAMPLE_SIZE", 100)
    X, y = _rare_class_data()
    kw = dict(dtype="float64", n_init=1, **CPU)
    alone = GMMClassifier(1, **kw).fit(X, y)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        grouped = GMMClassifier(1, **kw).fit(X, y, process_group=dist.group.WORLD)
    finally:
        dist.destroy_process_group()
    np.testing.assert_array_equal(grouped.class_count_, alone.class_count_)
    np.testing.assert_allclose(grouped.means_[0], alone.means_[0], atol=0.02)
    # The two-row class's MAP mean leans on the default priors, whose spread
    # is measured on the 100-200 seeding rows here (all 3000 alone).
    np.testing.assert_allclose(grouped.means_[1], alone.means_[1], atol=0.35)


def test_cover_classes_tops_up_only_the_short_classes():
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 2, 2, 0])
    idx = np.array([0, 2, 4])                        # class 0 only
    got = fitting.cover_classes(idx, labels, 2)
    assert set(idx) <= set(got) and np.all(np.diff(got) > 0)
    np.testing.assert_array_equal(np.bincount(labels[got]), [3, 2, 2])
    got = fitting.cover_classes(idx, labels, 1)
    np.testing.assert_array_equal(np.bincount(labels[got]), [3, 1, 1])
    # A sample that covers every class (or is every row) is left as it is.
    np.testing.assert_array_equal(fitting.cover_classes(np.array([0, 1, 3]), labels, 1), [0, 1, 3])
    np.testing.assert_array_equal(fitting.cover_classes(np.arange(10), labels, 5), np.arange(10))
    # The review's case: 250,000 rows, a class of 1,200 of which a random
    # sample of 100,000 holds about 480, well above the minimum: unchanged.
    rng = np.random.default_rng(3)
    labels = np.zeros(250_000, dtype=int)
    labels[rng.choice(250_000, 1_200, replace=False)] = 1
    idx = np.sort(rng.choice(250_000, 100_000, replace=False))
    np.testing.assert_array_equal(fitting.cover_classes(idx, labels), idx)


def test_a_copy_on_write_memmap_is_fitted_with_its_edits(tmp_path):
    # Its edits live in private pages: reading the file would fit the old values.
    X = _data()
    np.save(tmp_path / "x.npy", X)
    cow = np.load(tmp_path / "x.npy", mmap_mode="c")
    cow[:] = cow * 10 + 100
    kw = dict(dtype="float64", **CPU)
    streamed = BayesianGMM(3, **kw).fit(cow)
    _assert_same_fit(streamed, BayesianGMM(3, **kw).fit(np.array(cow)))
    np.testing.assert_array_equal(streamed.score_samples(cow), streamed.score_samples(np.array(cow)))


def test_float32_blockwise_fit_agrees_to_rounding(tmp_path, small_chunks):
    X = _data()
    mem = BayesianGMM(3, **CPU).fit(X)
    streamed = BayesianGMM(3, **CPU).fit(_memmap(tmp_path, "x", X))
    _assert_same_fit(streamed, mem, rtol=1e-5)


def test_predictions_stream_from_a_memmap(tmp_path, small_chunks):
    X = _data()
    gmm = BayesianGMM(3, **CPU).fit(X)
    mm = _memmap(tmp_path, "x", X)
    np.testing.assert_array_equal(gmm.predict(mm), gmm.predict(X))
    np.testing.assert_array_equal(gmm.score_samples(mm), gmm.score_samples(X))
    bad = X.copy()
    bad[1500, 2] = np.nan
    with pytest.raises(ValueError, match="NaN in column 2"):
        gmm.predict(_memmap(tmp_path, "bad", bad))
    with pytest.raises(ValueError, match="X has 2 features"):
        gmm.predict(_memmap(tmp_path, "two", X[:, :2]))


def test_blockwise_fit_refuses_bad_chunks_and_pyro(tmp_path, small_chunks):
    X = _data()
    bad = X.copy()
    bad[1600, 1] = np.inf
    with pytest.raises(ValueError, match="inf in column 1"):
        BayesianGMM(3, **CPU).fit(_memmap(tmp_path, "bad", bad))
    nan = X.copy()
    nan[1600, 1] = np.nan
    with pytest.raises(ValueError, match="missing='marginalize'"):
        BayesianGMM(3, **CPU).fit(_memmap(tmp_path, "nan", nan))
    with pytest.raises(ValueError, match="backend='fused'"):
        BayesianGMM(3, backend="pyro", **CPU).fit(_memmap(tmp_path, "x", X))
    w = np.ones(len(X))
    w[1800] = -1
    with pytest.raises(ValueError, match="finite and >= 0, got -1.0 at row 1800"):
        BayesianGMM(3, **CPU).fit(_memmap(tmp_path, "x", X), sample_weight=_memmap(tmp_path, "w", w))


# --------------------------------------------------------------- partial_fit
def _stream(n_chunks=100, size=500, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.choice(3, n_chunks * size, p=[0.5, 0.3, 0.2])
    X = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])[z] + rng.normal(size=(len(z), 2)) * [1, 0.7]
    return X


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_partial_fit_over_100_chunks_reaches_the_batch_fit(covariance_type):
    X = _stream()
    batch = BayesianGMM(3, covariance_type=covariance_type, **CPU).fit(X)
    online = BayesianGMM(3, covariance_type=covariance_type, **CPU)
    for chunk in np.array_split(X, 100):
        online.partial_fit(chunk)
    assert online.n_partial_fits_ == 100
    gap = batch.score(X) - online.score(X)
    assert abs(gap) < 1e-3, gap
    o_b, o_o = np.argsort(batch.means_[:, 0]), np.argsort(online.means_[:, 0])
    np.testing.assert_allclose(online.means_[o_o], batch.means_[o_b], atol=0.05)


def test_partial_fit_first_call_is_fit_and_weights_repeat_rows():
    X = _stream(n_chunks=3)
    first, rest = X[:500], X[500:]
    a = BayesianGMM(3, dtype="float64", **CPU).partial_fit(first)
    b = BayesianGMM(3, dtype="float64", **CPU).fit(first)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    w = np.random.default_rng(0).integers(0, 3, len(rest))
    a.partial_fit(rest, sample_weight=w)
    c = BayesianGMM(3, dtype="float64", **CPU).partial_fit(first)
    c.partial_fit(np.repeat(rest, w, axis=0))
    np.testing.assert_allclose(a.means_, c.means_, rtol=1e-9)
    np.testing.assert_allclose(a.covariances_, c.covariances_, rtol=1e-9)
    # n_partial_fits_ counts the calls since the last fit: a fit restarts it
    # (as it restarts the running average).
    assert a.n_partial_fits_ == 2
    # loss_ was the first chunk's fit's; the stream's objective is not
    # known, so a later call leaves NaN (not a stale number), while
    # losses_, n_iter_ and converged_ still describe that fit.
    assert BayesianGMM(3, dtype="float64", **CPU).partial_fit(first).loss_ == b.loss_
    assert np.isnan(a.loss_) and a.losses_[-1] == b.losses_[-1]
    # dtype changed between calls: the running statistics follow it.
    d = BayesianGMM(3, dtype="float64", **CPU).partial_fit(first)
    d.partial_fit(rest[:700])
    d.set_params(dtype="float32").partial_fit(rest[700:])
    e = BayesianGMM(3, dtype="float64", **CPU).partial_fit(first)
    e.partial_fit(rest[:700])
    e.partial_fit(rest[700:])
    np.testing.assert_allclose(d.means_, e.means_, rtol=1e-5, atol=1e-5)
    a.fit(first)
    assert not hasattr(a, "n_partial_fits_")
    a.partial_fit(rest)
    assert a.n_partial_fits_ == 1


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_partial_fit_continues_after_load_and_takes_missing_values(tmp_path, covariance_type):
    X = _stream(n_chunks=40)
    gmm = BayesianGMM(3, covariance_type=covariance_type, missing="marginalize",
                      dtype="float64", **CPU)
    for chunk in np.array_split(X[:10_000], 10):
        gmm.partial_fit(chunk)
    gmm.save(tmp_path / "m.bgmm")
    back = BayesianGMM.load(tmp_path / "m.bgmm")
    assert back.n_partial_fits_ == 10
    Xm = X[10_000:].copy()
    Xm[np.random.default_rng(0).random(Xm.shape) < 0.2] = np.nan
    Xm[np.isnan(Xm).all(1), 0] = 0.0
    # A saved model keeps the stream's running statistics: the loaded one
    # continues the stream exactly as the saved one does (silently; before,
    # it started a new average and warned).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for chunk in np.array_split(Xm, 10):
            back.partial_fit(chunk)
            gmm.partial_fit(chunk)
    assert back.n_partial_fits_ == gmm.n_partial_fits_ == 20
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gmm, name))
    # Saved again mid-stream: the same bytes as the in-memory model's file.
    back.save(tmp_path / "back.bgmm")
    gmm.save(tmp_path / "again.bgmm")
    assert (tmp_path / "back.bgmm").read_bytes() == (tmp_path / "again.bgmm").read_bytes()
    # A file without the statistics (as an earlier release saved them)
    # starts a new average, says so, and counts from 1, pointing at the
    # caller's line.
    old = copy.deepcopy(gmm)
    del old._stream
    old.save(tmp_path / "old.bgmm")
    with pytest.warns(UserWarning, match="loaded after 20 partial_fit calls from a file "
                                         "without the stream's running statistics") as caught:
        loaded = BayesianGMM.load(tmp_path / "old.bgmm").partial_fit(X[:500])
    assert [w.filename for w in caught] == [__file__] and loaded.n_partial_fits_ == 1
    assert np.all(np.isfinite(loaded.means_))
    assert back.score(X) > BayesianGMM(3, covariance_type=covariance_type, dtype="float64",
                                       **CPU).fit(X[:500]).score(X) - 0.01
    with pytest.raises(ValueError, match="X has 3 features"):
        back.partial_fit(np.zeros((5, 3)))
    # A model fitted by fit and saved by a release that did not record the
    # fit's data mass: the first chunk replaced the fit without a word
    # (weights [1, 0, 0] from 20 rows).  Refused, the model kept.
    fitted = BayesianGMM(3, covariance_type=covariance_type, dtype="float64", **CPU).fit(X)
    del fitted._fit_mass
    fitted.save(tmp_path / "fitted-old.bgmm")
    loaded = BayesianGMM.load(tmp_path / "fitted-old.bgmm")
    before = loaded.predict_proba(X[:50])
    with pytest.raises(ValueError, match=r"loaded from a file saved by an earlier bayesgmm, which "
                                         r"did not record it: .*refit it with fit\(X\)"):
        loaded.partial_fit(X[:20])
    np.testing.assert_array_equal(loaded.predict_proba(X[:50]), before)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_stream_with_a_cluster_of_identical_rows_saves_and_loads(tmp_path, covariance_type):
    # (From a review.) float32 re-centring leaves second moments of about
    # -1e-22 for a component whose rows coincide; the load check refused
    # them, so save refused the model.
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(400, 3)), rng.normal(size=(400, 3)) + 8,
                        np.tile(rng.normal(size=3) * 5, (400, 1))])
    X = X[rng.permutation(len(X))]
    gmm = BayesianGMM(3, covariance_type=covariance_type, n_init=1, **CPU)
    for chunk in np.array_split(X, 8):
        gmm.partial_fit(chunk)
    gmm.save(tmp_path / "m.bgmm")
    back = BayesianGMM.load(tmp_path / "m.bgmm").partial_fit(X[:300])
    np.testing.assert_array_equal(back.means_, gmm.partial_fit(X[:300]).means_)


def test_a_stream_pickled_by_the_previous_layout_continues(tmp_path):
    # bayesgmm 0.2.0 kept the running statistics as "_online" (a
    # Standardizer and tensors); such a pickle continues the stream, and
    # saves, as one of today's.
    import pickle

    import torch

    from bayesgmm._options import STREAM_STATS
    from bayesgmm.fitting import Stats
    from bayesgmm.priors import Standardizer
    X = _stream(n_chunks=4)
    gmm = BayesianGMM(3, dtype="float64", **CPU)
    for chunk in np.array_split(X[:1500], 3):
        gmm.partial_fit(chunk)
    old = copy.deepcopy(gmm)
    state = vars(old).pop("_stream")
    old._online = {"std": Standardizer(state["center"], state["scale"]), "t": state["t"],
                   "mass": state["mass"],
                   "avg": Stats(*(torch.as_tensor(state["avg"][k]) for k in STREAM_STATS))}
    back = pickle.loads(pickle.dumps(old))
    assert not hasattr(back, "_online")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back.partial_fit(X[1500:])
    gmm.partial_fit(X[1500:])
    np.testing.assert_array_equal(back.means_, gmm.means_)
    assert back.n_partial_fits_ == gmm.n_partial_fits_ == 4
    back.save(tmp_path / "m.bgmm")


def test_stats_fields_are_the_saved_stream_layout():
    from dataclasses import fields

    from bayesgmm._options import STREAM_STATS
    assert tuple(f.name for f in fields(fitting.Stats)) == STREAM_STATS


@pytest.mark.parametrize("name, value, match", [
    ("n_components", 4, "fitted mixture of n_components=3, but n_components is now 4"),
    ("covariance_type", "diag", "fitted covariance_type='full', but covariance_type is now 'diag'"),
    ("weight_prior", "dirichlet_process", "weight_prior='dirichlet_process' has no MAP"),
    # Settings a continuing call does not read, checked as fit checks them
    # (they were accepted, and refused only at the next fit).
    ("n_threads", 0, r"n_threads must be >= 1, got 0"),
    ("tol", -1.0, r"tol must be"),
    ("n_init", 0, r"n_init must be >= 1, got 0"),
    ("learning_rate", float("nan"), r"learning_rate must be"),
    ("init", "bogus", r"init must be one of"),
    ("backend", "bogus", r"backend must be one of"),
    ("device", "bogus", r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'bogus'"),
    ("random_state", True, r"random_state must be None, an integer"),
])
def test_partial_fit_refuses_settings_changed_since_the_fit(name, value, match):
    # Before, these were silently ignored: the update kept the fitted K,
    # covariance type and weight prior.
    X = _stream(n_chunks=2)
    gmm = BayesianGMM(3, **CPU).fit(X[:500])
    before = {k: np.copy(v) for k, v in vars(gmm).items() if k.endswith("_")
              and isinstance(v, np.ndarray)}
    gmm.set_params(**{name: value})
    with pytest.raises(ValueError, match=match):
        gmm.partial_fit(X[500:])
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(gmm, k), v)


def test_partial_fit_takes_priors_given_since_the_fit():
    # Fields the new priors give replace the fitted ones; those they leave
    # None keep them (as a warm start does).
    from dataclasses import replace

    from bayesgmm import Priors
    X = _stream(n_chunks=2)
    a = BayesianGMM(3, dtype="float64", **CPU).fit(X[:500])
    b = BayesianGMM(3, dtype="float64", **CPU).fit(X[:500])
    a.set_params(priors=Priors(mean_loc=[10.0, -10.0], mean_scale=0.01)).partial_fit(X[500:])
    b.priors_ = replace(b.priors_, mean_loc=np.array([10.0, -10.0]),
                        mean_scale=np.array([0.01, 0.01]))
    b.partial_fit(X[500:])
    np.testing.assert_array_equal(a.priors_.covariance_scale, b.priors_.covariance_scale)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    # data within 4 of 0; the prior weighs against the fit's 500 rows and the chunk's 500
    np.testing.assert_allclose(a.means_, np.broadcast_to([10.0, -10.0], (3, 2)), atol=1.0)


def test_a_diverging_chunk_is_refused_with_a_remedy_partial_fit_has():
    """(From an independent audit.) A chunk far outside the stream's scale
    makes the stepwise update non-finite: refused, the model kept, and the
    remedy no longer names learning_rate, which stepwise EM never uses."""
    X = _stream(n_chunks=1)
    gmm = BayesianGMM(2, **CPU).fit(X)
    means = gmm.means_.copy()
    with pytest.raises(ValueError, match=r"the partial_fit diverged .*: check the data and any sample "
                                         r"weights for extreme values, or fit with "
                                         r"dtype='float64', or raise the covariance prior "
                                         r"\(Priors.scale_rate or covariance_scale\)$"):
        gmm.partial_fit(X * 1e40)
    np.testing.assert_array_equal(gmm.means_, means)


def test_memmap_of_one_feature_and_overflowing_memmaps(tmp_path):
    # A 1-D memmap is one feature, as a 1-D array is (it raised IndexError);
    # values past float64 variances are named with their magnitude (the
    # message itself failed before, on a NaN magnitude).
    X = _stream(n_chunks=1)[:, :1]
    one = _memmap(tmp_path, "one", X[:, 0])
    a = BayesianGMM(3, **CPU).fit(one)
    b = BayesianGMM(3, **CPU).fit(X[:, 0])
    np.testing.assert_array_equal(a.means_, b.means_)
    big = _memmap(tmp_path, "big", X * 1e200)
    for est, y in ((BayesianGMM(2, **CPU), None), (GMMClassifier(1, **CPU), np.arange(len(X)) % 2)):
        with pytest.raises(ValueError, match=r"too large.*in feature\(s\) \[0\] \(largest "
                                             r"magnitude .*e\+(199|200).*divide them by "
                                             r"1e\+(199|200)"):
            est.fit(big) if y is None else est.fit(big, y)


# ------------------------------------------------------------ minibatch SVI
def test_minibatch_svi_reaches_the_full_batch_optimum(tmp_path):
    X = _stream(n_chunks=40)                      # 20,000 points
    kw = dict(em_max_iter=0, n_init=1, n_threads=1, **CPU)
    full = BayesianGMM(3, max_iter=3000, **kw).fit(X)
    mini = BayesianGMM(3, max_iter=2000, batch_size=1000, **kw).fit(X)
    assert mini.n_iter_ == 2000                     # no stopping rule on noisy estimates
    gap = (mini.loss_ - full.loss_) / len(X)
    assert abs(gap) < 1e-3, gap
    again = BayesianGMM(3, max_iter=50, batch_size=500, **kw).fit(X)
    np.testing.assert_array_equal(again.means_,
                                  BayesianGMM(3, max_iter=50, batch_size=500, **kw).fit(X).means_)
    with pytest.raises(ValueError, match="batch_size=500 .* backend='fused'"):
        BayesianGMM(3, max_iter=5, batch_size=500, backend="pyro", **kw).fit(X)
    with pytest.raises(ValueError, match="batch_size=500 .* memory"):
        BayesianGMM(3, max_iter=5, batch_size=500, **kw).fit(_memmap(tmp_path, "x", X))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        BayesianGMM(3, max_iter=5, batch_size=0, **kw).fit(X)


@pytest.mark.parametrize("n_components", [3, "auto"])
def test_a_batch_size_that_ends_unused_is_said(n_components):
    # With EM first (the default), SVI runs only when EM stops short: a
    # converged EM left batch_size silently unused, the fit bit for bit the
    # full-batch one.  Said, at the user's line, with the remedy.
    X = _stream(n_chunks=4)
    kw = dict(n_init=1, max_components=4, **CPU)
    with pytest.warns(UserWarning, match=r"batch_size=32 was not used: EM converged .* set "
                                         r"em_max_iter=0") as caught:
        mini = BayesianGMM(n_components, batch_size=32, **kw).fit(X)
    assert [w.filename for w in caught if "batch_size" in str(w.message)] == [__file__]
    np.testing.assert_array_equal(mini.means_, BayesianGMM(n_components, **kw).fit(X).means_)
    # Used (EM stopped short, or no EM): nothing said.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        BayesianGMM(3, batch_size=32, em_max_iter=0, max_iter=5, **kw).fit(X)
        BayesianGMM(3, batch_size=32, em_max_iter=1, max_iter=5, **kw).fit(X)


# ------------------------------------------------------- classifier, out of core
@pytest.mark.filterwarnings("ignore:n_components='auto' chose the largest K")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_classifier_blockwise_fit_equals_in_memory_fit(tmp_path, small_chunks, covariance_type):
    X = _data()
    y = np.where(X[:, 0] > 2.5, "hi", "lo")
    rng = np.random.default_rng(2)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.1] = np.nan
    Xm[np.isnan(Xm).all(1), 0] = 0.0
    w = rng.integers(1, 3, len(X)).astype(float)
    kw = dict(covariance_type=covariance_type, dtype="float64", missing="marginalize",
              max_components=3, **CPU)
    for nc in (2, "auto"):
        mem = GMMClassifier(nc, **kw).fit(Xm, y, sample_weight=w)
        streamed = GMMClassifier(nc, **kw).fit(_memmap(tmp_path, "x", Xm), y,
                                               sample_weight=_memmap(tmp_path, "w", w))
        np.testing.assert_array_equal(streamed.n_components_, mem.n_components_)
        for name in ("weights_", "means_", "covariances_", "class_prior_"):
            np.testing.assert_allclose(getattr(streamed, name), getattr(mem, name), rtol=1e-6,
                                       atol=1e-9)
        assert streamed.loss_ == pytest.approx(mem.loss_, rel=1e-9)
    with pytest.raises(ValueError, match="discriminative fine-tuning needs the data"):
        GMMClassifier(2, discriminative_steps=5, **CPU).fit(_memmap(tmp_path, "x", X), y)


def test_an_h5py_dataset_is_read_in_chunks(tmp_path, small_chunks):
    """A real HDF5 dataset (h5py): the fit reads it in row chunks and equals
    the in-memory fit; predictions read it block by block."""
    h5py = pytest.importorskip("h5py")
    X = _data()
    with h5py.File(tmp_path / "x.h5", "w") as fh:
        fh.create_dataset("X", data=X.astype(np.float32), chunks=(512, 3))
    X32 = X.astype(np.float32).astype(np.float64)
    kw = dict(dtype="float64", **CPU)
    mem = BayesianGMM(3, **kw).fit(X32)
    with h5py.File(tmp_path / "x.h5", "r") as fh:
        streamed = BayesianGMM(3, **kw).fit(fh["X"])
        np.testing.assert_array_equal(streamed.predict(fh["X"]), mem.predict(X32))
    _assert_same_fit(streamed, mem)


class _ChangingSource:
    """A row source (shape, dtype, row slicing, as h5py or zarr datasets)
    whose rows read differently from its ``after``-th pass on, as a file
    rewritten during a long fit would."""

    def __init__(self, A, after, alter):
        self.A, self.after, self.alter, self.passes = A, after, alter, 0
        self.shape, self.dtype = A.shape, A.dtype

    def __getitem__(self, k):
        if isinstance(k, slice) and (k.start or 0) == 0:
            self.passes += 1
        out = np.array(self.A[k])
        return self.alter(out) if self.passes > self.after else out


def _shift(a):
    return a + 1000.0


def _nan_row(a):
    a = a.copy()
    a[min(3, len(a) - 1), 0] = np.nan
    return a


def _swap_columns(a):
    return a[:, ::-1].copy()


def _swap_rows(a):
    a = a.copy()
    a[[0, 1]] = a[[1, 0]]
    return a


@pytest.mark.parametrize("after", [1, 2, 3])
@pytest.mark.parametrize("alter", [_shift, _nan_row, _swap_columns, _swap_rows])
def test_a_source_modified_during_the_fit_is_refused_and_the_fit_kept(small_chunks, after,
                                                                      alter):
    # Before, values shifted after the first pass were fitted without a
    # word (means near 1000 or nonsense, converged_ True), and a NaN that
    # appeared was reported as a diverged fit.
    X = _data(D=2)
    gmm = BayesianGMM(3, n_init=1, **CPU).fit(X[:300])
    before = gmm.means_.copy()
    with pytest.raises(ValueError, match=r"X changed during the fit: rows 0 to 699 read "
                                         r"differently in a later pass"):
        gmm.fit(_ChangingSource(X, after, alter))
    np.testing.assert_array_equal(gmm.means_, before)
    # Two columns or two rows swapped keep the chunk's plain sum and sum of
    # squares bit for bit: they passed as unchanged (the large-data audit of
    # stop 50: the new file fitted in the old file's frame), and are caught
    # by the per-column and positional sums.
    unchanged = BayesianGMM(3, n_init=1, **CPU).fit(_ChangingSource(X, 10 ** 9, None))
    np.testing.assert_allclose(unchanged.means_, BayesianGMM(3, n_init=1, **CPU).fit(X).means_,
                               rtol=1e-5, atol=1e-6)


def test_a_file_truncated_during_the_fit_is_refused_by_name(tmp_path, small_chunks,
                                                            monkeypatch):
    """An .npy file cut short between two passes gave numpy's "cannot
    reshape array of size 147000 into shape (50000,3)"; the fit now names
    the rows it could not read and the remedy, and keeps its state."""
    import bayesgmm.fitting as fitting

    X = _data(D=2)
    np.save(tmp_path / "x.npy", X)
    source = np.load(tmp_path / "x.npy", mmap_mode="r")
    size = (tmp_path / "x.npy").stat().st_size
    gmm = BayesianGMM(3, n_init=1, **CPU).fit(X[:300])
    before = gmm.means_.copy()
    reads = []
    real = fitting.read_rows

    def truncating(src, a, b):
        reads.append(a)
        if len(reads) == 4:            # after the first passes: the file loses 100 rows
            with open(tmp_path / "x.npy", "r+b") as fh:
                fh.truncate(size - 100 * 2 * 8)
        return real(src, a, b)

    monkeypatch.setattr(fitting, "read_rows", truncating)
    with pytest.raises(ValueError, match=r"^X changed while it was being read: rows \d+ to \d+ "
                                         r"of '.*x\.npy' could not be read \(the file ends 200 "
                                         r"value\(s\) short of them"):
        gmm.fit(source)
    np.testing.assert_array_equal(gmm.means_, before)


# ------------------------------------------------- the classifier's partial_fit
def _labelled_stream(n=12_000, seed=0):
    """Three classes: a 2-component, a 1-component and a 3-component
    mixture, rows shuffled, labels as strings."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    centres = [np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[1.5, 3.0]]),
               np.array([[-3.0, 2.0], [-3.0, -2.0], [0.0, -4.0]])]
    comp = [rng.integers(0, len(centres[c])) for c in cls]
    X = np.array([centres[c][k] for c, k in zip(cls, comp)]) + rng.normal(size=(n, 2)) * 0.8
    return X, np.array(["a", "b", "c"])[cls]


def _class_as_mixture(clf, c):
    """Class c of a classifier, mid-stream, as a BayesianGMM in the same
    state: its parameters, priors and stream (frame, count, weight, average)."""
    from bayesgmm import covariance as cov_module

    k = int(clf.n_components_[c])
    g = BayesianGMM(k, covariance_type=clf.covariance_type_, dtype=clf.dtype, **CPU)
    g.weights_, g.means_ = clf.weights_[c][:k].copy(), clf.means_[c][:k].copy()
    cov = clf.covariances_[c] if clf.covariance_type_ == "tied" else clf.covariances_[c][:k]
    g._set_covariances(cov, cov_module.get(clf.covariance_type_, 2))
    g.priors_, g.n_features_in_, g.device_ = clf.priors_[c], 2, clf.device_
    s = clf._stream
    g._stream = {"center": s["center"], "scale": s["scale"], "t": int(s["t"][c]),
                 "mass": float(s["mass"][c]),
                 "avg": {name: v[c:c + 1][:, :k] if v.ndim > 1 else v[c:c + 1]
                         for name, v in s["avg"].items()}}
    g.n_partial_fits_ = clf.n_partial_fits_
    return g


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_classifier_partial_fit_is_each_class_mixtures_stream(covariance_type):
    """One call updates each class present in the chunk exactly as
    BayesianGMM.partial_fit updates that class's mixture from the same
    state with the class's rows (the per-class step sizes, padding and
    masks); a class absent from the chunk keeps everything."""
    X, y = _labelled_stream()
    clf = GMMClassifier({"a": 2, "b": 1, "c": 3}, covariance_type=covariance_type,
                        dtype="float64", **CPU)
    clf.partial_fit(X[:3000], y[:3000])
    for a, skip in ((3000, None), (4000, "c")):     # "c" then one chunk behind
        rows = slice(a, a + 1000)
        clf.partial_fit(X[rows][y[rows] != skip], y[rows][y[rows] != skip])
    assert list(clf._stream["t"]) == [3, 3, 2]
    chunk, labels = X[5000:6000], y[5000:6000]
    keep = labels != "b"
    singles = [_class_as_mixture(clf, c) for c in range(3)]
    before = copy.deepcopy(clf)
    clf.partial_fit(chunk[keep], labels[keep])
    for c, name in enumerate("abc"):
        k = int(clf.n_components_[c])
        if name == "b":      # no rows in the chunk
            np.testing.assert_array_equal(clf.means_[c], before.means_[c])
            np.testing.assert_array_equal(clf._stream["avg"]["S1"][c], before._stream["avg"]["S1"][c])
            assert clf._stream["t"][c] == before._stream["t"][c]
            continue
        g = singles[c].partial_fit(chunk[labels == name])
        np.testing.assert_allclose(clf.weights_[c][:k], g.weights_, rtol=1e-10)
        np.testing.assert_allclose(clf.means_[c][:k], g.means_, rtol=1e-10, atol=1e-12)
        gc = clf.covariances_[c][:k]
        np.testing.assert_allclose(gc, g.covariances_, rtol=1e-10)
        assert clf._stream["t"][c] == g._stream["t"] == before._stream["t"][c] + 1
    assert np.isnan(clf.weights_[1][1:]).sum() == 0 and np.all(clf.weights_[1][1:] == 0)
    assert np.isnan(clf.means_[1][1:]).all()
    np.testing.assert_array_equal(clf.class_count_, before.class_count_ + [
        np.sum(labels[keep] == n) for n in "abc"])


def test_classifier_partial_fit_from_scratch_tracks_the_batch_fit():
    X, y = _labelled_stream()
    Xq, yq = _labelled_stream(4000, seed=1)
    batch = GMMClassifier({"a": 2, "b": 1, "c": 3}, **CPU).fit(X, y)
    online = GMMClassifier({"a": 2, "b": 1, "c": 3}, **CPU)
    for a in range(0, len(X), 600):
        online.partial_fit(X[a:a + 600], y[a:a + 600], classes=["a", "b", "c"])
    assert online.n_partial_fits_ == 20
    # The empirical class prior follows the counts of every row seen.
    np.testing.assert_array_equal(online.class_count_, [np.sum(y == n) for n in "abc"])
    np.testing.assert_allclose(online.class_prior_, online.class_count_ / len(y), rtol=1e-12)
    np.testing.assert_allclose(online.class_prior_, batch.class_prior_, rtol=1e-12)
    assert abs(online.score(Xq, yq) - batch.score(Xq, yq)) <= 0.005
    gap = np.mean(batch.class_log_likelihood(Xq)[np.arange(len(yq)), np.searchsorted(batch.classes_, yq)]
                  - online.class_log_likelihood(Xq)[np.arange(len(yq)), np.searchsorted(online.classes_, yq)])
    assert abs(gap) < 0.01, gap
    assert np.isnan(online.loss_) and np.isnan(online.class_losses_).all()
    # A fit restarts the stream (its averages and count).
    online.fit(X[:2000], y[:2000])
    assert not hasattr(online, "n_partial_fits_") and online._stream is None


def test_classifier_partial_fit_weights_repeat_rows_and_resume_after_load(tmp_path):
    X, y = _labelled_stream(6000)
    w = np.random.default_rng(3).integers(0, 3, 3000)
    kw = dict(dtype="float64", **CPU)
    a = GMMClassifier(2, **kw).partial_fit(X[:3000], y[:3000])
    b = copy.deepcopy(a)
    a.partial_fit(X[3000:], y[3000:], sample_weight=w)
    b.partial_fit(np.repeat(X[3000:], w, 0), np.repeat(y[3000:], w))
    for name in ("weights_", "means_", "covariances_", "class_prior_", "class_count_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)
    # A stream after fit (the fit's data its first chunk) with a class absent
    # from the next chunk saves and loads, and goes on exactly.
    c = GMMClassifier(2, **kw).fit(X[:3000], y[:3000])
    c.partial_fit(X[3000:3600][y[3000:3600] != "c"], y[3000:3600][y[3000:3600] != "c"])
    assert list(c._stream["t"]) == [2, 2, 1]
    np.testing.assert_array_equal(c._stream["mass"][2], np.sum(y[:3000] == "c"))
    c.save(tmp_path / "c.bgmm")
    d = GMMClassifier.load(tmp_path / "c.bgmm")
    for s in range(3600, 6000, 800):
        c.partial_fit(X[s:s + 800], y[s:s + 800])
        d.partial_fit(X[s:s + 800], y[s:s + 800])
    for name in ("weights_", "means_", "covariances_", "class_prior_", "class_count_"):
        np.testing.assert_array_equal(getattr(c, name), getattr(d, name))
    assert d.n_partial_fits_ == 4


@pytest.mark.parametrize("setup, call, match", [
    (dict(), dict(y=["a"] * 5 + ["z"] * 5), r"label\(s\) \['z'\] that the model was not fitted on"),
    (dict(), dict(classes=["a", "b", "c", "d"]), r"classes \['a', 'b', 'c', 'd'\] differ from "
                                                 r"the fitted classes_"),
    (dict(covariance_type="diag"), dict(), "fitted covariance_type='full', but covariance_type "
                                           "is now 'diag'"),
    (dict(n_components=3), dict(), r"fitted n_components_=\[2, 2, 2\], but n_components is now 3"),
    (dict(inference="vi"), dict(), "partial_fit updates the MAP point"),
    (dict(discriminative_steps=10), dict(), "would undo the discriminative fine-tuning"),
    (dict(n_threads=0), dict(), r"n_threads must be >= 1, got 0"),
    (dict(tol=-1.0), dict(), r"tol must be"),
    (dict(device="bogus"), dict(), r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (dict(class_prior=[1.0, 2.0]), dict(), r"class_prior must be 'empirical', 'uniform', 3 "),
])
def test_classifier_partial_fit_refuses_and_keeps_the_model(setup, call, match):
    X, y = _labelled_stream(3000)
    clf = GMMClassifier(2, **CPU).fit(X[:2000], y[:2000])
    clf.partial_fit(X[2000:2500], y[2000:2500])
    before = copy.deepcopy(clf)
    clf.set_params(**setup)
    args = dict(y=y[2500:2510])
    args.update(call)
    with pytest.raises(ValueError, match=match):
        clf.partial_fit(X[2500:2510], **args)
    for name in ("weights_", "means_", "covariances_", "class_prior_", "class_count_"):
        np.testing.assert_array_equal(getattr(clf, name), getattr(before, name))
    assert clf.n_partial_fits_ == 1
    for name in ("t", "mass"):
        np.testing.assert_array_equal(clf._stream[name], before._stream[name])


def test_classifier_partial_fit_first_call_checks():
    X, y = _labelled_stream(3000)
    with pytest.raises(ValueError, match="n_components='auto' would choose each class's K"):
        GMMClassifier("auto", **CPU).partial_fit(X, y)
    first = y[:400] != "c"
    fresh = GMMClassifier(2, **CPU)
    with pytest.raises(ValueError, match=r"first chunk, which has no rows of class\(es\) \['c'\]"):
        fresh.partial_fit(X[:400][first], y[:400][first], classes=["a", "b", "c"])
    assert not hasattr(fresh, "means_")        # left unfitted
    # A label outside classes: said as such (it was "differ from the fitted
    # classes_", of a model not fitted).
    with pytest.raises(ValueError, match=r"y holds label\(s\) \['c'\] that are not in classes "
                                         r"\['a', 'b'\]: give every label"):
        fresh.partial_fit(X[:400], y[:400], classes=["a", "b"])
    assert not hasattr(fresh, "means_")
    # The first call is fit on the chunk.
    a = GMMClassifier(2, dtype="float64", **CPU).partial_fit(X, y)
    b = GMMClassifier(2, dtype="float64", **CPU).fit(X, y)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.loss_ == b.loss_ and a.n_partial_fits_ == 1
    np.testing.assert_array_equal(a.class_count_, [np.sum(y == n) for n in "abc"])


def test_a_corrupt_classifier_stream_is_refused(tmp_path):
    # save() runs load's checks on what it would write: a state no load
    # would take is refused there, naming the check, and the good file kept.
    X, y = _labelled_stream(3000)
    clf = GMMClassifier(2, **CPU).fit(X[:2000], y[:2000])
    clf.partial_fit(X[2000:], y[2000:])
    clf.save(tmp_path / "m.bgmm")
    good = (tmp_path / "m.bgmm").read_bytes()
    for name, value, match in [("t", np.array([1, 1]), r"_stream t is not 3 counts"),
                               ("t", np.array([1, 0, 1]), r"_stream mass is not a positive weight")]:
        bad = copy.deepcopy(clf)
        bad._stream[name] = value
        with pytest.raises(ValueError, match=match):
            bad.save(tmp_path / "m.bgmm")
        assert (tmp_path / "m.bgmm").read_bytes() == good
    bad = copy.deepcopy(clf)
    bad.class_count_ = np.array([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="class_count_ holds a class weight that is not a "
                                         "positive number"):
        bad.save(tmp_path / "m.bgmm")


def test_after_fit_a_few_rows_update_the_fit_by_their_weight():
    """(From a review.) After fit the stream starts from the fit, its data
    the first chunk, and a chunk's step grows with its weight: three far
    rows move a one-component fit of 3,000 rows by about eta = 1 - (1 -
    3^-0.6)^(3/3000) of their distance (they replaced it before), and
    every class of a classifier likewise."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 2))
    far = np.full((3, 2), 10.0)
    gmm = BayesianGMM(1, dtype="float64", **CPU).fit(X)
    before = gmm.means_[0].copy()
    gmm.partial_fit(far)
    eta = 1 - (1 - 3.0 ** -0.6) ** (3 / 3000)
    np.testing.assert_allclose(gmm.means_[0] - before, eta * (10.0 - before), rtol=0.05)
    assert gmm._stream["t"] == 2 and gmm._stream["mass"] == 3003.0
    y = np.repeat(["a", "b"], 1500)
    clf = GMMClassifier(1, dtype="float64", **CPU).fit(X, y)
    means = clf.means_.copy()
    clf.partial_fit(far, ["b"] * 3)
    np.testing.assert_array_equal(clf.means_[0], means[0])           # "a": no rows
    eta = 1 - (1 - 3.0 ** -0.6) ** (3 / 1500)
    np.testing.assert_allclose(clf.means_[1, 0] - means[1, 0], eta * (10.0 - means[1, 0]),
                               rtol=0.05)
    np.testing.assert_array_equal(clf.class_count_, [1500, 1503])


def test_a_diverging_classifier_chunk_leaves_model_and_stream_as_they_were(tmp_path):
    """(From a review.) The refused chunk's step was kept in the stream
    (counts advanced, averages non-finite), so every later chunk failed and
    save refused the model."""
    X, y = _labelled_stream(3000)
    clf = GMMClassifier(2, **CPU).fit(X[:2000], y[:2000])
    clf.partial_fit(X[2000:2500], y[2000:2500])
    before = copy.deepcopy(clf)
    bad = X[2500:2600].copy()
    bad[0, 0] = 1e30
    with pytest.raises(ValueError, match="the partial_fit diverged"):
        clf.partial_fit(bad, y[2500:2600])
    for name in ("weights_", "means_", "covariances_", "class_count_", "class_prior_"):
        np.testing.assert_array_equal(getattr(clf, name), getattr(before, name))
    for name in ("t", "mass"):
        np.testing.assert_array_equal(clf._stream[name], before._stream[name])
    for name, v in clf._stream["avg"].items():
        np.testing.assert_array_equal(v, before._stream["avg"][name])
    clf.partial_fit(X[2600:], y[2600:])
    before.partial_fit(X[2600:], y[2600:])
    np.testing.assert_array_equal(clf.means_, before.means_)
    clf.save(tmp_path / "m.bgmm")


def test_classifier_partial_fit_of_an_old_model_and_weight_zero_rows():
    X, y = _labelled_stream(3000)
    clf = GMMClassifier(2, **CPU).fit(X[:2000], y[:2000])
    del clf.class_count_                 # as a model saved by bayesgmm 0.2.0
    means = clf.means_.copy()
    with pytest.raises(ValueError, match=r"lacks: refit it with fit"):
        clf.partial_fit(X[2000:], y[2000:])
    np.testing.assert_array_equal(clf.means_, means)
    # Rows of weight 0 leave before their labels are read, as in fit: an
    # unknown label there is no error (and a first call whose class has only
    # weight-0 rows fits without it, as fit does).
    clf = GMMClassifier(2, **CPU).fit(X[:2000], y[:2000])
    labels = np.where(np.arange(1000) < 5, "z", y[2000:])
    w = (labels != "z").astype(float)
    clf.partial_fit(X[2000:], labels, sample_weight=w)
    with pytest.raises(ValueError, match=r"\['z'\] that the model was not fitted on .*: "
                                         r"partial_fit continues the fitted classes: refit with "
                                         r"fit to add a class"):
        clf.partial_fit(X[2000:], labels)
    with pytest.warns(UserWarning, match=r"class\(es\) \['c'\] has sample_weight 0"):
        first = GMMClassifier(2, **CPU).partial_fit(X, y, sample_weight=(y != "c") * 1.0)
    assert first.classes_.tolist() == ["a", "b"]


def test_classifier_stream_average_against_an_independent_computation():
    """(From a review: the per-class check above runs the same shared step
    on both sides.)  The running average's raw moments about 0, in the
    stream's frame, must follow M <- (1 - eta) M + eta M_chunk per class,
    M_chunk from scipy's responsibilities at the current parameters, eta
    the weight-aware step of the class's count and weight; a class without
    rows keeps its average."""
    from scipy.stats import multivariate_normal as mvn

    def raw(avg, c, k):
        Nk, S1, S2, ref = (avg[q][c][:k] for q in ("Nk", "S1", "S2", "ref"))
        M1 = S1 + Nk[:, None] * ref
        M2 = (S2 + np.einsum("ki,kj->kij", S1, ref) + np.einsum("ki,kj->kij", ref, S1)
              + Nk[:, None, None] * np.einsum("ki,kj->kij", ref, ref))
        return Nk, M1, M2

    X, y = _labelled_stream(6000)
    w = np.random.default_rng(4).uniform(0.5, 2.0, len(X))
    clf = GMMClassifier({"a": 2, "b": 1, "c": 3}, dtype="float64", **CPU).fit(X[:3000], y[:3000])
    keep = y[3000:3500] != "c"
    clf.partial_fit(X[3000:3500][keep], y[3000:3500][keep], sample_weight=w[3000:3500][keep])
    for a, skip in ((3500, "a"), (4100, None)):
        rows = slice(a, a + 600)
        sel = y[rows] != skip
        Z, lab, ww = X[rows][sel], y[rows][sel], w[rows][sel]
        s = copy.deepcopy(clf._stream)
        expected = {}
        for c, name in enumerate("abc"):
            k = int(clf.n_components_[c])
            if not (lab == name).any():
                continue
            Zs = (Z[lab == name] - s["center"]) / s["scale"]
            mu = (clf.means_[c][:k] - s["center"]) / s["scale"]
            S = clf.covariances_[c][:k] / np.outer(s["scale"], s["scale"])
            lp = np.stack([np.log(clf.weights_[c][j]) + mvn(mu[j], S[j]).logpdf(Zs)
                           for j in range(k)], 1)
            r = np.exp(lp - lp.max(1, keepdims=True))
            r = r / r.sum(1, keepdims=True) * ww[lab == name][:, None]
            m = ww[lab == name].sum()
            chunk = (r.sum(0) / m, r.T @ Zs / m, np.einsum("nk,ni,nj->kij", r, Zs, Zs) / m)
            t, mass = s["t"][c], s["mass"][c]
            eta = 1 - (1 - (t + 2.0) ** -0.6) ** (m / (mass / t))
            expected[c] = [(1 - eta) * o + eta * ch for o, ch in zip(raw(s["avg"], c, k), chunk)]
        clf.partial_fit(Z, lab, sample_weight=ww)
        for c, name in enumerate("abc"):
            k = int(clf.n_components_[c])
            if c not in expected:
                for q, v in clf._stream["avg"].items():
                    np.testing.assert_array_equal(v[c], s["avg"][q][c])
                continue
            for got, exp in zip(raw(clf._stream["avg"], c, k), expected[c]):
                np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)


def test_out_of_core_text_is_refused_with_both_ways_out(tmp_path):
    # In memory, numbers written as text are converted; read block by block
    # they are not: the message says so (it said only "convert it to float").
    X = _data()[:50]
    np.save(tmp_path / "t.npy", X.astype(str))
    text = np.load(tmp_path / "t.npy", mmap_mode="r")
    fitted = BayesianGMM(2, n_init=1, **CPU).fit(X.astype(str))       # in memory: converted
    for call in (lambda: BayesianGMM(2, **CPU).fit(text), lambda: fitted.predict(text)):
        with pytest.raises(ValueError, match=r"X must hold numbers, got an out-of-core array of "
                                             r"dtype <U\d+ \(text: numbers written as text are "
                                             r"converted only for data in memory\): store it as "
                                             r"numbers .* or pass it in memory"):
            call()


def test_every_partial_fit_call_runs_under_n_threads_and_restores_the_callers(monkeypatch,
                                                                            tmp_path):
    """n_threads holds for each partial_fit call, the first (fit, then its
    chunk's statistics) too, and the caller's count comes back; the cap on
    threads is the machine's, so a model set above it saves (for a larger
    machine) but does not run here."""
    import torch

    import bayesgmm.classifier
    import bayesgmm.mixture
    from bayesgmm._base import max_threads
    seen = []
    for module in (bayesgmm.mixture, bayesgmm.classifier):
        real = module.stream_update
        monkeypatch.setattr(module, "stream_update", lambda *a, _real=real, **k: (
            seen.append(torch.get_num_threads()), _real(*a, **k))[1])
    X, y = _labelled_stream(1500)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for est, args in ((BayesianGMM(2, n_threads=1, **CPU), ()),
                          (GMMClassifier(2, n_threads=1, **CPU), (y,))):
            seen.clear()
            for s in range(0, 1500, 500):
                est.partial_fit(X[s:s + 500], *(a[s:s + 500] for a in args))
                assert torch.get_num_threads() == 2
            assert seen == [1, 1, 1], (type(est).__name__, seen)
            cap = max_threads()
            est.set_params(n_threads=cap + 1)
            est.save(tmp_path / "m.bgmm")                 # for a larger machine: its form only
            with pytest.raises(ValueError, match=rf"n_threads must be in \[1, {cap}\]"):
                est.partial_fit(X[:500], *(a[:500] for a in args))
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
