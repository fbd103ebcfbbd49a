"""The task registry: tasks are looked up by name, registered once, and recognise
their own models' outputs."""

import pytest

from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task, register_task, task_for_model
from transferkit.models.builder import build_model
from transferkit.models.heads import HeadConfig
from transferkit.models.segmentation import build_segmenter
from transferkit.tasks import Multiclass, Task


def test_an_unknown_task_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"one of \['multiclass', 'binary', 'multilabel', "
                       r"'localization', 'regression', 'segmentation', 'detection'\]"
                       r".*task='segmentaton'.*Did you "
                       r"mean 'segmentation'"):
        get_task("segmentaton")
    task = get_task("binary")
    assert get_task(task) is task and isinstance(task, Task)


def test_a_task_name_is_registered_once():
    with pytest.raises(ConfigError, match="'multiclass' is already registered"):
        register_task(Multiclass())


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression",
                                  "segmentation"])
def test_each_task_recognises_its_own_models_output(task):
    if task == "segmentation":
        model = build_segmenter("tiny_test", 3, weights=None, input_shape=32,
                                decoder_width=4)
    else:
        model = build_model("tiny_test", 3, weights=None, input_shape=32,
                            task=task, head=HeadConfig())
    assert task_for_model(model).name == task


def test_predict_out_is_refused_by_a_task_without_prediction_files(tmp_path, capsys):
    from PIL import Image

    from transferkit import cli
    from transferkit.models.saving import save_model

    path = str(tmp_path / "model.keras")
    save_model(build_model("tiny_test", 2, weights=None, input_shape=32), path,
               metadata={"task": "multiclass", "class_names": ["a", "b"]})
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    code = cli.main(["predict", path, str(tmp_path / "x.png"), "--out",
                     str(tmp_path / "masks")])
    assert code == 2 and "task='multiclass' does not have" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()
