"""scikit-learn's own estimator checks for every estimator of the library.

Skipped by scikit-learn itself, with its reason in the pytest summary (``-ra``):
- ``check_array_api_input``: needs SCIPY_ARRAY_API=1 and an array-API library; our estimators
  take NumPy arrays (and torch CPU tensors through NumPy);
- ``check_regressor_data_not_an_array`` / ``check_classifier_data_not_an_array`` in their pandas
  variants: pandas is no dependency of ours (the NumPy-wrapper variant of the same check runs).
The exact-ReLU variants fit cone-constrained programs in every check and run in the slow set.
"""
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from convexgan import ConvexBatchNormReLU, ConvexQuadraticNet, ConvexReLU, ConvexReLUClassifier, ConvexThreeLayer
from layerwise.classifier import LayerwiseConvexClassifier

# small problems and iteration caps: the checks are about the API, each fits dozens of times
FAST = [ConvexReLU(activation="gated", n_patterns=16), ConvexReLUClassifier(activation="gated", n_patterns=16, max_iter=300),
        LayerwiseConvexClassifier(widths=(8, 8), max_iter=100), ConvexQuadraticNet(),
        ConvexThreeLayer(n_patterns=4, n_patterns_second=4)]
RELU = [ConvexReLU(n_patterns=8, max_iter=300), ConvexReLUClassifier(n_patterns=8, max_iter=300),
        ConvexBatchNormReLU(n_patterns=8, max_iter=300)]


def run(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose
        check(estimator)


@parametrize_with_checks(FAST)
def test_estimator_checks(estimator, check):
    run(estimator, check)


@pytest.mark.slow
@parametrize_with_checks(RELU)
def test_estimator_checks_exact_relu(estimator, check):
    run(estimator, check)
