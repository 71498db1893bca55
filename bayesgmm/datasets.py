"""Shipped data and synthetic generators that also return their truth."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from importlib import resources
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from . import _validation as V

__all__ = ["load_iris", "make_mixture", "MixtureTruth", "make_five_class", "ClassMixtures",
           "make_circles"]


def load_iris() -> pd.DataFrame:
    """Fisher's iris data (150 rows), shipped with the package, loaded offline.

    Returns
    -------
    DataFrame with float columns ``sepal_length``, ``sepal_width``,
    ``petal_length``, ``petal_width`` (cm) and a string column ``species``
    (setosa, versicolor, virginica).

    Examples
    --------
    >>> load_iris().shape
    (150, 5)
    """
    with resources.files("bayesgmm").joinpath("data/iris.csv").open("r") as fh:
        return pd.read_csv(fh)


@dataclass(frozen=True)
class MixtureTruth:
    """True parameters of a diagonal Gaussian mixture: weights (K,),
    means (K, D), scales (K, D)."""

    weights: np.ndarray
    means: np.ndarray
    scales: np.ndarray

    def log_density(self, X: np.ndarray) -> np.ndarray:
        """log p(x) under this mixture, shape (N,)."""
        return logsumexp(self.log_joint(X), axis=1)

    def log_joint(self, X: np.ndarray) -> np.ndarray:
        """log w_k + log N(x | mu_k, s_k), shape (N, K)."""
        X = np.asarray(X, dtype=np.float64)
        D = self.means.shape[1]
        if X.ndim != 2 or X.shape[1] != D:
            raise ValueError(f"X must have shape (n_samples, {D}) (one row per point), got "
                             f"shape {X.shape}" + (f": use X.reshape(1, -1) for one point"
                                                   if X.ndim == 1 and X.size == D else ""))
        z = (X[:, None, :] - self.means[None]) / self.scales[None]
        with np.errstate(divide="ignore"):      # a component of weight 0: log 0 = -inf
            log_w = np.log(self.weights)
        return (log_w[None] - np.log(self.scales).sum(-1)[None]
                - 0.5 * X.shape[1] * np.log(2 * np.pi) - 0.5 * (z ** 2).sum(-1))

    def sample(self, counts: Sequence[int], random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Exactly ``counts[k]`` points from component k (vectorised): one
        non-negative integer per component."""
        rng = V.check_random_state(random_state)
        K = self.weights.size
        c = np.asarray(counts)
        if c.shape != (K,) or c.dtype.kind not in "iu" or np.any(c < 0):
            raise ValueError(f"counts must be {K} non-negative integers (points per component), "
                             f"got {counts!r}")
        labels = np.repeat(np.arange(len(counts)), counts)
        X = self.means[labels] + self.scales[labels] * rng.standard_normal(
            (labels.size, self.means.shape[1]))
        return X, labels


def make_mixture(n_samples: int = 1000, n_components: int = 3, n_features: int = 2, *,
                 separation: float = 6.0, min_weight: Optional[float] = None, random_state=None
                 ) -> tuple[np.ndarray, np.ndarray, MixtureTruth]:
    """A diagonal Gaussian mixture with well-separated components and its truth.

    Weights are drawn from a Dirichlet and floored at ``min_weight`` (>= 0,
    at most 1 / n_components; default min(0.1, 1 / n_components), so that
    more than ten components take equal weights); means are placed at least
    ``separation`` (>= 0, in units of the largest scale) apart;
    per-feature scales are uniform in [0.5, 2].  Component k receives exactly
    round(weight_k * n_samples) points (the remainder goes to the heaviest;
    where that would take more points than it has, as for n_samples near
    n_components, the points go by the largest remainders of
    weight_k * n_samples instead).  The truth's weights are those counts
    over n_samples.

    Returns
    -------
    X : (n_samples, n_features), labels : (n_samples,), truth : MixtureTruth
    """
    rng = V.check_random_state(random_state)
    n_samples = V.check_int("n_samples", n_samples, 1)
    n_components = V.check_int("n_components", n_components, 1)
    n_features = V.check_int("n_features", n_features, 1)
    # X, and the truth's means and scales, in float64 (n_features=10**9
    # was killed by the OS; 10**30 points overflowed inside numpy).
    V.check_result_size(f"make_mixture(n_samples={n_samples}, n_components={n_components}, "
                        f"n_features={n_features})",
                        8 * (n_samples + 3 * n_components) * n_features + 8 * n_samples,
                        "ask for fewer points, components or features")
    separation = V.check_float("separation", separation, strict=False)
    min_weight = (min(0.1, 1.0 / n_components) if min_weight is None else
                  V.check_float("min_weight", min_weight, strict=False))
    if n_components * min_weight > 1:
        raise ValueError(f"min_weight={min_weight} is too large for n_components={n_components}: "
                         f"use min_weight <= {1 / n_components:.3f}")
    w = rng.dirichlet(np.full(n_components, 5.0))
    w = min_weight + (1 - n_components * min_weight) * w
    scales = rng.uniform(0.5, 2.0, size=(n_components, n_features))
    spacing = separation * scales.max()
    means = np.empty((n_components, n_features))
    box = spacing * n_components
    for k in range(n_components):  # rejection sampling over K points, not over data
        for _ in range(10_000):
            cand = rng.uniform(-box, box, size=n_features)
            if k == 0 or np.min(np.linalg.norm(means[:k] - cand, axis=1)) >= spacing:
                break
        means[k] = cand
    counts = np.round(w * n_samples).astype(int)
    counts[np.argmax(w)] += n_samples - counts.sum()     # the largest component's
    if counts.min() < 0:            # few points: largest remainders, never below 0
        counts = np.floor(w * n_samples).astype(int)
        extra = np.argsort(-(w * n_samples - counts), kind="stable")[:n_samples - counts.sum()]
        counts[extra] += 1
    truth = MixtureTruth(weights=counts / n_samples, means=means, scales=scales)
    X, labels = truth.sample(counts, rng)
    perm = rng.permutation(n_samples)
    return X[perm], labels[perm], truth


@dataclass(frozen=True)
class ClassMixtures:
    """True per-class mixtures of a generated classification problem."""

    mixtures: tuple  # of MixtureTruth, one per class
    counts: tuple    # per class, the number of points per component

    @property
    def n_classes(self) -> int:
        return len(self.mixtures)

    @property
    def n_components(self) -> list[int]:
        return [m.weights.size for m in self.mixtures]

    def sample(self, n_per_class: int = 2000, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Fresh data from the same process: ``n_per_class`` points per class,
        split as evenly as possible over the class's clusters (those of
        positive weight: a cluster that drew no training point has weight 0
        in the truth, and none here)."""
        rng = V.check_random_state(random_state)
        n_per_class = V.check_int("n_per_class", n_per_class, 1)
        Xs, ys = [], []
        for c, m in enumerate(self.mixtures):
            live = m.weights > 0
            counts = np.zeros(m.weights.size, dtype=int)
            counts[live] = _even_split(n_per_class, int(live.sum()))
            X, _ = m.sample(counts, rng)
            Xs.append(X)
            ys.append(np.full(n_per_class, c))
        return np.concatenate(Xs), np.concatenate(ys)

    def log_densities(self, X: np.ndarray) -> np.ndarray:
        """True log p(x | class c), shape (N, n_classes)."""
        return np.stack([m.log_density(X) for m in self.mixtures], axis=1)

    def bayes_predict(self, X: np.ndarray) -> np.ndarray:
        """The Bayes-optimal prediction (equal class priors): argmax of the
        true class log densities."""
        return np.argmax(self.log_densities(X), axis=1)


def _even_split(n: int, k: int) -> np.ndarray:
    counts = np.full(k, n // k)
    counts[: n - counts.sum()] += 1
    return counts


def make_five_class(random_state=None, n_per_class: int = 2000, n_classes: int = 5,
                    min_clusters: int = 2, max_clusters: int = 10
                    ) -> tuple[np.ndarray, np.ndarray, ClassMixtures]:
    """The generator of the original PyTorch GMM-classifier study.

    Class c is a mixture of n_c ~ uniform{2..10} 2-D Gaussian clusters with
    means ~ N(0, I) and per-feature scales ~ U(0.05, 0.40); each class has
    ``n_per_class`` points split evenly over its clusters (so the true
    weights are equal, up to rounding).

    Returns
    -------
    X : (n_classes * n_per_class, 2), y : (n_classes * n_per_class,)
    truth : ClassMixtures
        The true mixtures, each cluster weighted by its share of the
        class's training points (equal up to rounding; 0 for a cluster
        that drew none, when ``n_per_class`` is below the number of
        clusters); ``truth.sample`` draws fresh test data from the clusters
        of positive weight and ``truth.bayes_predict`` is the Bayes-optimal
        classifier.

    Examples
    --------
    >>> X, y, truth = make_five_class(random_state=0)
    >>> X.shape, truth.n_classes
    ((10000, 2), 5)
    """
    rng = V.check_random_state(random_state)
    n_per_class = V.check_int("n_per_class", n_per_class, 1)
    if isinstance(n_classes, numbers.Integral) and not isinstance(n_classes, (bool, np.bool_)) \
            and n_classes < 2:
        raise ValueError(f"n_classes must be at least 2 (a classification study), got "
                         f"{n_classes}: for one mixture, use make_mixture")
    n_classes = V.check_int("n_classes", n_classes, 2)
    min_clusters = V.check_int("min_clusters", min_clusters, 1)
    max_clusters = V.check_int("max_clusters", max_clusters, 1)
    if max_clusters < min_clusters:
        raise ValueError(f"max_clusters={max_clusters} is below min_clusters={min_clusters}: "
                         f"give max_clusters >= min_clusters")
    # X (2 columns) and y, and every class's clusters (means, scales, counts).
    V.check_result_size(f"make_five_class(n_per_class={n_per_class}, n_classes={n_classes}, "
                        f"max_clusters={max_clusters})",
                        8 * n_classes * (3 * n_per_class + 5 * max_clusters),
                        "ask for fewer points, classes or clusters")
    mixtures, counts_all = [], []
    for _ in range(n_classes):
        k = int(rng.randint(min_clusters, max_clusters + 1))
        means = rng.standard_normal((k, 2))
        scales = rng.uniform(0.05, 0.40, size=(k, 2))
        counts = _even_split(n_per_class, k)
        mixtures.append(MixtureTruth(weights=counts / n_per_class, means=means, scales=scales))
        counts_all.append(tuple(int(c) for c in counts))
    truth = ClassMixtures(mixtures=tuple(mixtures), counts=tuple(counts_all))
    Xs, ys = [], []
    for c, m in enumerate(mixtures):
        X, _ = m.sample(counts_all[c], rng)
        Xs.append(X)
        ys.append(np.full(n_per_class, c))
    return np.concatenate(Xs), np.concatenate(ys), truth


def make_circles(n_samples: int = 1000, *, noise: Optional[float] = 0.01, factor: float = 0.8,
                 random_state=42) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's two concentric rings (the defaults of the original MLP study)."""
    from sklearn.datasets import make_circles as _mc
    if isinstance(n_samples, (tuple, list)) and len(n_samples) == 2:   # (outer, inner)
        total = sum(V.check_int("n_samples", n, 0) for n in n_samples)
        if total < 1:
            raise ValueError(f"n_samples must hold at least one point, got {n_samples!r}")
    else:
        n_samples = total = V.check_int("n_samples", n_samples, 1)
    # X (2 columns), y and scikit-learn's working copies, in float64.
    V.check_result_size(f"make_circles(n_samples={n_samples!r})", 8 * 6 * total,
                        "ask for fewer points")
    if noise is not None:       # (10**400 passed scikit-learn's check, then overflowed)
        noise = V.check_float("noise", noise, minimum=0.0, strict=False)
    return _mc(n_samples=n_samples, noise=noise, factor=factor, random_state=random_state)
