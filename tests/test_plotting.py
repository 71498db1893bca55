"""Tests of bayesgmm.plotting: what is drawn, checked against independent computations."""

import re
import warnings
import subprocess
import sys
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported anywhere

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, QuadMesh
from matplotlib.contour import ContourSet
from matplotlib.patches import Ellipse
from scipy.stats import norm
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.mixture import GaussianMixture

from bayesgmm import BayesianGMM, GMMClassifier
from bayesgmm.datasets import load_iris, make_circles
from bayesgmm.plotting import (plot_assignments, plot_clusters_2d, plot_confusion_matrix,
                               plot_decision_regions, plot_density_1d, plot_loss_history,
                               plot_pairs)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def iris():
    return load_iris()


@pytest.fixture(scope="module")
def fit_1d(iris):
    X = iris[["petal_length"]]
    return BayesianGMM(2, n_init=3, max_iter=50, random_state=0, device="cpu").fit(X), X


@pytest.fixture(scope="module")
def fit_2d(iris):
    X = iris[["petal_length", "petal_width"]]
    return BayesianGMM(3, n_init=2, max_iter=0, random_state=0, device="cpu").fit(X), X


@pytest.fixture(scope="module")
def fit_4d(iris):
    X = iris.drop(columns="species")
    return BayesianGMM(3, n_init=2, max_iter=0, random_state=0, device="cpu").fit(X), X


@pytest.fixture(scope="module")
def fit_2d_diag(iris):
    X = iris[["petal_length", "petal_width"]]
    return BayesianGMM(3, covariance_type="diag", n_init=2, max_iter=0, random_state=0,
                       device="cpu").fit(X), X


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().texts]


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def _level_lines(cs):
    """The lines of each level of a ContourSet: per level, a list of (n, 2)
    arrays, every vertex of its path (one per level in matplotlib >= 3.8;
    ``allsegs`` is deprecated, and wrong in 3.8.0) split at its moves.
    (Path.to_polygons would simplify long open lines to a few points.)"""
    from matplotlib.path import Path

    out = []
    for p in cs.get_paths():
        v, codes = p.vertices, p.codes
        if codes is None:
            out.append([v] if len(v) else [])
            continue
        keep = codes != Path.CLOSEPOLY          # its vertex is not on the line
        starts = np.flatnonzero(codes == Path.MOVETO)
        out.append([seg[k] for seg, k in zip(np.split(v, starts[1:]), np.split(keep, starts[1:]))
                    if k.any()])
    return out


def _ellipse_covariance(e, n_sigma):
    """The 2x2 covariance whose n-sigma contour is the drawn ellipse
    (R diag(a^2, b^2) R^T from its width, height and angle): invariant to
    how width/height/angle were chosen to describe the same ellipse."""
    t = np.deg2rad(e.angle)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a, b = e.width / (2 * n_sigma), e.height / (2 * n_sigma)
    return R @ np.diag([a * a, b * b]) @ R.T


def _assert_ellipse_matches_eigen(e, cov2, n_sigma):
    """The ellipse's semi-axes are n sqrt(eigenvalues) of ``cov2`` and its
    long axis lies along the leading eigenvector; the whole shape equals the
    n-sigma contour of ``cov2``."""
    vals, vecs = np.linalg.eigh(cov2)
    semi = np.sort([e.width, e.height]) / 2
    np.testing.assert_allclose(semi, n_sigma * np.sqrt(vals), rtol=1e-6)
    t = np.deg2rad(e.angle + (0.0 if e.width >= e.height else 90.0))
    long_axis = np.array([np.cos(t), np.sin(t)])
    if vals[1] > 1.01 * vals[0]:  # a distinct long axis
        assert abs(long_axis @ vecs[:, 1]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(_ellipse_covariance(e, n_sigma), cov2, rtol=1e-6,
                               atol=1e-9 * np.abs(cov2).max())


# ---------------------------------------------------------------- lightness
def test_import_does_not_load_matplotlib():
    code = ("import sys, bayesgmm, bayesgmm.plotting; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
            "assert 'seaborn' not in sys.modules, 'seaborn imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_helpers_never_show(monkeypatch, fit_1d):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    gmm, X = fit_1d
    plot_loss_history(gmm)
    plot_density_1d(gmm, X)
    assert shown == []


# ------------------------------------------------------------------ losses
def test_loss_history_one_line_per_restart_plus_kept(fit_1d):
    gmm, _ = fit_1d
    ax = plot_loss_history(gmm)
    n = len(gmm.restart_losses_)
    assert n == 3
    assert len(ax.lines) == n + 1
    assert _legend_texts(ax) == [f"restart {r}" for r in range(n)] + [
        f"kept (restart {gmm.best_restart_})"]
    for r, line in enumerate(ax.lines[:n]):
        np.testing.assert_allclose(line.get_ydata(), gmm.restart_losses_[r])
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), gmm.losses_)
    # restarts are distinguishable: distinct colours
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in ax.lines[:n]}
    assert len(colours) == n


def test_loss_history_log_and_kept_only(fit_1d):
    gmm, _ = fit_1d
    ax = plot_loss_history(gmm, restarts=False, logy=True)
    assert len(ax.lines) == 1
    assert ax.get_yscale() == "log"
    y = ax.lines[0].get_ydata()
    assert y.min() == pytest.approx(1.0)
    np.testing.assert_allclose(y - y.min(), gmm.losses_ - gmm.losses_.min())


def test_loss_history_needs_fit():
    with pytest.raises(ValueError, match="call fit"):
        plot_loss_history(BayesianGMM())


# ------------------------------------------------------------------ 1-D density
def test_density_1d_components_sum_to_mixture_density(fit_1d):
    gmm, X = fit_1d
    ax = plot_density_1d(gmm, X, grid_size=300)
    K = gmm.n_components
    assert len(ax.lines) == K + 1
    labels = [line.get_label() for line in ax.lines]
    assert labels[-1] == "mixture"
    assert labels[:K] == [f"component {k} (w={gmm.weights_[k]:.2f})" for k in range(K)]
    # The mixture shows where a component carries it: a wider line drawn
    # under the components (a thin one there was hidden, its legend entry
    # naming nothing visible).
    mixture, comps_drawn = ax.lines[-1], ax.lines[:K]
    assert all(mixture.get_zorder() < c.get_zorder() for c in comps_drawn)
    assert all(mixture.get_linewidth() >= 2 * c.get_linewidth() for c in comps_drawn)
    grid = ax.lines[-1].get_xdata()
    assert grid.size == 300
    comps = np.array([line.get_ydata() for line in ax.lines[:K]])
    np.testing.assert_allclose(comps.sum(0), ax.lines[-1].get_ydata())
    # independent check: the drawn mixture is exp(score_samples) of the estimator
    np.testing.assert_allclose(ax.lines[-1].get_ydata(),
                               np.exp(gmm.score_samples(pd.DataFrame({"petal_length": grid}))),
                               rtol=1e-4)
    # each component integrates to its weight over the grid (it covers +-3 sigma)
    dx = grid[1] - grid[0]
    np.testing.assert_allclose(comps.sum(1) * dx, gmm.weights_, atol=0.01)
    # the rug: one tick per data point
    rugs = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(rugs) == 1 and len(rugs[0].get_segments()) == len(X)
    assert ax.get_xlabel() == "petal_length"


def test_density_1d_marginal_of_multivariate_fit(fit_4d):
    gmm, X = fit_4d
    ax = plot_density_1d(gmm, X, feature="sepal_width", rug=False)
    assert not ax.collections
    grid = ax.lines[-1].get_xdata()
    j = list(X.columns).index("sepal_width")
    assert gmm.covariance_type_ == "full"
    # the marginal of a full-covariance component: its variance on the diagonal
    sd = np.sqrt(gmm.covariances_[:, j, j])
    np.testing.assert_allclose(sd, gmm.scales_[:, j])
    expected = (gmm.weights_[:, None] * norm.pdf(grid, gmm.means_[:, j, None],
                                                 sd[:, None])).sum(0)
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), expected)
    assert ax.get_xlabel() == "sepal_width"


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_density_1d_sklearn_any_covariance_type(iris, covariance_type):
    # 1-D: the drawn mixture is scikit-learn's own density
    X = iris[["petal_length"]].to_numpy()
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    ax = plot_density_1d(gm, X, rug=False)
    grid = ax.lines[-1].get_xdata()
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), np.exp(gm.score_samples(grid[:, None])),
                               rtol=1e-6)
    # 4-D: the marginal on a feature; integrating scikit-learn's density of the
    # other features out by Monte Carlo is overkill, the marginal of a
    # Gaussian is exact: N(mu_f, Sigma_ff).
    X4 = iris.drop(columns="species").to_numpy()
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X4)
    ax = plot_density_1d(gm, X4, feature=2, rug=False)
    var = {"full": lambda c: c[:, 2, 2], "tied": lambda c: np.full(3, c[2, 2]),
           "spherical": lambda c: c}[covariance_type](gm.covariances_)
    grid = ax.lines[-1].get_xdata()
    expected = (gm.weights_[:, None] * norm.pdf(grid, gm.means_[:, 2, None],
                                                np.sqrt(var)[:, None])).sum(0)
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), expected, rtol=1e-10)


def test_density_1d_sklearn_diag_mixture_and_labels(iris):
    X = iris[["petal_length"]].to_numpy()
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    ax = plot_density_1d(gm, X, labels=iris.species.to_numpy())
    np.testing.assert_allclose(ax.lines[-1].get_ydata(),
                               np.exp(gm.score_samples(ax.lines[-1].get_xdata()[:, None])),
                               rtol=1e-6)
    rug = [c for c in ax.collections if isinstance(c, LineCollection)][0]
    # coloured by species: three distinct colours among the ticks
    assert len({tuple(c) for c in np.round(rug.get_colors(), 4)}) == 3


def test_density_1d_mixture_with_scales_only(fit_4d):
    # an object with weights_, means_ and scales_ but no covariances_ (the
    # first release's attributes) is drawn as a diagonal mixture
    gmm, X = fit_4d
    old = SimpleNamespace(weights_=gmm.weights_, means_=gmm.means_, scales_=gmm.scales_)
    ax = plot_density_1d(old, X, feature=1, rug=False)
    np.testing.assert_allclose(ax.lines[-1].get_ydata(),
                               plot_density_1d(gmm, X, feature=1, rug=False).lines[-1].get_ydata())


def test_density_1d_bad_input(fit_1d, fit_4d):
    gmm, X = fit_1d
    with pytest.raises(ValueError, match="feature=3 is out of range"):
        plot_density_1d(gmm, X, feature=3)
    with pytest.raises(ValueError, match="'petal' is not a column"):
        plot_density_1d(gmm, X, feature="petal")
    with pytest.raises(ValueError, match="fitted on 4"):
        plot_density_1d(fit_4d[0], X)
    with pytest.raises(ValueError, match="one label per row"):
        plot_density_1d(gmm, X, labels=[0, 1])
    odd = SimpleNamespace(weights_=gmm.weights_, means_=gmm.means_,
                          covariances_=gmm.covariances_, covariance_type="banana")
    with pytest.raises(ValueError, match="covariance_type='banana'"):
        plot_density_1d(odd, X)
    odd.covariance_type = "diag"  # (K, 1, 1) is not a diagonal covariances_
    with pytest.raises(ValueError, match=r"covariances_ has shape \(2, 1, 1\)"):
        plot_density_1d(odd, X)
    with pytest.raises(ValueError, match="call fit"):
        plot_density_1d(BayesianGMM(), X)


def test_a_fitted_pipeline_is_refused_with_the_call_that_draws_it():
    """A fitted Pipeline ending in a mixture was told to "call fit(X)
    first" (the data-scientist audit of stop 50); the message now gives
    the call that draws the mixture in its own units, and that call works."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = load_iris()[["petal_length", "petal_width"]].to_numpy()
    pipe = make_pipeline(StandardScaler(), BayesianGMM(2, n_init=1, device="cpu",
                                                       random_state=0)).fit(X)
    for helper in (plot_clusters_2d, plot_density_1d, plot_loss_history):
        with pytest.raises(ValueError, match=r"^Pipeline is not a mixture: .* pass the final "
                                             r"step and the data as it sees them: "
                                             r"plot\(pipe\[-1\], pipe\[:-1\]\.transform\(X\)\)"):
            helper(pipe, X)
    ax = plot_clusters_2d(pipe[-1], pipe[:-1].transform(X))
    assert len([p for p in ax.patches if isinstance(p, Ellipse)]) >= 2


# ------------------------------------------------------------------ assignments
@pytest.mark.parametrize("kind", ["swarm", "strip"])
def test_assignments_one_column_per_cluster(fit_1d, kind):
    gmm, X = fit_1d
    z = gmm.predict(X)
    ax = plot_assignments(X, z, kind=kind)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == len(np.unique(z))
    # every point drawn once, in the column of its cluster, at its value
    for col, c in enumerate(np.unique(z)):
        off = points[col].get_offsets()
        assert len(off) == np.sum(z == c)
        np.testing.assert_allclose(np.sort(off[:, 1]), np.sort(X.to_numpy()[z == c, 0]))
        assert np.all(np.abs(off[:, 0] - col) < 0.5)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in np.unique(z)]
    assert ax.get_legend() is None
    assert ax.get_ylabel() == "petal_length"


def test_assignments_hue_legend(fit_1d, iris):
    gmm, X = fit_1d
    ax = plot_assignments(X, gmm.predict(X), hue=iris.species, kind="strip")
    assert _legend_texts(ax) == ["setosa", "versicolor", "virginica"]


def test_assignments_bad_input(fit_1d):
    _, X = fit_1d
    with pytest.raises(ValueError, match="one cluster label per row"):
        plot_assignments(X, [0, 1, 0])
    with pytest.raises(ValueError, match="kind must be 'swarm' or 'strip', got 'box'"):
        plot_assignments(X, np.zeros(len(X), int), kind="box")


# ------------------------------------------------------------------ 2-D clusters
def test_clusters_2d_ellipses_match_fit(fit_2d):
    gmm, X = fit_2d
    K = gmm.n_components
    assert gmm.covariance_type_ == "full"  # the default
    ax = plot_clusters_2d(gmm, X)
    ellipses = _ellipses(ax)
    assert len(ellipses) == 2 * K
    for k in range(K):
        for i, n_sigma in enumerate((1, 2)):
            e = ellipses[2 * k + i]
            np.testing.assert_allclose(e.center, gmm.means_[k])
            # rotated along the eigenvectors of the full covariance
            _assert_ellipse_matches_eigen(e, gmm.covariances_[k], n_sigma)
    # petal length and width are correlated within species: the components tilt
    assert max(abs(e.angle) for e in ellipses) > 5
    z = gmm.predict(X)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == len(np.unique(z)) + 1  # one per cluster + the means
    assert sum(len(p.get_offsets()) for p in points[:-1]) == len(X)
    np.testing.assert_allclose(points[-1].get_offsets(), gmm.means_)
    assert _legend_texts(ax) == [f"cluster {c}" for c in np.unique(z)] + ["means"]
    # a cluster's points and its component's ellipse share a colour
    for p, c in zip(points[:-1], np.unique(z)):
        np.testing.assert_allclose(p.get_facecolor()[0][:3], ellipses[2 * c].get_edgecolor()[:3])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("petal_length", "petal_width")


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_clusters_2d_diagonal_types_are_axis_aligned(iris, fit_2d_diag, covariance_type):
    if covariance_type == "diag":
        gmm, X = fit_2d_diag
    else:
        X = iris[["petal_length", "petal_width"]]
        gmm = BayesianGMM(3, covariance_type="spherical", n_init=2, max_iter=0, random_state=0,
                          device="cpu").fit(X)
    ax = plot_clusters_2d(gmm, X)
    ellipses = _ellipses(ax)
    assert len(ellipses) == 2 * gmm.n_components
    for k in range(gmm.n_components):
        for i, n_sigma in enumerate((1, 2)):
            e = ellipses[2 * k + i]
            assert e.angle == 0
            np.testing.assert_allclose([e.width, e.height], 2 * n_sigma * gmm.scales_[k])
    if covariance_type == "spherical":
        assert all(e.width == pytest.approx(e.height) for e in ellipses)


def test_clusters_2d_tied_ellipses_share_one_shape(iris):
    X = iris[["petal_length", "petal_width"]]
    gmm = BayesianGMM(3, covariance_type="tied", n_init=2, max_iter=0, random_state=0,
                      device="cpu").fit(X)
    assert gmm.covariances_.shape == (2, 2)
    ellipses = _ellipses(plot_clusters_2d(gmm, X, sigmas=[2]))
    assert len(ellipses) == 3
    for k, e in enumerate(ellipses):
        np.testing.assert_allclose(e.center, gmm.means_[k])
        _assert_ellipse_matches_eigen(e, gmm.covariances_, 2)
        assert (e.width, e.height, e.angle) == pytest.approx(
            (ellipses[0].width, ellipses[0].height, ellipses[0].angle))
    assert abs(ellipses[0].angle) > 5


def test_clusters_2d_contours_features_and_sigmas(fit_4d):
    gmm, X = fit_4d
    ax = plot_clusters_2d(gmm, X, features=("sepal_length", "petal_width"), sigmas=[3],
                          contours=True)
    ellipses = _ellipses(ax)
    assert len(ellipses) == gmm.n_components
    for k, e in enumerate(ellipses):
        np.testing.assert_allclose(e.center, gmm.means_[k, [0, 3]])
        # the marginal on (sepal_length, petal_width): that 2x2 block of Sigma_k
        _assert_ellipse_matches_eigen(e, gmm.covariances_[k][np.ix_([0, 3], [0, 3])], 3)
    assert sum(isinstance(c, ContourSet) for c in ax.collections) == 1


def test_clusters_2d_contours_are_the_density(fit_2d):
    # With D = 2 the marginal is the mixture itself: every drawn contour line
    # runs where exp(score_samples) equals its level (up to the grid's
    # linear interpolation).
    gmm, X = fit_2d
    ax = plot_clusters_2d(gmm, X, contours=True, grid_size=200)
    cs = [c for c in ax.collections if isinstance(c, ContourSet)][0]
    checked = 0
    for level, segs in zip(cs.levels, _level_lines(cs)):
        pts = np.concatenate([np.empty((0, 2))] + list(segs))
        if level <= 0 or not len(pts):
            continue
        dens = np.exp(gmm.score_samples(pd.DataFrame(pts, columns=list(X.columns))))
        np.testing.assert_allclose(dens, level, rtol=0.03, atol=0.01 * cs.levels.max())
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_clusters_2d_sklearn_any_covariance_type(fit_2d, covariance_type):
    _, X = fit_2d
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    e = _ellipses(plot_clusters_2d(gm, X, sigmas=[2]))
    assert len(e) == 3
    # scikit-learn's own covariance matrix of each component
    mats = {"full": gm.covariances_, "tied": np.stack([gm.covariances_] * 3),
            "spherical": gm.covariances_[:, None, None] * np.eye(2)}[covariance_type]
    for k in range(3):
        np.testing.assert_allclose(e[k].center, gm.means_[k])
        _assert_ellipse_matches_eigen(e[k], mats[k], 2)


def test_clusters_2d_full_matches_sklearn_full(fit_2d):
    # The same data, K and covariance type: both fits find the species-like
    # clusters, and their ellipses agree up to the small pull of the priors.
    gmm, X = fit_2d
    gm = GaussianMixture(3, covariance_type="full", n_init=2, random_state=0).fit(X)
    mine = _ellipses(plot_clusters_2d(gmm, X, sigmas=[2]))
    theirs = _ellipses(plot_clusters_2d(gm, X, sigmas=[2]))
    match = [int(np.argmin(np.linalg.norm(gm.means_ - m, axis=1))) for m in gmm.means_]
    assert sorted(match) == [0, 1, 2]
    for k, j in enumerate(match):
        np.testing.assert_allclose(_ellipse_covariance(mine[k], 2),
                                   _ellipse_covariance(theirs[j], 2), rtol=0.25, atol=2e-3)


def test_clusters_2d_sklearn_and_bad_input(fit_2d):
    _, X = fit_2d
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    ax = plot_clusters_2d(gm, X, sigmas=[2])
    e = [p for p in ax.patches if isinstance(p, Ellipse)]
    np.testing.assert_allclose(e[1].width, 4 * np.sqrt(gm.covariances_[1, 0]))
    assert all(p.angle == 0 for p in e)
    with pytest.raises(ValueError, match="at least 2 features"):
        g1 = BayesianGMM(2, max_iter=0, random_state=0, device="cpu").fit(X[["petal_length"]])
        plot_clusters_2d(g1, X[["petal_length"]])
    with pytest.raises(ValueError, match="sigmas must be positive"):
        plot_clusters_2d(gm, X, sigmas=[-1])


# ------------------------------------------------------------------ classifiers
@pytest.fixture(scope="module")
def circles():
    X, y = make_circles(300, noise=0.05, factor=0.5, random_state=0)
    labels = np.array(["outer", "inner"])[y]  # string labels
    return X, labels, QuadraticDiscriminantAnalysis().fit(X, labels)


def _grid_of(ax, mesh):
    """The grid points of a decision-region mesh (its cell centres)."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    ny, nx = mesh.get_array().shape
    gx, gy = np.meshgrid(np.linspace(x0, x1, nx), np.linspace(y0, y1, ny))
    return np.column_stack([gx.ravel(), gy.ravel()]), (ny, nx)


def test_decision_regions_draws_regions_and_points(circles):
    X, y, clf = circles
    ax = plot_decision_regions(clf, X, y, grid_size=80)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    grid, shape = _grid_of(ax, mesh)
    assert shape == (80, 80)
    # each cell is the class predict gives at its grid point
    expected = pd.Index(clf.classes_).get_indexer(clf.predict(grid)).reshape(shape)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()), expected)
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 2  # one boundary per predicted class (here the same curve)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == len(clf.classes_)
    for p, c in zip(points, clf.classes_):
        assert len(p.get_offsets()) == np.sum(y == c)
    assert _legend_texts(ax) == [str(c) for c in clf.classes_]
    # the inner ring's predicted region is a closed curve around the origin:
    # the boundary passes between the rings on both sides of the origin.
    paths = _level_lines(contours[1])[0]
    radii = np.concatenate([np.hypot(*seg.T) for seg in paths])
    assert 0.5 < radii.min() and radii.max() < 1.0


def test_decision_regions_show_no_class_where_predict_never_gives_it():
    # Classes a | c split at x = 0 and b only in a corner: a filled contour
    # of the class index painted a strip of b along the a | c boundary (an
    # audit measured 0.23% of the plot at grid 200); each cell now shows
    # what predict gives there, and b's boundary stays in its corner.
    class Split:
        classes_ = np.array(["a", "b", "c"])

        def predict(self, Z):
            Z = np.asarray(Z)
            out = np.where(Z[:, 0] < 0, "a", "c")
            out[(Z[:, 0] > 0.8) & (Z[:, 1] > 0.8)] = "b"
            return out

    X = np.array([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-0.5, 0.5]])
    y = np.array(["a", "b", "c", "a"])
    ax = plot_decision_regions(Split(), X, y, grid_size=31, margin=0.0)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    grid, shape = _grid_of(ax, mesh)
    Z = np.asarray(mesh.get_array())
    np.testing.assert_array_equal(Z, pd.Index(Split.classes_).get_indexer(
        Split().predict(grid)).reshape(shape))
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 3
    b_boundary = np.concatenate(_level_lines(contours[1])[0])
    assert (b_boundary >= 0.7).all()          # only around b's corner
    # A window wider than the data, as given.
    ax = plot_decision_regions(Split(), X, y, grid_size=20, xlim=(-3, 3), ylim=(-2, 4))
    assert ax.get_xlim() == (-3.0, 3.0) and ax.get_ylim() == (-2.0, 4.0)
    for bad in ((1, 0), (0, np.inf), "ab", (1, 2, 3)):
        with pytest.raises(ValueError, match="xlim must be"):
            plot_decision_regions(Split(), X, y, xlim=bad)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_decision_regions_classifier_ellipses(circles, covariance_type):
    X, y, _ = circles
    clf = GMMClassifier(n_components=[6, 3], covariance_type=covariance_type, max_iter=0,
                        random_state=0, device="cpu").fit(X, y)
    ax = plot_decision_regions(clf, X, y, grid_size=40, ellipses=True, sigma=2)
    ellipses = _ellipses(ax)
    # Padded components skipped, and those carrying under half a row of
    # their class's rows (as plot_clusters_2d skips them).
    carried = clf.weights_ * np.bincount(np.searchsorted(clf.classes_, y))[:, None] >= 0.5
    assert clf.n_components_.sum() == 9 and len(ellipses) == carried.sum() >= 8
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    mats = clf.covariances_ if covariance_type != "tied" else None
    i = 0
    for c in range(len(clf.classes_)):
        for k in np.flatnonzero(carried[c]):
            e = ellipses[i]
            i += 1
            np.testing.assert_allclose(e.center, clf.means_[c, k])
            cov = clf.covariances_[c] if mats is None else (
                mats[c, k] if covariance_type == "full" else np.diag(mats[c, k]))
            _assert_ellipse_matches_eigen(e, cov, 2)
            # in the colour of the class's points
            np.testing.assert_allclose(e.get_edgecolor()[:3], points[c].get_facecolor()[0][:3])
    if covariance_type == "diag":
        assert all(e.angle == 0 for e in ellipses)
    # without ellipses=True nothing is added
    assert not _ellipses(plot_decision_regions(clf, X, y, grid_size=40))


def test_decision_regions_bad_input(circles):
    X, y, clf = circles
    with pytest.raises(ValueError, match="needs a mixture classifier"):
        plot_decision_regions(clf, X, y, ellipses=True)
    with pytest.raises(ValueError, match=r"^grid_size=100000 asks for about .* GiB"):
        plot_decision_regions(clf, X, y, grid_size=10 ** 5)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        plot_decision_regions(clf, X, y, ellipses=True, sigma=0)
    with pytest.raises(ValueError, match="2-D but X has 3 features"):
        plot_decision_regions(clf, np.c_[X, X[:, :1]], y)
    with pytest.raises(ValueError, match="not in classifier.classes_"):
        plot_decision_regions(clf, X, np.where(y == "outer", "ring", y))
    with pytest.raises(ValueError, match="call fit"):
        plot_decision_regions(QuadraticDiscriminantAnalysis(), X, y)


def test_confusion_matrix_annotations(iris):
    y = iris.species.to_numpy()
    X = iris[["petal_length", "petal_width"]].to_numpy()
    pred = QuadraticDiscriminantAnalysis().fit(X, y).predict(X)
    ax = plot_confusion_matrix(y, pred)
    # independent count with pandas
    table = pd.crosstab(pd.Categorical(y), pd.Categorical(pred, categories=np.unique(y)),
                        dropna=False).to_numpy()
    assert [int(t.get_text()) for t in ax.texts] == list(table.ravel())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(np.unique(y))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(np.unique(y))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    ax = plot_confusion_matrix(y, pred, normalize="true")
    rows = np.array([float(t.get_text()) for t in ax.texts]).reshape(3, 3)
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=0.02)
    with pytest.raises(ValueError, match="normalize must be"):
        plot_confusion_matrix(y, pred, normalize="rows")


# ------------------------------------------------------------------ pair plot
def test_pairs_grid_coloured_by_cluster_with_ellipses(fit_4d):
    gmm, X = fit_4d
    grid = plot_pairs(gmm, X)
    assert grid.axes.shape == (4, 4)
    z = gmm.predict(X)
    assert [t.get_text() for t in grid.legend.texts] == [str(c) for c in np.unique(z)]
    for i in range(4):
        for j in range(4):
            ellipses = _ellipses(grid.axes[i, j])
            assert len(ellipses) == (gmm.n_components if i != j else 0)
            # panel (i, j): x is feature j, y feature i; each ellipse is the
            # 2-sigma contour of that 2x2 block of the full covariance
            for k, e in enumerate(ellipses):
                np.testing.assert_allclose(e.center, gmm.means_[k, [j, i]])
                _assert_ellipse_matches_eigen(e, gmm.covariances_[k][np.ix_([j, i], [j, i])], 2)
    off = [c for c in grid.axes[0, 1].collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in off) == len(X)
    assert grid.axes[3, 0].get_xlabel() == "sepal_length"


def test_pairs_subset_of_vars_no_ellipses(fit_4d):
    gmm, X = fit_4d
    grid = plot_pairs(gmm, X, vars=["petal_length", "petal_width"], ellipses=False,
                      labels=load_iris().species.to_numpy())
    assert grid.axes.shape == (2, 2)
    assert not any(isinstance(p, Ellipse) for ax in grid.axes.ravel() for p in ax.patches)
    assert [t.get_text() for t in grid.legend.texts] == ["setosa", "versicolor", "virginica"]
    # The legend says what colours the points: the labels' own name, else "label".
    assert grid.legend.get_title().get_text() == "label"
    plt.close(grid.figure)
    grid = plot_pairs(gmm, X, vars=["petal_length", "petal_width"], ellipses=False,
                      labels=load_iris().species)
    assert grid.legend.get_title().get_text() == "species"
    plt.close(grid.figure)


def test_pairs_of_a_feature_named_cluster_keep_its_values_and_the_legend_title(iris):
    X = load_iris().drop(columns="species").rename(columns={"petal_width": "cluster"})
    gmm = BayesianGMM(2, n_init=1, random_state=0, device="cpu").fit(X)
    grid = plot_pairs(gmm, X)
    assert grid.legend.get_title().get_text() == "cluster"
    assert grid.axes[3, 0].get_ylabel() == "cluster"
    off = [c for c in grid.axes[3, 0].collections if isinstance(c, PathCollection)]
    ys = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in off]))
    np.testing.assert_allclose(ys, np.sort(X["cluster"].to_numpy()))
    plt.close(grid.figure)


def test_components_drawn_above_the_mixture_and_labellings_in_their_own_colours(fit_1d):
    """The demo's two panels: each component visible above the mixture curve
    (which it coincides with where it carries the density), and a second
    labelling (species) never in a cluster's colour."""
    gmm, X = fit_1d
    ax = plot_density_1d(gmm, X)
    K = len(gmm.weights_)
    comps, mixture = ax.lines[:K], ax.lines[-1]
    assert all(line.get_zorder() > mixture.get_zorder() for line in comps)
    cluster_colours = {matplotlib.colors.to_hex(line.get_color()) for line in comps}
    plt.close(ax.figure)
    z = gmm.predict(X)
    species = np.where(np.asarray(X).ravel() > np.median(X), "big", "small")
    ax = plot_assignments(X, z, hue=species)
    point_colours = {matplotlib.colors.to_hex(c) for coll in ax.collections
                     for c in coll.get_facecolors()}
    assert len(point_colours) == 2 and not point_colours & cluster_colours
    plt.close(ax.figure)


def test_loss_plot_marks_the_handover_from_em_to_svi(fit_1d):
    gmm, X = fit_1d
    ax = plot_loss_history(gmm)
    assert "EM -> SVI" not in _legend_texts(ax)       # EM converged: no SVI stage
    # Point t is the loss after t updates: x from 0 to n_iter_, integer ticks.
    np.testing.assert_array_equal(ax.lines[-1].get_xdata(), np.arange(gmm.losses_.size))
    assert gmm.losses_.size == gmm.n_iter_ + 1 and ax.get_xlabel() == "EM updates"
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(ax.figure)
    short = BayesianGMM(2, em_max_iter=3, max_iter=40, n_init=2, random_state=0,
                        device="cpu").fit(X)
    ax = plot_loss_history(short)
    assert "EM -> SVI" in _legend_texts(ax)
    marker = next(line for line in ax.lines if line.get_label() == "EM -> SVI")
    em = short.restart_losses_[short.best_restart_]
    assert marker.get_xdata()[0] == em.size - 0.5 and short.losses_.size > em.size
    # The marker sits between the last EM point (x = em.size - 1) and the first SVI one.
    assert ax.get_xlabel() == "updates (EM, then SVI steps)"
    plt.close(ax.figure)


def test_bad_plot_arguments_are_named(fit_1d, fit_2d, iris):
    # An audit found these ending in a blank plot or in matplotlib's own
    # AttributeError / TypeError / KeyError.
    gmm1, X1 = fit_1d
    gmm2, X2 = fit_2d
    A1 = X1.to_numpy()
    for bad, value in ((np.inf, "inf"), (-np.inf, "-inf")):      # blank plots before
        Xb = np.r_[A1, [[bad]]]
        with pytest.raises(ValueError, match=f"non-finite value \\({value}\\) in row 150, column 0"):
            plot_density_1d(gmm1, Xb)
    with pytest.raises(ValueError, match="X has no rows"):
        plot_density_1d(gmm1, A1[:0])
    for ax in ("x", plt.figure(), 5):
        with pytest.raises(ValueError, match=f"ax must be a matplotlib Axes .*got {type(ax).__name__}"):
            plot_loss_history(gmm1, ax=ax)
        with pytest.raises(ValueError, match="ax must be a matplotlib Axes"):
            plot_density_1d(gmm1, X1, ax=ax)
    for sigmas in ((np.nan,), "two"):
        with pytest.raises(ValueError, match="sigmas must be"):
            plot_clusters_2d(gmm2, X2, sigmas=sigmas)
    one = plot_clusters_2d(gmm2, X2, sigmas=2.0)            # a single number is one level
    assert len([p for p in one.patches if isinstance(p, Ellipse)]) == gmm2.n_components
    # Empty draws none, as the docstring says (from an independent audit: it
    # raised): the points, the means and the contours only.
    none = plot_clusters_2d(gmm2, X2, sigmas=(), contours=True)
    assert not [p for p in none.patches if isinstance(p, Ellipse)] and none.collections
    with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
        plot_clusters_2d(gmm2, X2, contours=True, grid_size=1)
    # A grid beyond this machine's memory is refused before any work (10**5
    # on a 2-D plot asked numpy for 75 GiB); a 1-D grid of the same size is
    # small.
    with pytest.raises(ValueError, match=r"^grid_size=100000 asks for about .* GiB.*smaller "
                                         r"grid_size \(a square grid of grid_size\*\*2 points\)"):
        plot_clusters_2d(gmm2, X2, contours=True, grid_size=10 ** 5)
    with pytest.raises(ValueError, match=r"^grid_size=10{10} asks for about .* GiB"):
        plot_density_1d(gmm1, X1, grid_size=10 ** 10)
    plot_density_1d(gmm1, X1, grid_size=10 ** 5)
    with pytest.raises(ValueError, match="cmap must name a matplotlib colormap.*'nope'"):
        plot_confusion_matrix([0, 1], [0, 1], cmap="nope")
    # Missing labels are named with their row (matplotlib's TypeError and
    # scikit-learn's "Input y_true contains NaN" before).
    for missing in (np.nan, None):
        with pytest.raises(ValueError, match=r"^y_true has 1 missing label\(s\) \(NaN or None; "
                                             r"first at row 1\): drop the rows"):
            plot_confusion_matrix(np.array([0, missing, 1], dtype=object), [0, 1, 1])
    with pytest.raises(ValueError, match=r"^y_pred has 1 missing label\(s\).*row 0"):
        plot_confusion_matrix([0, 1], [np.nan, 1.0])
    with pytest.raises(ValueError, match=r"^assignments has 1 missing label\(s\).*row 2\): "
                                         r"every row needs a cluster"):
        plot_assignments(A1[:4], [0.0, 1.0, np.nan, 1.0])
    # The classifier's plot checks the user's rows, not its own grid.
    y = iris["species"].to_numpy()
    clf = GMMClassifier(1, n_init=1, max_iter=0, device="cpu").fit(X2, y)
    Xi = np.r_[X2.to_numpy(), [[np.inf, 0.0]]]
    with pytest.raises(ValueError, match=r"non-finite value \(inf\) in row 150, column 0"):
        plot_decision_regions(clf, Xi, np.append(y, y[0]))


# ------------------------------------------------- found by an audit of the helpers
def test_reordered_columns_are_refused_not_drawn_with_other_features_parameters(fit_4d):
    # The parameters are read by position: a frame with the fitted columns
    # in another order drew feature a's data with feature c's component
    # (bumps at 130 for data near 4) without a word.
    gmm, X = fit_4d
    shuffled = X[X.columns[::-1]]
    z = gmm.predict(X)
    # The remedy names the fitted order (this expectation was computed but
    # never checked).
    expected = re.escape(f"pass X[{list(X.columns)}]")
    for call in (lambda: plot_density_1d(gmm, shuffled, feature="petal_length"),
                 lambda: plot_clusters_2d(gmm, shuffled, labels=z),
                 lambda: plot_pairs(gmm, shuffled, labels=z)):
        with pytest.raises(ValueError, match="not those the estimator was fitted on.*" + expected):
            call()
    renamed = X.set_axis(["a", "b", "c", "d"], axis=1)
    with pytest.raises(ValueError, match=r"\['a', 'b', 'c', 'd'\] are not those"):
        plot_density_1d(gmm, renamed)
    # The same columns in order, and a bare array, are drawn.
    plot_density_1d(gmm, X, feature="petal_length")
    plot_density_1d(gmm, X.to_numpy(), feature=2)
    y = load_iris().species.to_numpy()
    two = X[["petal_length", "petal_width"]]
    clf = GMMClassifier(1, n_init=1, max_iter=0, device="cpu").fit(two, y)
    with pytest.raises(ValueError, match="not those the estimator was fitted on"):
        plot_decision_regions(clf, two[["petal_width", "petal_length"]], y)


def test_every_helper_gives_component_k_one_colour(fit_1d, fit_2d, iris):
    gmm, X = fit_2d
    K = gmm.n_components
    comp = [matplotlib.colors.to_hex(c) for c in sns_palette(K)]
    z = gmm.predict(X)
    # Rows of clusters 0 and 2 only: cluster 2 keeps component 2's colour
    # (it took component 1's before).
    keep = z != 1
    ax = plot_assignments(X.to_numpy()[keep], z[keep], kind="strip")
    drawn = [matplotlib.colors.to_hex(c.get_facecolors()[0]) for c in ax.collections
             if len(c.get_offsets())]
    assert drawn == [comp[0], comp[2]]
    plt.close(ax.figure)
    ax = plot_clusters_2d(gmm, X.to_numpy()[keep], labels=z[keep])
    points = [c for c in ax.collections if isinstance(c, PathCollection)][:2]
    assert [matplotlib.colors.to_hex(c.get_facecolors()[0]) for c in points] == \
        [comp[0], comp[2]]
    plt.close(ax.figure)
    # The rug: cluster labels in the components' colours, another labelling
    # (species, or integer codes beyond K) in none of them.
    g1, X1 = fit_1d
    comp1 = {matplotlib.colors.to_hex(line.get_color()) for line in plot_density_1d(g1, X1).lines[:2]}
    plt.close("all")
    for labels, own in ((g1.predict(X1), True), (iris.species.to_numpy(), False),
                        (pd.factorize(iris.species)[0], False)):
        ax = plot_density_1d(g1, X1, labels=labels)
        rug = [c for c in ax.collections if isinstance(c, LineCollection)][0]
        colours = {matplotlib.colors.to_hex(c) for c in rug.get_colors()}
        assert (colours <= comp1) if own else not (colours & comp1), (labels[:3], colours)
        plt.close(ax.figure)


def sns_palette(n):
    import seaborn as sns
    return sns.color_palette(n_colors=n)


def test_components_beyond_ten_have_their_own_colours():
    from bayesgmm.plotting import _component_palette
    twelve = [matplotlib.colors.to_hex(c) for c in _component_palette(12)]
    assert len(set(twelve)) == 12
    assert twelve[:10] == [matplotlib.colors.to_hex(c) for c in sns_palette(10)]
    forty = [matplotlib.colors.to_hex(c) for c in _component_palette(40)]
    assert len(set(forty)) == 40 and forty[:12] == twelve   # colour i whatever n


def test_pairs_sigma_is_checked(fit_4d):
    gmm, X = fit_4d
    for sigma in (-1, 0, np.nan, "2", True):
        with pytest.raises(ValueError, match="sigma must be a positive number"):
            plot_pairs(gmm, X, sigma=sigma)


def test_pure_svi_loss_is_labelled_svi_steps(iris):
    X = iris[["petal_length"]]
    gmm = BayesianGMM(2, em_max_iter=0, max_iter=30, n_init=1, random_state=0,
                      device="cpu").fit(X)
    ax = plot_loss_history(gmm)
    assert ax.get_xlabel() == "SVI steps"


def test_density_of_a_posterior_fit_is_its_posterior_predictive(iris):
    # The black curve is what score_samples gives: for a VI fit the average
    # over the draws (checked with scipy on posterior_samples, and against
    # score_samples of points whose other feature is missing, which a
    # missing="marginalize" fit marginalises); plug_in=True the point
    # estimates' mixture.
    X = iris[["petal_length", "petal_width"]].to_numpy()[::5]     # 30 points: a wide posterior
    gmm = BayesianGMM(2, inference="vi", missing="marginalize", n_samples=200,
                      random_state=0, device="cpu").fit(X)
    ax = plot_density_1d(gmm, X, feature=1)
    line = ax.lines[-1]
    assert line.get_label() == "posterior predictive"
    x, dens = line.get_xdata(), line.get_ydata()
    d = gmm.posterior_samples()
    sd = np.sqrt(d["covariances"][:, :, 1, 1])
    by_hand = (d["weights"][:, :, None] * norm.pdf(x, d["means"][:, :, 1, None],
                                                   sd[:, :, None])).sum(1).mean(0)
    np.testing.assert_allclose(dens, by_hand, rtol=1e-9)
    scored = np.exp(gmm.score_samples(np.column_stack([np.full_like(x, np.nan), x])))
    np.testing.assert_allclose(dens, scored, rtol=1e-4)
    plt.close(ax.figure)
    ax = plot_density_1d(gmm, X, feature=1, plug_in=True)
    line = ax.lines[-1]
    assert line.get_label() == "mixture"
    point = (gmm.weights_[:, None] * norm.pdf(x, gmm.means_[:, 1, None],
                                              np.sqrt(gmm.covariances_[:, 1, 1, None]))).sum(0)
    np.testing.assert_allclose(line.get_ydata(), point, rtol=1e-9)
    assert np.abs(point - dens).max() > 1e-3          # the two differ
    with pytest.raises(ValueError, match="plug_in must be True or False"):
        plot_density_1d(gmm, X, plug_in="yes")
    # The contours of a posterior fit are the predictive's iso-density lines.
    ax = plot_clusters_2d(gmm, X, contours=True, grid_size=200)
    cs = [c for c in ax.collections if isinstance(c, ContourSet)][0]
    checked, apart = 0, 0.0
    for level, segs in zip(cs.levels, _level_lines(cs)):
        pts = np.concatenate([np.empty((0, 2))] + list(segs))
        if level <= 0 or not len(pts):
            continue
        on = np.exp(gmm.score_samples(pts))
        np.testing.assert_allclose(on, level, rtol=0.03, atol=0.01 * cs.levels.max())
        off = np.exp(gmm.score_samples(pts, plug_in=True))
        apart = max(apart, float(np.abs(off / level - 1).max()))
        checked += 1
    assert checked >= 3
    assert apart > 0.06           # the point estimate's density would not pass


def test_missing_entries_are_left_out_of_the_panels_that_need_them(iris):
    # A missing="marginalize" fit takes rows with NaN; the helpers draw each
    # point where its plotted features are observed (all rows were refused).
    X = iris.drop(columns="species").copy()
    rng = np.random.default_rng(0)
    X = X.mask(rng.random(X.shape) < 0.2)
    gmm = BayesianGMM(2, missing="marginalize", n_init=1, max_iter=0, random_state=0,
                      device="cpu").fit(X)
    observed = X["petal_length"].notna().to_numpy()
    ax = plot_density_1d(gmm, X, feature="petal_length")
    rug = [c for c in ax.collections if isinstance(c, LineCollection)][0]
    assert len(rug.get_segments()) == observed.sum()
    plt.close(ax.figure)
    z = gmm.predict(X)                                  # every row, from its observed features
    ax = plot_assignments(X, z, feature="petal_length", kind="strip")
    assert sum(len(c.get_offsets()) for c in ax.collections) == observed.sum()
    plt.close(ax.figure)
    ax = plot_clusters_2d(gmm, X, features=("petal_length", "petal_width"))
    both = X[["petal_length", "petal_width"]].notna().all(axis=1).to_numpy()
    points = [c for c in ax.collections if isinstance(c, PathCollection)][:-1]
    assert sum(len(c.get_offsets()) for c in points) == both.sum()
    plt.close(ax.figure)
    plot_pairs(gmm, X)
    with pytest.raises(ValueError, match="'petal_length' is missing \\(NaN\\) in every row"):
        plot_density_1d(gmm, X.assign(petal_length=np.nan), feature="petal_length")
    # A fit that refuses NaN says so, with its remedy, when asked for labels.
    plain = BayesianGMM(2, n_init=1, max_iter=0, random_state=0,
                        device="cpu").fit(X.dropna())
    with pytest.raises(ValueError, match="missing='marginalize'"):
        plot_clusters_2d(plain, X)


def test_a_renamed_series_is_refused_and_named_clusters_take_the_first_colours(iris):
    # (From a review.) A Series carries its one column's name: another
    # feature's Series was drawn with the fitted one's parameters.
    X = iris[["petal_length"]]
    gmm = BayesianGMM(2, n_init=1, max_iter=0, random_state=0, device="cpu").fit(X)
    with pytest.raises(ValueError, match=r"\['petal_width'\] are not those"):
        plot_density_1d(gmm, iris["petal_width"])
    plot_density_1d(gmm, iris["petal_length"])
    ax = plot_assignments(X, np.where(gmm.predict(X) == 0, "left", "right"), kind="strip")
    drawn = {matplotlib.colors.to_hex(c.get_facecolors()[0]) for c in ax.collections
             if len(c.get_offsets())}
    assert drawn == {matplotlib.colors.to_hex(c) for c in sns_palette(2)}


# ---------------------------------------------------------- audit fixes
def _two_blobs_2d(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 0.7, (n, 2)), rng.normal([4, 3], 0.7, (n, 2))]


def test_features_named_like_the_helpers_columns_keep_their_values():
    """A feature named "cluster" (plot_pairs, plot_assignments) or "colour"
    (plot_assignments) was overwritten by the labels: its panels showed 0/1."""
    X = pd.DataFrame(_two_blobs_2d(), columns=["cluster", "size"])
    gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
    grid = plot_pairs(gmm, X)
    xs = np.concatenate([c.get_offsets()[:, 0] for c in grid.axes[1, 0].collections])
    np.testing.assert_allclose(np.sort(xs), np.sort(X["cluster"].to_numpy()))
    z = gmm.predict(X)
    for name in ("cluster", "colour"):
        df = X.rename(columns={"cluster": name})
        ax = plot_assignments(df, z, feature=name, kind="strip")
        ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
        np.testing.assert_allclose(np.sort(ys), np.sort(df[name].to_numpy()))
        assert ax.get_ylabel() == name and ax.get_xlabel() == "cluster"


def test_switched_off_components_are_not_drawn():
    """A Dirichlet-process fit with 6 components on 2 clusters: the 4 the
    prior switched off (weights ~1e-3, no points) get no ellipse, marker or
    density line (they stacked between the clusters as a phantom third)."""
    X = _two_blobs_2d()
    dp = BayesianGMM(6, weight_prior="dirichlet_process", inference="vi", n_samples=20,
                     random_state=0, device="cpu").fit(X)
    carried = dp.weights_ * len(X) >= 0.5
    assert dp.n_effective_components_ == 2 and carried.sum() == 2
    ax = plot_clusters_2d(dp, X, sigmas=(1.0, 2.0))
    centres = np.array([e.center for e in ax.patches if isinstance(e, Ellipse)])
    assert len(centres) == 4
    np.testing.assert_allclose(np.unique(centres, axis=0),
                               np.unique(dp.means_[carried], axis=0))
    assert len(ax.collections[-1].get_offsets()) == 2          # the mean markers
    lines = [l.get_label() for l in plot_density_1d(dp, X).lines]
    assert sum(label.startswith("component") for label in lines) == 2
    grid = plot_pairs(dp, X)
    assert len([p for p in grid.axes[1, 0].patches if isinstance(p, Ellipse)]) == 2


def test_plot_errors_name_the_real_problem():
    X = _two_blobs_2d()
    y = np.repeat([0, 1], 60)
    gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
    with pytest.raises(ValueError, match=r"features must name two different columns, got "
                                         r"\(0, 0\)"):
        plot_clusters_2d(gmm, X, features=(0, 0), contours=True)
    with pytest.raises(ValueError, match="GMMClassifier keeps no per-iteration loss history"):
        plot_loss_history(GMMClassifier(1, device="cpu").fit(X, y))
    with pytest.raises(ValueError, match="BayesianGMM is a mixture, not a classifier.*"
                                         "plot_clusters_2d"):
        plot_decision_regions(gmm, X, y)


def test_given_labels_are_named_as_given_and_a_streamed_history_says_so():
    X = _two_blobs_2d()
    gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
    species = np.where(np.arange(len(X)) < 60, "setosa", "virginica")
    legend = [t.get_text() for t in plot_clusters_2d(gmm, X, labels=species).get_legend().texts]
    assert legend == ["setosa", "virginica", "means"]
    legend = [t.get_text() for t in plot_clusters_2d(gmm, X).get_legend().texts]
    assert legend == ["cluster 0", "cluster 1", "means"]
    online = BayesianGMM(2, random_state=0, device="cpu").partial_fit(X[::2])
    assert plot_loss_history(online).lines[-1].get_label().endswith(")")
    online.partial_fit(X[1::2])
    assert [l.get_label() for l in plot_loss_history(online).lines][-1].endswith(
        ", before partial_fit")


# ------------------------------------- from an audit of the helpers' inputs
@pytest.mark.parametrize("kind", ["kde", "hist", "reg"])
def test_pairs_takes_every_seaborn_kind(fit_4d, kind):
    # The scatter-only defaults (s, alpha) went to every kind: seaborn's
    # "unexpected keyword argument 's'" from deep inside.
    gmm, X = fit_4d
    grid = plot_pairs(gmm, X, kind=kind, vars=["petal_length", "petal_width"])
    panel = grid.axes[1, 0]
    drawn = panel.collections + panel.lines
    assert drawn and len(_ellipses(panel)) == gmm.n_components


def test_a_helper_that_fails_closes_the_figure_it_made(fit_4d, circles):
    X, y, _ = circles
    clf3 = QuadraticDiscriminantAnalysis().fit(np.c_[X, X[:, :1] ** 2], y)
    mine = plt.figure()                          # the user's own figure stays
    with pytest.raises(ValueError, match=r"X has 2 feature\(s\) but QuadraticDiscriminantAnalysis "
                                         r"was fitted on 3"):
        plot_decision_regions(clf3, X, y)
    gmm, X4 = fit_4d
    with pytest.raises((AttributeError, TypeError)):   # matplotlib's own, after the grid
        plot_pairs(gmm, X4, plot_kws={"no_such_keyword": 1})
    assert plt.get_fignums() == [mine.number]


def test_a_frame_drawn_against_a_classifier_fitted_on_an_array_does_not_warn(circles):
    X, y, clf = circles                          # fitted on an array
    frame = pd.DataFrame(X, columns=["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = plot_decision_regions(clf, frame, y, grid_size=20)
    assert ax.get_xlabel() == "a"


def test_text_columns_are_named_and_a_named_feature_needs_only_its_column(fit_4d, iris):
    gmm, X = fit_4d
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['species'\]: select "
                                         r"the numeric columns"):
        plot_pairs(gmm, iris)
    ax = plot_assignments(iris, gmm.predict(X), feature="petal_length", kind="strip")
    assert ax.get_ylabel() == "petal_length"


def test_hue_colours_follow_all_components_when_the_last_are_empty(fit_1d, iris):
    # plot_density_1d colours species after the K components; plot_assignments,
    # told K, colours them the same even when only cluster 0 has points
    # (before: after max(assignments) + 1, another colour per species).
    g1, X1 = fit_1d
    species = iris.species.to_numpy()
    rug = [c for c in plot_density_1d(g1, X1, labels=species).collections
           if isinstance(c, LineCollection)][0]
    order = list(pd.unique(species))
    first = {s: matplotlib.colors.to_hex(rug.get_colors()[list(species).index(s)])
             for s in order}
    ax = plot_assignments(X1, np.zeros(len(X1), dtype=int), hue=species, kind="strip",
                          n_components=g1.n_components)
    drawn = {t.get_text(): matplotlib.colors.to_hex(h.get_markerfacecolor()) for t, h in
             zip(ax.get_legend().texts, ax.get_legend().legend_handles)}
    assert drawn == first
    with pytest.raises(ValueError, match="n_components must be an int >= 1"):
        plot_assignments(X1, np.zeros(len(X1), dtype=int), n_components=0)


# A tensor has no names either: predict's (scikit-learn's) note, as for an array.
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_tensor_labels_and_data_are_drawn(fit_2d, circles):
    import torch
    gmm, X = fit_2d
    Xt = torch.as_tensor(X.to_numpy())
    ax = plot_clusters_2d(gmm, Xt)              # predict(tensor) gives a tensor of labels
    assert len({e.center for e in _ellipses(ax)}) == gmm.n_components
    z = gmm.predict(Xt)
    plot_assignments(Xt, z, hue=torch.as_tensor(z), kind="strip")
    Xc, y, clf = circles
    ax = plot_confusion_matrix(torch.as_tensor(np.arange(6) % 2), torch.as_tensor(np.ones(6, int)))
    assert [t.get_text() for t in ax.texts] == ["0", "3", "0", "3"]


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_cuda_tensors_are_drawn(fit_2d):
    import torch
    gmm, X = fit_2d
    Xg = torch.as_tensor(X.to_numpy(), device="cuda")
    ax = plot_clusters_2d(gmm, Xg)
    assert len({e.center for e in _ellipses(ax)}) == gmm.n_components
    plot_assignments(Xg, gmm.predict(Xg), kind="strip")
    plot_pairs(gmm, Xg)


def test_an_array_drawn_against_a_model_fitted_on_a_frame_takes_its_feature_names(fit_2d,
                                                                                 fit_4d):
    gmm, X = fit_2d                               # fitted on petal_length, petal_width
    A = X.to_numpy()
    ax = plot_clusters_2d(gmm, A)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("petal_length", "petal_width")
    ax = plot_density_1d(gmm, A, feature="petal_width")     # by name, as on the frame
    assert ax.get_xlabel() == "petal_width"
    # An array's positional names still work.
    assert plot_density_1d(gmm, A, feature="x1").get_xlabel() == "petal_width"
    # Numeric columns of one name are not "non-numeric".
    ax = plot_assignments(pd.DataFrame(A, columns=["a", "a"]), gmm.predict(X), feature=1,
                          kind="strip")
    assert ax.get_ylabel() == "a"
    g4, X4 = fit_4d
    grid = plot_pairs(g4, X4.to_numpy(), vars=["sepal_width", "petal_length"])
    assert grid.axes[1, 0].get_xlabel() == "sepal_width"
    # A model fitted on an array keeps x0, x1.
    plain = BayesianGMM(2, n_init=1, max_iter=0, random_state=0, device="cpu").fit(A)
    assert plot_clusters_2d(plain, A).get_xlabel() == "x0"


def test_decision_regions_margin_is_checked_and_sets_the_window(circles):
    # (From an independent audit.) A negative margin inverted the axis and
    # drew most points outside it; NaN or inf blamed NaN in "X" (the grid).
    X, y, clf = circles
    for bad in (-0.6, np.nan, np.inf, "0.1", True):
        with pytest.raises(ValueError, match=r"margin must be a finite number >= 0 .*got "
                                             + re.escape(repr(bad))):
            plot_decision_regions(clf, X, y, margin=bad, grid_size=20)
    ax = plot_decision_regions(clf, X, y, margin=0, grid_size=20)
    np.testing.assert_allclose(ax.get_xlim(), (X[:, 0].min(), X[:, 0].max()))
    ax = plot_decision_regions(clf, X, y, margin=0.5, grid_size=20)
    span = X[:, 1].max() - X[:, 1].min()
    np.testing.assert_allclose(ax.get_ylim(), (X[:, 1].min() - span / 2, X[:, 1].max() + span / 2))


def _drawn_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_labels_with_missing_entries_are_drawn_in_grey_as_no_label(fit_2d, fit_4d, iris):
    # (From an independent audit.) Text labels with NaN were a TypeError
    # from np.unique; float labels with NaN silently left those points out.
    gmm, X = fit_2d
    partial = iris.species.where(iris.index % 2 == 0)            # half unknown
    floats = np.where(np.arange(150) % 2, np.nan, gmm.predict(X).astype(float))
    for labels, known in ((partial, ["setosa", "versicolor", "virginica"]),
                          (floats, [str(v) for v in np.unique(floats[~np.isnan(floats)])])):
        ax = plot_clusters_2d(gmm, X, labels=labels)
        # Every point, plus the means' crosses.
        assert _drawn_points(ax) == 150 + gmm.n_components_
        texts = [t.get_text() for t in ax.get_legend().texts]
        assert texts == known + ["(no label)", "means"]
        grey = [c for c in ax.collections if isinstance(c, PathCollection)
                and c.get_label() == "(no label)"][0]
        assert len(grey.get_offsets()) == 75
        np.testing.assert_allclose(grey.get_facecolor()[0][:3], 0.6)
    g4, X4 = fit_4d
    grid = plot_pairs(g4, X4, labels=partial, vars=["petal_length", "petal_width"])
    assert [t.get_text() for t in grid.legend.texts] == \
        ["setosa", "versicolor", "virginica", "(no label)"]
    # 75 points of each kind in each off-diagonal panel.
    panel = grid.axes[1, 0]
    assert _drawn_points(panel) == 150


def test_confusion_matrix_of_mixed_label_types_is_refused_with_the_remedy(iris):
    with pytest.raises(ValueError, match=r"y_true and y_pred mix label types \(e.g. 'setosa' and "
                                         r"0\).*pd.crosstab\(y_true, y_pred\)"):
        plot_confusion_matrix(iris.species.to_numpy(), np.arange(150) % 2)
    # Plain lists and numpy string arrays too (numpy turns the numbers into
    # strings when the two are joined).
    for true, pred in ((["a", "b", "a"], [0, 1, 0]), (np.array(["a", "b", "a"]), np.array([0, 1, 0]))):
        with pytest.raises(ValueError, match=r"mix label types \(e.g. 'a' and 0\)"):
            plot_confusion_matrix(true, pred)


def test_features_and_vars_that_are_not_lists_of_columns_are_named(fit_2d, fit_4d):
    gmm, X = fit_2d
    for bad in (1, None, "petal_length", ("petal_length",)):
        with pytest.raises(ValueError, match=r"features must name exactly 2 columns .*got "
                                             + re.escape(repr(bad))):
            plot_clusters_2d(gmm, X, features=bad)
    g4, X4 = fit_4d
    for bad in ("petal_width", 2):
        with pytest.raises(ValueError, match=r"vars must be a list of columns .*got "
                                             + re.escape(repr(bad))):
            plot_pairs(g4, X4, vars=bad)
    for bad in ([], ["petal_width", "petal_width"], [3, "petal_width"]):
        with pytest.raises(ValueError, match=r"vars must name at least one column, each once"):
            plot_pairs(g4, X4, vars=bad)


def test_positional_names_apply_to_arrays_only(fit_2d):
    # (From an independent audit.) On a DataFrame, "x1" (a typo, or a
    # name that is not a column) drew column 1; x0, x1, ... name an
    # array's columns.
    gmm, X = fit_2d
    with pytest.raises(ValueError, match=r"feature='x1' is not a column of X; columns are "
                                         r"\['petal_length', 'petal_width'\]"):
        plot_density_1d(gmm, X, feature="x1")
    with pytest.raises(ValueError, match=r"feature='x0' is not a column"):
        plot_clusters_2d(gmm, X, features=("x0", "petal_width"))
    with pytest.raises(ValueError, match=r"feature='x01' is not a column"):
        plot_assignments(X, gmm.predict(X), feature="x01")
    # A misspelt name beside a text column: said as such (it was "non-numeric
    # column(s) ['species']", which the one column drawn does not need).
    with pytest.raises(ValueError, match=r"^feature='petal_len' is not a column of X; columns "
                                         r"are \['petal_length', 'petal_width', 'species'\]$"):
        plot_assignments(X.assign(species="setosa"), gmm.predict(X), feature="petal_len")
    ax = plot_assignments(X.to_numpy(), gmm.predict(X), feature="x1", kind="strip")
    assert ax.get_xlabel() == "x1" or ax.get_ylabel() == "x1"
    # An unnamed Series and a frame of default (0, 1, ...) columns have no
    # names of their own: positional names still serve.
    g1 = BayesianGMM(2, n_init=1, max_iter=0, random_state=0, device="cpu").fit(
        X["petal_length"].to_numpy())
    ax = plot_density_1d(g1, pd.Series(X["petal_length"].to_numpy()), feature="x0")
    assert ax.get_xlabel() in ("x0", "0")
    g2 = BayesianGMM(3, n_init=1, max_iter=0, random_state=0, device="cpu").fit(X.to_numpy())
    ax = plot_clusters_2d(g2, pd.DataFrame(X.to_numpy()), features=("x0", "x1"))
    assert len(_ellipses(ax)) > 0
    # A frame's non-string column named by its string ("1" for column 1).
    ax = plot_assignments(pd.DataFrame(X.to_numpy()), gmm.predict(X), feature="1", kind="strip")
    assert "1" in (ax.get_xlabel(), ax.get_ylabel())
    np.testing.assert_array_equal(np.sort(np.concatenate([c.get_offsets()[:, 1]
                                                         for c in ax.collections])),
                                  np.sort(X.to_numpy()[:, 1]))


# ------------------------------------- from an audit of missing labels and options
def test_rug_and_hue_draw_missing_labels_in_grey_as_no_label(fit_1d, iris):
    # seaborn left the rows of NaN or None labels out (128 of 150 drawn),
    # and plot_assignments listed "nan" in a colour no point had.
    g1, X1 = fit_1d
    lab = iris.species.where(iris.index % 7 != 0)               # 22 unknown
    rug = [c for c in plot_density_1d(g1, X1, labels=lab).collections
           if isinstance(c, LineCollection)][0]
    assert len(rug.get_segments()) == 150
    grey = np.all(np.isclose(rug.get_colors()[:, :3], 0.6), axis=1)
    assert grey.sum() == 22
    for hue in (lab, np.where(iris.index % 7 != 0, iris.species, None)):
        ax = plot_assignments(X1, g1.predict(X1), hue=hue, kind="strip")
        assert _drawn_points(ax) == 150
        legend = ax.get_legend()
        assert _legend_texts(ax) == ["setosa", "versicolor", "virginica", "(no label)"]
        np.testing.assert_allclose(legend.legend_handles[-1].get_markerfacecolor()[:3], 0.6)


def test_prediction_grids_take_the_models_feature_names(fit_2d, fit_4d, iris):
    # The grid (and predict(X)) was a DataFrame only when X was one, so a
    # model fitted on a DataFrame warned "X does not have valid feature
    # names" about the helper's own call.
    import torch
    gmm, X = fit_2d
    A = X.to_numpy()
    clf = QuadraticDiscriminantAnalysis().fit(X, iris.species)
    sk = GaussianMixture(3, random_state=0).fit(X)
    g4, X4 = fit_4d
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (A, A.tolist(), torch.as_tensor(A)):
            ax = plot_decision_regions(clf, data, iris.species.to_numpy(), grid_size=20)
            assert ax.get_xlabel() == "petal_length"
            for model in (gmm, sk):
                plot_clusters_2d(model, data, contours=True, grid_size=20)
        plot_pairs(g4, X4.to_numpy(), vars=["petal_length", "petal_width"])


@pytest.mark.parametrize("option", ["restarts", "logy", "rug", "contours", "plug_in",
                                    "ellipses", "ellipses_pairs"])
def test_true_false_options_take_only_true_or_false(fit_1d, fit_2d, fit_4d, circles, option):
    # "no" is true to `if`: it drew what it asked not to (plug_in alone
    # was checked).
    g1, X1 = fit_1d
    g2, X2 = fit_2d
    g4, X4 = fit_4d
    Xc, yc, clf = circles
    call = {"restarts": lambda v: plot_loss_history(g1, restarts=v),
            "logy": lambda v: plot_loss_history(g1, logy=v),
            "rug": lambda v: plot_density_1d(g1, X1, rug=v),
            "contours": lambda v: plot_clusters_2d(g2, X2, contours=v, grid_size=20),
            "plug_in": lambda v: plot_clusters_2d(g2, X2, plug_in=v),
            "ellipses": lambda v: plot_decision_regions(clf, Xc, yc, ellipses=v, grid_size=20),
            "ellipses_pairs": lambda v: plot_pairs(g4, X4, ellipses=v, vars=[2, 3])}[option]
    name = option.split("_pairs")[0]
    for bad in ("no", "yes", 1, None):
        with pytest.raises(ValueError, match=f"{name} must be True or False, got "
                                             + re.escape(repr(bad))):
            call(bad)
    call(False)
    if option != "ellipses":                    # (QDA has no components to draw)
        call(np.bool_(True))


def test_sizes_data_and_labels_are_named_with_the_value_received(fit_1d, fit_2d, fit_4d, circles):
    # These ended deep inside: LinAlgError from tight_layout, a TypeError in
    # seaborn, sqrt's RuntimeWarnings, numpy's "could not convert string to
    # float" and "inhomogeneous shape", scikit-learn's "multilabel-indicator".
    g1, X1 = fit_1d
    g2, X2 = fit_2d
    g4, X4 = fit_4d
    Xc, yc, clf = circles
    with pytest.raises(ValueError, match="height must be a positive number, got 0"):
        plot_pairs(g4, X4, height=0)
    with pytest.raises(ValueError, match="size must be a positive number, got 'big'"):
        plot_assignments(X1, g1.predict(X1), size="big")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bad in (-5, np.nan, "5"):
            with pytest.raises(ValueError, match="s must be a positive number, got "
                                                 + re.escape(repr(bad))):
                plot_clusters_2d(g2, X2, s=bad)
            with pytest.raises(ValueError, match="s must be a positive number"):
                plot_decision_regions(clf, Xc, yc, s=bad, grid_size=20)
    for bad in (-0.1, 1.5, "0.3"):
        with pytest.raises(ValueError, match="alpha must be a number from 0 to 1 .*got "
                                             + re.escape(repr(bad))):
            plot_decision_regions(clf, Xc, yc, alpha=bad, grid_size=20)
    text = np.c_[X2.to_numpy()[:, :1], np.full(150, "a")]          # a text column
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['petal_width'\] "
                                         r"\(an array of dtype <U"):
        plot_clusters_2d(g2, text)
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['x0'\]"):
        plot_assignments(np.array(["a", "b"]), [0, 1])
    # Numbers as text are numbers, as fit takes them.
    ax = plot_clusters_2d(g2, X2.to_numpy().astype(str))
    assert _drawn_points(ax) == 150 + g2.n_components_
    with pytest.raises(ValueError, match=r"X must have the same number of values in every row .*"
                                         r"got rows of different lengths: \[\[1.0, 2.0\], \[3.0\]\]"):
        plot_clusters_2d(g2, [[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match=r"y_true must be 1-D \(one label per sample\), got an "
                                         r"array of shape \(3, 2\)"):
        plot_confusion_matrix(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"y_pred must be 1-D .*shape \(3, 1\)"):
        plot_confusion_matrix(np.zeros(3), np.zeros((3, 1)))


def test_the_components_drawn_are_the_fits_whatever_rows_are_plotted():
    """(From an audit.) Which components were drawn depended on the rows
    plotted (weight x rows >= 1/2): a component of weight 0.04 vanished on
    10 held-out rows, and a Dirichlet-process fit's switched-off components
    came back on 5,000 rows drawn from it; the classifier's ellipses drew a
    component of weight 1.6e-5.  They follow the fit's data now: the same
    components on the training rows, a few rows or many, those that
    carried at least half a row of the fit."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (480, 2)), rng.normal(6, 1, (480, 2)),
                   rng.normal([3, 12], 0.5, (40, 2))])
    gmm = BayesianGMM(3, random_state=0, device="cpu").fit(X)
    assert gmm.weights_.min() == pytest.approx(0.04, abs=0.01)

    def drawn(Xp):
        ax = plot_density_1d(gmm, Xp, feature=1)
        curves = [ln.get_label() for ln in ax.lines if ln.get_label().startswith("component")]
        ax2 = plot_clusters_2d(gmm, Xp)
        return len(curves), sum(isinstance(p, Ellipse) for p in ax2.patches)
    assert drawn(X) == drawn(X[::100]) == (3, 6)       # 2 sigma levels per component
    Z = np.r_[rng.normal(0, 1, 100), rng.normal(5, 0.7, 60)][:, None]
    dp = BayesianGMM(6, inference="vi", weight_prior="dirichlet_process", random_state=0,
                     device="cpu").fit(Z)
    live = int(np.sum(dp.weights_ * Z.shape[0] >= 0.5))
    for Zp in (Z, dp.sample(5000, random_state=1)[0]):
        ax = plot_density_1d(dp, Zp)
        assert sum(ln.get_label().startswith("component") for ln in ax.lines) == live == 2
    iris = load_iris()
    Xi, yi = iris[["petal_length", "petal_width"]], iris["species"]
    clf = GMMClassifier(n_components={"setosa": 1, "versicolor": 3, "virginica": 2},
                        random_state=0, device="cpu").fit(Xi, yi)
    carried = int(np.sum(clf.weights_ * clf.class_count_[:, None] >= 0.5))
    assert carried < 6                          # a component of weight ~1e-5 among them
    ax = plot_decision_regions(clf, Xi, yi, ellipses=True)
    assert sum(isinstance(p, Ellipse) for p in ax.patches) == carried


def test_plot_pairs_refuses_ax_and_hue_naming_what_to_do():
    """(From an audit.) plot_pairs makes its own figure: ax= fell through
    to seaborn's "unexpected keyword argument", and hue= silently replaced
    the cluster colours.  Both are refused before any figure is made."""
    X = load_iris().iloc[:, :3]
    gmm = BayesianGMM(2, random_state=0, device="cpu").fit(X)
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=r"plot_pairs takes no ax=: it draws a figure of its "
                                         r"own: use grid\.figure"):
        plot_pairs(gmm, X, ax=plt.gca())
    with pytest.raises(ValueError, match=r"plot_pairs takes no hue=: .* pass labels="):
        plot_pairs(gmm, X, hue="sepal_length")
    assert len(plt.get_fignums()) <= len(before) + 1      # plt.gca() above made one at most


def test_components_drawn_count_rows_not_weight_and_follow_partial_fit():
    """(From a second review.)  The components drawn were judged by the
    fit's weight: weights summing to 1 hid every one.  They are judged by
    rows (of the fit and of later partial_fit calls): a fit on 20 rows
    streamed on with 5,000 draws the component the stream found."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (400, 2)), rng.normal(6, 1, (400, 2)),
                   rng.normal([3, 12], 0.5, (200, 2))])
    kw = dict(random_state=0, device="cpu")
    gw = BayesianGMM(3, **kw).fit(X, sample_weight=np.full(len(X), 1 / len(X)))
    assert gw.weights_.min() > 0.1
    ax = plot_density_1d(gw, X)
    assert sum(ln.get_label().startswith("component") for ln in ax.lines) == 3
    y = (X[:, 1] > 9).astype(int)
    cw = GMMClassifier(1, **kw).fit(X, y, sample_weight=np.full(len(X), 1 / len(X)))
    assert len(_ellipses(plot_decision_regions(cw, X, y, grid_size=20, ellipses=True))) == 2
    small = BayesianGMM(3, **kw).fit(X[rng.permutation(len(X))[:20]])
    for _ in range(5):
        small.partial_fit(X[rng.permutation(len(X))[:1000]])
    carried = int(np.sum(small.weights_ * small._rows_seen >= 0.5))
    assert small._rows_seen == 5020 and carried == 3
    ax = plot_clusters_2d(small, X[:10])
    assert len(_ellipses(ax)) == 2 * carried                  # two sigma levels each
    # A model saved before the rows were recorded (no _rows_seen): its fit's
    # weight, as that release drew, not the 10 rows plotted (a third review).
    old = BayesianGMM(3, **kw).fit(np.vstack([X[:800], X[-40:]]))
    assert old.weights_.min() < 0.05
    del old._rows_seen
    assert len(_ellipses(plot_clusters_2d(old, X[:10]))) == 6


def test_legends_place_themselves_without_matplotlib_timing_warning(iris, fit_1d, fit_2d):
    """(Seen in a notebook rebuilt on a loaded machine.)  A legend left at
    matplotlib's default location warns "Creating legend with loc='best'
    can be slow with large amounts of data" when placing it takes over a
    second: on a busy machine the decision regions of 2,000 points did.
    The helpers ask for loc="best" by name: the same placement, which
    matplotlib does not warn about (its ``_loc_used_default``)."""
    X2 = iris[["petal_length", "petal_width"]].to_numpy()
    y = pd.factorize(iris["species"])[0]
    clf = GMMClassifier(1, n_init=1, random_state=0, device="cpu").fit(X2, y)
    (g1, X1), (g2, Xp) = fit_1d, fit_2d
    axes = [plot_loss_history(g1), plot_density_1d(g1, X1), plot_clusters_2d(g2, Xp),
            plot_decision_regions(clf, X2, y, grid_size=20)]
    for ax in axes:
        legend = ax.get_legend()
        assert legend is not None and legend._loc == 0 and not legend._loc_used_default
