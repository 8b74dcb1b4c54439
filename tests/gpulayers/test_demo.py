"""The demo's command line: it runs, writes its files and ends with the accuracy line."""

import os

import pytest

from gpulayers import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    accuracy = demo.main(["--epochs", "2", "--output-dir", str(tmp_path), "--backend", "numpy"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "backend: numpy"
    assert out.splitlines()[1].startswith("device: CPU")
    assert out.rstrip().splitlines()[-1] == f"test accuracy: {accuracy:.2f}"
    assert os.path.getsize(tmp_path / "faces_cnn.keras") > 0
    assert os.path.getsize(tmp_path / "training_curves.png") > 0


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--backend", "tpu"], ["--batch-size", "-1"]])
def test_demo_refuses_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        demo.main(argv)
    assert "--" in capsys.readouterr().err
