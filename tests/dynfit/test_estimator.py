"""dynfit.Estimator: fit / predict / simulate / score, and scikit-learn's check_estimator
where it applies."""

import numpy as np
import pytest

from dynfit.estimator import Estimator

FAST = dict(field={"kind": "mlp", "width": 4, "depth": 1}, epochs=1, prefit=False,
            options={"lbfgs_iterations": 2})

# fit's second argument is the sampling step or the sample times, not a target y: every check that
# passes labels or regression targets as y gets "the sample times t must increase uniformly" (a
# clear error), so these checks cannot apply; a few more check error wording after such a fit.
NOT_APPLICABLE = {
    "check_fit_score_takes_y",
    "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self",
    "check_readonly_memmap_input",
    "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit",
    "check_estimators_dtypes",
    "check_dtype_object",
    "check_estimators_empty_data_messages",
    "check_pipeline_consistency",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_regressors_train",
    "check_regressor_data_not_an_array",
    "check_regressors_no_decision_function",
    "check_supervised_y_2d",
    "check_regressors_int",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_fit2d_1feature",
    "check_dict_unchanged",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_fit2d_predict1d",
    "check_array_api_input",
}


def _oscillator(n=200, dt=0.05):
    t = np.arange(n) * dt
    return np.stack([np.cos(t), -np.sin(t)], axis=1), t


@pytest.mark.slow
def test_fit_predict_simulate_score(one_thread):
    X, t = _oscillator()
    est = Estimator(**{**FAST, "options": {"lbfgs_iterations": 20}}).fit(X, t)
    assert est.dt_ == pytest.approx(0.05) and est.n_features_in_ == 2
    pred = est.predict(X[:-1])
    assert pred.shape == (199, 2)
    assert est.score(X, 0.05) > 0.99  # one-step R^2 of a smooth rotation
    run = est.simulate(X[0], 10)
    assert run.shape == (10, 2) and np.allclose(run[0], X[0])
    assert est.simulate(X[:3], t[:5]).shape == (3, 5, 2)
    with pytest.raises(ValueError, match="fitted at dt"):
        est.score(X, 0.1)
    with pytest.raises(ValueError, match="3 features"):
        est.predict(np.zeros((2, 3)))


def test_bad_inputs_are_clear():
    X, t = _oscillator(20)
    with pytest.raises(ValueError, match="carries no sampling step"):
        Estimator(**FAST).fit(X)
    with pytest.raises(ValueError, match="increase uniformly"):
        Estimator(**FAST).fit(X, t[::-1])
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        Estimator().set_params(nope=1)
    with pytest.raises(Exception, match="not fitted"):
        Estimator().predict(X)


def test_check_estimator_where_it_applies(one_thread):
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_estimator

    est = Estimator(**FAST)
    assert clone(est).get_params() == est.get_params()
    results = check_estimator(est, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed <= NOT_APPLICABLE, sorted(failed - NOT_APPLICABLE)
    assert {"check_parameters_default_constructible", "check_get_params_invariance",
            "check_set_params", "check_estimators_unfitted", "check_no_attributes_set_in_init",
            "check_complex_data", "check_estimator_sparse_array", "check_fit2d_1sample"} <= passed
