"""A Keras-style text progress bar (``keras.utils.Progbar``).

``Progbar(target).update(current, values)`` draws lines such as::

    12/50 [=======>......................] - ETA: 3s - loss: 0.1234 - accuracy: 0.9000
    50/50 [==============================] - 2s 40ms/step - loss: 0.1234 - accuracy: 0.9000

``verbose=1`` redraws the line in place (``\\r``) when ``sys.stdout`` is a
terminal (or a Jupyter stream); on any other stream (a log file, a pipe, CI)
it prints nothing until the bar is finalized and then prints that one final
line, so logs get one line per epoch. ``verbose=2`` prints only the final line
in Keras 3's short form ``50/50 - 2s - 40ms/step - loss: 0.1234``.
``verbose=0`` prints nothing.

Values are averaged over steps (weighted by the steps each update covers)
unless their name is in ``stateful_metrics``, whose latest value is shown.
Values are expected as Python numbers: the bar does plain float
arithmetic and never converts arrays (so it never waits on a GPU); anything
that is not a real number is shown as ``str(value)``.

Output goes to ``sys.stdout`` as it is at each call (so redirection and
pytest's ``capsys`` see it).

Example:
    >>> bar = Progbar(target=3)
    >>> for step in range(3):
    ...     bar.update(step + 1, [("loss", 0.5)])
"""

import math
import numbers
import sys
import time

from gpulayers.argument_validation import standardize_int

__all__ = ["Progbar"]

_clock = time.monotonic  # elapsed-time source (tests replace it)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _stream():
    return sys.stdout


def _is_dynamic(stream):
    """Whether ``stream`` can redraw a line with ``\\r``: a terminal or a Jupyter output stream."""
    if stream is None:
        return False
    if type(stream).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def _format_value(value):
    if not _is_number(value):
        return str(value)
    value = float(value)
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


def _format_eta(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{(seconds % 3600) // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


def _format_time_per_unit(seconds, unit_name):
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/{unit_name}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit_name}"
    return f"{seconds * 1e6:.0f}us/{unit_name}"


class Progbar:
    """Displays a progress bar.

    Args:
        target: Total number of steps expected (an int >= 0), or None if unknown.
        width: Width of the bar in characters (an int >= 1).
        verbose: 0 (silent), 1 (a live bar; one final line on a non-terminal
            stream) or 2 (one final line).
        interval: Minimum time in seconds between two redraws (a float >= 0).
        stateful_metrics: Names of values shown as given rather than averaged.
        unit_name: Name of a step in the time-per-step display.
    """

    def __init__(self, target, width=30, verbose=1, interval=0.05, stateful_metrics=None, unit_name="step"):
        self.target = standardize_int(target, "target", minimum=0, allow_none=True)
        self.width = standardize_int(width, "width")
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"Invalid value for `verbose`: expected 0, 1 or 2. Received: verbose={verbose!r}")
        self.verbose = int(verbose)
        if not _is_number(interval) or not math.isfinite(interval) or interval < 0:
            raise ValueError(
                f"Invalid value for `interval`: expected a finite number of seconds >= 0. Received: interval={interval!r}"
            )
        self.interval = float(interval)
        if stateful_metrics is None:
            stateful_metrics = ()
        elif isinstance(stateful_metrics, str) or not hasattr(stateful_metrics, "__iter__"):
            raise TypeError(
                "Invalid type for `stateful_metrics`: expected None or an iterable of names. "
                f"Received: stateful_metrics={stateful_metrics!r}"
            )
        self.stateful_metrics = set(stateful_metrics)
        if not isinstance(unit_name, str):
            raise TypeError(f"Invalid type for `unit_name`: expected a string. Received: unit_name={unit_name!r}")
        self.unit_name = unit_name

        self._seen_so_far = 0
        self._values = {}  # name -> [weighted sum, weight] (numbers) or the value as given (others)
        self._values_order = []
        self._start = _clock()
        self._last_update = None  # time of the last draw
        self._time_after_first_step = None
        self._prev_width = 0  # length of the last line drawn in place

    # ------------------------------------------------------------ public

    def update(self, current, values=None, finalize=None):
        """Record step ``current`` (1-based count of steps done) and redraw.

        Args:
            current: Number of steps completed so far.
            values: List of ``(name, value)`` pairs for the last step(s), or a dict.
            finalize: Whether this is the bar's last update; None means
                ``current >= target`` (never, when the target is unknown).
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if values is None:
            values = ()
        elif isinstance(values, dict):
            values = values.items()
        for name, value in values:
            if name not in self._values_order:
                self._values_order.append(name)
            if name in self.stateful_metrics or not _is_number(value):
                self._values[name] = [value, 1] if _is_number(value) else value
            else:
                # Weight by the number of steps this update covers (at least 1).
                steps = max(current - self._seen_so_far, 1)
                acc = self._values.get(name)
                if isinstance(acc, list):
                    acc[0] += float(value) * steps
                    acc[1] += steps
                else:
                    self._values[name] = [float(value) * steps, steps]
        self._seen_so_far = current

        now = _clock()
        time_per_unit = self._step_duration(current, now)
        if self.verbose == 0:
            return
        stream = _stream()
        if stream is None:
            return
        if self.verbose == 1 and _is_dynamic(stream):
            if not finalize and self._last_update is not None and now - self._last_update < self.interval:
                return
            line = self._bar_line(current, now, time_per_unit, finalize)
            pad = " " * max(self._prev_width - len(line), 0)
            self._prev_width = len(line)
            stream.write("\r" + line + pad + ("\n" if finalize else ""))
        elif finalize:
            if self.verbose == 1:
                line = self._bar_line(current, now, time_per_unit, True)
            else:
                line = self._short_line(current, now, time_per_unit)
            stream.write(line + "\n")
        else:
            return
        stream.flush()
        self._last_update = now

    def add(self, n, values=None):
        """``update(seen + n, values)``."""
        self.update(self._seen_so_far + n, values)

    # ------------------------------------------------------------ formatting

    def _counter(self, current):
        if not self.target:
            return f"{current:7d}/Unknown"
        digits = len(str(self.target))
        return f"{current:{digits}d}/{self.target}"

    def _values_text(self):
        parts = []
        for name in self._values_order:
            entry = self._values[name]
            if isinstance(entry, list):
                total, count = entry
                parts.append(f" - {name}: {_format_value(float(total) / max(1, count))}")
            else:
                parts.append(f" - {name}: {entry}")
        return "".join(parts)

    def _bar_line(self, current, now, time_per_unit, finalize):
        line = self._counter(current)
        if self.target:
            filled = int(self.width * min(current / self.target, 1.0))
            bar = ""
            if filled > 0:
                bar = "=" * (filled - 1) + (">" if current < self.target else "=")
            line += " [" + bar + "." * (self.width - filled) + "]"
        if self.target and not finalize and current < self.target:
            line += " - ETA: " + _format_eta(time_per_unit * (self.target - current))
        else:
            line += f" - {now - self._start:.0f}s {_format_time_per_unit(time_per_unit, self.unit_name)}"
        return line + self._values_text()

    def _short_line(self, current, now, time_per_unit):
        line = f"{self._counter(current).strip()} - {now - self._start:.0f}s"
        line += f" - {_format_time_per_unit(time_per_unit, self.unit_name)}"
        return line + self._values_text()

    def _step_duration(self, current, now):
        """Seconds per step, leaving out the (often slow) first step once there are more."""
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            per_step = (now - self._time_after_first_step) / (current - 1)
        else:
            per_step = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return per_step
