"""`app.add_class`: new classes on a trained run, from its backbone's features."""

from transferkit.app.add_class import add_classes


def test_add_class_says_when_it_recomputes_features(open_world_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "empty_cache"))
    add_classes(open_world_run["run"], open_world_run["new"], str(tmp_path / "run5"), epochs=0)
    assert "are gone: recomputing them" in capsys.readouterr().out
