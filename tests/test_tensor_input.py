"""Prediction on torch tensors: outputs are tensors on the input's device,
equal to the array path's; bad tensors give clear errors; on CUDA the
compiled kernel agrees with the eager one."""

import warnings

import numpy as np
import pytest
import torch

from bayesgmm import BayesianGMM, GMMClassifier, _predict
from bayesgmm.datasets import make_five_class

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def gmm_and_X():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(4, 0.5, (200, 2))]
    return BayesianGMM(2, n_init=1, em_max_iter=50, max_iter=0, device="cpu",
                       random_state=0).fit(X), X


@pytest.fixture(scope="module")
def clf_data():
    X, y, _ = make_five_class(0)
    X, y = X[::5], y[::5]
    clf = GMMClassifier(n_components=2, n_init=1, em_max_iter=30, max_iter=0, device="cpu",
                        random_state=0).fit(X, y)
    return clf, X, y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gmm_tensor_outputs_equal_array_outputs(gmm_and_X, dtype):
    gmm, X = gmm_and_X
    Xt = torch.as_tensor(X, dtype=dtype)
    Xa = Xt.double().numpy()               # the same values as an array
    proba = gmm.predict_proba(Xt)
    assert isinstance(proba, torch.Tensor) and proba.dtype == torch.float64
    np.testing.assert_allclose(proba.numpy(), gmm.predict_proba(Xa), rtol=1e-14, atol=1e-300)
    ll = gmm.score_samples(Xt)
    assert isinstance(ll, torch.Tensor) and ll.shape == (len(X),)
    np.testing.assert_array_equal(ll.numpy(), gmm.score_samples(Xa))
    labels = gmm.predict(Xt)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.numpy(), gmm.predict(Xa))
    draws = gmm.sample_assignments(Xt, 3)
    assert isinstance(draws, torch.Tensor) and draws.shape == (3, len(X))
    np.testing.assert_array_equal(draws.numpy(), gmm.sample_assignments(Xa, 3))
    assert gmm.score(Xt) == pytest.approx(gmm.score(Xa), rel=1e-12)
    assert gmm.bic(Xt) == pytest.approx(gmm.bic(Xa), rel=1e-12)


def test_classifier_tensor_outputs_equal_array_outputs(clf_data):
    clf, X, y = clf_data
    Xt = torch.as_tensor(X)
    labels = clf.predict(Xt)
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), clf.predict(X))
    for name in ("predict_proba", "predict_log_proba", "decision_function", "class_log_likelihood"):
        out = getattr(clf, name)(Xt)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64, name
        # Same kernel, same values; exp differs from numpy's by an ulp at most.
        np.testing.assert_allclose(out.numpy(), getattr(clf, name)(X), rtol=1e-14, atol=1e-300,
                                   err_msg=name)
    np.testing.assert_allclose(clf.predict_proba(Xt).sum(1).numpy(), 1.0, rtol=1e-12)


def test_scores_take_tensors_with_weights_and_tensor_labels(gmm_and_X, clf_data):
    """``score`` reduces tensor outputs to a float: the classifier's labels
    (a tensor for a tensor X) and a tensor y go to scikit-learn's accuracy
    as host arrays, and the mixture's weighted mean takes a tensor's scores;
    each equals the numpy answer."""
    gmm, X = gmm_and_X
    w = np.random.default_rng(2).integers(0, 3, len(X)).astype(float)
    assert gmm.score(torch.as_tensor(X), sample_weight=torch.as_tensor(w)) == \
        pytest.approx(gmm.score(X, sample_weight=w), rel=1e-12)
    clf, X, y = clf_data
    w = np.random.default_rng(3).integers(0, 3, len(X)).astype(float)
    expected = clf.score(X, y, sample_weight=w)
    assert expected == pytest.approx(np.average(clf.predict(X) == y, weights=w), rel=1e-12)
    for yy in (y, torch.as_tensor(y)):
        assert clf.score(torch.as_tensor(X), yy, sample_weight=w) == pytest.approx(expected,
                                                                                   rel=1e-12)


@pytest.mark.cuda
@needs_cuda
def test_scores_take_cuda_tensors(gmm_and_X, clf_data):
    """A CUDA tensor refuses numpy's conversion: ``score`` must not hand
    scikit-learn (or numpy) the labels or log-likelihoods on the device."""
    gmm, X = gmm_and_X
    w = np.arange(len(X)) % 3
    Xg = torch.as_tensor(X, device="cuda")
    assert gmm.score(Xg, sample_weight=w) == pytest.approx(gmm.score(X, sample_weight=w),
                                                           rel=1e-6)
    clf, X, y = clf_data
    Xg, yg = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")
    for yy in (y, yg):
        assert clf.score(Xg, yy) == pytest.approx(clf.score(X, y), abs=1e-3)


def test_classifier_with_string_labels_returns_an_array_of_labels(clf_data):
    clf0, X, y = clf_data
    names = np.array(["a", "b", "c", "d", "e"])[y]
    clf = GMMClassifier(n_components=2, n_init=1, em_max_iter=30, max_iter=0, device="cpu",
                        random_state=0).fit(X, names)
    out = clf.predict(torch.as_tensor(X))
    assert isinstance(out, np.ndarray) and out.dtype.kind == "U"
    np.testing.assert_array_equal(out, clf.predict(X))


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "X contains NaN in column 1"),
    (torch.tensor([[float("inf"), 0.0]]), r"X contains inf in column 0 \(value inf\)"),
    (torch.zeros(3, 5), "X has 5 features, but .* is expecting 2 features"),
    (torch.zeros(2, 2, 2), r"2-D tensor .* got shape \(2, 2, 2\)"),
    (torch.zeros(0, 2), "0 sample"),
    (torch.zeros(4), r"Expected 2-D input with 2 features, got a 1-D tensor"),
    (torch.ones(3, 2, dtype=torch.complex64), "real numbers, got a tensor of dtype torch.complex64"),
])
def test_bad_tensors_are_clear_errors(gmm_and_X, clf_data, bad, message):
    for est in (gmm_and_X[0], clf_data[0]):
        with pytest.raises(ValueError, match=message):
            est.predict(bad)


def test_tensor_requiring_grad_is_accepted(gmm_and_X, clf_data):
    gmm, X = gmm_and_X
    Xg = torch.as_tensor(X).requires_grad_(True)
    out = gmm.predict_proba(Xg)
    assert not out.requires_grad
    np.testing.assert_array_equal(gmm.predict(Xg).numpy(), gmm.predict(X))


def test_bool_tensor_is_read_as_zeros_and_ones_as_fit_reads_it(clf_data):
    # fit takes a bool tensor; predict took it for a wrong type.
    Xb = torch.as_tensor(np.random.default_rng(0).random((60, 2)) > 0.5)
    gmm = BayesianGMM(2, n_init=1, random_state=0, device="cpu").fit(Xb)
    clf = clf_data[0]
    for est in (gmm, clf):
        np.testing.assert_array_equal(np.asarray(est.predict(Xb)),
                                      np.asarray(est.predict(Xb.numpy().astype(float))))
        np.testing.assert_allclose(np.asarray(est.predict_proba(Xb)),
                                   np.asarray(est.predict_proba(Xb.numpy().astype(float))),
                                   rtol=1e-6, atol=1e-7)


def test_unnamed_tensors_and_memmaps_warn_as_arrays_do_after_a_dataframe_fit(tmp_path):
    """(From an independent audit.) scikit-learn warns when an estimator
    fitted on a DataFrame is given an array without names (its columns'
    order cannot be checked); a tensor or a memmap said nothing."""
    import pandas as pd
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(4, 0.5, (40, 2))]
    y = np.repeat([0, 1], 50)
    frame = pd.DataFrame(X, columns=["a", "b"])
    np.save(tmp_path / "x.npy", X)
    unnamed = (torch.as_tensor(X), np.load(tmp_path / "x.npy", mmap_mode="r"))
    kw = dict(n_init=1, max_iter=0, device="cpu", random_state=0)
    for est in (BayesianGMM(2, **kw).fit(frame), GMMClassifier(1, **kw).fit(frame, y)):
        message = (f"X does not have valid feature names, but {type(est).__name__} was fitted "
                   f"with feature names")
        with pytest.warns(UserWarning, match=message):
            est.predict(X)                  # scikit-learn's own warning, for the array
        for Z in unnamed:
            with pytest.warns(UserWarning, match=message):
                out = est.predict_proba(Z)
            np.testing.assert_allclose(np.asarray(out), est.predict_proba(frame), rtol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est.predict(frame)
            type(est)(**est.get_params()).fit(X, *([y] if isinstance(est, GMMClassifier)
                                                   else [])).predict(unnamed[0])


def test_integer_tensor_is_accepted(gmm_and_X):
    gmm, X = gmm_and_X
    Xi = torch.as_tensor(np.round(X)).to(torch.int64)
    np.testing.assert_array_equal(gmm.predict(Xi).numpy(), gmm.predict(Xi.numpy()))


def test_compile_is_not_used_off_cuda(clf_data, monkeypatch):
    """On the CPU the eager kernel runs whatever the block size (no compile attempt)."""
    clf, X, _ = clf_data
    monkeypatch.setattr(_predict, "COMPILED_ROWS", 8)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compile on the CPU"))
    np.testing.assert_array_equal(clf.predict(torch.as_tensor(X)), clf.predict(X))


def test_compiled_blocks_shrink_only_for_kernels_of_very_many_components():
    """A compiled block's rows x (classes x components x features) stay
    within COMPILED_ELEMENTS (a temporary the compiler does not fuse,
    e.g. full covariances' batched products): MAP models keep
    COMPILED_ROWS; a posterior predictive of 5 classes x 1000 draws x 9
    components in 2-D gets 2048-row blocks (2^20 rows would need 377 GB
    for such a temporary), never fewer than 1024."""
    def rows(ckd):
        return _predict.compiled_rows(max(1, _predict.CHUNK_ELEMENTS // ckd))
    assert rows(5 * 9 * 2) == rows(1) == _predict.COMPILED_ROWS
    for ckd in (5 * 200 * 9 * 2, 5 * 1000 * 9 * 2, 3 * 1000 * 8 * 4):
        r = rows(ckd)
        assert r & (r - 1) == 0 and 1024 <= r < _predict.COMPILED_ROWS
        assert r * ckd <= _predict.COMPILED_ELEMENTS < 2 * r * ckd
    assert rows(5 * 1000 * 9 * 2) == 2048
    assert rows(10 ** 7) == 1024
    assert _predict.block_rows(torch.device("cpu"), 186) == 186


# --------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@needs_cuda
def test_cuda_tensor_in_cuda_tensor_out_and_compiled_equals_eager(clf_data, monkeypatch):
    clf, X, y = clf_data
    clf.device_ = torch.device("cuda")
    try:
        rng = np.random.default_rng(1)
        big = torch.as_tensor(rng.normal(0, 3, (_predict.COMPILED_ROWS + 12345, 2)), device="cuda")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fast = clf.predict_log_proba(big)
            fast_labels = clf.predict(big)
        # The compiled kernel ran: no fall-back warning, no recorded failure.
        assert not [w for w in caught if "torch.compile of the prediction" in str(w.message)]
        assert not _predict._compile_state["failed"]
        assert fast.device.type == "cuda" and fast_labels.device.type == "cuda"
        monkeypatch.setenv("BAYESGMM_COMPILE", "0")
        eager = clf.predict_log_proba(big)
        # Float32 sums reassociated by the fused kernel: agreement to ~1e-5 relative.
        torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
        assert (fast_labels == clf.predict(big)).double().mean() > 0.9999
        cpu_labels = clf.predict(big.cpu())
        assert cpu_labels.device.type == "cpu"
        assert (cpu_labels == fast_labels.cpu()).double().mean() > 0.9999
    finally:
        clf.device_ = torch.device("cpu")


@pytest.mark.cuda
@needs_cuda
def test_cuda_posterior_predictive_compiled_in_small_blocks_equals_eager(monkeypatch):
    """A classifier's posterior predictive (S x K components per class)
    through the compiled kernel, in blocks sized by compiled_rows, equals
    the eager kernel; no compile failure recorded."""
    X, y, _ = make_five_class(0)
    clf = GMMClassifier(n_components=3, inference="vi", n_samples=1000, n_init=1,
                        device="cuda", random_state=0).fit(X[::4], y[::4])
    big = torch.as_tensor(np.random.default_rng(2).normal(0, 3, (300_000, 2)), device="cuda")
    fast = clf.predict_log_proba(big)
    assert not _predict._compile_state["failed"]
    monkeypatch.setenv("BAYESGMM_COMPILE", "0")
    torch.testing.assert_close(fast, clf.predict_log_proba(big), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_impute_takes_a_tensor_and_answers_with_one(gmm_and_X, clf_data, dtype):
    """Tensors in, tensors out for impute too (it returned an array): the
    array path's values, observed entries unchanged, for both estimators."""
    gmm, X = gmm_and_X
    clf, Xc, yc = clf_data
    for est, data in ((gmm, X[:50].copy()), (clf, Xc[:50].copy())):
        data[::3, 0] = np.nan
        data[1::3, 1] = np.nan
        Xt = torch.as_tensor(data, dtype=dtype)
        out = est.impute(Xt)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        assert out.device == Xt.device
        np.testing.assert_array_equal(out.numpy(), est.impute(Xt.double().numpy()))
        observed = ~torch.isnan(Xt)
        assert torch.equal(out[observed], Xt.double()[observed])
        assert not torch.isnan(out).any()


def test_fits_ignore_a_default_device_set_by_the_user(tmp_path):
    """Under ``torch.set_default_device("cuda")`` (a common notebook
    setting) host-side helpers made tensors without naming a device:
    ``.numpy()`` of them, CPU generators beside them and indices from them
    would fail or copy back and forth (the GPU-path review of stop 50).
    torch's "meta" device stands in for the GPU here (its tensors hold no
    data, so any helper that used the default device fails): every kind of
    fit on the CPU gives the same answers as without it."""
    from bayesgmm import load

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    X[:100] += 4
    y = (X[:, 0] > 2).astype(int)
    Xm = np.where(rng.random(X.shape) < 0.1, np.nan, X)
    Xm[np.isnan(Xm).all(1), 0] = 0.0
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    kw = dict(device="cpu", random_state=0)
    cases = {
        "full, restarts": lambda: BayesianGMM(2, n_init=2, **kw).fit(X).predict_proba(X),
        "auto": lambda: BayesianGMM("auto", max_components=3, **kw).fit(X).predict_proba(X),
        "missing": lambda: BayesianGMM(2, missing="marginalize", **kw).fit(Xm).impute(Xm),
        "minibatch SVI": lambda: BayesianGMM(2, em_max_iter=0, max_iter=5, batch_size=50,
                                             **kw).fit(X).means_,
        "VI": lambda: BayesianGMM(2, inference="vi", n_samples=20, **kw).fit(X).score_samples(X),
        "NUTS": lambda: BayesianGMM(2, inference="nuts", n_samples=5, n_warmup=5, n_chains=1,
                                    **kw).fit(X[:, :1]).means_,
        "out of core": lambda: BayesianGMM(2, **kw).fit(mm).means_,
        "classifier": lambda: GMMClassifier(2, discriminative_steps=3, **kw).fit(
            X, y, sample_weight=np.arange(200) % 3).predict_proba(X),
        "saved and loaded": lambda: load(tmp_path / "m.bgmm").predict_proba(X),
    }
    BayesianGMM(2, **kw).fit(X).save(tmp_path / "m.bgmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # short budgets' convergence warnings
        expected = {name: case() for name, case in cases.items()}
        torch.set_default_device("meta")
        try:
            got = {name: case() for name, case in cases.items()}
        finally:
            torch.set_default_device(None)
    for name in cases:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
