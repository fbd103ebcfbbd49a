"""`transferkit predict` end to end: a run's novelty score says which images are unlike
every class it knows."""

import json
import os

import numpy as np

from transferkit.cli.main import main
from transferkit.data.files import image_dataset, list_images
from transferkit.evaluation.evaluate import load_run
from transferkit.models import novelty as nv
from transferkit.models.parts import resolve
from transferkit.models.tta import unwrap_tta


def test_the_model_file_carries_the_novelty_score_and_predict_uses_it(open_world_run, capsys):
    loaded = load_run(open_world_run["run"])
    assert loaded.novelty is not None and loaded.novelty.detector in nv.DETECTORS
    with open(os.path.join(open_world_run["run"], "metrics.json")) as f:
        assert json.load(f)["novelty"]["threshold"] == loaded.novelty.threshold
    rings = list_images(open_world_run["new"])[:6]
    assert main(["predict", open_world_run["run"], *rings, "--json"]) == 0
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
