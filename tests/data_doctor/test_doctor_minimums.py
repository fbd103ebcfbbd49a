"""The doctor's minimum is checked up front and named (issue 30): two images per class
used to pass, then its K-fold heads ended in scikit-learn's "n_splits cannot be greater
than the number of members in each class" (exit 1)."""

import importlib

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import DataError
from transferkit.data_doctor import issues as data_issues

doctor_module = importlib.import_module("transferkit.data_doctor.doctor")


@pytest.mark.parametrize("per_class", [2, 3])
def test_too_few_images_per_class_is_exit_2_before_any_feature(tmp_path, capsys,
                                                              monkeypatch, per_class):
    folder = make_image_folder(tmp_path / "d", per_class=per_class, size=16)

    def no_features(*args, **kwargs):
        raise AssertionError("features computed before the minimum was checked")

    monkeypatch.setattr(doctor_module, "split_features", no_features)
    code = cli.main(["doctor", folder, "--backbone", "tiny_test", "--weights", "none",
                     "--image-size", "16", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"at least {data_issues.MIN_PER_CLASS} images each" in err
    assert f"blue: {per_class}" in err and "likely a bug" not in err


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_the_minimum_is_enough_for_every_fold_count(folds):
    # Exactly MIN_PER_CLASS images of the smallest class, more of another.
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(data_issues.MIN_PER_CLASS, int), np.ones(9, int)]
    x = rng.normal(size=(len(labels), 6)) + labels[:, None] * 3
    probs = data_issues.out_of_fold_probabilities(x, labels, 2, folds=folds, seed=0)
    assert probs.shape == (len(labels), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == labels).mean() > 0.8  # the heads learned something
    with pytest.raises(DataError, match=f"at least {data_issues.MIN_PER_CLASS} images"):
        data_issues.out_of_fold_probabilities(x[1:], labels[1:], 2, folds=folds)
