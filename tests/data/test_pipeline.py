"""`data.pipeline`: the tf.data pipeline of image files."""

import numpy as np

from conftest import make_image_folder
from transferkit.data.pipeline import make_dataset


def test_training_batches_survive_a_file_that_fails_to_decode(tmp_path):
    make_image_folder(tmp_path / "data", per_class=4, size=16)
    paths = sorted(str(p) for p in (tmp_path / "data").glob("*/*.png"))[:7]
    with open(paths[3], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken after the scan")
    labels = np.eye(2)[[0] * 4 + [1] * 3]
    ds = make_dataset(paths, labels, image_size=16, batch_size=3, training=True, seed=0)
    assert int(ds.cardinality()) == 3  # 7 files in batches of 3
    for _ in range(2):  # each epoch keeps its 3 batches: 6 good files, topped up
        sizes = [int(x.shape[0]) for x, _ in ds]
        assert len(sizes) == 3 and sizes[:2] == [3, 3]
