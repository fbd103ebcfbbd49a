"""Phase 1 on cached features: keys, hits, invalidation, corruption, merge, accuracy."""

import dataclasses
import math
import os
import re

import numpy as np
import pytest
from conftest import make_image_folder

from transferkit.core.rundir import RunDir
from transferkit.training import cache
from transferkit.data.augment import AugmentConfig
from transferkit.data.load import load_data
from transferkit.core.errors import ConfigError
from transferkit.training.freezing import FreezePolicy, freeze
from transferkit.models.heads import HeadConfig
from transferkit.models import build_model, resolve_parts
from transferkit.app.train import train
from transferkit.training.schedule import PhaseConfig, ScheduleConfig
from transferkit.training.orchestrator import fine_tune

SCHEDULE = ScheduleConfig(head=PhaseConfig(epochs=4, learning_rate=0.1,
                                           early_stopping_patience=None),
                          finetune=PhaseConfig(epochs=0), batch_size=8)


def _model(seed=0, **kwargs):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", 2, weights=None, input_shape=32, **kwargs)


def _images(n=6, size=32):
    return np.random.default_rng(1).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_merged_model_equals_backbone_then_head(splits):
    model = _model()
    fine_tune(model, splits, cache=cache.FeatureCache(), verbose=0,
              config=ScheduleConfig(head=PhaseConfig(epochs=1, learning_rate=0.1),
                                    finetune=PhaseConfig(epochs=0)))
    x = _images()
    feature_extractor = lambda m: resolve_parts(m).feature_extractor()  # noqa: E731
    run = lambda m, inputs: np.asarray(m(inputs, training=False))  # noqa: E731
    composed = run(model.get_layer("head"), run(feature_extractor(model), x))
    np.testing.assert_allclose(run(model, x), composed, atol=1e-6)
    # Merging onto a bare extractor or onto another model of the same build agrees too.
    merged = cache.merge(feature_extractor(model), model.get_layer("head"))
    np.testing.assert_allclose(run(merged, x), composed, atol=1e-6)
    other = _model()  # same seed: same backbone, but a fresh head
    assert not np.allclose(run(other, x), composed, atol=1e-4)
    merged = cache.merge(other, model.get_layer("head"))
    assert merged is other
    np.testing.assert_allclose(run(merged, x), composed, atol=1e-6)


def test_second_lookup_hits_the_file_cache(splits, tmp_path, calls):
    model = _model()
    store = cache.FeatureStore(tmp_path / "cache")
    first = cache.split_features(model, splits, store=store, verbose=0)
    assert (calls["n"], store.misses, store.hits) == (2, 2, 0)
    assert len(os.listdir(tmp_path / "cache")) == 2
    fresh = cache.FeatureStore(tmp_path / "cache")  # a new process: files only
    again = cache.split_features(model, splits, store=fresh, verbose=0)
    assert (calls["n"], fresh.hits, fresh.misses) == (2, 2, 0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    # Phase 1 flips `trainable` flags, which must not change the key.
    freeze(model, FreezePolicy("all"))
    cache.split_features(model, splits, store=fresh, verbose=0)
    assert calls["n"] == 2
    # Different views are a different entry: a miss.
    cache.split_features(model, splits, store=fresh, views=2, augment=AugmentConfig(),
                         verbose=0)
    assert calls["n"] == 5  # clean + two augmented passes; val was a hit


def test_keys_change_with_files_backbone_weights_and_size(tmp_path):
    root = make_image_folder(tmp_path / "img", per_class=3)
    files = sorted(str(p) for p in (tmp_path / "img").rglob("*.png"))
    labels = np.eye(2)[[0] * 3 + [1] * 3]
    data_key = lambda size=(32, 32): cache.data_fingerprint(files, labels, size)  # noqa: E731
    base = data_key()
    assert data_key() == base
    assert data_key((40, 40)) != base
    assert cache.data_fingerprint(files, labels[::-1], (32, 32)) != base
    stat = os.stat(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = data_key()
    assert touched != base
    make_image_folder(root, per_class=3, seed=5)  # new content in every file
    assert data_key() not in (base, touched)

    model = _model()
    fp = cache.model_fingerprint(model)
    assert cache.model_fingerprint(_model()) == fp  # rebuilt: same layers, same init
    assert cache.model_fingerprint(_model(seed=1)) != fp  # random init differs per seed
    assert cache.model_fingerprint(_model(backbone_kwargs={"width": 4})) != fp
    assert cache.model_fingerprint(build_model("tiny_test", 2, weights=None,
                                               input_shape=40)) != fp
    assert cache.model_fingerprint(_model(head=HeadConfig(pooling="max"))) != fp  # pooling
    # Weights files: the same file gives the same key, another file a new one.
    first, second = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    model.get_layer("backbone").save_weights(first)
    _model(seed=2).get_layer("backbone").save_weights(second)
    from_first = build_model("tiny_test", 2, weights=str(first), input_shape=32)
    from_second = build_model("tiny_test", 2, weights=str(second), input_shape=32)
    assert cache.model_fingerprint(from_first) == fp
    assert cache.model_fingerprint(from_second) != fp
    assert cache.feature_key(fp, base) != cache.feature_key(fp, touched)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tamper"])
def test_corrupt_cache_file_is_recomputed(splits, tmp_path, calls, damage):
    model = _model()
    folder = tmp_path / "cache"
    good, _ = cache.split_features(model, splits, store=cache.FeatureStore(folder),
                                   verbose=0)
    path = max((folder / f for f in os.listdir(folder)), key=os.path.getsize)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:  # valid npz, altered features: only the checksum can tell
        with np.load(path) as archive:
            meta = archive["meta"]
        np.savez(path, x=good.x + 1.0, y=good.y, meta=meta)
    with pytest.warns(UserWarning, match="unusable"):
        again, _ = cache.split_features(model, splits, store=cache.FeatureStore(folder),
                                        verbose=0)
    assert calls["n"] == 3  # train recomputed, val still a hit
    np.testing.assert_allclose(again.x, good.x, atol=1e-6)
    cache.split_features(model, splits, store=cache.FeatureStore(folder), verbose=0)
    assert calls["n"] == 3  # the rewritten file is good again


def test_views_store_the_clean_pass_and_augmented_ones_and_show_each_image_once(splits):
    model = _model()
    train, val = cache.split_features(model, splits, views=2, augment=AugmentConfig(),
                                      verbose=0)
    n = len(splits.train_files)
    assert train.x.shape[:2] == (3, n) and val.x.shape[0] == 1
    # View 0 is the clean image (what validation and prediction see), the others are
    # augmented, so they differ from it and from each other.
    clean, _ = cache.split_features(model, splits, views=0, verbose=0)
    np.testing.assert_allclose(train.x[0], clean.x[0], atol=1e-5)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not np.allclose(train.x[a], train.x[b])
    seen = [y for _, y in cache.feature_dataset(train, 4, training=True).unbatch()]
    assert len(seen) == n
    with pytest.raises(ConfigError, match="views"):
        cache.split_features(model, splits, views=2, verbose=0)


def test_head_on_cached_features_matches_the_live_path(splits):
    live = _model()
    fine_tune(live, splits.train, splits.val, config=SCHEDULE, verbose=0)
    cached = _model()
    result = fine_tune(cached, splits, config=SCHEDULE, cache=cache.FeatureCache(),
                       verbose=0)
    assert [r["phase"] for r in result.history] == ["head"] * SCHEDULE.head.epochs
    audit = result.audits["head"]
    assert audit.trainable_params == cached.get_layer("head").count_params()
    live_acc = live.evaluate(splits.val, verbose=0, return_dict=True)["accuracy"]
    cached_acc = cached.evaluate(splits.val, verbose=0, return_dict=True)["accuracy"]
    assert cached_acc == live_acc == 1.0


def test_train_runs_phase_one_on_cached_features(folder_recipe, tmp_path, monkeypatch,
                                                 calls):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    recipe = folder_recipe(head_epochs=2, finetune_epochs=1, unfreeze="last_blocks:1",
                           augment="light", novelty=False)  # its fit reads clean features too
    train(recipe, tmp_path / "run", verbose=0)
    history = RunDir(tmp_path / "run").read_history()
    assert [r["phase"] for r in history] == ["head", "head", "finetune"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"loss", "val_accuracy", "learning_rate", "phase_epoch"} <= set(history[0])
    # Clean train, augmented train, val; at phase 2's start the val images' mirrors (for
    # the flip-TTA decision): the end of the run reads them back, no pass again.
    assert calls["n"] == cache.DEFAULT_VIEWS + 3
    assert sum(f.endswith(".npz") for f in os.listdir(tmp_path / "cache" / "features")) == 2


def test_in_memory_sources_are_extracted_but_never_written(tmp_path, calls):
    x = _images(12)
    y = np.array([0, 1] * 6)
    arrays = load_data((x, y), image_size=32, batch_size=4, seed=0, verbose=False)
    store = cache.FeatureStore(tmp_path / "cache")
    train, val = cache.split_features(_model(), arrays, store=store, verbose=0)
    assert train.count + val.count == 12 and calls["n"] == 2
    assert store.hits == store.misses == 0 and not (tmp_path / "cache").exists()


def test_an_explicit_val_replaces_the_splits_own_in_cached_phase_one(splits):
    # fine_tune(model, splits, val=other): phase 1 on cached features must validate on
    # `other` like the live path does, not on the splits' own validation files.
    other = (_images(3), np.eye(2, dtype="float32")[[0, 1, 0]])
    model = _model()
    result = fine_tune(model, splits, other, config=SCHEDULE, cache=cache.FeatureCache(),
                       verbose=0)
    assert len(result.history) == SCHEDULE.head.epochs
    scores = model.evaluate(*other, verbose=0, return_dict=True)  # no best-restore here
    assert result.history[-1]["val_loss"] == pytest.approx(scores["loss"], rel=1e-4)


# 3 and 10 steps an epoch: fewer than one call of 8 steps, and a last call cut short.
@pytest.mark.parametrize("batch_size", [8, 2])
def test_progress_bar_of_cached_phase_one_counts_the_epochs_steps(splits, capsys,
                                                                  batch_size):
    # Keras reports a call of steps_per_execution steps at its last step even when the
    # epoch ends sooner: the bar read 8/3 before its 3/3.
    head = dataclasses.replace(SCHEDULE.head, epochs=2)
    config = dataclasses.replace(SCHEDULE, head=head, batch_size=batch_size)
    fine_tune(_model(), splits, config=config, cache=cache.FeatureCache(), verbose=1)
    out = capsys.readouterr().out
    steps = math.ceil(len(splits.train_files) / batch_size)
    epochs = re.split(r"^Epoch \d+/2$", out, flags=re.M)[1:]
    assert len(epochs) == 2
    for printed in epochs:
        # Each update of the fit's bar (unit "step"; extraction's bars count "batch").
        bars = [re.search(r"\x1b\[1m\s*(\d+)/(\d+)\x1b\[0m", update).groups()
                for update in re.split(r"[\r\n]", printed) if "/step" in update]
        counts = [(int(current), int(total)) for current, total in bars]
        assert counts and {total for _, total in counts} == {steps}
        assert all(current <= steps for current, _ in counts)
        assert counts[-1][0] == steps


def test_has_features_names_the_entry_split_features_reads(splits):
    store = cache.FeatureStore()
    model, other = _model(), _model(seed=1)
    assert not cache.has_features(model, splits, store)
    cache.split_features(model, splits, store=store, verbose=0)
    assert cache.has_features(model, splits, store)
    assert cache.has_features(model, splits, store, "val")
    assert not cache.has_features(other, splits, store)  # other weights, other key


@pytest.mark.parametrize("rows", [7, 1024])  # several chunks, and one
def test_cached_validation_logs_what_keras_evaluate_computes(rows):
    import keras
    import tensorflow as tf

    from transferkit.training.orchestrator import CachedValidation

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 30)]
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=4)
    expected = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    val = CachedValidation.of(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), rows=rows)
    assert len(val.chunks) == -(-30 // rows)
    val.set_model(model)
    logs = {"loss": 123.0}
    val.on_epoch_end(0, logs)
    assert logs["loss"] == 123.0  # the training logs stay
    assert logs["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert logs["val_accuracy"] == pytest.approx(expected["accuracy"])


def test_the_val_files_mirrors_are_their_own_cache_entry(splits, tmp_path, calls):
    model = _model()
    store = cache.FeatureStore(str(tmp_path / "features"))
    train, val = cache.split_features(model, splits, store=store, verbose=0,
                                      mirror_val=True)
    assert calls["n"] == 3  # train, val, and the val images mirrored
    mirror = cache.split_mirror(model, splits, store=store, verbose=0)
    assert calls["n"] == 3  # found, not recomputed
    assert mirror.x.shape == val.x.shape
    # Each row is the features of that val image mirrored; the clean entry is untouched.
    import tensorflow as tf
    from transferkit.models.parts import resolve

    images = np.concatenate([x.numpy() for x, _ in splits.val])
    flipped = resolve(model).feature_extractor().predict_on_batch(tf.reverse(images, [2]))
    np.testing.assert_allclose(mirror.x[0], flipped, rtol=1e-4, atol=1e-4)
    assert not np.allclose(mirror.x[0], val.x[0])
