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
