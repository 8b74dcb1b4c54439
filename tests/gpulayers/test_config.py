"""gpulayers.config: keras.json (read only), the environment override, setters."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gpulayers import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_fresh(code, keras_home, env_format=None):
    """Run ``code`` in a new interpreter (config reads keras.json at import)."""
    env = {k: v for k, v in os.environ.items() if k != "GPULAYERS_IMAGE_DATA_FORMAT"}
    env["KERAS_HOME"] = str(keras_home)
    env["GPULAYERS_BACKEND"] = "numpy"
    env["PYTHONPATH"] = ROOT
    if env_format is not None:
        env["GPULAYERS_IMAGE_DATA_FORMAT"] = env_format
    prog = "import warnings; warnings.simplefilter('always')\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


SHOW = "from gpulayers import config; print(config.image_data_format(), config.floatx(), config.epsilon())"


def test_missing_file_means_keras_defaults_and_nothing_is_created(tmp_path):
    home = tmp_path / "keras_home"
    out, _ = run_fresh(SHOW, home)
    assert out == "channels_last float32 1e-07"
    assert not home.exists()  # Keras would create it; gpulayers only reads


def test_values_come_from_keras_json(tmp_path):
    (tmp_path / "keras.json").write_text(
        json.dumps({"image_data_format": "channels_first", "floatx": "float64", "epsilon": 1e-5, "backend": "jax"})
    )
    before = (tmp_path / "keras.json").read_text()
    out, _ = run_fresh(SHOW, tmp_path)
    assert out == "channels_first float64 1e-05"
    assert (tmp_path / "keras.json").read_text() == before


def test_invalid_values_are_refused_with_a_warning(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"image_data_format": "channels_middle", "floatx": "float32"}))
    out, err = run_fresh(SHOW, tmp_path)
    assert out == "channels_last float32 1e-07"
    assert "image_data_format" in err and "channels_middle" in err


def test_unreadable_json_means_defaults_with_a_warning(tmp_path):
    (tmp_path / "keras.json").write_text("{not json")
    out, err = run_fresh(SHOW, tmp_path)
    assert out == "channels_last float32 1e-07"
    assert "keras.json" in err


def test_environment_variable_overrides_the_file(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"image_data_format": "channels_last"}))
    out, _ = run_fresh(SHOW, tmp_path, env_format="channels_first")
    assert out.startswith("channels_first")


def test_invalid_environment_variable_is_refused_with_a_warning(tmp_path):
    out, err = run_fresh(SHOW, tmp_path, env_format="NHWC")
    assert out.startswith("channels_last")
    assert "GPULAYERS_IMAGE_DATA_FORMAT" in err and "NHWC" in err


CHAPTER = """
from gpulayers.models import Sequential
from gpulayers.layers import Conv2D, Flatten
model = Sequential()
model.add(Conv2D(64, (3,3), input_shape=(3,32,32), padding='same'))
print(model.output_shape)
model.add(Flatten())
print(model.output_shape)
"""


def test_chapter_example_channels_last(tmp_path):
    out, _ = run_fresh(CHAPTER, tmp_path)
    assert out.splitlines() == ["(None, 3, 32, 64)", "(None, 6144)"]


def test_chapter_example_channels_first_from_keras_json(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"image_data_format": "channels_first"}))
    out, _ = run_fresh(CHAPTER, tmp_path)
    assert out.splitlines() == ["(None, 64, 32, 32)", "(None, 65536)"]


def test_chapter_example_channels_first_from_the_variable(tmp_path):
    out, _ = run_fresh(CHAPTER, tmp_path, env_format="channels_first")
    assert out.splitlines() == ["(None, 64, 32, 32)", "(None, 65536)"]


@pytest.fixture
def restore_config():
    saved = (config.image_data_format(), config.floatx(), config.epsilon())
    yield
    config.set_image_data_format(saved[0])
    config.set_floatx(saved[1])
    config.set_epsilon(saved[2])


def test_setters_change_and_validate(restore_config):
    config.set_image_data_format("channels_first")
    assert config.image_data_format() == "channels_first"
    config.set_floatx("float64")
    assert config.floatx() == "float64"
    config.set_epsilon(1e-4)
    assert config.epsilon() == 1e-4
    with pytest.raises(ValueError, match="data_format.*'NCHW'"):
        config.set_image_data_format("NCHW")
    with pytest.raises(ValueError, match="value.*'int8'"):
        config.set_floatx("int8")
    with pytest.raises(ValueError, match="value.*-1"):
        config.set_epsilon(-1)
    assert config.image_data_format() == "channels_first"  # refused calls change nothing
