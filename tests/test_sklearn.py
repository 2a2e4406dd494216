"""The scikit-learn estimators: scikit-learn's own checks, pipelines, grid search, pickling,
and the same weights as the library's training function."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import medalpy  # noqa: E402
from medalpy.sklearn import DAEClassifier, DenoisingAutoencoder, validation_split  # noqa: E402

SMALL = dict(hidden_layer_sizes=(6, 4), epochs_layer1=2, budget=1, random_state=0,
             backend="numpy")
CLASSIFIER = dict(classifier_epochs=60, classifier_patience=20)

#: scikit-learn checks that feed data outside [0, 1] (make_blobs, normal draws, X + 1...):
#: the estimators refuse them, so the checks fail on that refusal. Each runs again, inside
#: MinMaxScaler(clip=True), in test_checks_in_a_pipeline.
OUTSIDE_THE_DOMAIN = {
    "check_estimators_dtypes", "check_fit_score_takes_y", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_pipeline_consistency", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_transformer_general",
    "check_transformer_preserve_dtypes", "check_transformer_n_iter",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_dont_overwrite_parameters", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_estimators_overwrite_params",
    "check_n_features_in_after_fitting", "check_transformer_data_not_an_array",
    "check_classifiers_classes", "check_classifiers_train",
    "check_transformers_unfitted_stateless", "check_estimators_empty_data_messages",
    "check_positive_only_tag_during_fit",
}
#: Pipeline's own departures from the checks (Pipeline.fit fits its steps in place).
PIPELINE_OWN = {"check_estimators_overwrite_params", "check_dont_overwrite_parameters"}


def _failures(estimator):
    results = check_estimator(estimator, on_fail=None)
    return {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}


@pytest.mark.parametrize("estimator", [DenoisingAutoencoder(**SMALL),
                                       DAEClassifier(**SMALL, **CLASSIFIER)],
                         ids=["DenoisingAutoencoder", "DAEClassifier"])
def test_scikit_learn_checks_fail_only_outside_the_domain(estimator):
    failed = _failures(estimator)
    assert set(failed) <= OUTSIDE_THE_DOMAIN, sorted(set(failed) - OUTSIDE_THE_DOMAIN)
    for name, message in failed.items():
        assert "must hold values in [0, 1]" in message, (name, message[:300])


@pytest.mark.parametrize("estimator", [DenoisingAutoencoder(**SMALL),
                                       DAEClassifier(**SMALL, **CLASSIFIER)],
                         ids=["DenoisingAutoencoder", "DAEClassifier"])
def test_checks_in_a_pipeline(estimator):
    """With the data mapped into [0, 1], every check passes but Pipeline's own two."""
    failed = _failures(make_pipeline(MinMaxScaler(clip=True), estimator))
    assert set(failed) <= PIPELINE_OWN, {k: v[:300] for k, v in failed.items()}
    assert all("steps" in message for message in failed.values())


@pytest.fixture(scope="module")
def mnist():
    ds = medalpy.load_dataset("mnist-sample")
    return ds.train_images[:600], ds.train_labels[:600], ds.test_images[:300], \
        ds.test_labels[:300]


def test_same_weights_as_the_library_training_function(mnist):
    """The estimator trains exactly what build_trainer (what `medalpy train` runs) trains
    on the same training and validation rows, settings and seed."""
    X = mnist[0]
    est = DenoisingAutoencoder(hidden_layer_sizes=(30, 20), epochs_layer1=2, budget=2,
                               random_state=3).fit(X)
    train, val = validation_split(len(X), est.validation_fraction, 3)
    trainer = medalpy.build_trainer(est.to_config(), X[train], X[val])
    trainer.run()
    for ours, theirs in zip(est.coefs_ + est.intercepts_,
                            [layer.W for layer in trainer.network.encoders]
                            + [layer.b for layer in trainer.network.encoders]):
        assert ours.tobytes() == theirs.tobytes()
    assert len(est.history_) == 4 and est.phase_log_[0]["phase"] == "1:layer"


def test_transform_reconstruct_score(mnist):
    X, _, X_test, _ = mnist
    est = DenoisingAutoencoder(schedule="stacked", hidden_layer_sizes=(30, 20),
                               epochs_layer1=2, budget=1, random_state=0).fit(X)
    H = est.transform(X_test)
    assert H.shape == (300, 20) and 0 < H.min() and H.max() < 1
    np.testing.assert_array_equal(est.inverse_transform(H), est.reconstruct(X_test))
    assert est.score(X_test) == -medalpy.evaluate(est.network_, X_test, 0.15)["relative_ce"]
    # higher is better: the trained model scores above a barely trained one
    barely = DenoisingAutoencoder(schedule="stacked", hidden_layer_sizes=(30, 20),
                                  epochs_layer1=1, budget=1, learning_rate=1e-4,
                                  random_state=0).fit(X)
    assert est.score(X_test) > barely.score(X_test)
    assert list(est.get_feature_names_out()) == [f"denoisingautoencoder{i}" for i in range(20)]


def test_pickle_and_clone(mnist):
    X = mnist[0]
    est = DenoisingAutoencoder(schedule=("hybrid", 0.5), hidden_layer_sizes=(20, 10),
                               epochs_layer1=1, budget=2, random_state=1).fit(X)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.transform(X[:50]), est.transform(X[:50]))
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "coefs_")


def test_pipeline_and_grid_search(mnist):
    X, y, X_test, y_test = mnist
    pipe = make_pipeline(DenoisingAutoencoder(hidden_layer_sizes=(64,), epochs_layer1=3,
                                              random_state=0),
                         LogisticRegression(max_iter=300))
    assert pipe.fit(X, y).score(X_test, y_test) > 0.5  # chance: 0.1
    search = GridSearchCV(DAEClassifier(hidden_layer_sizes=(64,), epochs_layer1=2,
                                        classifier_epochs=15, random_state=0),
                          {"classifier_learning_rate": [0.1, 1e-4]}, cv=2).fit(X, y)
    assert search.best_params_ == {"classifier_learning_rate": 0.1}
    assert search.score(X_test, y_test) > 0.6
    proba = search.best_estimator_.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(search.best_estimator_.classes_) == set(range(10))


def test_random_initialisation_baseline_and_string_labels(mnist):
    X, y, X_test, y_test = mnist
    names = np.array(list("abcdefghij"))
    clf = DAEClassifier(schedule=None, hidden_layer_sizes=(32,), classifier_epochs=10,
                        random_state=0).fit(X, names[y])
    assert clf.pretrain_history_ == [] and set(clf.predict(X_test)) <= set(names)
    assert clf.score(X_test, names[y_test]) > 0.5


@pytest.mark.parametrize("X,message", [
    (np.full((10, 4), np.nan), "NaN"),
    (np.full((10, 4), 1.5), r"must hold values in \[0, 1\]"),
    (np.full((10, 4), -0.5), "Negative values"),
    (np.zeros(10), "2D array"),
    (np.zeros((1, 4)), "1 sample"),
])
def test_bad_inputs_are_clear_value_errors(X, message):
    with pytest.raises(ValueError, match=message):
        DenoisingAutoencoder(**SMALL).fit(X)


def test_bad_settings_are_value_errors_naming_them():
    X = np.random.default_rng(0).uniform(size=(20, 4))
    for params, message in (({"learning_rate": -1}, "lr must be positive"),
                            ({"schedule": "sideways"}, "method must be one of"),
                            ({"schedule": ("hybrid", 2)}, "fraction"),
                            ({"validation_fraction": 1.0}, "validation_fraction")):
        with pytest.raises(ValueError, match=message):
            DenoisingAutoencoder(**{**SMALL, **params}).fit(X)


def test_verbose_prints_the_trainers_progress(capsys):
    X = np.random.default_rng(0).uniform(size=(40, 4))
    DenoisingAutoencoder(**{**SMALL, "verbose": True}).fit(X)
    out = capsys.readouterr().out
    assert "phase 1/2 1:layer" in out and out.count(" epoch ") == 3


def test_validation_fraction_zero_keeps_the_last_epoch():
    X = np.random.default_rng(0).uniform(size=(40, 4))
    est = DenoisingAutoencoder(**{**SMALL, "validation_fraction": 0.0}).fit(X)
    assert [p["kept_epoch"] for p in est.phase_log_] == [2, 1]
    assert all(r["val_loss"] is None for r in est.history_)
