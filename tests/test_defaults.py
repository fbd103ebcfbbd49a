"""One owner per default: each function's default is its config dataclass's field (or a
constant the field itself uses), so the API, the flags and the recipe never drift."""

import inspect

import pytest

from transferkit.app.config import AddClassConfig
from transferkit.core.task_registry import DEFAULT_TASK
from transferkit.data.config import DEFAULT_BATCH_SIZE, DataConfig
from transferkit.data_doctor.config import DoctorConfig
from transferkit.deploy.config import ExportConfig
from transferkit.evaluation.config import EvaluateConfig, PredictConfig
from transferkit.models.config import ModelConfig
from transferkit.training.config import (CheckpointConfig, LRFindConfig, RuntimeConfig,
                                         ScheduleConfig)
from transferkit.training.recipe import RecipeConfig
from transferkit.tuning.config import TuneConfig


def _defaults(function):
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def _rows():
    from transferkit.app.add_class import add_classes
    from transferkit.app.lr_find import find_lr_for_recipe
    from transferkit.data.files import image_dataset
    from transferkit.data.load import load_data
    from transferkit.data.pipeline import dataset_from_arrays, make_dataset
    from transferkit.data_doctor.doctor import doctor
    from transferkit.deploy.parity import check_parity
    from transferkit.evaluation.evaluate import eval_data, predict
    from transferkit.models.builder import build_model
    from transferkit.models.heads import build_head
    from transferkit.training.cache.config import FeatureCache
    from transferkit.training.checkpoint import CheckpointManager
    from transferkit.training.lr_find import AutoLR, check_range, find_lr
    from transferkit.tuning.tuner import make_objective, tune

    lr = {k: getattr(LRFindConfig, k) for k in ("min_lr", "max_lr", "steps", "beta")}
    data = {k: getattr(DataConfig, k)
            for k in ("val_split", "test_split", "scan", "class_weights", "follow_links")}
    return [
        (load_data, {"batch_size": DEFAULT_BATCH_SIZE, "task": DEFAULT_TASK, **data}),
        (make_dataset, {"batch_size": DEFAULT_BATCH_SIZE, "task": DEFAULT_TASK}),
        (dataset_from_arrays, {"batch_size": DEFAULT_BATCH_SIZE, "task": DEFAULT_TASK}),
        (image_dataset, {"batch_size": DEFAULT_BATCH_SIZE}),
        (build_model, {"task": DEFAULT_TASK, "weights": ModelConfig.weights}),
        (build_head, {"task": DEFAULT_TASK}),
        (make_objective, {"task": DEFAULT_TASK}),
        (find_lr, {"phase": LRFindConfig.phase, **lr}),
        (check_range, {"phase": LRFindConfig.phase, **lr}),
        (AutoLR.__init__, lr),
        (find_lr_for_recipe, {"settings": LRFindConfig()}),
        (add_classes, {"epochs": AddClassConfig.epochs, "patience": AddClassConfig.patience}),
        (check_parity, {"tolerance": ExportConfig.tolerance}),
        (eval_data, {"split": EvaluateConfig.split, "batch_size": EvaluateConfig.batch_size}),
        (predict, {"top_k": PredictConfig.top_k, "batch_size": PredictConfig.batch_size}),
        (doctor, {"folds": DoctorConfig.folds, "views": DoctorConfig.views,
                  "weights": ModelConfig.weights, "seed": RecipeConfig.seed}),
        (tune, {"tuner": TuneConfig.tuner, "max_trials": TuneConfig.max_trials}),
        (CheckpointManager.__init__, {"keep": CheckpointConfig.keep}),
        (FeatureCache, {"boundary_max_gb": RuntimeConfig.boundary_cache_max_gb}),
    ]


def test_every_function_takes_its_defaults_from_the_config():
    wrong = []
    for function, expected in _rows():
        got = _defaults(function)
        for name, value in expected.items():
            if got.get(name) != value:
                wrong.append(f"{function.__qualname__}({name}={got.get(name)!r}), "
                             f"expected {value!r}")
    assert not wrong, wrong


@pytest.mark.parametrize("field,value", [("batch_size", DEFAULT_BATCH_SIZE)])
def test_the_recipe_uses_the_same_constants(field, value):
    assert getattr(ScheduleConfig(), field) == value
    assert RecipeConfig.task == DEFAULT_TASK
