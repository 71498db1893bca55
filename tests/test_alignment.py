"""Tests of label-switching alignment (bayesgmm.alignment): known
permutations recovered exactly (fitted models shuffled by ``permute``,
batches of noisy draws), the assignment against a brute force over all
permutations with overlaps integrated numerically, every covariance layout,
scikit-learn's mixtures aligned to BayesianGMM, the stability report on a
true and a spurious split, and the errors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from bayesgmm import BayesianGMM, GMMClassifier, Priors
from bayesgmm.alignment import align, component_stability, match_components, permute
from bayesgmm.datasets import make_mixture

CPU = dict(device="cpu")
TYPES = ["full", "tied", "diag", "spherical"]
SHUFFLE = np.array([2, 0, 1])       # no fixed point: every component moves


@pytest.fixture(scope="module")
def three():
    """Three well-separated clusters (sd <= 2, means >= 12 apart)."""
    return make_mixture(300, 3, random_state=1)


@pytest.fixture(scope="module")
def two():
    return make_mixture(200, 2, random_state=0)[0]


def _random_spd(rng, shape, D):
    A = rng.normal(size=shape + (D, D))
    return A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D)


def _layout(cov_full, covariance_type):
    """scikit-learn's layout of (..., K, D, D) matrices (tied: the first)."""
    if covariance_type == "full":
        return cov_full
    if covariance_type == "tied":
        return cov_full[..., 0, :, :]
    diag = np.diagonal(cov_full, axis1=-2, axis2=-1)
    return diag if covariance_type == "diag" else diag.mean(-1)


# ----------------------------------------------------------------------------
# Fitted models shuffled with a known permutation
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_align_recovers_the_inverse_of_a_known_shuffle(three, covariance_type):
    X = three[0]
    gmm = BayesianGMM(3, covariance_type=covariance_type, n_init=1, random_state=0,
                      **CPU).fit(X)
    before = {k: np.copy(v) for k, v in vars(gmm).items() if isinstance(v, np.ndarray)}
    shuffled = permute(gmm, SHUFFLE)
    inverse = np.argsort(SHUFFLE)
    np.testing.assert_array_equal(align(gmm, shuffled), inverse)
    np.testing.assert_array_equal(align(shuffled, gmm), SHUFFLE)
    # Predictions follow the relabelling exactly.
    np.testing.assert_array_equal(shuffled.predict(X), inverse[gmm.predict(X)])
    np.testing.assert_allclose(shuffled.predict_proba(X), gmm.predict_proba(X)[:, SHUFFLE],
                               atol=1e-6)
    np.testing.assert_allclose(shuffled.score_samples(X), gmm.score_samples(X), rtol=1e-6)
    # Every per-component attribute moved with the components; shared ones did not.
    for name in ("weights_", "means_", "scales_"):
        np.testing.assert_array_equal(getattr(shuffled, name), getattr(gmm, name)[SHUFFLE])
    for name in ("covariances_", "precisions_cholesky_"):
        expected = getattr(gmm, name)
        if covariance_type != "tied":
            expected = expected[SHUFFLE]
        np.testing.assert_array_equal(getattr(shuffled, name), expected)
    # The original is untouched, and permuting back restores it.
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(gmm, name), value)
    back = permute(shuffled, align(gmm, shuffled))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "scales_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gmm, name))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_permute_reorders_a_per_component_prior_and_continues_partial_fit(three,
                                                                          covariance_type):
    X = three[0]
    gmm = BayesianGMM(3, covariance_type=covariance_type, dtype="float64",
                      priors=Priors(weight_concentration=[1.0, 2.0, 3.0]), n_init=1,
                      random_state=0, **CPU).fit(X)
    gmm.partial_fit(X[:50])
    shuffled = permute(gmm, SHUFFLE)
    for name in ("priors_", "priors"):     # resolved, and as given (partial_fit reads it)
        np.testing.assert_array_equal(getattr(shuffled, name).weight_concentration,
                                      np.asarray([1.0, 2.0, 3.0])[SHUFFLE])
    assert gmm.priors.weight_concentration == [1.0, 2.0, 3.0]
    # The running statistics are reordered with the components: the copy's
    # stream continues as the original's does, in the new order (its count
    # goes on; no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for chunk in (X[50:100], X[100:150]):
            shuffled.partial_fit(chunk)
            gmm.partial_fit(chunk)
    assert shuffled.n_partial_fits_ == gmm.n_partial_fits_ == 3
    for name in ("weights_", "means_", "covariances_"):
        expected = getattr(gmm, name)
        shared = covariance_type == "tied" and name == "covariances_"
        expected = expected if shared else expected[SHUFFLE]
        np.testing.assert_allclose(getattr(shuffled, name), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sklearn_mixtures_permute_consistently(three, covariance_type):
    X = three[0]
    for est in (GaussianMixture(3, covariance_type=covariance_type, random_state=0),
                BayesianGaussianMixture(
                    n_components=3, covariance_type=covariance_type, random_state=0,
                    weight_concentration_prior_type="dirichlet_distribution")):
        est.fit(X)
        shuffled = permute(est, SHUFFLE)
        np.testing.assert_array_equal(align(est, shuffled), np.argsort(SHUFFLE))
        np.testing.assert_array_equal(shuffled.predict(X), np.argsort(SHUFFLE)[est.predict(X)])
        np.testing.assert_allclose(shuffled.predict_proba(X), est.predict_proba(X)[:, SHUFFLE],
                                   atol=1e-9)


def test_dirichlet_process_mixture_aligns_but_refuses_a_reordered_copy(three):
    X = three[0]
    dp = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    np.testing.assert_array_equal(align(dp, dp), [0, 1, 2])
    with pytest.raises(ValueError, match="stick-breaking.*dirichlet_distribution"):
        permute(dp, SHUFFLE)


# ----------------------------------------------------------------------------
# Arrays: batches of draws, the objective, the layouts
# ----------------------------------------------------------------------------
def test_batched_draws_with_known_permutations_and_noise_are_recovered():
    rng = np.random.default_rng(0)
    S, K, D = 300, 5, 3
    ref = rng.normal(scale=4.0, size=(K, D))
    ref_cov = _random_spd(rng, (K,), D) * 0.1
    ref_w = rng.dirichlet(np.ones(K) * 5)
    truth = np.argsort(rng.random((S, K)), axis=1)        # draw s lists ref[truth[s]]
    take = truth[..., None]
    draws = np.take_along_axis(np.broadcast_to(ref, (S, K, D)), take, 1)
    draws = draws + rng.normal(scale=0.05, size=draws.shape)
    covs = np.take_along_axis(np.broadcast_to(ref_cov, (S, K, D, D)), take[..., None], 1)
    ws = np.take_along_axis(np.broadcast_to(ref_w, (S, K)), truth, 1)
    expected = np.argsort(truth, axis=1)
    np.testing.assert_array_equal(match_components(ref, draws), expected)
    np.testing.assert_array_equal(match_components(ref, draws, ref_cov, covs, ref_w, ws),
                                  expected)
    # Two batch dimensions (chains x draws) come back with their shape.
    np.testing.assert_array_equal(match_components(ref, draws.reshape(3, 100, K, D)),
                                  expected.reshape(3, 100, K))
    aligned = np.take_along_axis(draws, expected[..., None], 1)
    assert np.abs(aligned - ref).max() < 0.5


def _overlap_1d(m1, v1, m2, v2):
    """Bhattacharyya coefficient of two 1-D Gaussians by quadrature."""
    x = np.linspace(min(m1, m2) - 12 * np.sqrt(max(v1, v2)),
                    max(m1, m2) + 12 * np.sqrt(max(v1, v2)), 40001)
    p = stats.norm.pdf(x, m1, np.sqrt(v1))
    q = stats.norm.pdf(x, m2, np.sqrt(v2))
    return np.sqrt(p * q).sum() * (x[1] - x[0])


def _overlap_2d(m1, c1, m2, c2):
    """Bhattacharyya coefficient of two 2-D Gaussians on a grid."""
    half = 10 * np.sqrt(max(np.linalg.eigvalsh(c1).max(), np.linalg.eigvalsh(c2).max()))
    lo, hi = np.minimum(m1, m2) - half, np.maximum(m1, m2) + half
    g = [np.linspace(lo[d], hi[d], 401) for d in range(2)]
    xy = np.stack(np.meshgrid(*g, indexing="ij"), -1)
    p = stats.multivariate_normal(m1, c1).pdf(xy)
    q = stats.multivariate_normal(m2, c2).pdf(xy)
    return np.sqrt(p * q).sum() * (g[0][1] - g[0][0]) * (g[1][1] - g[1][0])


@pytest.mark.parametrize("seed", range(4))
def test_assignment_maximises_the_total_weighted_overlap(seed):
    """Against brute force over all 3! permutations, with the overlaps
    integrated numerically (no shared formula), on random overlapping
    components whose best matching is not obvious."""
    rng = np.random.default_rng(seed)
    K = 3
    m1, m2 = rng.normal(size=(K, 2)), rng.normal(size=(K, 2))
    c1, c2 = _random_spd(rng, (K,), 2) * 0.3, _random_spd(rng, (K,), 2) * 0.3
    w1, w2 = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K))
    bc = np.array([[_overlap_2d(m1[j], c1[j], m2[k], c2[k]) for k in range(K)]
                   for j in range(K)])
    gain = np.sqrt(w1[:, None] * w2[None, :]) * bc

    def best(g):
        return np.array(max(itertools.permutations(range(K)),
                            key=lambda p: g[np.arange(K), list(p)].sum()))

    np.testing.assert_array_equal(match_components(m1, m2, c1, c2, w1, w2), best(gain))
    np.testing.assert_array_equal(match_components(m1, m2, c1, c2), best(bc))
    # 1-D, diagonal path: the same against quadrature.
    v1, v2 = rng.uniform(0.2, 2.0, size=(2, K))
    bc1 = np.array([[_overlap_1d(m1[j, 0], v1[j], m2[k, 0], v2[k]) for k in range(K)]
                    for j in range(K)])
    np.testing.assert_array_equal(
        match_components(m1[:, :1], m2[:, :1], v1, v2, covariance_type="spherical"), best(bc1))


def test_split_cluster_does_not_scramble_the_matches_that_exist():
    # The reference splits cluster A in two; the other fit keeps A whole and
    # splits B.  A's whole component must go to the larger piece of A (an
    # unbounded distance would let the forced far mismatch decide).
    ref = np.array([[20.2, -5.2], [2.7, 18.6], [22.0, -3.8]])
    ref_cov = np.array([[1.0, 1.4], [1.1, 1.7], [0.56, 0.76]]) ** 2
    other = np.array([[20.4, -5.1], [3.2, 18.0], [2.2, 19.4]])
    other_cov = np.array([[1.1, 1.4], [1.0, 1.5], [1.05, 1.7]]) ** 2
    perm = match_components(ref, other, ref_cov, other_cov, [0.54, 0.4, 0.06],
                            [0.6, 0.22, 0.17])
    np.testing.assert_array_equal(perm, [0, 1, 2])   # the large pieces pair up


@pytest.mark.parametrize("covariance_type", TYPES)
def test_every_covariance_layout_batched_or_not(covariance_type):
    rng = np.random.default_rng(1)
    S, K, D = 20, 4, 3
    ref = rng.normal(scale=5.0, size=(K, D))
    ref_full = _random_spd(rng, (K,), D) * 0.2
    if covariance_type == "tied":
        ref_full = np.broadcast_to(ref_full[:1], ref_full.shape)
    truth = np.argsort(rng.random((S, K)), axis=1)
    draws = ref[truth] + rng.normal(scale=0.05, size=(S, K, D))
    covs_full = ref_full[truth] * rng.uniform(0.9, 1.1, size=(S, 1, 1, 1))
    ref_cov = _layout(ref_full, covariance_type)
    covs = _layout(covs_full, covariance_type)
    expected = np.argsort(truth, axis=1)
    for ctype in (covariance_type, None):      # given, or read from the shape
        np.testing.assert_array_equal(
            match_components(ref, draws, ref_cov, covs, covariance_type=ctype), expected)
        # One set of covariances for every draw.
        np.testing.assert_array_equal(
            match_components(ref, draws, ref_cov, ref_cov, covariance_type=ctype), expected)
        np.testing.assert_array_equal(
            match_components(ref, draws[0], ref_cov, covs[0], covariance_type=ctype),
            expected[0])
    # A full reference against draws in this layout (types read per side).
    np.testing.assert_array_equal(match_components(ref, draws, ref_full, covs), expected)


def test_results_do_not_depend_on_the_units():
    # Data near 1e8 with spreads near 1e-3: the standardised frame keeps the
    # factorisations well conditioned.
    rng = np.random.default_rng(2)
    K, D = 4, 2
    ref = 1e8 + rng.normal(scale=1e-2, size=(K, D))
    cov = _random_spd(rng, (K,), D) * 1e-7
    truth = rng.permutation(K)
    other = ref[truth] + rng.normal(scale=1e-4, size=(K, D))
    np.testing.assert_array_equal(match_components(ref, other, cov, cov[truth]),
                                  np.argsort(truth))
    np.testing.assert_array_equal(match_components(ref, other), np.argsort(truth))


# ----------------------------------------------------------------------------
# scikit-learn against BayesianGMM
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_sklearn_fit_aligns_to_a_bayesgmm_fit(three, covariance_type):
    X = three[0]
    gmm = BayesianGMM(3, covariance_type=covariance_type, n_init=1, random_state=0,
                      **CPU).fit(X)
    # A different type on the other side: alignment reads each side's layout.
    sk = GaussianMixture(3, covariance_type="full", random_state=3).fit(X)
    perm = align(gmm, sk)
    aligned = permute(sk, perm)
    # Both are near-MLE fits of the same well-separated clusters: their means
    # agree to a small fraction of the clusters' sd (>= 0.5), far below the
    # >= 12 between clusters.
    np.testing.assert_allclose(aligned.means_, gmm.means_, atol=0.3)
    np.testing.assert_allclose(aligned.weights_, gmm.weights_, atol=0.02)
    assert (aligned.predict(X) == gmm.predict(X)).mean() > 0.99


# ----------------------------------------------------------------------------
# Stability across seeds
# ----------------------------------------------------------------------------
def test_stability_marks_true_clusters_stable(two):
    report = component_stability(BayesianGMM(2, n_init=1, **CPU), two, random_states=range(3))
    assert list(report.columns) == ["weight", "weight_min", "weight_max", "mean_shift",
                                    "n_points", "agreement", "agreement_min", "stable"]
    assert report.index.name == "component" and len(report) == 2
    assert report["stable"].all()
    np.testing.assert_allclose(report["agreement_min"], 1.0)
    assert (report["mean_shift"] < 0.05).all()
    assert report["n_points"].sum() == len(two)
    assert report.attrs["reference_random_state"] in range(3)
    np.testing.assert_allclose(report["weight"].sum(), 1.0)


def test_stability_flags_a_spurious_split(two):
    # Three components on two clusters: the seeds split different clusters,
    # so the pieces are not reproduced.  The covariance prior is set small
    # (a hundredth of the data's variance) so that the third component makes
    # a piece of a cluster rather than an empty component.
    priors = Priors(covariance_scale=0.01 * two.var(0))
    report = component_stability(BayesianGMM(3, n_init=1, priors=priors, **CPU), two,
                                 random_states=range(3))
    assert not report["stable"].all()
    piece = report.loc[report["weight"].idxmin()]
    assert piece["n_points"] > 0 and piece["agreement"] < 0.5 and not piece["stable"]
    assert piece["mean_shift"] > 1.0
    assert (report["weight_min"] <= report["weight"]).all()
    assert (report["weight"] <= report["weight_max"]).all()
    # The same seeds and priors with K=2 reproduce both clusters.
    assert component_stability(BayesianGMM(2, n_init=1, priors=priors, **CPU), two,
                               random_states=range(3))["stable"].all()


def test_stability_uses_score_without_a_loss(three):
    X = three[0]
    report = component_stability(GaussianMixture(3), X, random_states=[0, 1])
    assert report["stable"].all() and len(report) == 3


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------
def test_component_count_mismatch_names_both(three):
    X = three[0]
    a = BayesianGMM(3, n_init=1, random_state=0, **CPU).fit(X)
    b = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"reference has 3 components and other has 2"):
        align(a, b)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 2\).*2 components against 3"):
        match_components(a.means_, b.means_)


def test_component_stability_refuses_fits_of_different_k():
    # n_components="auto" lets each seed choose its K: named up front, not
    # as align's shape error.
    rng = np.random.RandomState(0)
    X = np.r_[rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + [2.5, 0]]
    with pytest.raises(ValueError, match=r"have \[2, 1, 2, 2\] components: .*n_components='auto'"):
        component_stability(BayesianGMM("auto", max_components=6, n_init=1, **CPU), X,
                            random_states=range(4))


def test_component_stability_needs_an_estimator_instance(two):
    for bad, what in ((BayesianGMM, "the class BayesianGMM"), ("gmm", "'gmm'")):
        with pytest.raises(ValueError, match=f"estimator must be an unfitted estimator instance"
                                             f".*BayesianGMM\\(3\\), got {what}"):
            component_stability(bad, two)


def test_bad_shapes_and_values_are_named():
    ref = np.arange(6.0).reshape(3, 2)
    with pytest.raises(ValueError, match=r"reference_means has shape \(6,\), expected \(K, D\)"):
        match_components(ref.ravel(), ref)
    with pytest.raises(ValueError, match=r"reference_means has shape \(1, 3, 2\)"):
        match_components(ref[None], ref)
    with pytest.raises(ValueError, match=r"means has shape \(3,\), expected \(K, D\) or"):
        match_components(ref, ref[:, 0])
    with pytest.raises(ValueError, match=r"means has shape \(3, 3\).*3 features against 2"):
        match_components(ref, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"covariances has shape \(4, 2\).*expected full"):
        match_components(ref, ref, np.ones(3), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"covariances has shape \(2, 2\).*expected diag \(3, 2\)"):
        match_components(ref, ref, np.ones((3, 2)), np.eye(2), covariance_type="diag")
    with pytest.raises(ValueError, match=r"means contains NaN or infinity: pass finite values "
                                         r"\(a GMMClassifier pads the classes .*"
                                         r"clf.means_\[c\]\[:clf.n_components_\[c\]\]"):
        match_components(ref, np.where(ref > 4, np.nan, ref))
    with pytest.raises(ValueError, match=r"infinity: pass finite values$"):
        match_components(ref, np.where(ref > 4, np.inf, ref))
    # Not arrays of real numbers: numpy's errors named no argument, and a
    # complex part was dropped with a warning.
    for bad, name in (([[0.0, 1.0], [2.0]], "means"), ("ab", "means"), (ref + 5j, "means")):
        with pytest.raises(ValueError, match=rf"^{name} must be an array of real numbers"):
            match_components(ref, bad)
    with pytest.raises(ValueError, match=r"^reference_weights must be an array of real numbers"):
        match_components(ref, ref, reference_weights=["a", "b", "c"], weights=np.ones(3) / 3)
    with pytest.raises(ValueError, match=r"^covariances must be an array of real numbers"):
        match_components(ref, ref, np.ones(3), [[1.0], [1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="both reference_covariances and covariances"):
        match_components(ref, ref, np.ones(3))
    with pytest.raises(ValueError, match="both reference_weights and weights"):
        match_components(ref, ref, weights=np.ones(3) / 3)
    with pytest.raises(ValueError, match=r"weights has shape \(2,\), expected \(3,\)"):
        match_components(ref, ref, reference_weights=np.ones(3) / 3, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="variances <= 0"):
        match_components(ref, ref, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="not symmetric positive definite"):
        match_components(ref, ref, np.eye(2), -np.eye(2), covariance_type="tied")
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        match_components(ref, ref, np.ones(3), np.ones(3), covariance_type="sphere")
    # Cholesky reads one triangle: an asymmetric matrix was taken as another.
    skew = np.array([[1.0, -0.9], [0.9, 1.0]])
    with pytest.raises(ValueError, match="reference_covariances holds a matrix that is not "
                                         "symmetric"):
        match_components(ref[:2], ref[:2], np.stack([skew, np.eye(2)]), np.stack([np.eye(2)] * 2))


def test_pairs_too_far_apart_to_overlap_go_to_their_nearest():
    # Tight clusters (sd 0.05) at 0, 10, 20; in the other mixture the first
    # barely moved and the others drifted by +4.  The overlaps of the
    # drifted pairs underflow to 0 (D_B ~ 800): they tied and were matched
    # in index order (10 <-> 24, 20 <-> 14); the total overlap is
    # 1 + 2 exp(-800) for the nearest pairs against 1 + exp(-1800) + ...
    ref = np.array([[0.0], [10.0], [20.0]])
    other = np.array([[24.0], [0.1], [14.0]])
    var = np.full(3, 0.05 ** 2)
    np.testing.assert_array_equal(
        match_components(ref, other, var, var, covariance_type="spherical"), [1, 2, 0])
    # Nothing overlaps at all, with and without covariances, weights or a batch.
    ref = np.array([[0.0], [100.0], [200.0]])
    other = np.array([[260.0], [0.0], [150.0]])
    w = np.full(3, 1 / 3)
    np.testing.assert_array_equal(match_components(ref, other), [1, 2, 0])
    np.testing.assert_array_equal(
        match_components(ref, other, np.ones(3), np.ones(3), w, w,
                         covariance_type="spherical"), [1, 2, 0])
    np.testing.assert_array_equal(
        match_components(ref, np.stack([other, other[[1, 2, 0]]])), [[1, 2, 0], [0, 1, 2]])


def test_ambiguous_covariance_shape_asks_for_the_type():
    ref = np.array([[0.0, 0.0], [5.0, 5.0]])         # K == D == 2
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*'tied' or 'diag'.*covariance_type"):
        match_components(ref, ref[::-1], np.eye(2), np.eye(2))
    np.testing.assert_array_equal(
        match_components(ref, ref[::-1], np.eye(2), np.eye(2), covariance_type="tied"), [1, 0])


def test_permute_and_stability_check_their_arguments(three):
    X = three[0]
    gmm = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"permutation of 0..2 of shape \(3,\), got \[0 0 1\]"):
        permute(gmm, [0, 0, 1])
    with pytest.raises(ValueError, match=r"got \[0 1\] of shape \(2,\)"):
        permute(gmm, [0, 1])
    with pytest.raises(ValueError, match="at least 2"):
        component_stability(gmm, X, random_states=[0])
    # Thresholds out of range made every component "unstable" before.
    for kw, msg in ((dict(min_agreement=2), r"min_agreement must be in \[0, 1\].*got 2.0"),
                    (dict(min_agreement=np.nan),
                     "min_agreement must be a finite number >= 0.0, got nan"),
                    (dict(max_mean_shift=-1), "max_mean_shift must be >= 0.0, got -1.0"),
                    (dict(random_states=5), "random_states must be an iterable of seeds, got 5")):
        with pytest.raises(ValueError, match=msg):
            component_stability(gmm, X, **kw)
    with pytest.raises(ValueError, match="clustering estimator.*got the classifier GMMClassifier"):
        component_stability(GMMClassifier(3), X)
    # (From a second audit.) A ragged perm was numpy's own error; a
    # non-mixture estimator fitted every seed, then an AttributeError.
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0..2 of shape \(3,\), "
                                         r"got \[\[0\], \[1, 2\]\]"):
        permute(gmm, [[0], [1, 2]])
    from sklearn.cluster import KMeans
    with pytest.raises(ValueError, match="a fitted KMeans has no weights_, means_ and "
                                         "covariances_: pass a mixture estimator"):
        component_stability(KMeans(3, n_init=1), X)
    # inf switches the shift criterion off (it was refused as "< 0"): fits
    # stopped after 3 iterations from random points, one component of
    # which moves by 12 standard deviations between seeds.
    early = GaussianMixture(3, n_init=1, max_iter=3, init_params="random_from_data")
    on = component_stability(early, X, random_states=range(3))
    off = component_stability(early, X, random_states=range(3), max_mean_shift=float("inf"))
    assert (on["mean_shift"] > 1).any() and (off["mean_shift"] == on["mean_shift"]).all()
    agreeing = (on["n_points"] > 0) & (on["agreement_min"] >= 0.9)
    assert (off["stable"] == agreeing).all()
    assert (on["stable"] == (agreeing & (on["mean_shift"] <= 1))).all()
    assert off["stable"].sum() > on["stable"].sum()
    for other, what in ((None, "None"), (np.zeros((3, 2)), "a ndarray"),
                        (BayesianGMM, "the class BayesianGMM")):
        with pytest.raises(ValueError, match=f"other must be a fitted mixture estimator.*got {what}"):
            align(gmm, other)


@pytest.mark.filterwarnings("ignore:the variational fit was still improving")
def test_permute_relabels_posterior_draws_too():
    # After inference="vi" the default answers are the posterior predictive:
    # the reordered copy's must follow the same relabelling as its MAP.
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0, 1, (40, 1)), rng.normal(6, 1, (30, 1)), rng.normal(12, 1, (20, 1))]
    est = BayesianGMM(3, covariance_type="diag", inference="vi", max_iter=100, n_samples=20,
                      random_state=0, device="cpu").fit(X)
    perm = np.array([2, 0, 1])
    copy = permute(est, perm)
    np.testing.assert_allclose(copy.predict_proba(X), est.predict_proba(X)[:, perm], atol=1e-9)
    np.testing.assert_allclose(copy.score_samples(X), est.score_samples(X), rtol=1e-9)
    np.testing.assert_array_equal(copy.posterior_samples()["means"],
                                  est.posterior_samples()["means"][:, perm])
    np.testing.assert_array_equal(copy.predict(X), np.argsort(perm)[est.predict(X)])


def test_match_components_takes_one_type_per_side():
    # (From a second audit.) A diag reference against S tied draws with
    # S == K: the draws' shape (S, D, D) is also full (K, D, D), and one
    # covariance_type for both sides could not say it.
    rng = np.random.default_rng(0)
    ref = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])             # K = 2, D = 3
    draws = np.stack([ref[[1, 0]], ref]) + 0.05 * rng.normal(size=(2, 2, 3))
    tied = np.stack([np.eye(3), 2 * np.eye(3)])                  # (S, D, D), S == K
    with pytest.raises(ValueError, match=r"could be covariance_type 'full' or 'tied'.*a pair"):
        match_components(ref, draws, np.ones((2, 3)), tied)
    perm = match_components(ref, draws, np.ones((2, 3)), tied, covariance_type=("diag", "tied"))
    np.testing.assert_array_equal(perm, [[1, 0], [0, 1]])
    # The same as the tied matrices broadcast to full ones per draw.
    full = np.ascontiguousarray(np.broadcast_to(tied[:, None], (2, 2, 3, 3)))
    np.testing.assert_array_equal(perm, match_components(ref, draws, np.ones((2, 3)), full))
    with pytest.raises(ValueError, match="a pair gives the reference's type and the other's"):
        match_components(ref, draws, np.ones((2, 3)), tied, covariance_type=("diag",))
