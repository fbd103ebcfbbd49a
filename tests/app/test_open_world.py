"""Open world: a novelty score fitted at the end of training and stored in model.keras,
used by predict and evaluate; add-class grows a trained classifier without retraining."""

import json
import os
import shutil

import numpy as np
import pytest

from transferkit.app.add_class import add_classes
from transferkit.app.train import train
from transferkit.cli.main import main
from transferkit.core.errors import ConfigError
from transferkit.models import novelty as nv
from transferkit.evaluation.evaluate import load_run
from transferkit.models.tta import unwrap_tta
from transferkit.models.parts import resolve
from transferkit.data.files import image_dataset, list_images
from transferkit.training.recipe import recipe_from_dict

from conftest import make_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "data", "sample")
SOURCE = dict(backbone="compact_cnn", weights=os.path.join(REPO, "data",
                                                           "source_compact_cnn.keras"),
              image_size=64)
KNOWN = ("arrow", "crescent", "cross", "frame")  # the 5th, ring, is the unknown


def four_and_one(root):
    """(folder of the 4 known classes, folder holding only the ring class)."""
    known, new = os.path.join(root, "known"), os.path.join(root, "new")
    for name in KNOWN:
        shutil.copytree(os.path.join(SAMPLE, name), os.path.join(known, name))
    shutil.copytree(os.path.join(SAMPLE, "ring"), os.path.join(new, "ring"))
    return known, new


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    root = tmp_path_factory.mktemp("open")
    known, new = four_and_one(str(root))
    recipe = recipe_from_dict({"data": known, **SOURCE, "report": False,
                               "finetune_epochs": 0, "seed": 0})
    out = str(root / "run4")
    train(recipe, out, verbose=0)
    return dict(root=root, known=known, new=new, run=out)


def test_fit_novelty_picks_a_detector_and_calibrates_its_threshold():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 4, (3, 16))
    ids = np.repeat(np.arange(3), 100)
    x = means[ids] + rng.normal(0, 1, (300, 16))
    val_ids = np.repeat(np.arange(3), 40)
    val = means[val_ids] + rng.normal(0, 1, (120, 16))
    far = rng.normal(0, 1, (60, 16)) + 12
    flat = np.full((len(val), 3), 1 / 3)  # useless probabilities: msp cannot separate
    fitted = nv.fit_novelty(x, ids, val, flat, far, np.full((60, 3), 1 / 3),
                            false_rejection=0.05)
    assert fitted.detector == "mahalanobis" and fitted.auroc["mahalanobis"] > 0.99
    assert fitted.auroc["msp"] == pytest.approx(0.5)
    assert np.mean(fitted.unknown(fitted.score(val, flat))) == pytest.approx(0.05, abs=0.01)
    again = nv.Novelty.from_parts(fitted.to_json(), fitted.arrays_bytes())
    np.testing.assert_allclose(again.score(far, flat[:60]), fitted.score(far, flat[:60]))
    with pytest.raises(ConfigError, match="false_rejection"):
        nv.fit_novelty(x, ids, val, flat, far, flat[:60], false_rejection=0)


def test_shuffled_tiles_keep_the_tiles_and_lose_the_layout():
    image = np.arange(8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3)
    out = nv.shuffled_tiles(image, grid=4, seed=1)
    tiles = lambda a: sorted(a[0, r:r + 2, c:c + 2].tobytes()  # noqa: E731
                             for r in range(0, 8, 2) for c in range(0, 8, 2))
    assert tiles(out) == tiles(image) and not np.array_equal(out, image)


def test_the_model_file_carries_the_novelty_score_and_predict_uses_it(run4, capsys):
    loaded = load_run(run4["run"])
    assert loaded.novelty is not None and loaded.novelty.detector in nv.DETECTORS
    with open(os.path.join(run4["run"], "metrics.json")) as f:
        assert json.load(f)["novelty"]["threshold"] == loaded.novelty.threshold
    rings = list_images(run4["new"])[:6]
    assert main(["predict", run4["run"], *rings, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]
    # Independently: features from the backbone, the stored arrays, numpy distances.
    dataset, _ = image_dataset(rings, loaded.input.size)
    extractor = resolve(unwrap_tta(loaded.model)).feature_extractor()  # TTA: clean view
    features = np.concatenate([extractor.predict_on_batch(b)
                               for b, _ in dataset])
    arrays, expected = loaded.novelty.arrays, None
    if loaded.novelty.detector == "mahalanobis":
        d = features[:, None] - arrays["means"][None]
        expected = np.sqrt(np.einsum("ncd,de,nce->nc", d, arrays["precision"], d).min(1))
    if loaded.novelty.detector == "knn":
        from sklearn.neighbors import NearestNeighbors

        bank = NearestNeighbors(n_neighbors=nv.KNN_K, metric="cosine").fit(arrays["bank"])
        expected = bank.kneighbors(features)[0][:, -1]
    if loaded.novelty.detector == "msp":
        expected = 1 - loaded.model.predict_on_batch(
            np.concatenate([b for b, _ in dataset])).max(axis=1)
    np.testing.assert_allclose([r["novelty"] for r in rows], expected, rtol=1e-3)
    for row in rows:
        assert row["unknown"] == (row["novelty"] > loaded.novelty.threshold)


def test_evaluate_reports_rejection_and_auroc_against_unknown_images(run4, tmp_path):
    out = str(tmp_path / "eval")
    assert main(["evaluate", run4["run"], "--data", run4["known"], "--split", "val",
                 "--unknown-data", run4["new"], "--out", out]) == 0
    with open(os.path.join(out, "evaluation.json")) as f:
        report = json.load(f)["novelty"]
    # The done-when figures of the open-world issue, on the shipped sample.
    assert report["auroc"] >= 0.85, report
    assert report["rejected"] <= 0.10, report
    assert report["unknown_rejected"] > report["rejected"]
    # The report shows the same numbers: the model's detector and candidates, and
    # both histograms on edges that reach the threshold.
    with open(os.path.join(out, "report.html")) as f:
        page = f.read()
    section = page[page.index("<h2>Novelty</h2>"):]
    loaded = load_run(run4["run"])
    assert f"<b>{loaded.novelty.detector}</b>" in section
    assert f"threshold {loaded.novelty.threshold:.6g}," in section
    assert f"AUROC {report['auroc']:.4f}" in section
    for name, value in loaded.novelty.auroc.items():
        assert f"<tr><th>{name}</th><td>{value:.4f}</td></tr>" in section
    hist = report["histogram"]
    assert sum(hist["unknown"]) == report["unknown_images"]
    assert hist["edges"][0] <= loaded.novelty.threshold <= hist["edges"][-1]


def test_add_class_grows_the_head_and_records_its_origin(run4, tmp_path):
    out = str(tmp_path / "run5")
    assert main(["add-class", run4["run"], "--data", run4["new"], "--out", out]) == 0
    loaded = load_run(out)
    assert loaded.class_names == KNOWN + ("ring",)
    assert loaded.model.output_shape[-1] == 5 and loaded.novelty is not None
    with open(os.path.join(out, "run.json")) as f:
        origin = json.load(f)["derived_from"]
    assert origin["run"] == os.path.abspath(run4["run"]) and origin["added_classes"] == ["ring"]
    with open(os.path.join(out, "metrics.json")) as f:
        val = json.load(f)["val"]
    assert val["new_classes_recall"] >= 0.8
    # The backbone did not move: same features for the same image.
    old = load_run(run4["run"])
    image = next(iter(image_dataset(list_images(run4["new"])[:2], old.input.size)[0]))[0]
    features = [resolve(unwrap_tta(m.model)).feature_extractor().predict_on_batch(image)
                for m in (loaded, old)]
    np.testing.assert_allclose(*features,
                               atol=1e-5)
    # The novelty score was refitted to five classes: same detector, one class mean per
    # class (those of the stored arrays), threshold at 5% of the new validation images.
    assert loaded.novelty.detector == old.novelty.detector
    if "means" in loaded.novelty.arrays:
        assert len(loaded.novelty.arrays["means"]) == 5
    assert val["class_names"] == list(KNOWN + ("ring",))


def test_refit_keeps_the_detector_and_recalibrates_its_threshold():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 4, (4, 8))
    ids = np.repeat(np.arange(4), 50)
    x = means[ids] + rng.normal(0, 1, (200, 8))
    val = means[np.repeat(np.arange(4), 20)] + rng.normal(0, 1, (80, 8))
    probs = np.full((80, 4), 0.25)
    for name in ("mahalanobis", "knn"):
        first = nv.Novelty(name, 0.0, 0.1, {name: 0.9}, "synthetic",
                           nv.fit_arrays(x[ids < 3], ids[ids < 3], needs=nv.NEEDS[name]))
        refit = first.refit(x, ids, val, probs)
        assert refit.detector == name and refit.auroc == first.auroc
        assert set(refit.arrays) == set(nv.NEEDS[name])
        if name == "mahalanobis":  # independent: class means by hand, Mahalanobis by loop
            np.testing.assert_allclose(refit.arrays["means"],
                                       [x[ids == c].mean(axis=0) for c in range(4)],
                                       rtol=1e-5)
            p = refit.arrays["precision"].astype(np.float64)
            direct = [min(np.sqrt((v - m) @ p @ (v - m)) for m in refit.arrays["means"])
                      for v in val]
            np.testing.assert_allclose(refit.score(val, probs), direct, rtol=1e-4)
        scores = refit.score(val, probs)
        assert np.mean(scores > refit.threshold) == pytest.approx(0.1, abs=0.02)


def test_add_class_refusals(run4, tmp_path, capsys):
    clash = str(tmp_path / "clash")
    shutil.copytree(os.path.join(SAMPLE, "arrow"), os.path.join(clash, "arrow"))
    assert main(["add-class", run4["run"], "--data", clash, "--out",
                 str(tmp_path / "x")]) == 2
    assert "['arrow'] already exist" in capsys.readouterr().err
    reg = make_image_folder(tmp_path / "reg", per_class=4, size=32)
    csv = tmp_path / "reg.csv"
    csv.write_text("path,label\n" + "".join(f"{os.path.join(reg, 'red', f'{i}.png')},{i}\n"
                                          for i in range(4)))
    regression = str(tmp_path / "regression_run")
    train(recipe_from_dict({"data": str(csv), "task": "regression", "backbone": "tiny_test",
                            "weights": None, "image_size": 32, "head_epochs": 1,
                            "finetune_epochs": 0, "report": False, "val_split": 0.25}),
          regression, verbose=0)
    with pytest.raises(ConfigError, match="multiclass and multilabel.*regression"):
        add_classes(regression, run4["new"], str(tmp_path / "y"))


def test_add_class_says_when_it_recomputes_features(run4, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "empty_cache"))
    add_classes(run4["run"], run4["new"], str(tmp_path / "run5"), epochs=0)
    assert "are gone: recomputing them" in capsys.readouterr().out


def test_exports_carry_the_novelty_score(run4, tmp_path):
    import tensorflow as tf

    from transferkit.deploy.export import export_model
    from transferkit.evaluation.evaluate import predict

    loaded = load_run(run4["run"])
    rings = list_images(run4["new"])[:3] + list_images(run4["known"])[:2]
    expected = predict(loaded, rings)
    keras_file = export_model(loaded, "keras", str(tmp_path / "k"))
    assert load_run(keras_file).novelty.to_json() == loaded.novelty.to_json()
    saved = tf.saved_model.load(export_model(loaded, "savedmodel", str(tmp_path / "s")))
    payload = tf.constant([open(p, "rb").read() for p in rings])
    served = saved.signatures["serving_default"](image_bytes=payload)
    np.testing.assert_allclose(served["novelty"].numpy(), [r["novelty"] for r in expected],
                               rtol=1e-3, atol=1e-4)
    assert served["unknown"].numpy().tolist() == [r["unknown"] for r in expected]


def test_a_bad_unknown_data_folder_is_refused_before_training(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_class=4, size=32)
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--unknown-data", str(tmp_path / "nowhere"),
                 "--backbone", "tiny_test", "--out", str(out)]) == 2
    assert "unknown_data" in capsys.readouterr().err
    assert not (out / "run.json").exists()
