"""The wheel carries what a user needs without the checkout: the recipe book and the
commands that use it (installed into a folder of its own, run from another one)."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import make_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_outside_the_checkout_lists_recipes_and_trains_one(tmp_path):
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(dist), REPO], check=True, timeout=600)
    wheel, = glob.glob(str(dist / "transferkit-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), wheel], check=True, timeout=300)
    # Only the installed copy is importable: not the checkout, whatever the cwd.
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    run = dict(cwd=work, env=env, capture_output=True, text=True, timeout=600)
    where = subprocess.run([sys.executable, "-c", "import transferkit; "
                            "print(transferkit.__file__)"], **run)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    listed = subprocess.run([sys.executable, "-m", "transferkit", "recipes"], **run)
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert len(names) >= 13 and "efficientnet_lite0" in names
    folder = make_image_folder(work / "photos", per_class=6, size=40)
    trained = subprocess.run(
        [sys.executable, "-m", "transferkit", "train", "--recipe", "efficientnet_lite0",
         "--data", folder, "--image-size", "64", "--head-epochs", "1",
         "--finetune-epochs", "1", "--batch-size", "8", "--no-report", "--out", "run"],
        **run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (work / "run" / "model.keras").is_file()
    config = (work / "run" / "config.json").read_text()
    assert '"backbone": "efficientnet_lite0"' in config and '"l2": 0.0001' in config
