"""Every command's flags are generated from its config dataclass (`cli.flags`): a flag's
default and help are the field's, so a default lives once, in the dataclass."""

import dataclasses

import pytest

from transferkit.app.config import AddClassConfig
from transferkit.cli.flags import config_from_args
from transferkit.cli.main import build_parser
from transferkit.core.config import leaves
from transferkit.core.errors import ConfigError
from transferkit.data_doctor.config import DoctorConfig
from transferkit.deploy.config import ExportConfig
from transferkit.evaluation.config import EvaluateConfig, PredictConfig
from transferkit.training.config import CheckpointConfig, LRFindConfig
from transferkit.tuning.config import TuneConfig

# command line without the config's flags -> the config its flags fill
COMMANDS = [
    (["add-class", "runs/a", "--data", "d", "--out", "o"], AddClassConfig, "--epochs", "0"),
    (["lr-find", "--out", "o"], LRFindConfig, "--phase", "head"),
    (["evaluate", "runs/a", "--data", "d"], EvaluateConfig, "--batch-size", "7"),
    (["predict", "runs/a", "x.png"], PredictConfig, "--top-k", "1"),
    (["export", "runs/a", "--format", "keras", "--out", "o"], ExportConfig,
     "--tolerance", "0.05"),
    (["doctor", "d", "--out", "o"], DoctorConfig, "--folds", "3"),
    (["train"], CheckpointConfig, "--keep-checkpoints", "5"),
]


@pytest.mark.parametrize("argv,config,flag,value", COMMANDS,
                         ids=[c[0][0] for c in COMMANDS])
def test_flags_not_given_give_the_config_defaults_and_a_given_one_sets_its_field(
        argv, config, flag, value):
    parser = build_parser()
    assert config_from_args(config, parser.parse_args(argv)) == config()
    changed = config_from_args(config, parser.parse_args([*argv, flag, value]))
    field = next(leaf.path[-1] for leaf in leaves(config)
                 if leaf.key == flag[2:].replace("-", "_"))
    given = type(getattr(config(), field))(value)
    assert changed == dataclasses.replace(config(), **{field: given})


def test_help_shows_the_dataclass_doc_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["add-class", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    epochs = next(leaf for leaf in leaves(AddClassConfig) if leaf.key == "epochs")
    assert f"{' '.join(epochs.doc.split())} (default: {AddClassConfig.epochs})" in text


def test_a_bad_value_is_refused_by_the_config_naming_it():
    args = build_parser().parse_args(["predict", "runs/a", "x.png", "--top-k", "0"])
    with pytest.raises(ConfigError, match="top_k=0"):
        config_from_args(PredictConfig, args)


def test_tune_flags_overlay_a_resumed_search():
    """`tune` flags default to None: a resumed search keeps its saved settings unless a
    flag is given."""
    args = build_parser().parse_args(["tune", "--out", "o", "--max-trials", "4"])
    assert (args.tuner, args.objective) == (None, None)
    saved = TuneConfig(tuner="bayesian")
    assert config_from_args(saved, args) == TuneConfig(tuner="bayesian", max_trials=4)


def test_the_names_a_config_accepts_are_the_ones_its_code_makes():
    from transferkit.training import config, optimizers
    from transferkit.tuning import config as tune_config, tuner

    assert set(config.OPTIMIZERS) == set(optimizers.OPTIMIZERS)
    assert set(tune_config.TUNERS) == set(tuner.TUNERS)
