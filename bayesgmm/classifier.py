"""The :class:`GMMClassifier` estimator: one Bayesian Gaussian mixture per class."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import replace
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import _predict, _validation as V
from . import covariance as cov_module
from ._auto import (bic_columns, bic_values, check_max_components, component_cap,
                    fit_candidates, is_auto, log_likelihood)
from ._base import (INIT_OPTIONS, DeviceLike, MixtureBase, FitProgress, fit_data,
                    check_chunk_weights, sample_mixture,
                    guard_stage, is_row_source, seeded_priors, sparse_concentration,
                    warn_float32_conditioning,
                    stream_data, check_same_columns, warm_priors,
                    effective_components, positive_rows, warn_not_converged, warn_unused_components,
                    rollback_on_error, stream_update, seeded_stream, PARTIAL_FIT_DECAY,
                    PARTIAL_FIT_OFFSET,
                    feature_label, feature_list, refuse_nuts_constant, warn_constant_features,
                    warn_discrete_features, warn_dependent_features, chunk_data, checked_call,
                    warn_far_mean_prior, warn_vi_missing, check_threads, fit_threads,
                    check_draws_size)
from ._options import is_text
from .covariance import CovarianceType
from .fitting import (Groups, discriminative_fit, em_fit, masked, mixture_log_likelihood,
                      negative_log_joint, seed_centres, seed_rows, svi_fit)
from .distributed import (agree, check_group, reduce_array, reducer, seed_sample, shared_settings,
                          shared_seeds)
from .persistence import register
from .priors import MixtureParams, Priors, Standardizer, resolve_priors
from . import posterior as post_module
from .variational import cavi, warn_unconverged

ComponentsLike = Union[int, Literal["auto"], Sequence[int], Mapping[Any, int]]

_CLASS_PRIOR_OPTIONS = ("empirical", "uniform")


@register
class GMMClassifier(MixtureBase, ClassifierMixin, BaseEstimator):
    """Generative classifier with one Bayesian Gaussian mixture per class.

    Every class c is a :class:`~bayesgmm.BayesianGMM` mixture with full,
    tied, diagonal or spherical covariances (Dirichlet prior on the weights,
    Normal on the means, the family's prior on the covariances), fitted by
    MAP on the class's own points, by the same inference core.
    Prediction is ``argmax_c log p(x | c) + log p(c)``.

    All classes are fitted **together** as one batched computation: every
    class is padded to the largest number of components with a component
    mask, each point is scored only against its own class's parameters
    (points laid out per class, zero-padded), and per-class sufficient
    statistics come from batched products over that layout.
    Restarts (and, for ``n_components="auto"``, every candidate K) are a
    further batch dimension, so one closed-form MAP-EM loop fits everything
    at once on CPU or GPU.  An optional SVI stage (``max_iter > 0``) then
    continues with the same SVI loop as :class:`~bayesgmm.BayesianGMM`
    (AutoDelta's parameters, the enumerated loss, which equals
    ``TraceEnum_ELBO``'s on the class-plate Pyro model
    :func:`bayesgmm.models.class_gmm_model`, the sum of the per-class
    :func:`~bayesgmm.models.gmm_model` losses); per class, the better of the
    EM and SVI solutions is kept, and a diverged SVI warns and keeps EM's.

    Priors: fields left ``None`` are resolved from the **pooled** training
    data (all classes together), so every class's mixture has the same prior
    in the same units.  Class-wise resolution would let a class with few
    points set its own (noisy) scale prior and make the class log densities
    compared at prediction time rest on different priors.

    Parameters
    ----------
    n_components : int, list of int, dict or "auto", default "auto"
        Components per class: one int for every class, a list in the order
        of ``classes_``, a dict ``{label: k}`` or a pandas Series indexed by
        label (labels absent from ``y`` are ignored, so one dict serves every
        cross-validation fold; but not scikit-learn's ``cross_val_predict``
        with ``method="predict_proba"``, ``"predict_log_proba"`` or
        ``"decision_function"``, which re-encodes the labels as 0..C-1
        before each fit: give a list there), or "auto".
        With "auto" each class's K is chosen from 1..``max_components`` by
        BIC, -2 log L_c + p log n_c with p = (K - 1) + K D + the covariance
        family's count: for a MAP fit
        under weak priors BIC is the Laplace approximation of the class's log
        marginal likelihood and is consistent for the mixture order; unlike
        held-out likelihood it uses every point for fitting (a class may be
        small) and needs no extra split; a sparsity-inducing Dirichlet (< 1)
        has no MAP estimate, so it is not an option for this model.  All
        candidate K of all classes are fitted in one batch.  The BIC table is
        stored in ``bic_``.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
        The covariance family of every class's mixture ("tied": one matrix
        shared by the components of a class), as in scikit-learn.
    priors : Priors, optional
        Hyperparameters in the data's units, shared by all classes; ``None``
        fields are resolved from the pooled data (see above).  A non-scalar
        ``weight_concentration`` needs the same K for every class.
    class_prior : "empirical", "uniform", array of shape (n_classes,) or dict, \
default "empirical"
        p(class): the training frequencies, equal, or given values (positive;
        normalised to sum to 1), in the order of ``classes_``, or keyed by
        label (a dict or a pandas Series ``{label: p}``, read by label).
    init : {"kmeans++", "kmeans", "random"}, default "kmeans++"
        Initial means per class and restart: scikit-learn's k-means++ seeding
        or Lloyd's k-means on the class's points, or distinct random points.
    n_init : int, default 4
        Restarts per class (a batch dimension); per class the restart with
        the lowest final loss is kept.  With more than two restarts (a fixed
        K, EM on, ``tol`` below 1e-3), every restart runs EM to a loose
        tolerance (1e-3 nats per point), and only the two best per class
        continue to ``tol`` (the screen halves the five-class study's fit
        time; ``em_max_iter`` bounds each restart's iterations over both
        stages).
    max_iter : int, default 1000
        Maximum SVI steps after EM (the stage stops early once the loss
        improves by less than ``tol`` per sample per step); 0 skips SVI.
        SVI runs after EM only when EM stopped before converging
        (``em_max_iter`` reached): from a converged EM optimum it has nothing
        left to gain on the same objective.
    em_max_iter : int, default 500
        Maximum closed-form MAP-EM iterations (all classes, restarts and
        candidate K at once); 0 starts SVI from the initialisation (not with
        "auto", which ranks every candidate K by its EM fit).
    tol : float, default 1e-6
        Convergence threshold, nats per sample per iteration, for every
        (restart, class) pair separately.  Tighter than BayesianGMM's 1e-5:
        EM creeps along flat ridges between overlapping clusters, and on the
        five-class study the last stretch still moves decision boundaries
        with diagonal covariances (seeds 0-9, mean gap to Bayes-optimal
        0.107 points at 1e-5, 0.090 at 1e-6; with full covariances the two
        are level, 0.165).
    learning_rate : float, default 0.01
        Adam step size (standardised units) for SVI and fine-tuning.
    max_components : int, default 10
        Largest K tried by ``n_components="auto"``; for each class only the
        K whose mixture has fewer free parameters than the class has points
        (its total weight, with ``sample_weight``), and no more components
        than rows, are tried (at least K = 1).
    discriminative_steps : int, default 0
        Adam steps of discriminative fine-tuning after the generative MAP:
        the mixtures are trained on the cross-entropy of the class logits
        log p(x | c) + log p(c), as in the original PyTorch study (full batch
        while the working set fits in memory, random minibatches otherwise).
        The fitted parameters are then no longer the MAP.
    device : {"auto", "cpu", "cuda"} or torch.device, default "auto"
        Where to fit and predict; "auto" takes CUDA when available.  Apple's
        "mps" is refused with the reason: the fits compare losses in float64,
        which MPS lacks.
    random_state : int, RandomState or None
        Seed for the initialisation (drawn on the CPU, so CPU and GPU fits
        start from the same point) and minibatches.
    progress : bool, default False
        Show a progress bar.
    n_threads : int or None, default None
        torch's CPU threads during ``fit`` (None: torch's setting).  On a
        busy machine small fits (below ~1e5 rows x features) run several
        times faster with ``n_threads=1``; from ~1e5 rows a second thread
        gains 20-30% on an idle one.  The calling thread's previous setting
        is restored afterwards (threads that first use torch during the fit
        may inherit it: torch keeps the count per thread).
    missing : {"error", "marginalize"}, default "error"
        NaN entries of X: refused, or missing values marginalised in the
        fit (conditional expectations in EM, observed coordinates in the
        Pyro model) and in every prediction, as in :class:`BayesianGMM`.
    dtype : {"float32", "float64"}, default "float32"
        Floating-point type of the fit and of the predictions' arithmetic
        (their results come back in float64, as arrays or as tensors for
        tensor input); float64 for near-singular class covariances, e.g. more
        features than points.
    inference : {"map", "vi", "nuts"}, default "map"
        "map": every class's MAP mixture (the fit above).  "vi": then each
        class's mean-field variational posterior from its MAP, all classes
        at once (:func:`bayesgmm.variational.cavi`, as
        :class:`BayesianGMM` with ``inference="vi"``: at most ``max_iter``
        iterations, ``tol`` nats of ELBO per point of the class), and
        ``n_samples`` draws of it kept.  "nuts": each class's posterior
        sampled by Pyro's NUTS from its MAP, one class after another, as
        :class:`BayesianGMM` with ``inference="nuts"`` samples one mixture
        (``n_chains`` chains of ``n_warmup`` warmup iterations, the draws'
        components matched to the class's MAP; R-hat and effective sample
        sizes in ``rhat_`` and ``ess_``, one warning naming the classes
        whose chains look unconverged; a minute or more per class on a
        CPU, so meant for small classes).  With either, :meth:`predict_proba`,
        :meth:`predict`, :meth:`predict_log_proba`,
        :meth:`decision_function`, :meth:`class_log_likelihood`,
        :meth:`score_samples` and :meth:`sample` answer with the posterior
        predictive p(x | c, X_c) (each class's density
        averaged over its draws; ``plug_in=True`` for the MAP's answer).
        Not with ``discriminative_steps`` (no longer a posterior),
        ``process_group`` or out-of-core data.
    n_samples : int or "auto", default "auto"
        Posterior draws per class kept with ``inference="vi"`` or "nuts"
        (for NUTS, ``ceil(n_samples / n_chains)`` per chain): a
        prediction scores every class's S x K components, so its cost grows
        with S.  "auto": 200 for "vi", whose draws are independent (they
        hold the predictive's Monte Carlo error to a few thousandths of a
        nat per point on the five-class study), and 1000 for "nuts", as
        :class:`BayesianGMM`'s default: R-hat and the effective sample size
        need about 100 effective draws per chain to be trusted (ArviZ's
        rule, which the convergence warning applies), more than 200
        correlated draws over 4 chains hold.
    n_chains : int, default 4
        NUTS chains per class (``inference="nuts"``).
    n_warmup : int, default 300
        NUTS warmup iterations per chain, discarded (``inference="nuts"``).
    warm_start : bool, default False
        As in scikit-learn (and :class:`BayesianGMM`): when the classifier
        is already fitted, ``fit`` starts every class's mixture from its
        fitted parameters instead of new seeds (``n_init`` and ``init`` are
        then ignored, and the covariance prior is the previous fit's, its
        scale and degrees of freedom together, except for the fields
        ``priors`` gives now: fit with ``warm_start=False`` to return to
        the data's defaults), e.g. to continue a fit with a small ``em_max_iter`` over
        several calls, or on new data of the same classes and features.
        The previous fit must have the same classes, number of features,
        covariance type and K per class; with ``n_components="auto"`` the
        fitted K per class is continued, without a new scan (and no
        ``bic_``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_components_ : ndarray of int of shape (n_classes,)
        K of every class (chosen by BIC for "auto").
    n_effective_components_ : ndarray of int of shape (n_classes,)
        Components of every class that carry at least one point's worth of
        its data (``weights_ x`` the class's size >= 1; with
        ``inference="vi"``, the expected counts E_q[N_k]).
    weights_ : ndarray of shape (n_classes, max K)
        Per-class mixture weights; 0 beyond ``n_components_[c]``.
    means_ : ndarray of shape (n_classes, max K, n_features)
        Per-class component means in the data's units; NaN beyond
        ``n_components_[c]``.
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Per class, in scikit-learn's shapes with a leading class dimension:
        (C, K, D, D) "full", (C, D, D) "tied", (C, K, D) "diag", (C, K)
        "spherical"; NaN beyond ``n_components_[c]``.
    scales_ : ndarray of shape (n_classes, max K, n_features)
        Per-feature (marginal) standard deviations; NaN beyond ``n_components_[c]``.
    covariance_type_ : str
    class_prior_ : ndarray of shape (n_classes,)
    class_count_ : ndarray of shape (n_classes,)
        Each class's total sample weight (rows when unweighted) in the fit,
        plus every :meth:`partial_fit` since.
    n_partial_fits_ : int
        Only after :meth:`partial_fit`: its calls since its running
        averages started (at the last ``fit``; kept by a saved model).
    priors_ : list of Priors
        The resolved hyperparameters of every class.
    class_losses_ : ndarray of shape (n_classes,)
        Negative log joint of every class's mixture at its fitted (MAP)
        parameters, data units (before any discriminative fine-tuning).
    loss_ : float
        Their sum.
    bic_ : ndarray of shape (n_classes, min(max_components, n_rows))
        Only for ``n_components="auto"``: BIC of every class for K = 1, 2, ...
        in the data's units, each K at its best restart of the scan and the
        chosen K at the class's fitted (generative) mixture (inf where K
        exceeds the class size); ``n_rows``: the largest class's rows of
        positive weight.
    discriminative_losses_ : ndarray
        Cross-entropy per fine-tuning step (empty without fine-tuning).
    n_iter_ : int
        EM iterations plus SVI steps plus fine-tuning steps.
    elbo_ : ndarray of shape (n_classes,)
        Only after ``inference="vi"``: every class's ELBO, a lower bound on
        log p(X_c) in the data's units.
    rhat_, ess_ : dict of ndarray
        Only after ``inference="nuts"``: the split R-hat and effective
        sample size of every element of the draws, {"weights": (n_classes,
        max K), "means": (n_classes, max K, n_features), "covariances":
        shaped as ``covariances_``}, NaN at padded components.
    n_divergent_ : ndarray of int of shape (n_classes,)
        Only after ``inference="nuts"``: divergent transitions per class.
    converged_ : bool
        Whether the MAP fit stopped by its rule (EM's, or SVI's where SVI
        continued it) rather than at ``em_max_iter``/``max_iter``; a fit
        that ran out of budget warns (scikit-learn's ``ConvergenceWarning``,
        not with ``tol=0``).
    device_ : torch.device
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> from bayesgmm import GMMClassifier
    >>> from bayesgmm.datasets import load_iris
    >>> df = load_iris()
    >>> X, y = df.drop(columns="species"), df["species"]
    >>> clf = GMMClassifier(n_components=2, random_state=0, device="cpu").fit(X, y)
    >>> clf.classes_
    array(['setosa', 'versicolor', 'virginica'], dtype=object)
    >>> bool(clf.score(X, y) > 0.95)
    True
    >>> clf.predict_proba(X[:2]).round(3)
    array([[1., 0., 0.],
           [1., 0., 0.]])
    """

    def __init__(self, n_components: ComponentsLike = "auto", *,
                 covariance_type: CovarianceType = "full", priors: Optional[Priors] = None,
                 class_prior: Union[str, Sequence[float]] = "empirical", init: str = "kmeans++",
                 n_init: int = 4, max_iter: int = 1000, em_max_iter: int = 500, tol: float = 1e-6,
                 learning_rate: float = 0.01, max_components: int = 10,
                 discriminative_steps: int = 0, device: DeviceLike = "auto", random_state=None,
                 progress: bool = False, n_threads: Optional[int] = None,
                 missing: Literal["error", "marginalize"] = "error",
                 dtype: Literal["float32", "float64"] = "float32",
                 inference: Literal["map", "vi", "nuts"] = "map",
                 n_samples: Union[int, Literal["auto"]] = "auto",
                 n_chains: int = 4, n_warmup: int = 300, warm_start: bool = False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.priors = priors
        self.class_prior = class_prior
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.em_max_iter = em_max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.max_components = max_components
        self.discriminative_steps = discriminative_steps
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.n_threads = n_threads
        self.missing = missing
        self.dtype = dtype
        self.inference = inference
        self.n_samples = n_samples
        self.n_chains = n_chains
        self.n_warmup = n_warmup
        self.warm_start = warm_start

    # ------------------------------------------------------------ checks
    def _check_params(self, available: bool = True):
        s = self._settings(available)
        max_components = check_max_components(self.n_components, self.max_components,
                                              s.em_max_iter)
        steps = V.check_int("discriminative_steps", self.discriminative_steps, 0)
        V.check_option("init", self.init, INIT_OPTIONS)
        inference = V.check_option("inference", getattr(self, "inference", "map"),
                                   ("map", "vi", "nuts"))
        # Checked whatever the inference (see BayesianGMM._posterior_settings).
        self._n_draws(inference)
        V.check_int("n_chains", getattr(self, "n_chains", 4), 1)
        V.check_int("n_warmup", getattr(self, "n_warmup", 300), 0)
        if inference != "map":
            if steps > 0:
                raise ValueError(
                    f"inference={inference!r} gives the posterior of each class's generative "
                    f"mixture, but discriminative_steps={steps} moves the parameters off it: "
                    f"set discriminative_steps=0, or inference='map'")
        if inference == "vi":
            if s.max_iter == 0:
                raise ValueError("inference='vi' runs up to max_iter iterations, but "
                                 "max_iter=0: set max_iter > 0 (e.g. 1000)")
        if sparse_concentration(self.priors, inference) is not None:
            raise ValueError(
                f"GMMClassifier takes Priors.weight_concentration >= 1, got "
                f"{self.priors.weight_concentration!r}: its per-class posteriors run no delete "
                f"moves, which a concentration below 1 needs to switch components off; choose "
                f"each class's K with n_components='auto', or fit the classes with "
                f"BayesianGMM(inference={inference!r}), which takes it")
        self._warm_asked()          # warm_start checked before any work
        return s, max_components, steps

    def _fit_priors(self) -> Optional[Priors]:
        return self.priors

    def _prior_components(self) -> int:
        """The largest K per class of the next fit's priors, for a fitted
        model (with "auto", the fitted one)."""
        ks = self._resolve_components(self.classes_, np.full(self.classes_.size, np.inf))
        return int(np.max(self.n_components_ if ks is None else ks))

    def _check_concentration_shape(self, ks: Optional[np.ndarray]) -> None:
        """One concentration per component only where every class has the
        same K (``ks`` per class; None for "auto", which tries several)."""
        if self.priors is not None and isinstance(self.priors, Priors) \
                and np.ndim(self.priors.weight_concentration) > 0 \
                and (ks is None or len(set(ks)) > 1):
            why = ("n_components='auto' tries several numbers of components" if ks is None else
                   "the classes have different numbers of components")
            raise ValueError(
                f"Priors.weight_concentration is an array but {why}: give a scalar "
                f"concentration (the same for every component)")

    def _check_model_hyperparameters(self) -> None:
        self._check_params(available=False)
        classes = getattr(self, "classes_", None)
        if classes is not None:       # the per-class settings, against the fitted classes
            ks = self._resolve_components(classes, np.full(classes.size, np.inf))
            if ks is None and self._warm_asked():     # a warm start continues the fitted K
                ks = np.asarray(self.n_components_)
            self._check_concentration_shape(ks)
            self._class_prior(np.ones(classes.size), classes)

    def _n_draws(self, inference: str) -> int:
        """``n_samples`` checked, "auto" resolved for ``inference``."""
        if is_auto(self.n_samples):
            return 1000 if inference == "nuts" else 200
        if isinstance(self.n_samples, (bool, np.bool_)) or \
                not isinstance(self.n_samples, numbers.Integral):
            raise ValueError(f"n_samples must be a positive integer or 'auto', got "
                             f"{self.n_samples!r}")
        return V.check_int("n_samples", self.n_samples, 1)

    @staticmethod
    def _labels(X: np.ndarray, y) -> np.ndarray:
        """``y`` checked against X (one label per row, classification targets)."""
        if y is None:
            raise ValueError("GMMClassifier requires y to be passed, but the target y is None: "
                             "call fit(X, y) with one label per row of X")
        y = column_or_1d(_label_array(y), warn=True)
        _check_label_count(X.shape[0], y.shape[0])
        _check_label_values(y)          # before scikit-learn's target checks
        check_classification_targets(y)
        return y

    def _encode_known(self, X: np.ndarray, y, keep: Optional[np.ndarray] = None,
                      remedy: str = "give labels of classes_, or leave y out to impute under "
                                    "the whole model") -> np.ndarray:
        """``y`` (one label of ``classes_`` per row of X; of the rows
        ``keep`` when given) as indices into ``classes_``, or an error
        naming the labels the model does not know, and ``remedy``."""
        import pandas as pd

        y = self._labels(X, y)
        if keep is not None:
            y = y[keep]
        index = pd.Index(self.classes_).get_indexer(y)
        unknown = np.flatnonzero(index < 0)
        if unknown.size:
            labels = [_label(v) for v in pd.unique(y[unknown])[:5]]
            raise ValueError(f"y holds label(s) {labels!r} that the model was not fitted on "
                             f"(classes_ {self.classes_.tolist()!r}): {remedy}")
        return index

    def _check_y(self, X: np.ndarray, y, keep: Optional[np.ndarray] = None, group=None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Classes and encoded labels of the rows ``keep`` (those of positive
        sample weight; None: all); over several processes the classes are
        the union of every shard's."""
        y = y_all = self._labels(X, y)
        if keep is not None:
            y = y[keep]
        labels = y
        if group is not None:
            from .distributed import gather_parts
            parts = gather_parts(np.unique(y), group)
            _check_label_kinds(parts)
            labels = np.concatenate(parts)
        enc = LabelEncoder().fit(labels)
        classes = enc.classes_
        if classes.size < 2 and keep is not None and np.unique(y_all).size > 1:
            dropped = sorted(set(np.unique(y_all).tolist()) - set(classes.tolist()))
            raise ValueError(
                f"every row of class(es) {[_label(c) for c in dropped]} has sample_weight 0, "
                f"which leaves only class {_label(classes[0])!r}: a classifier needs samples of "
                f"at least 2 classes; give those rows positive weights or drop the class from y")
        if classes.size < 2:
            raise ValueError(
                f"y has only one class ({_label(classes[0])!r}): a classifier needs samples of at least "
                f"2 classes; for density estimation of one class use BayesianGMM")
        dropped = [] if keep is None else \
            sorted(set(np.unique(y_all).tolist()) - set(classes.tolist()))
        if dropped:
            warnings.warn(
                f"every row of class(es) {[_label(c) for c in dropped]} has sample_weight 0: the "
                f"classifier is fitted without them (classes_ holds the {classes.size} classes "
                f"with positive weight, and predict_proba one column for each)", UserWarning,
                stacklevel=5)
        return classes, enc.transform(y)

    def _warm_start(self, classes: np.ndarray, ks: Optional[np.ndarray], d: int, family,
                    previous_names) -> bool:
        """Whether this fit starts from the previous fit's parameters
        (``warm_start``), after checking they fit this one: the same
        classes, features, covariance type and K per class (``ks``; None
        for "auto", which continues the fitted K)."""
        if not self._warm_asked():
            return False
        again = "set warm_start=False to start afresh"
        before = [_label(c) for c in self.classes_]
        if len(classes) != len(self.classes_) or not np.all(classes == self.classes_):
            raise ValueError(f"warm_start=True continues the previous fit of classes {before}, "
                             f"but y has classes {[_label(c) for c in classes]}: {again}")
        previous = (self.means_.shape[-1], self.covariance_type_)
        if previous != (d, family.name):
            raise ValueError(
                f"warm_start=True continues the previous fit ({previous[0]} feature(s), "
                f"covariance_type={previous[1]!r}), but this fit has {d} feature(s), "
                f"covariance_type={self.covariance_type!r}: {again}")
        if ks is not None and not np.array_equal(ks, self.n_components_):
            raise ValueError(
                f"warm_start=True continues the previous fit's components per class "
                f"{self.n_components_.tolist()} (classes {before}), but n_components asks for "
                f"{np.asarray(ks).tolist()}: {again}")
        check_same_columns(previous_names, getattr(self, "feature_names_in_", None))
        return True

    def _fitted_start(self, std: Standardizer, family, device, dtype):
        """The fitted class mixtures in the new fit's standardised frame
        ``std``, padded components neutral, and the mask of the real ones:
        (MixtureParams of batch (C,), mask (C, K))."""
        K = int(self.n_components_.max())          # the padding the fit needs
        C, D = self.means_.shape[0], self.means_.shape[-1]
        real = np.arange(K)[None, :] < self.n_components_[:, None]
        cov = self.covariances_[:, :K] if family.per_component else self.covariances_
        if family.per_component:
            neutral = family.covariances(family.identity((C,), K, D, torch.float64,
                                                         "cpu")).numpy()
            cov = np.where(real.reshape(real.shape + (1,) * (cov.ndim - 2)), cov, neutral)
        # Padded means are NaN: masked() sets them (and the covariances) to neutral.
        params = std.params_to_std(self.weights_[:, :K], self.means_[:, :K], cov, family, device,
                                   dtype)
        mask = torch.as_tensor(real, device=device)
        return masked(params, mask, family), mask

    def _resolve_components(self, classes: np.ndarray, counts: np.ndarray) -> Optional[np.ndarray]:
        """Per-class K in the order of ``classes`` (None for "auto")."""
        nc = self.n_components
        C = classes.size
        if isinstance(nc, np.ndarray) and nc.ndim == 0:
            nc = nc.item()
        if isinstance(nc, str):
            V.check_option("n_components", nc, ("auto",))
            return None
        if _keyed_by_label(nc):
            ks = _by_label("n_components", nc, classes)
        elif isinstance(nc, numbers.Integral) and not isinstance(nc, (bool, np.bool_)):
            ks = [nc] * C
        elif isinstance(nc, (list, tuple, np.ndarray)):
            if len(nc) != C:
                raise ValueError(
                    f"n_components has {len(nc)} entries but there are {C} classes "
                    f"{classes.tolist()!r} (the labels of y with positive weight): give one K "
                    f"per class in the order of classes_, or a dict {{label: K}}")
            ks = list(nc)
        else:
            raise ValueError(f"n_components must be an int, a list of ints, a dict {{label: int}} "
                             f"(or a pandas Series indexed by label) or 'auto', got {nc!r}")
        ks = np.array([V.check_int(f"n_components[{_label(c)!r}]", k, 1) for c, k in zip(classes, ks)])
        small = np.flatnonzero(ks > counts)
        if small.size:
            c = small[0]
            raise ValueError(
                f"class {_label(classes[c])!r} has {counts[c]} sample(s) but n_components={ks[c]} for it: "
                f"use n_components <= {counts[c]} for that class (a dict {{label: K}} sets K per "
                f"class), n_components='auto', or provide more samples")
        return ks

    def _class_prior(self, counts: np.ndarray, classes: np.ndarray) -> np.ndarray:
        cp = self.class_prior
        if isinstance(cp, str):
            V.check_option("class_prior", cp, _CLASS_PRIOR_OPTIONS)
            return counts / counts.sum() if cp == "empirical" else np.full(counts.size, 1 / counts.size)
        if _keyed_by_label(cp):
            cp = _by_label("class_prior", cp, classes)
        arr = V.real_array(cp, "class_prior")    # no True/False, no text, no ragged lists
        if arr is None or arr.shape != (classes.size,) or not np.all(np.isfinite(arr)) \
                or np.any(arr <= 0):
            raise ValueError(
                f"class_prior must be 'empirical', 'uniform', {classes.size} positive finite "
                f"values (one per class, in the order {classes.tolist()!r}) or a dict {{label: "
                f"value}}, got {self.class_prior!r}")
        # Scaled by the largest first: the sum of values near 1e308 overflows.
        arr = arr / arr.max()
        return arr / arr.sum()

    # --------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, *, process_group=None) -> "GMMClassifier":
        """Fit one mixture per class, all classes at once.

        Parameters
        ----------
        X : array-like, DataFrame or tensor of shape (n_samples, n_features)
            With ``missing="marginalize"``, NaN entries are missing values.
        y : array-like of shape (n_samples,)
            Labels of any kind (ints, strings, non-contiguous values).
        sample_weight : array-like of shape (n_samples,), optional
            How many times each row counts, in every stage (the class
            mixtures' statistics and seeding, the standardisation and
            priors, the empirical class prior, BIC for "auto" and the
            fine-tuning's cross-entropy): integer weights give the fit of
            the rows repeated, weight 0 that of the rows removed (frequency
            weights: their total is the data's size against the priors).
        process_group : torch.distributed process group, optional
            X and y are this process's shard of the rows: every rank calls
            ``fit`` with its own and all end with the parameters of one fit
            on the union (the classes are the union of the shards' labels),
            as for :meth:`BayesianGMM.fit`.  Not with discriminative
            fine-tuning.

        Returns
        -------
        self
        """
        return self._fit_wrapper(X, y, sample_weight, process_group)

    def _fit(self, X, y, sample_weight=None, process_group=None) -> "GMMClassifier":
        # The previous fit's columns, before validation resets them: a warm
        # start must see the same ones.
        previous_names = getattr(self, "feature_names_in_", None)
        group = check_group(process_group)
        reduce = reducer(group)
        # Each rank's own checks first, then one collective that stops every
        # rank if any failed (no rank may wait in a collective alone).
        error = None
        streamed = is_row_source(X)
        try:
            if not streamed:
                X = V.check_X(self, X, reset=True)
                V.check_sample_weight(sample_weight, X.shape[0],
                                      all_zero="error" if group is None else "shard")
            s, max_components, disc_steps = self._check_params()
            V.check_random_state(self.random_state)   # before the collective (else a hang)
            y = self._labels(X, y)      # 1-D from here: a column vector is warned about once
            if (group is not None or streamed) and disc_steps > 0:
                raise ValueError("discriminative fine-tuning needs the data in one process's "
                                 "memory: set discriminative_steps=0 with process_group or "
                                 "out-of-core data")
            if (group is not None or streamed) and self.inference != "map":
                raise ValueError(f"inference={self.inference!r} needs the data in one "
                                 f"process's memory: use inference='map' with process_group "
                                 f"or out-of-core data, or load the rows (or a sample of "
                                 f"them) as an array")
        except ValueError as exc:
            error = exc
        agree(error, group, X.shape[1] if error is None else -1,
              None if streamed else getattr(self, "feature_names_in_", None),
              None if group is None else shared_settings(self, streamed), self)
        device = s.device
        D = X.shape[1]
        family = cov_module.get(s.covariance_type, D)
        if streamed:
            # Out of core: labels in memory (encoded once), the rows read in
            # chunks and laid out per class chunk by chunk (RowStream).
            # The classes of the rows of positive weight, as in memory; the
            # other rows keep a placeholder label (their weight is 0).
            keep = positive_rows(sample_weight, int(X.shape[0]))
            classes, yk = self._check_y(X, y, keep, group)
            yi = yk if keep is None else np.zeros(keep.size, dtype=yk.dtype)
            if keep is not None:
                yi[keep] = yk
            # Every rank keeps up to SEED_SAMPLE_SIZE rows (the total is not
            # known during the pass); seed_sample then takes the union, or
            # each rank's share of a sample of that size.

            def seed_pick(m: int) -> np.ndarray:
                # Among the m rows of positive weight (those an in-memory
                # fit keeps, labelled yk); past SEED_SAMPLE_SIZE rows a
                # sample of them that keeps some rows of every class, the
                # in-memory fit's.
                rows = seed_rows(m, [m, 1], yk)
                return np.arange(m) if rows is None else rows

            # A warm start seeds nothing: no sample to collect.
            picks = {} if self._warm_asked() else {"seed": seed_pick}
            data = stream_data(self, X, sample_weight, family, device, V.allows_missing(self),
                               s.dtype, picks, reduce, labels=yi, n_groups=classes.size,
                               group=group)
        else:
            data = fit_data(X, sample_weight, family, device, V.allows_missing(self), s.dtype,
                            reduce, getattr(self, "feature_names_in_", None))
            # Labels of the rows kept (rows of weight 0 leave, with their labels).
            classes, yi = self._check_y(X, y, data.keep, group)
        X, std, Xt, moments = data.X, data.std, data.Xt, data.moments
        if self.inference == "nuts":
            # (A feature constant within a class only is not refused: its
            # variance there is held by the prior, in units of the feature's
            # spread over all classes, and NUTS mixed as usual.)
            refuse_nuts_constant("GMMClassifier", family, data.constant,
                                 getattr(self, "feature_names_in_", None))
        warn_constant_features("GMMClassifier", data, getattr(self, "feature_names_in_", None),
                               family, _largest_k(self.n_components))
        warn_dependent_features("GMMClassifier", data, getattr(self, "feature_names_in_", None),
                                family, self.priors)
        warn_far_mean_prior("GMMClassifier", self.priors, data, getattr(self, "feature_names_in_", None),
                            family)
        C = classes.size
        seen = None           # observed weight per class and feature, with missing values
        if streamed:
            counts, mass, seen = data.class_totals
        elif data.observed_mass is not None:
            seen = reduce_array(np.stack([(~np.isnan(X[yi == c])).sum(0) for c in range(C)])
                                .astype(np.float64), reduce, device)
        # Each class is its own mixture: every feature needs an observed value
        # in every class (else that class's variance collapses to the prior's
        # floor there and the class is mispredicted).
        for c in range(C if seen is not None else 0):
            never = np.flatnonzero(seen[c] == 0)
            if never.size:
                raise ValueError(
                    f"class {_label(classes[c])!r} has no observed value in feature(s) "
                    f"{feature_list(getattr(self, 'feature_names_in_', None), never)}: every "
                    f"feature needs values in every class; drop the "
                    f"feature or impute it for that class")
        if not streamed:
            local = np.bincount(yi, minlength=C).astype(np.float64)
            # The classes' sizes: their total weight (rows when unweighted).
            local_mass = local if data.weight is None else \
                np.bincount(yi, weights=data.weight, minlength=C)
            both = reduce_array(np.concatenate([local, local_mass]), reduce, device)
            counts, mass = both[:C].astype(np.int64), both[C:]
        observed = [None] * C   # weight of the observed entries per class and feature
        if streamed:
            observed = list(seen) if data.observed_mass is not None else observed
        elif data.observed_mass is not None:
            w_rows = np.ones(len(yi)) if data.weight is None else data.weight
            obs_w = ~np.isnan(X) * w_rows[:, None]
            observed = list(reduce_array(np.stack([obs_w[yi == c].sum(0) for c in range(C)]),
                                         reduce, device))
        ks = self._resolve_components(classes, counts)
        warm = self._warm_start(classes, ks, D, family, previous_names)
        if warm:                  # the fitted K of every class, continued
            ks = np.asarray(self.n_components_, dtype=np.int64).copy()
        class_prior = self._class_prior(mass, classes)
        auto = ks is None
        # "auto" tries K = 1..max_components, but per class only the K whose
        # mixture has fewer free parameters than the class has points (weight).
        cap = component_cap(family, D, max_components, counts, mass)
        k_max = int(cap.max()) if auto else int(ks.max())
        self._check_concentration_shape(ks)
        # Validated here (before any work); resolved once with k_max after
        # the seeding, whose spread scales the covariance priors' defaults.
        # The k-component prior is the first k entries of the (scalar)
        # concentration.
        resolve_priors(self.priors, family, k_max, moments)
        if self.inference != "map":
            chains = V.check_int("n_chains", self.n_chains, 1)
            draws = self._n_draws(self.inference)
            kept = post_module.PosteriorSettings(self.inference, n_samples=draws,
                                                 n_chains=chains).kept
            check_draws_size(self.n_samples, kept, family, k_max, D,
                             "n_samples='auto', 200 draws for 'vi' and 1000 for 'nuts'", C,
                             n_chains=chains if self.inference == "nuts" else 1, requested=draws)

        def prior_for(k: int) -> Priors:
            return replace(base, weight_concentration=base.weight_concentration[:k])

        if streamed:
            groups = data.stream
        else:
            yt = torch.as_tensor(yi, dtype=torch.long, device=device)
            groups = Groups.from_labels(Xt, yt, C, data.wt, reduce)
        R = s.n_init
        rs = V.check_random_state(self.random_state)
        seeds = shared_seeds(rs.randint(0, 2 ** 31 - 1, size=R + 1), group)
        gen = torch.Generator().manual_seed(int(seeds[-1]))
        if warm:
            # The previous fit's objective: its covariance priors (those the
            # user leaves to their default), its parameters as the start.
            base = warm_priors(resolve_priors(self.priors, family, k_max, moments),
                               self.priors, self.priors_[0])
            start = self._fitted_start(std, family, device, s.dtype)
        else:
            Xs, ws, ys = data.samples["seed"] if streamed else (Xt, data.wt, yt)
            rows = None if streamed or group is not None else seed_rows(Xt.shape[0],
                                                                       [Xt.shape[0], 1], yi)
            if rows is not None:      # the sample a streamed fit keeps (seed_rows)
                index = torch.as_tensor(rows, device=Xt.device)
                Xs, ws, ys = Xt[index], None if ws is None else ws[index], yt[index]
            if group is not None:     # every rank seeds from the same (gathered) points
                Xs, ws, ys = seed_sample(Xs, ws, data.n_total, int(seeds[-1]), group, ys,
                                         data.n_local)
                Xs, ys = torch.from_numpy(np.asarray(Xs)), torch.from_numpy(np.asarray(ys))
                ws = None if ws is None else torch.from_numpy(np.asarray(ws))
            points = [Xs[ys == c] for c in range(C)]
            pweights = None if ws is None else [ws[ys == c] for c in range(C)]
            # One prior for every class: the spread pooled over the classes'
            # seedings, each at its K (for "auto", the largest K its weight
            # allows: the same for weighted and repeated rows).
            base = seeded_priors(self.priors, family, k_max, data, points, pweights,
                                 component_cap(family, D, max_components, None, mass)
                                 if auto else ks)
            centres = seed_centres(points, k_max, R, self.init, seeds[:R], pweights)
            centres = torch.as_tensor(centres, dtype=s.dtype, device=device)
        pt = std.priors(base, device, s.dtype)
        # EM's budget (twice for "auto": the scan, then the chosen K), or
        # SVI's when EM is off, and fine-tuning's; SVI after EM adds its own.
        planned = (s.em_max_iter * (2 if auto else 1) or s.max_iter) + disc_steps
        progress = FitProgress(bool(s.progress), planned, "GMMClassifier")
        callback = progress.callback
        cls = torch.arange(C, device=device)
        # log L per class in standardised minus in data units: the BIC table
        # is in the data's units.
        ll_offset = np.array([data.loglik_offset(mass[c], observed[c]) for c in range(C)])
        try:
            # "auto" scans every (restart, K) variant to a looser tolerance
            # (enough to rank K by BIC), then polishes only the chosen K.
            if warm:
                params, mask_c = start
                run = em_fit(groups, params.map(lambda t: t[None]), mask_c[None], pt, family,
                             s.em_max_iter, s.tol, callback)
                params, bic = run.params.select(0), None
                n_iter, converged = run.n_iter, run.converged
            else:
                sel = fit_candidates(groups, centres, ks, cap, pt, family, s.em_max_iter, s.tol,
                                     callback, mass, ll_offset, max_components,
                                     what="class(es)", columns=bic_columns(max_components, counts))
                params, mask_c, bic = sel.params, sel.mask, sel.bic
                n_iter, converged = sel.n_iter, sel.converged
            k_sel = mask_c.sum(-1)
            k_max = mask_c.shape[-1]
            pt = pt.with_concentration(pt.concentration[:k_max])
            if auto and s.em_max_iter > 0:
                polish = em_fit(groups, params.map(lambda t: t[None]), mask_c[None], pt, family,
                                s.em_max_iter, s.tol, callback)
                params = polish.params.select(0)
                n_iter = n_iter + polish.n_iter
                converged = bool((polish.iterations[0] < s.em_max_iter).all()) or \
                    polish.converged
            losses = negative_log_joint(groups, params, cls, pt, family, mask_c)
            params, losses, _ = guard_stage("EM" if s.em_max_iter > 0 else "initialisation",
                                            params, losses, learning_rate=None,
                                            what="class(es)", depth=1)
            # SVI optimises the same objective: from a converged EM optimum it
            # has nothing left to gain, so it runs only where EM stopped short.
            if s.max_iter > 0 and not (s.em_max_iter > 0 and converged):
                if s.em_max_iter > 0:
                    progress.add(s.max_iter)
                svi = svi_fit(groups, params.map(lambda t: t[None]), mask_c[None], pt, family,
                              s.max_iter, s.tol, s.learning_rate, callback)
                svi_losses = svi.losses[0, :, -1].to(losses)
                # Pure SVI (no EM) has no fitted solution to fall back to.
                _, _, ok = guard_stage("SVI", svi.params.select(0), svi_losses,
                                       ("EM", params, losses) if s.em_max_iter > 0 else None,
                                       learning_rate=s.learning_rate, what="class(es)", depth=1)
                # Both stages optimise the same objective; Adam may settle a
                # hair above the EM optimum, so keep the better one per class.
                better = ok & (svi_losses < losses)
                params = svi.params.select(0).where(better, params)
                losses = torch.where(better, svi_losses, losses)
                n_iter += svi.n_iter
                converged = svi.converged
            if auto:
                # The chosen K's entry at the fitted (polished) mixture: the
                # BIC of the model the estimator holds.
                k_np = k_sel.cpu().numpy()
                bic[np.arange(C), k_np - 1] = bic_values(
                    log_likelihood(losses, params, pt, family, mask_c).cpu().numpy(), k_np,
                    family, D, mass, ll_offset)
            disc_losses = torch.zeros(0, device="cpu")
            if disc_steps > 0:
                log_cp = torch.as_tensor(np.log(class_prior), dtype=Xt.dtype, device=device)
                batch = max(1, _predict.CHUNK_ELEMENTS // (4 * C * k_max * D))
                tuned, disc_losses = discriminative_fit(
                    Xt, yt, params, mask_c, family, log_cp, disc_steps, s.learning_rate, batch,
                    gen, callback, data.wt)
                # The stage couples the classes (a softmax over them): one
                # non-finite class makes the whole stage fall back.
                diverged = not bool(torch.isfinite(disc_losses).all())
                params, _, _ = guard_stage(
                    "discriminative fine-tuning", tuned,
                    torch.full_like(losses, math.nan) if diverged else losses,
                    ("generative", params, losses), learning_rate=s.learning_rate,
                    what="class(es)", depth=1)
                n_iter += disc_steps
        finally:
            progress.close()

        guard_stage("fit", params, losses, learning_rate=s.learning_rate, what="class(es)")
        k_sel_np = k_sel.cpu().numpy().astype(np.int64)
        w, m, c = std.params_from_std(params, family)
        real = mask_c.cpu().numpy()
        offset = np.array([data.loss_offset(int(k), family, mass=float(mass[i]),
                                            observed=observed[i])
                           for i, k in enumerate(k_sel_np)])
        self.classes_ = classes
        self.n_components_ = k_sel_np
        self.weights_ = np.where(real, w, 0.0)
        self.means_ = np.where(real[..., None], m, np.nan)
        self._set_covariances(c, family, real)
        warn_float32_conditioning("GMMClassifier", self.covariances_, family, s.dtype,
                                  self.weights_ >= 0.5 / counts[:, None],
                                  [_label(v) for v in classes])
        self.class_prior_ = class_prior
        self.class_count_ = np.asarray(mass, dtype=np.float64)
        self._class_rows = np.asarray(counts, dtype=np.int64)    # plots' "half a row"
        self._stream = None          # a new fit starts partial_fit's averages afresh
        self.__dict__.pop("n_partial_fits_", None)   # ... and its count
        self.priors_ = [prior_for(int(k)) for k in k_sel_np]
        self.class_losses_ = losses.double().cpu().numpy() + offset
        self.loss_ = float(self.class_losses_.sum())
        if auto:
            self.bic_ = bic
        elif hasattr(self, "bic_"):
            del self.bic_
        self.discriminative_losses_ = disc_losses.double().cpu().numpy()
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.device_ = device
        self.n_effective_components_ = effective_components(self.weights_ * mass[:, None])
        if not streamed and reduce is None:
            _warn_class_constant(X, yi, classes, data.constant, family, k_sel_np,
                                 getattr(self, "feature_names_in_", None))
        if self.inference == "map":
            warn_unused_components("GMMClassifier", self.weights_, counts, real,
                                   [_label(c) for c in classes])
            if not converged:
                warn_not_converged("GMMClassifier", s, int(n_iter), stacklevel=4)
        for name in ("_posterior", "elbo_", "rhat_", "ess_", "n_divergent_"):
            if name in vars(self):
                delattr(self, name)
        if self.inference == "vi":
            warn_vi_missing("GMMClassifier", data.observed_mass, data.mass, family,
                            getattr(self, "feature_names_in_", None))
            self._fit_posterior(data, yi, family, params, mask_c, pt, ll_offset,
                                int(seeds[-1]), s)
        elif self.inference == "nuts":
            self._fit_nuts(data, yi, family, params, pt, int(seeds[-1]), s)
        self._discrete_said = set()     # (and partial_fit's chunks)
        self._discrete_checked = 0
        warn_discrete_features("GMMClassifier", data, self.weights_, self.means_,
                               self.covariances_, family,
                               getattr(self, "feature_names_in_", None), counts,
                               [_label(v) for v in classes], yi, said=self._discrete_said)
        return self

    #: Step sizes of ``partial_fit`` (as :class:`~bayesgmm.BayesianGMM`'s),
    #: per class: eta_t = (t + PARTIAL_FIT_OFFSET) ** -PARTIAL_FIT_DECAY.
    PARTIAL_FIT_DECAY = PARTIAL_FIT_DECAY
    PARTIAL_FIT_OFFSET = PARTIAL_FIT_OFFSET

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> "GMMClassifier":
        """Update every class's mixture with one chunk of a stream (stepwise
        EM per class, as :meth:`BayesianGMM.partial_fit` for one mixture).

        The first call, on an unfitted estimator, is ``fit`` on that chunk,
        which must hold rows of every class (each class's mixture starts
        from its own rows).  Every later call runs one E-step of each
        class's rows in the chunk at the current parameters and folds their
        statistics into that class's running average (step size
        (t_c + 2)^-0.6 when t_c of its chunks are already averaged, for a
        chunk of the class's mean chunk weight; a chunk of m times that
        weight takes the step m times over, so a few rows barely move a
        class fitted to many), then the closed-form M-step maximises each
        class's MAP objective scaled to the class's weight in the stream,
        so the priors weigh against all its data.  A
        chunk may hold any subset of the classes: the others keep their
        parameters and averages.  ``class_count_`` adds up each class's
        weight, and an empirical ``class_prior`` follows it (a given one
        stays).  Each call costs one pass over its chunk; memory does not
        grow with the stream.

        ``classes`` (scikit-learn's convention for incremental classifiers):
        when given, the labels the stream holds, which must be those of
        ``classes_`` (on the first call, those of the chunk).  A label
        outside ``classes_`` is refused (refit with ``fit`` to add a class).
        ``sample_weight`` and ``missing="marginalize"`` work as in ``fit``.
        After ``fit`` the stream starts from the fit: its data are each
        class's first chunk, of weight ``class_count_`` (statistics that
        reproduce the fitted mixture), so the next chunk updates the fit
        rather than replacing it; a saved model keeps the stream's state and
        goes on after ``load`` (one saved before ``class_count_`` existed is
        refused, with refitting as the remedy).  Later calls update the parameters,
        ``class_count_``, ``class_prior_``, ``n_effective_components_`` and
        ``n_partial_fits_``; ``loss_`` and ``class_losses_`` become NaN (the
        stream's objective would need a pass over every row seen), and
        ``n_iter_`` and ``converged_`` keep describing the last ``fit``.
        The calls that bring ``n_partial_fits_`` to 1..16, then one every 16
        calls, check their chunk (of 50 rows or more) for components sitting
        on single values of a feature, as ``fit`` ends with; a finding is
        said when it names a (class, component, feature) not said before in
        the stream.
        K stays the fitted one per class (with ``n_components="auto"`` the
        first call must follow a ``fit``, which chooses it); the MAP only
        (``inference="map"``), without ``discriminative_steps``, whose
        fine-tuning the generative updates would undo.  Later calls run on
        the model's device (``device_``: the fit's, or the one ``load``
        chose); the ``device`` setting takes effect at the next ``fit``."""
        self._check_partial_inference()
        steps = V.check_int("discriminative_steps", self.discriminative_steps, 0)
        if steps > 0:
            raise ValueError(
                f"partial_fit updates each class's generative mixture (stepwise EM), which "
                f"would undo the discriminative fine-tuning of discriminative_steps={steps}: "
                f"set discriminative_steps=0, or fit all the data with fit")
        with rollback_on_error(self):
            if not hasattr(self, "means_"):
                if is_auto(self.n_components):
                    raise ValueError(
                        "partial_fit starts with a fit of its first chunk, and "
                        "n_components='auto' would choose each class's K from that chunk "
                        "alone: fit a sample of the stream with n_components='auto' first "
                        "(partial_fit then continues its K), or give n_components")
                self._check_first_classes(classes, X, y, sample_weight)
                self.fit(X, y, sample_weight=sample_weight)
                self._check_classes(classes)
                self._stream = None
                with fit_threads(check_threads(self.n_threads)):
                    return self._partial_step(X, y, sample_weight, self.priors_, first=True)
            self._check_classes(classes)
            priors = self._partial_priors()
            self._check_hyperparameters()     # every setting, as fit checks them
            with fit_threads(check_threads(self.n_threads)):
                return self._partial_step(X, y, sample_weight, priors)

    def _check_first_classes(self, classes, X, y, sample_weight) -> None:
        """The first call's ``classes`` against the chunk's labels of
        positive weight, before its fit."""
        if classes is None:
            return
        labels = self._labels(X, y)
        w = V.check_sample_weight(sample_weight, labels.shape[0])
        given = _given_classes(classes)
        unknown = np.setdiff1d(np.unique(labels), given)
        if unknown.size:
            raise ValueError(
                f"y holds label(s) {[_label(c) for c in unknown]!r} that are not in classes "
                f"{[_label(c) for c in given]!r}: give every label of the stream in classes")
        present = np.unique(labels if w is None else labels[w > 0])
        absent = np.setdiff1d(given, present)
        if absent.size:
            raise ValueError(
                f"partial_fit starts with a fit of its first chunk, which has no rows of "
                f"class(es) {[_label(c) for c in absent]!r} of classes: each class's mixture "
                f"starts from its own rows, so the first chunk needs rows of every class")

    def _check_classes(self, classes) -> None:
        """``partial_fit``'s ``classes``, when given, against ``classes_``."""
        if classes is None:
            return
        given = _given_classes(classes)
        if given.size != self.classes_.size or np.setdiff1d(given, self.classes_).size:
            raise ValueError(
                f"classes {[_label(c) for c in given]!r} differ from the fitted classes_ "
                f"{self.classes_.tolist()!r}: partial_fit continues the fitted classes; refit "
                f"with fit to change them")

    def _partial_priors(self) -> list:
        """Each class's priors for a continuing ``partial_fit``, after
        checking that the settings still describe the fitted mixtures (K per
        class and ``covariance_type``; see :meth:`BayesianGMM.partial_fit`)."""
        C, K, D = self.means_.shape
        remedy = "refit with fit to change it, or set it back"
        if self.covariance_type != self.covariance_type_:
            raise ValueError(f"partial_fit continues the fitted covariance_type="
                             f"{self.covariance_type_!r}, but covariance_type is now "
                             f"{self.covariance_type!r}: {remedy}")
        if not is_auto(self.n_components):
            ks = self._resolve_components(self.classes_, np.full(C, np.iinfo(np.int64).max))
            if not np.array_equal(ks, self.n_components_):
                raise ValueError(f"partial_fit continues the fitted n_components_="
                                 f"{self.n_components_.tolist()}, but n_components is now "
                                 f"{self.n_components!r}: {remedy}")
        family = self._family()
        return [self._continued_priors(p, family, int(k), D)
                for p, k in zip(self.priors_, self.n_components_)]

    def _partial_step(self, X, y, sample_weight, priors: list,
                      first: bool = False) -> "GMMClassifier":
        X = V.check_X(self, X, reset=False)
        w = V.check_sample_weight(sample_weight, X.shape[0])
        keep = None if w is None else w > 0
        # Rows of weight 0 leave first (fit ignores their labels too).
        labels = self._encode_known(X, y, keep, "partial_fit continues the fitted classes: "
                                    "refit with fit to add a class")
        if keep is not None:
            X, w = X[keep], w[keep]
        check_chunk_weights(w, self._dtype())
        V.check_missing_rows(np.isnan(X))
        device = _predict.model_device(self)
        family = self._family()
        C, K, D = self.means_.shape
        real = np.arange(K)[None, :] < self.n_components_[:, None]
        counted = getattr(self, "class_count_", None)
        if counted is None:
            raise ValueError(
                "partial_fit needs each class's weight seen so far (class_count_), which this "
                "model, saved by an earlier bayesgmm, lacks: refit it with fit (on the data or a "
                "sample of them), then go on with partial_fit")
        state = getattr(self, "_stream", None)
        fresh = first or state is None      # a new running average starts here
        _, wts, means, cov, _ = self._class_mixtures(plug_in=True)
        mask = torch.as_tensor(real, device=device)

        def standardised(std, dtype):      # the class mixtures in the frame of std
            return masked(std.params_to_std(wts, np.where(real[..., None], means, 0.0), cov,
                                            family, device, dtype), mask, family)

        if state is None:
            _, std, _, _ = self._model_frame(device, plug_in=True)
            if first:
                state = {"center": std.center, "scale": std.scale,
                         "t": np.zeros(C, dtype=np.int64), "mass": np.zeros(C), "avg": None}
            else:
                # After fit: the fit's data are every class's first chunk.
                state = seeded_stream(std, standardised(std, torch.float64), family, counted)
        # Updated in a copy: a refused chunk leaves the stream as it was.
        state = dict(state)
        std = Standardizer(np.asarray(state["center"], dtype=np.float64),
                           np.asarray(state["scale"], dtype=np.float64))
        params = standardised(std, self._dtype())
        dtype = params.weights.dtype
        wt = None if w is None else torch.as_tensor(w, dtype=dtype, device=device)
        groups = Groups.from_labels(std.apply(X, device, dtype),
                                    torch.as_tensor(labels, dtype=torch.long, device=device), C, wt)
        # The classes share every prior but the concentration's length (K_c).
        widest = priors[int(np.argmax(self.n_components_))]
        new, present = stream_update(state, groups, params, std.priors(widest, device, dtype),
                                     family, mask, self.PARTIAL_FIT_DECAY, self.PARTIAL_FIT_OFFSET)
        if first:   # the fit's own parameters stand; the averages start here
            new = params
        guard_stage("partial_fit", new, torch.zeros(C, device=device), learning_rate=None,
                    what="class(es)")
        if not first:   # (the fit's attributes as they are, not through the frame and back)
            wn, mn, cn = std.params_from_std(new, family)
            self.weights_ = np.where(real, wn, 0.0)
            self.means_ = np.where(real[..., None], mn, np.nan)
            self._set_covariances(cn, family, real)
        self.priors_ = priors
        if not first:
            self.class_count_ = counted + np.bincount(labels, weights=w, minlength=C)
            if getattr(self, "_class_rows", None) is not None:
                self._class_rows = np.asarray(self._class_rows, dtype=np.int64) + np.bincount(
                    labels, minlength=C)
            self.class_prior_ = self._class_prior(self.class_count_, self.classes_)
            # The stream's objective is not known (it would need a pass over
            # every row seen): the losses no longer describe the parameters.
            self.class_losses_ = np.full(C, math.nan)
            self.loss_ = math.nan
        self.n_partial_fits_ = 1 if fresh else self.n_partial_fits_ + 1
        self._stream = state
        self.n_effective_components_ = effective_components(self.weights_ *
                                                            self.class_count_[:, None])
        if not first and checked_call(self.n_partial_fits_, X.shape[0],
                                        getattr(self, "_discrete_checked", 0)):
            # The fit's end check on this chunk's rows, at the updated
            # components; a finding said before is not repeated (from an
            # audit: a stream that collapsed onto single values went unsaid).
            # A new set each call: a copy.copy of the estimator shares the
            # old one, whose findings must not silence the copy's.
            said = set(getattr(self, "_discrete_said", ()))
            chunk, rows = chunk_data(X, w, labels)
            warn_discrete_features("GMMClassifier", chunk, self.weights_, self.means_,
                                   self.covariances_, family,
                                   getattr(self, "feature_names_in_", None),
                                   np.bincount(rows, minlength=C),
                                   [_label(v) for v in self.classes_], rows, said=said,
                                   stacklevel=4)
            self._discrete_said = said
            self._discrete_checked = self.n_partial_fits_
        return self

    def _fit_nuts(self, data, yi: np.ndarray, family, params: MixtureParams, pt,
                  seed: int, s) -> None:
        """Every class's posterior by NUTS from its MAP, one class after
        another (:func:`bayesgmm.posterior.run`, as :class:`BayesianGMM`
        with ``inference="nuts"``: the draws' components matched to the
        class's MAP, R-hat and effective sample sizes), in float64 in the
        fit's standardised frame.  Draws kept in the data's units as the
        VI's are, padded components at weight 0 (mean 0, unit covariance);
        the diagnostics per class, padded with NaN; one warning naming the
        classes whose chains look unconverged."""
        device, std = self.device_, data.std
        X, weight = data.float64_frame(device)
        C, K, D = self.means_.shape
        settings = post_module.PosteriorSettings(
            "nuts", n_samples=self._n_draws("nuts"),
            n_chains=V.check_int("n_chains", self.n_chains, 1),
            n_warmup=V.check_int("n_warmup", self.n_warmup, 0), progress=bool(s.progress))
        S = settings.kept
        seed = post_module.stream_seed(seed, C * settings.n_chains)
        neutral = family.covariances(family.identity((C, S), K, D, torch.float64, "cpu")).numpy()
        out = {"weights": np.zeros((C, S, K)), "means": np.zeros((C, S, K, D)),
               "covariances": neutral.copy()}
        shapes = {"weights": (C, K), "means": (C, K, D), "covariances": self.covariances_.shape}
        rhat = {name: np.full(shape, np.nan) for name, shape in shapes.items()}
        ess = {name: np.full(shape, np.nan) for name, shape in shapes.items()}
        n_div = np.zeros(C, dtype=np.int64)
        problems = []
        pt64 = pt.to(torch.float64)
        labels = torch.as_tensor(yi, device=device)
        for c in range(C):
            k = int(self.n_components_[c])
            rows = labels == c
            p = params.select(c).map(lambda t: t.detach().to(torch.float64))
            w = p.weights[:k] / p.weights[:k].sum()
            start = MixtureParams(w, p.means[:k], p.cov[:k] if family.per_component else p.cov)
            cov_c = self.covariances_[c]
            reference = (self.weights_[c, :k], self.means_[c, :k],
                         cov_c[:k] if family.per_component else cov_c)
            # stacklevel: run, here, _fit, the fit wrapper, fit, then the caller.
            post = post_module.run(X[rows], pt64.with_concentration(pt64.concentration[:k]),
                                   family, start, std, reference, settings,
                                   seed + c * settings.n_chains,
                                   None if weight is None else weight[rows], stacklevel=6,
                                   warn=False)
            problems += [f"class {_label(self.classes_[c])!r}: {p}" for p in post.problems]
            for name in shapes:       # the class's K components (a tied matrix whole)
                at = slice(0, k) if name != "covariances" or family.per_component else slice(None)
                out[name][c][:, at] = post.samples[name]
                rhat[name][c][at] = post.rhat[name]
                ess[name][c][at] = post.ess[name]
            n_div[c] = int(post.n_divergent)
        if problems:      # stacklevel: here, _fit, the fit wrapper, fit, then the caller
            post_module.warn_convergence(problems, stacklevel=5)
        self._posterior = out
        self.rhat_, self.ess_, self.n_divergent_ = rhat, ess, n_div

    def _fit_posterior(self, data, yi: np.ndarray, family, params: MixtureParams,
                       mask: torch.Tensor, pt, ll_offset: np.ndarray, seed: int, s) -> None:
        """Every class's variational posterior from its MAP, all classes in
        one batch, in float64 in the fit's standardised frame; draws kept in
        the data's units ({"weights": (C, S, K), "means": (C, S, K, D),
        "covariances": (C, S, ...)}, padded components at weight 0)."""
        device, std = self.device_, data.std
        X, weight = data.float64_frame(device)
        C = self.classes_.size
        groups = Groups.from_labels(X, torch.as_tensor(yi, device=device), C, weight)
        res = cavi(groups, params.map(lambda t: t.detach().to(torch.float64)),
                   pt.to(torch.float64), family,
                   "dirichlet", s.max_iter, s.tol, mask=mask)
        if not res.converged:
            warn_unconverged(res.n_iter, s.tol, 5, "the ELBO of a class")
        seed = post_module.stream_seed(seed)
        draws = res.q.sample(self._n_draws("vi"), family, seed)
        self._posterior = post_module.to_data_units(draws, std, family)
        self.elbo_ = res.elbo.double().cpu().numpy() - ll_offset
        self.n_effective_components_ = effective_components(res.counts.cpu().numpy())

    # ------------------------------------------------------ posterior draws
    _DRAW_AXIS = 1        # (C, S, ...): the class axis first

    def _public_draws(self) -> dict:
        """The stored draws with padded components as the fitted attributes
        hold them: weight 0, NaN means and covariances."""
        draws = self._draws()
        C, K = self.weights_.shape
        real = np.arange(K)[None, :] < self.n_components_[:, None]          # (C, K)
        out = {"weights": draws["weights"],
               "means": np.where(real[:, None, :, None], draws["means"], np.nan)}
        cov = draws["covariances"]
        if self._family().per_component:
            cov = np.where(real.reshape((C, 1, K) + (1,) * (cov.ndim - 3)), cov, np.nan)
        out["covariances"] = cov
        return out

    # -------------------------------------------------------- prediction
    def _model_frame(self, device: torch.device, plug_in: bool = False):
        """The fitted class mixtures as standardised float32 tensors (batch
        (C,)) with the frame's Jacobian offset, padded components neutral;
        after ``inference="vi"`` or "nuts" (unless ``plug_in``) every class's posterior
        predictive, its S draws of K components as one mixture of S K
        (:func:`bayesgmm.posterior.predictive_mixture`)."""
        family, w, m, cov, real = self._class_mixtures(plug_in)
        std, params, offset = self._frame(device, w, m, cov, family,
                                          self.class_prior_[:, None] * w, real)
        return family, std, params, offset

    def _class_mixtures(self, plug_in: bool) -> tuple:
        """(family, weights (C, M), means (C, M, D), covariances, real
        components (C, M)) of every class: its fitted mixture (M = K), or
        after ``inference="vi"``/"nuts" (unless ``plug_in``) its posterior
        predictive, S draws of K components as one mixture of M = S K
        (:func:`bayesgmm.posterior.predictive_mixture`, whose family is full
        for a tied fit).  A padded component's covariance is finite (the
        fitted attributes hold NaN there); its mean may stay NaN."""
        V.check_bool("plug_in", plug_in)
        family = self._family()
        C, K, D = self.means_.shape
        real = np.arange(K)[None, :] < self.n_components_[:, None]
        draws = getattr(self, "_posterior", None)
        if draws is not None and not plug_in:
            w, m, cov, family = post_module.predictive_mixture(draws, family)
            return family, w, m, cov, np.tile(real, (1, draws["weights"].shape[1]))
        cov = self.covariances_
        if family.per_component:
            # Padded entries are NaN: any finite stand-in (weight 0, masked).
            neutral = family.covariances(family.identity((C,), K, D, torch.float64,
                                                         "cpu")).numpy()
            cov = np.where(real.reshape(real.shape + (1,) * (cov.ndim - 2)), cov, neutral)
        return family, self.weights_, self.means_, cov, real

    def _scores(self, X, kind: str, plug_in: bool = False):
        """The one prediction loop.  ``kind``: "class_ll" (log p(x | c)),
        "joint" (+ log p(c)), "log_proba" (normalised), "density" (log p(x),
        the joint summed over the classes: shape (N,)) or "label" (argmax).

        Rows go through in blocks (bounded memory at any N); each block is
        standardised on the model's device and scored by
        :func:`bayesgmm.fitting.mixture_log_likelihood`, compiled into one
        fused kernel for large blocks on CUDA.  Array-likes give numpy
        outputs; a tensor gives tensors on its own device (labels as a
        tensor when the classes are numbers, else a numpy array of labels)."""
        check_is_fitted(self, ("weights_", "means_", "covariances_", "classes_"))
        X, out_device = _predict.check_input(self, X)
        allow_missing = V.allows_missing(self)
        device = _predict.model_device(self)
        family, std, params, offset = self._model_frame(device, plug_in)
        C, K = params.weights.shape
        D = X.shape[1]
        eager_rows = max(1, _predict.CHUNK_ELEMENTS // (C * K * D))
        rows = _predict.block_rows(device, eager_rows)
        add = torch.as_tensor(-offset + (np.log(self.class_prior_) if kind != "class_ll" else 0.0),
                              dtype=torch.float64, device=device).expand(C)
        n = X.shape[0]
        classes = self.classes_
        if kind != "label":
            out = _predict.new_output(out_device, (n,) if kind == "density" else (n, C),
                                      np.float64)
        elif out_device is not None and classes.dtype.kind in "iufb":
            # Labels mapped block by block: no (N,) index array beside the output.
            classes = torch.as_tensor(classes, device=device)
            out = torch.empty(n, dtype=classes.dtype, device=out_device)
        else:
            out = np.empty(n, dtype=classes.dtype)
        key = ("class_scores", type(family).__name__, family.name, C, K, D, params.weights.dtype)
        # The precision factors (a Cholesky for full/tied) once, outside the
        # per-block kernel, which torch.compile then traces without a break.
        args = (params.weights, params.means, params.cov, family.precision_factor(params.cov))
        kernel = _kernel(family, D)
        far = _predict.FarPoints(params, family, std)
        missing = _predict.MissingRows(params, family, std)
        with torch.no_grad():
            for a, b, z, raw in _predict.blocks(X, rows, device, std.center, std.scale,
                                                params.weights.dtype, allow_missing):
                zc, miss, corr = _predict.split_missing(z, allow_missing, std.scale)
                j = _predict.run_kernel(kernel, key, zc, args, eager_rows).double()
                if miss is not None:     # rows with missing features: their observed ones
                    j[miss], lead_miss = missing.scores(raw[miss], per_class=True)
                # j + lead are the class scores (lead is 0 but for far points).
                lead = far.patch(zc, raw, j, per_class=True, exclude=miss)
                if miss is not None:
                    lead[miss] += corr + lead_miss
                j = j + add
                if kind in ("class_ll", "joint"):
                    j = j + lead.unsqueeze(-1)
                elif kind == "density":
                    j = torch.logsumexp(j, 1) + lead
                elif kind == "log_proba":
                    j = j - torch.logsumexp(j, 1, keepdim=True)
                elif kind == "label":
                    j = j.argmax(1)
                    j = classes[j] if isinstance(classes, torch.Tensor) else classes[j.cpu().numpy()]
                _predict.put(out, slice(a, b), j)
        return out

    def class_log_likelihood(self, X, *, plug_in: bool = False) -> np.ndarray:
        """log p(x | class c) of every point under every class's mixture, in
        the data's units, shape (n_samples, n_classes) (columns in the order of
        ``classes_``).

        The one log-probability primitive behind every prediction method:
        :func:`bayesgmm.fitting.mixture_log_likelihood` (one
        ``component_log_prob`` call over all classes), over blocks of rows so
        that memory stays bounded for any number of points.  Like every
        prediction method it takes array-likes (numpy output) or a torch
        tensor (output on the tensor's device).  After ``inference="vi"``
        or "nuts" the posterior predictive log p(x | c, X_c); ``plug_in=True``: the
        MAP's (as every prediction method)."""
        return self._scores(X, "class_ll", plug_in)

    def score_samples(self, X, *, plug_in: bool = False) -> np.ndarray:
        """log p(x) of each point under the whole generative model, the
        class mixtures weighted by the class priors: log sum_c p(c) p(x | c),
        shape (n_samples,), in the data's units (as
        :meth:`BayesianGMM.score_samples` for one mixture).  Low values mark
        points unlike every class (novelty and outlier screening), which
        :meth:`predict_proba` cannot: it is normalised over the classes.
        After ``inference="vi"``/"nuts" each class's posterior predictive;
        ``plug_in=True`` the MAP's.  Missing features (with
        ``missing="marginalize"``) are marginalised, as in every prediction
        method."""
        return self._scores(X, "density", plug_in)

    def sample(self, n_samples: int = 1, random_state=None, *,
               plug_in: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Draw labelled points from the fitted generative model: a class
        from ``class_prior_``, then a point from that class's mixture (after
        ``inference="vi"``/"nuts" its posterior predictive, the density
        :meth:`score_samples` and :meth:`class_log_likelihood` give;
        ``plug_in=True``: the MAP's), by running the Pyro model at those
        parameters, as :meth:`BayesianGMM.sample` does for one mixture: the
        classes' components are one mixture of weights p(c) w_ck.  Seeded
        by ``random_state`` (default: the estimator's); the caller's global
        RNGs are left untouched.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The class labels, of ``classes_``'s type.
        """
        check_is_fitted(self, ("weights_", "means_", "covariances_", "classes_"))
        n_samples = V.check_int("n_samples", n_samples, 1)
        joint, m, cov, family, real = self._joint_mixture(plug_in)
        M = real.size // self.classes_.size
        m = np.where(real[..., None], m, 0.0)      # padded (weight 0, never drawn): finite
        rs = V.check_random_state(self.random_state if random_state is None else random_state)
        X, j = sample_mixture(joint, m, cov, family, self.priors_[0], n_samples, rs,
                              _predict.model_device(self))
        return X, self.classes_[j // M]

    def _joint_mixture(self, plug_in: bool) -> tuple:
        """The whole generative model as one mixture of C M components,
        component (c, k) at c M + k with weight p(c) w_ck: (weights (C M,),
        means (C M, D), covariances, family, real components (C M,)).  Tied
        covariances (one matrix per class) become full ones, per component."""
        family, w, m, cov, real = self._class_mixtures(plug_in)
        C, M, D = m.shape
        if not family.per_component:
            cov = np.broadcast_to(cov[:, None], (C, M, D, D))
            family = cov_module.get("full", D)
        joint = np.where(real, self.class_prior_[:, None] * w, 0.0).reshape(C * M)
        return (joint / joint.sum(), m.reshape(C * M, D), cov.reshape((C * M,) + cov.shape[2:]),
                family, real.reshape(C * M))

    def impute(self, X, y=None, *, sample: bool = False, random_state=None,
               plug_in: bool = False):
        """``X`` with its missing entries (NaN) filled in under the fitted
        generative model, as an array (a DataFrame for a DataFrame, same
        index and columns; a float64 tensor on its device for a tensor);
        observed entries are returned unchanged.

        Without ``y``, under the whole model, the classes' mixtures weighted
        by ``class_prior_`` (the mixture :meth:`score_samples` scores): the
        observed features inform which class, and which component, a row
        belongs to.  With ``y`` (one label of ``classes_`` per row), each
        row under its own class's mixture, p(x_m | x_o, y).

        Each missing entry gets its conditional mean E[x_m | x_o] (the best
        fill in squared error under the model) or, with ``sample=True``, a
        draw from p(x_m | x_o), seeded by ``random_state`` (default: the
        estimator's), as :meth:`BayesianGMM.impute`.  After
        ``inference="vi"``/"nuts" the classes' posterior predictives;
        ``plug_in=True`` the MAP's.  Works whatever ``missing`` was at fit
        time.  A row with every feature missing gets the mean (or a draw)
        of the whole model, or with ``y`` of its class's mixture."""
        check_is_fitted(self, ("weights_", "means_", "covariances_", "classes_"))
        if y is None:
            joint = self._joint_mixture(plug_in)
            return self._impute(X, sample, random_state,
                                lambda rows, _: [(np.arange(rows.size), joint)])
        family, w, m, cov, real = self._class_mixtures(plug_in)

        def per_class(rows, Xv):
            labels = self._encode_known(Xv, y)[rows]
            return [(np.flatnonzero(labels == c), (w[c], m[c], cov[c], family, real[c]))
                    for c in range(self.classes_.size)]

        return self._impute(X, sample, random_state, per_class)

    def predict_log_proba(self, X, *, plug_in: bool = False) -> np.ndarray:
        """log p(class | x), shape (n_samples, n_classes)."""
        return self._scores(X, "log_proba", plug_in)

    def predict_proba(self, X, *, plug_in: bool = False) -> np.ndarray:
        """p(class | x), shape (n_samples, n_classes)."""
        lp = self.predict_log_proba(X, plug_in=plug_in)
        return lp.exp_() if isinstance(lp, torch.Tensor) else np.exp(lp, out=lp)

    def decision_function(self, X, *, plug_in: bool = False) -> np.ndarray:
        """The class logits log p(x | c) + log p(c), shape (n_samples, n_classes);
        for two classes, as scikit-learn expects, the log-odds of
        ``classes_[1]`` against ``classes_[0]``, shape (n_samples,)."""
        check_is_fitted(self, ("weights_", "means_", "covariances_", "classes_"))
        if len(self.classes_) == 2:
            # From the normalised scores: equal to the difference of the
            # logits, and a number (or +-inf) even where both logits are
            # below the float64 range (points extremely far from the data).
            lp = self._scores(X, "log_proba", plug_in)
            return lp[:, 1] - lp[:, 0]
        return self._scores(X, "joint", plug_in)

    def predict(self, X, *, plug_in: bool = False) -> np.ndarray:
        """The label maximising log p(x | c) + log p(c)."""
        return self._scores(X, "label", plug_in)

    def score(self, X, y, sample_weight=None, *, plug_in: bool = False) -> float:
        """Accuracy of :meth:`predict` on ``y`` (scikit-learn's), weighted
        by ``sample_weight``, checked as ``fit`` checks it (finite, >= 0,
        not all 0; tensors taken as they are by ``fit``); ``plug_in`` as in
        :meth:`predict`."""
        from sklearn.metrics import accuracy_score

        pred = self.predict(X, plug_in=plug_in)   # checks X first, with the library's errors
        # Tensors in give labels on their device: scikit-learn's metric takes
        # host arrays (a CUDA tensor refuses numpy's conversion).
        if isinstance(pred, torch.Tensor):
            pred = pred.cpu().numpy()
        y = _label_array(y)
        flat = np.asarray(y)
        if flat.ndim > 1 and not (flat.ndim == 2 and flat.shape[1] == 1):
            raise ValueError(f"y must hold one label per row (1-D), got an array of shape "
                             f"{flat.shape}: give one column of labels, e.g. y[:, 0]")
        _check_label_count(len(pred), _num_labels(flat))
        flat = flat.reshape(-1)
        _check_label_values(flat)
        if _label_kind(flat) != _label_kind(self.classes_):
            fitted = {"text": "text", "number": "numbers"}[_label_kind(self.classes_)]
            raise ValueError(f"y holds {_label_kind(flat)} labels, but the model's "
                             f"classes_ are {fitted} "
                             f"({self.classes_[:5].tolist()!r}): give labels of the classes "
                             f"it was fitted on")
        w = V.check_sample_weight(sample_weight, len(pred))
        return float(accuracy_score(y, pred, sample_weight=w))


_KERNELS: dict = {}


def _kernel(family, n_features: int):
    """The per-point prediction kernel of a covariance family, log p(z | c)
    for standardised points z (n, D) -> (n, C); one function object per
    (family kind, D), so that the compiled kernel is cached
    (:func:`_predict.run_kernel`) and never reused for another family."""
    key = (type(family).__name__, family.name, n_features)
    if key not in _KERNELS:
        def scores(z, weights, means, cov, factor):
            return mixture_log_likelihood(z, MixtureParams(weights, means, cov), family, factor)
        _KERNELS[key] = scores
    return _KERNELS[key]


def _given_classes(classes) -> np.ndarray:
    """``partial_fit``'s ``classes`` argument as sorted distinct labels."""
    if isinstance(classes, torch.Tensor):
        classes = classes.detach().cpu().numpy()
    return np.unique(np.asarray(classes).ravel())


def _label_array(y) -> np.ndarray:
    """``y`` as an array (tensors from their device; pandas objects kept,
    for scikit-learn's conversion of their nullable types), refusing ragged
    nesting (numpy's error spoke of an "inhomogeneous shape") and complex
    numbers by name."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if type(y).__module__.split(".")[0] == "pandas":
        # Kept for scikit-learn, which converts pandas' nullable types
        # (np.asarray made an Int64 Series an object array of ints before
        # pandas 2.2: "Unknown label type").
        if getattr(getattr(y, "dtype", None), "kind", "") == "c":
            raise ValueError("y holds complex numbers: class labels are integers or text; "
                             "encode the classes as such")
        return y
    try:
        y = np.asarray(y)
    except ValueError:
        raise ValueError(f"y must hold one label per row (a 1-D array-like), got "
                         f"{type(y).__name__} of rows of different lengths: give one label per "
                         f"row of X") from None
    if y.dtype.kind == "c":       # scikit-learn's refusal printed every value
        raise ValueError(f"y holds complex numbers (e.g. {y.reshape(-1)[0]}): class labels "
                         f"are integers or text; encode the classes as such")
    return y


def _num_labels(y) -> int:
    """How many labels ``y`` holds (a scalar counts as one)."""
    return int(np.shape(y)[0]) if np.ndim(y) else 1


def _check_label_count(n_rows: int, n_labels: int) -> None:
    if n_labels != n_rows:
        raise ValueError(f"y has {n_labels} label(s) but X has {n_rows} row(s): give one "
                         f"label per row of X (found input variables with inconsistent numbers "
                         f"of samples: [{n_rows}, {n_labels}])")


def _largest_k(n_components) -> Optional[int]:
    """The largest K ``n_components`` asks for where it names them (an int,
    or a list, array or dict of ints); None for "auto" (or anything else)."""
    values = (list(n_components.values()) if isinstance(n_components, Mapping)
              else [n_components] if isinstance(n_components, numbers.Integral)
              else np.ravel(n_components).tolist() if isinstance(n_components, np.ndarray)
              else list(n_components) if isinstance(n_components, (list, tuple))
              else [])
    if values and all(isinstance(v, numbers.Integral) for v in values):
        return int(max(values))
    return None


def _warn_class_constant(X: np.ndarray, yi: np.ndarray, classes: np.ndarray,
                         constant: Optional[np.ndarray], family, ks: np.ndarray,
                         names) -> None:
    """One ``UserWarning`` naming the classes of more than one diag or full
    component in which a feature holds one observed value (but not in
    every class: that one :func:`warn_constant_features` names): there its
    fitted variance is the prior's floor, which narrows as a component's
    weight grows, so the heavier component gets a bonus on every row of the
    class and one can take them all (two blobs at +-1.5 in a class with a
    constant third column: one component of weight 1 in about half the
    seeds).  In-memory fits in one process only (``X`` the kept rows, NaN
    where missing; ``yi`` their class indices): out-of-core and
    multi-process fits are not checked."""
    if family.name not in ("diag", "full") or not (ks > 1).any():
        return
    # Each class's value range in one pass, without copying its rows
    # (missing entries out of it, as value_range takes them).
    T = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
    N, D = T.shape
    C = classes.size
    index = torch.from_numpy(np.asarray(yi, dtype=np.int64)).unsqueeze(1).expand(N, D)
    nan = torch.isnan(T)
    has_nan = bool(nan.any())
    lo = torch.full((C, D), math.inf, dtype=T.dtype, device=T.device).scatter_reduce(
        0, index, torch.where(nan, math.inf, T) if has_nan else T, "amin")
    hi = torch.full((C, D), -math.inf, dtype=T.dtype, device=T.device).scatter_reduce(
        0, index, torch.where(nan, -math.inf, T) if has_nan else T, "amax")
    rows = np.bincount(yi, minlength=C)
    same = ((lo == hi) & torch.isfinite(lo)).numpy() & (rows >= 2)[:, None] & (ks > 1)[:, None]
    if constant is not None:
        same &= ~constant[None, :]
    found = [(c, np.flatnonzero(same[c])) for c in np.flatnonzero(same.any(1))]
    if not found:
        return
    said = "; ".join(f"class {_label(classes[c])!r}: "
                     + ", ".join(feature_label(names, j) for j in js[:10])
                     + (f" and {js.size - 10} more" if js.size > 10 else "")
                     for c, js in found[:10])
    warnings.warn(
        f"GMMClassifier: feature(s) hold one observed value in every row of a class fitted "
        f"with several components ({said}): with covariance_type={family.name!r} its fitted "
        f"variance is the prior's floor, which narrows as a component's weight grows, so the "
        f"heavier component gets a bonus on every row of the class and one can take them all "
        f"(see n_effective_components_); give that class n_components=1 (n_components="
        f"{{label: k}}), or use covariance_type='tied' or 'spherical'", UserWarning,
        stacklevel=5)


def _check_label_values(y: np.ndarray) -> None:
    """Labels (1-D) with a missing, NaN or infinite value, or an object array
    mixing text and numbers, are refused by name: scikit-learn's checks
    cast NaN to an integer (a RuntimeWarning) before refusing it, call a
    mix of text and numbers "Unknown label type: unknown ... a regression
    target", and its accuracy fails to sort either (a TypeError)."""
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
    elif y.dtype.kind == "O":
        import pandas as pd
        bad = np.flatnonzero(pd.isna(y))
    else:
        bad = np.zeros(0, dtype=np.intp)
    if bad.size:
        raise ValueError(
            f"y holds {bad.size} missing, NaN or infinite label(s) (first at row "
            f"{int(bad[0])}: {str(y[bad[0]])}): every row needs a class label; drop the "
            f"unlabelled rows, or fit BayesianGMM to them without labels")
    if y.dtype.kind != "O":
        return
    text = np.fromiter(map(is_text, y), bool, y.shape[0])
    if text.any() and not text.all():
        i, j = int(np.argmax(~text)), int(np.argmax(text))
        raise ValueError(f"y mixes text and numbers (row {i}: {y[i]!r}, row {j}: {y[j]!r}): "
                         f"give labels of one type, e.g. y.astype(str)")


def _label_kind(labels: np.ndarray) -> str:
    """"text" for string labels (an object array holding any), else "number"."""
    if labels.dtype.kind in "US":
        return "text"
    if labels.dtype.kind == "O" and any(map(is_text, labels)):
        return "text"
    return "number"


def _check_label_kinds(parts: list) -> None:
    """Every rank's labels (``parts``, in rank order) are all text or all
    numbers: a union of both would make every class a string (0 and "0"
    one class, its predictions "0" where that rank's y holds 0), so that a
    rank comparing ``predict`` with its own y matches nothing.  The same
    check on every rank: all raise together."""
    kinds = [(r, _label_kind(p), p) for r, p in enumerate(parts) if p.size]
    if len({k for _, k, _ in kinds}) > 1:
        said = "; ".join(f"rank {r}: {k} labels ({p.dtype}, e.g. {_label(p[0])!r})"
                         for r, k, p in kinds)
        raise ValueError(
            f"the processes' y labels mix text and numbers ({said}): the classes would all "
            f"become strings, and a rank with numeric y would get string predictions; give "
            f"every rank labels of one type written the same way (all integers, or all "
            f"strings made by one rule: 0.0 and 0 become the strings '0.0' and '0')")


def _label(value):
    """A label as a plain Python value, for readable error messages."""
    return value.item() if isinstance(value, np.generic) else value


def _keyed_by_label(value) -> bool:
    """Whether a per-class parameter is given by label: a dict or a pandas
    Series indexed by label."""
    import pandas as pd
    return isinstance(value, (Mapping, pd.Series))


def _by_label(name: str, mapping, classes: np.ndarray) -> list:
    """``mapping``'s values (a dict or a Series, :func:`_keyed_by_label`)
    in the order of ``classes`` (labels absent from ``classes`` are
    ignored, so one mapping serves every cross-validation fold), or an
    error naming the classes it lacks."""
    if not isinstance(mapping, Mapping):
        mapping = mapping.to_dict()
    missing = [_label(c) for c in classes if c not in mapping]
    if missing:
        hint = ""
        keys = [_label(k) for k in mapping]
        if (len(missing) == len(classes) and classes.dtype.kind in "iu"
                and np.array_equal(classes, np.arange(len(classes)))
                and len(keys) == len(classes)):
            # scikit-learn's cross_val_predict re-encodes y as 0..C-1 before
            # each fit for predict_proba, predict_log_proba and
            # decision_function: a dict keyed by the user's labels misses.
            try:
                ordered = [mapping[k] for k in sorted(mapping)]
            except TypeError:
                ordered = None
            hint = (f"; y holds 0..{len(classes) - 1} while the dict is keyed by {keys!r}, as "
                    f"when scikit-learn's cross_val_predict(method='predict_proba', "
                    f"'predict_log_proba' or 'decision_function') re-encodes the labels before "
                    f"each fit: give a list in sorted-label order"
                    + (f" ({name}={ordered!r})" if ordered is not None else ""))
        raise ValueError(f"{name} is a dict without an entry for class(es) {missing!r}: give a "
                         f"value for every label in y (classes {classes.tolist()!r}){hint}")
    return [mapping[c] for c in classes]
