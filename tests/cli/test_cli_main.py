"""`transferkit` itself (`cli.main`): how every command's errors end. Bad input exits 2
with one message naming it, anything unexpected exits 1 with one line, Ctrl-C 130;
`--debug` (before or after the command) raises instead, with the traceback."""

import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import TransferkitError


def test_a_corrupt_model_file_exits_2_naming_it_and_debug_shows_the_traceback(tmp_path,
                                                                            capsys):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 this is no zip")
    folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    assert cli.main(["evaluate", str(bad), "--data", folder]) == 2
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(TransferkitError):
        cli.main(["--debug", "evaluate", str(bad), "--data", folder])
    with pytest.raises(TransferkitError):
        cli.main(["evaluate", str(bad), "--data", folder, "--debug"])


def test_unexpected_errors_are_one_message_exit_1(monkeypatch, capsys):
    from transferkit.cli import backbones

    def boom(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(backbones, "run", boom)  # register() binds it at parse time
    assert cli.main(["backbones"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "backbones"])


def test_tensorflow_input_errors_and_ctrl_c_outside_training(monkeypatch, capsys):
    import tensorflow as tf

    from transferkit.cli import backbones

    def bad_file(args):
        raise tf.errors.InvalidArgumentError(None, None, "Unknown image file format.\nmore")

    monkeypatch.setattr(backbones, "run", bad_file)
    assert cli.main(["backbones"]) == 2
    assert "could not process an input: Unknown image file format." in \
        capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(backbones, "run", interrupted)
    assert cli.main(["backbones"]) == 130
    assert "interrupted" in capsys.readouterr().err
