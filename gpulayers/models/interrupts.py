"""Ctrl-C during ``fit``: held until the running step has finished, then raised.

:func:`interrupts_between_steps` guards the fit loop. A SIGINT that arrives
inside it is noted, not raised; the loop calls the check it yields between
steps, before validation and before the epoch's callbacks, and a pending
interrupt is raised when the guarded region ends, so none is ever lost and
the model is left exactly as its last completed step left it.
"""

import contextlib
import signal
import threading

__all__ = ["interrupts_between_steps"]


@contextlib.contextmanager
def interrupts_between_steps():
    """Hold Ctrl-C (SIGINT) until the running training step has finished.

    Yields a function that raises KeyboardInterrupt if one arrived, to be
    called between steps; one still pending when the region ends is raised
    then. A second Ctrl-C raises at once. The handler in place before is put
    back in every case. Only possible in the main thread with Python's
    default handler installed; elsewhere interrupts behave as usual.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.default_int_handler:
        yield lambda: None
        return
    pending = []

    def hold(signum, frame):
        if pending:  # asked twice: stop now
            raise KeyboardInterrupt
        pending.append(signum)

    def check():
        if pending:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, hold)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
    check()  # one that came after the last check (the last step, validation, callbacks): not lost
