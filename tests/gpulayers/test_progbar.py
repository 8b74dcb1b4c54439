"""Tests for gpulayers.progbar: line format, TTY vs non-TTY output, averaging, errors."""

import io
import sys

import numpy as np
import pytest

from gpulayers import progbar as P
from gpulayers.progbar import Progbar


class TTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


class Clock:
    """A fake clock: each call returns the current time; ``tick`` moves it."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(P, "_clock", c)
    return c


# pytest re-installs its own sys.stdout between fixture setup and the test
# call, so the fixtures redirect the bar's stream lookup instead (the lookup
# of sys.stdout itself is tested with capsys).


@pytest.fixture
def tty(monkeypatch):
    stream = TTY()
    monkeypatch.setattr(P, "_stream", lambda: stream)
    return stream


@pytest.fixture
def pipe(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(P, "_stream", lambda: stream)
    return stream


def run_steps(bar, clock, losses, step_time=0.5, **extra):
    for i, loss in enumerate(losses):
        clock.tick(step_time)
        bar.update(i + 1, [("loss", loss), *extra.items()])


# ---------------------------------------------------------------- non-TTY


def test_non_tty_verbose1_prints_one_final_line(pipe, clock):
    bar = Progbar(target=50)
    run_steps(bar, clock, [1.0] * 25 + [3.0] * 25, accuracy=0.9)
    out = pipe.getvalue()
    assert out.count("\n") == 1 and "\r" not in out and "\b" not in out
    assert out == (
        "50/50 [==============================] - 25s 500ms/step - loss: 2.0000 - accuracy: 0.9000\n"
    )


def test_non_tty_prints_nothing_until_finalized(pipe, clock):
    bar = Progbar(target=10)
    run_steps(bar, clock, [1.0] * 9)
    assert pipe.getvalue() == ""
    clock.tick(0.5)
    bar.update(10, [("loss", 1.0)])
    assert pipe.getvalue().count("\n") == 1


def test_explicit_finalize_before_target(pipe, clock):
    bar = Progbar(target=10)
    run_steps(bar, clock, [2.0, 4.0])
    bar.update(2, finalize=True)
    line = pipe.getvalue()
    assert line.startswith(" 2/10 [=====>........................] - 1s 500ms/step - loss: 3.0000")
    assert line.endswith("\n") and line.count("\n") == 1


def test_verbose2_one_short_line(pipe, clock):
    bar = Progbar(target=4, verbose=2)
    run_steps(bar, clock, [1.0, 2.0, 3.0, 4.0], step_time=2.0)
    assert pipe.getvalue() == "4/4 - 8s - 2s/step - loss: 2.5000\n"


def test_verbose2_on_tty_is_also_one_line(tty, clock):
    bar = Progbar(target=3, verbose=2)
    run_steps(bar, clock, [1.0, 1.0, 1.0], step_time=0.02)
    assert tty.getvalue() == "3/3 - 0s - 20ms/step - loss: 1.0000\n"


def test_verbose0_is_silent(tty, clock):
    bar = Progbar(target=3, verbose=0)
    run_steps(bar, clock, [1.0, 1.0, 1.0])
    assert tty.getvalue() == ""


# ---------------------------------------------------------------- TTY


def test_tty_updates_in_place(tty, clock):
    bar = Progbar(target=4, interval=0.0)
    run_steps(bar, clock, [1.0, 3.0, 5.0, 7.0], step_time=1.0)
    out = tty.getvalue()
    frames = out.split("\r")[1:]
    assert len(frames) == 4
    assert frames[0] == "1/4 [======>.......................] - ETA: 3s - loss: 1.0000"
    assert frames[1] == "2/4 [==============>...............] - ETA: 2s - loss: 2.0000"
    assert frames[3] == "4/4 [==============================] - 4s 1s/step - loss: 4.0000\n"
    assert out.count("\n") == 1


def test_tty_pads_over_a_longer_previous_line(tty, clock):
    bar = Progbar(target=3, interval=0.0)
    clock.tick(1)
    bar.update(1, [("note", "a long status text")])
    clock.tick(1)
    bar.update(2, [("note", "short")])
    first, second = tty.getvalue().split("\r")[1:]
    assert second.endswith("note: short" + " " * 13) and len(second) == len(first)


def test_tty_interval_throttles_redraws(tty, clock):
    bar = Progbar(target=100, interval=10.0)
    run_steps(bar, clock, [1.0] * 100, step_time=0.01)
    frames = tty.getvalue().split("\r")[1:]
    assert len(frames) == 2  # the first update, then only the final one
    assert frames[-1].startswith("100/100 [") and frames[-1].endswith("\n")


def test_eta_uses_steps_after_the_first(tty, clock):
    bar = Progbar(target=11, interval=0.0)
    clock.tick(100.0)  # a slow first step (compilation, warm-up)
    bar.update(1)
    clock.tick(1.0)
    bar.update(2)
    assert tty.getvalue().split("\r")[-1].startswith(" 2/11 [====>....") and "ETA: 9s" in tty.getvalue()


def test_ipykernel_stream_counts_as_dynamic():
    cls = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert P._is_dynamic(cls())
    assert not P._is_dynamic(io.StringIO())
    assert P._is_dynamic(TTY())
    assert not P._is_dynamic(None)


def test_stdout_is_looked_up_at_call_time(capsys, monkeypatch, clock):
    bar = Progbar(target=2, verbose=1, interval=0.0)
    bar.update(1, [("loss", 1.0)])
    assert capsys.readouterr().out == ""  # capsys's stream is not a terminal
    stream = TTY()
    monkeypatch.setattr(sys, "stdout", stream)  # swapped after the bar was made
    bar.update(2, [("loss", 1.0)])
    monkeypatch.undo()
    assert stream.getvalue().startswith("\r2/2 [=====") and stream.getvalue().endswith("\n")


# ---------------------------------------------------------------- values


def test_values_are_averaged_weighted_by_steps(pipe, clock):
    bar = Progbar(target=4, verbose=2)
    bar.update(1, [("loss", 1.0)])
    bar.update(4, [("loss", 2.0)])  # covers 3 steps
    assert "loss: 1.7500" in pipe.getvalue()


def test_stateful_metrics_are_shown_as_is(pipe, clock):
    bar = Progbar(target=3, verbose=2, stateful_metrics=["acc"])
    for i, (loss, acc) in enumerate([(1.0, 0.1), (2.0, 0.2), (3.0, 0.7)]):
        bar.update(i + 1, {"loss": loss, "acc": acc})
    assert pipe.getvalue().endswith(" - loss: 2.0000 - acc: 0.7000\n")


def test_value_formatting(pipe, clock):
    bar = Progbar(target=1, verbose=2)
    bar.update(1, [("tiny", 1e-5), ("neg", -0.25), ("numpy", np.float32(0.5)), ("text", "abc")])
    assert pipe.getvalue().endswith(" - tiny: 1.0000e-05 - neg: -0.2500 - numpy: 0.5000 - text: abc\n")


def test_unknown_target(tty, clock):
    bar = Progbar(target=None, interval=0.0)
    clock.tick(1)
    bar.update(3, [("loss", 1.0)])
    assert tty.getvalue() == "\r      3/Unknown - 1s 333ms/step - loss: 1.0000"
    bar.update(3, finalize=True)
    assert tty.getvalue().endswith("\n")


def test_add_advances(pipe, clock):
    bar = Progbar(target=4, verbose=2)
    bar.add(2, [("loss", 1.0)])
    bar.add(2, [("loss", 3.0)])
    assert pipe.getvalue().startswith("4/4 - ") and "loss: 2.0000" in pipe.getvalue()


def test_default_width_and_unit_name(pipe, clock):
    bar = Progbar(target=2, unit_name="sample")
    clock.tick(2.0)
    bar.update(2)
    line = pipe.getvalue()
    assert line.count("=") == 30 and "1s/sample" in line
    narrow = Progbar(target=2, width=4)
    narrow.update(2)
    assert "2/2 [====]" in pipe.getvalue()


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s/step"), (2.4, "2s/step"), (0.0123, "12ms/step"), (4.2e-5, "42us/step")]
)
def test_time_per_step_format(seconds, text):
    assert P._format_time_per_unit(seconds, "step") == text


@pytest.mark.parametrize("seconds, text", [(5.9, "5s"), (75, "1:15"), (3725, "1:02:05")])
def test_eta_format(seconds, text):
    assert P._format_eta(seconds) == text


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"target": -1}, ValueError, "target=-1"),
        ({"target": 2.5}, ValueError, "target=2.5"),
        ({"target": 3, "width": 0}, ValueError, "width=0"),
        ({"target": 3, "verbose": 3}, ValueError, "verbose=3"),
        ({"target": 3, "verbose": True}, ValueError, "verbose=True"),
        ({"target": 3, "interval": -1}, ValueError, "interval=-1"),
        ({"target": 3, "stateful_metrics": "loss"}, TypeError, "stateful_metrics='loss'"),
        ({"target": 3, "unit_name": 5}, TypeError, "unit_name=5"),
    ],
)
def test_argument_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(".", r"\.")):
        Progbar(**kwargs)
