"""scikit-learn's own estimator checks on BayesianGMM."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from bayesgmm import BayesianGMM

# Checks expected to fail, each with the reason.
EXPECTED_FAILURES = {
    "check_fit1d": "1-D input is documented as one feature (n_samples, 1), as in the Pyro "
                   "iris study, instead of being rejected",
}


@parametrize_with_checks(
    [BayesianGMM(n_components=2, n_init=1, max_iter=50, device="cpu")],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_one_prior_is_a_nested_parameter_for_searches():
    """priors__<field> names one field of the priors, as a kernel's
    parameters are named in GaussianProcessRegressor: set_params replaces
    that field in a copy (of Priors() when priors is None), the Priors
    given before is left as it was, and GridSearchCV tunes one prior for
    either estimator."""
    import numpy as np
    import pytest
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    from bayesgmm import GMMClassifier, Priors
    from bayesgmm.datasets import load_iris

    est = BayesianGMM(2).set_params(priors__weight_concentration=3.0)
    assert est.priors == Priors(weight_concentration=3.0)
    shared = Priors(scale_shape=2.0)
    est = BayesianGMM(2, priors=shared)
    est.set_params(priors__weight_concentration=3.0, n_init=2)
    assert est.priors == Priors(weight_concentration=3.0, scale_shape=2.0) and est.n_init == 2
    assert shared == Priors(scale_shape=2.0)
    # priors= and priors__ together: the field replaced in the priors given.
    est.set_params(priors=Priors(mean_scale=1.0), priors__scale_rate=0.5)
    assert est.priors == Priors(mean_scale=1.0, scale_rate=0.5)
    # get_params lists priors whole, so that the constructor takes it back.
    assert BayesianGMM(**est.get_params(deep=True)).priors == est.priors
    assert clone(est).priors == Priors(mean_scale=1.0, scale_rate=0.5)
    with pytest.raises(ValueError, match=r"Invalid parameter priors__concentration for "
                                         r"estimator BayesianGMM: Priors has no field "
                                         r"'concentration'; its fields are \['weight_concentration'"):
        est.set_params(priors__concentration=1.0)
    with pytest.raises(ValueError, match=r"priors is \{'a': 1\}: set priors to a bayesgmm.Priors"):
        BayesianGMM(priors={"a": 1}).set_params(priors__scale_rate=1.0)

    iris = load_iris()
    X, y = iris[["petal_length", "petal_width"]].to_numpy(), iris["species"].to_numpy()
    grid = {"priors__weight_concentration": [1.0, 50.0]}
    search = GridSearchCV(BayesianGMM(3, n_init=1, max_iter=0, device="cpu", random_state=0),
                          grid, cv=3).fit(X)
    scores = search.cv_results_["mean_test_score"]
    # The two settings are two different fits (a concentration of 50 pulls
    # the weights toward equal), each the fit set_params describes.
    assert scores[0] != scores[1]
    one = BayesianGMM(3, n_init=1, max_iter=0, device="cpu", random_state=0,
                      priors=Priors(weight_concentration=50.0)).fit(X)
    refit = clone(search.estimator).set_params(priors__weight_concentration=50.0).fit(X)
    np.testing.assert_array_equal(refit.means_, one.means_)
    search = GridSearchCV(GMMClassifier(2, n_init=1, max_iter=0, device="cpu", random_state=0),
                          grid, cv=3).fit(X, y)
    assert search.best_estimator_.priors.weight_concentration in (1.0, 50.0)


def test_priors_repr_shows_the_fields_given():
    import numpy as np

    from bayesgmm import Priors

    assert repr(Priors()) == "Priors()"
    assert repr(Priors(weight_concentration=2.0, covariance_dof=5)) == \
        "Priors(weight_concentration=2.0, covariance_dof=5)"
    assert repr(Priors(mean_loc=np.array([1.0, 2.0]))) == "Priors(mean_loc=array([1., 2.]))"
    assert repr(BayesianGMM(3, priors=Priors(scale_rate=0.5))) == \
        "BayesianGMM(n_components=3, priors=Priors(scale_rate=0.5))"


def test_check_estimator_with_auto_components_fails_only_the_documented_checks():
    """n_components="auto" (GMMClassifier's default): besides check_fit1d,
    the checks that call partial_fit on an unfitted estimator fail, because
    a first partial_fit with "auto" is refused (it would choose K from one
    chunk; the README lists them): exactly those, for that reason."""
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    from bayesgmm import GMMClassifier

    cases = ((GMMClassifier(n_init=1, em_max_iter=50, max_iter=0, device="cpu", dtype="float64"),
              {"check_n_features_in_after_fitting", "check_estimators_partial_fit_n_features"}),
             (BayesianGMM("auto", n_init=1, max_iter=50, device="cpu", dtype="float64"),
              {"check_n_features_in_after_fitting"}))
    for est, partial in cases:
        assert est.get_params()["n_components"] == "auto"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = check_estimator(est, on_fail=None)
        failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
        assert set(failed) == partial | {"check_fit1d"}, sorted(failed)
        for name in partial:
            assert "partial_fit starts with a fit of its first chunk, and n_components='auto'" \
                in str(failed[name]), (name, failed[name])
