"""The demo's BLISS shell (``sampletrack demo --shell``): BLISS's own shell, in a child process
that has the terminal to itself while the demo's servers keep running.

Ctrl-C: the terminal sends SIGINT to every process of its foreground process group. The demo's
servers (beacon and its Redis, the tracking service, the Tango database and the NexusWriter) each
run in a process session of their own, so they never get it; the shell runs in the demo's
process group (the terminal's foreground group, so it may read the terminal) and gets it: BLISS
aborts the command being run and shows its prompt again. The demo process itself gets it too:
while the shell runs, :func:`run_shell` makes it ignore SIGINT and SIGQUIT, as POSIX
``system()`` does, with a handler that does nothing rather than ``SIG_IGN``, because an ignored
signal stays ignored across ``exec`` (the shell would then never see Ctrl-C) while a handler is
reset to the default. Before this, the demo's default handler turned Ctrl-C into
KeyboardInterrupt there, whose clean-up stopped the servers and killed the shell
(``subprocess.run`` kills its child when interrupted): the whole demo ended. The kernel sends
SIGINT only while the terminal is in its normal mode: during BLISS 2.0's scans, a ``sleep``, a
mount; not while BLISS's line editor, or BLISS 2.4's scan display, has it in raw mode and reads
Ctrl-C as a key. So Ctrl-C ended the demo during some commands and not others.

The shell process: ``python -m bliss_sampletrack.demo.shell SESSION`` runs BLISS's ``bliss -s
SESSION --no-tmux`` (the ``bliss`` console script's function, BLISS 2.0 and 2.4 alike) after the
test bed's BLISS 2.4 compatibility layer (:func:`~bliss_sampletrack.testbed.session.import_bliss`),
which the plain ``bliss`` script lacks: with BLISS 2.4.0 from PyPI it cannot import its shell
(``No module named 'flint'``).

Saving: the demo's copy of the session's setup file calls
:func:`bliss_sampletrack.demo.sequence.save_shell_scans` (see
:func:`bliss_sampletrack.demo.run.prepare_config`), so that the shell's scans go where the
scripted run puts its own, under ``<workdir>/data``, not to BLISS's default ``/tmp/scans``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import termios
from collections.abc import Iterator
from importlib.metadata import entry_points
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

MODULE = "bliss_sampletrack.demo.shell"
#: what the terminal sends that is the shell's to handle, not the demo's (Ctrl-C, Ctrl-\)
LEFT_TO_SHELL = (signal.SIGINT, signal.SIGQUIT)
#: seconds the shell gets to end after SIGTERM (the demo is being stopped) before SIGKILL
STOP_TIMEOUT_S = 10.0


def shell_command(session: str) -> list[str]:
    """The command line of the demo's BLISS shell on ``session``, with this interpreter."""
    return [sys.executable, "-m", MODULE, session]


def _leave_to_shell(signum: int, frame: FrameType | None) -> None:
    """Nothing: the shell, in the same process group, got the same signal and acts on it."""


@contextlib.contextmanager
def _terminal_modes_kept() -> Iterator[None]:
    """Put the terminal's modes back as they were, however the shell ended: a shell killed while
    its line editor had the terminal in raw mode would leave it so (no echo, no line editing)."""
    try:
        saved = termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError, ValueError):
        # not a terminal (a pipe, /dev/null, a closed stdin): nothing to put back
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
            except (termios.error, OSError):
                # the terminal is gone (its window closed): nothing left to restore
                log.debug("terminal modes not restored: the terminal is gone")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the shell, SIGKILL it after :data:`STOP_TIMEOUT_S`; reaps it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning(
            "the BLISS shell (pid %d) ignored SIGTERM for %.0f s: killing it", process.pid, STOP_TIMEOUT_S
        )
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def run_shell(command: list[str], env: dict[str, str]) -> int:
    """Run the shell in this terminal until it exits; its exit code.

    Ctrl-C and Ctrl-\\ are the shell's meanwhile (see the module's docstring). When this process
    is stopped meanwhile (SIGTERM, a closed terminal: a KeyboardInterrupt here, see
    :mod:`bliss_sampletrack.demo.run`), the shell is stopped first, then the interruption goes on."""
    previous = {signum: signal.signal(signum, _leave_to_shell) for signum in LEFT_TO_SHELL}
    try:
        with _terminal_modes_kept():
            process = subprocess.Popen(command, env=env)
            try:
                return process.wait()
            except BaseException:
                # this process is being stopped: the shell must not outlive the servers it uses
                _stop(process)
                raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _bliss_main() -> Any:
    """The function of BLISS's ``bliss`` console script (``bliss.shell.main:main`` in 2.0,
    ``bliss.shell.main.step1:main`` in 2.4)."""
    scripts = entry_points(group="console_scripts", name="bliss")
    if not scripts:
        raise SystemExit("sampletrack demo: BLISS's `bliss` console script is not installed here")
    return next(iter(scripts)).load()


def main(argv: list[str] | None = None) -> int:
    """``python -m bliss_sampletrack.demo.shell SESSION``: ``bliss -s SESSION --no-tmux``."""
    from bliss_sampletrack.testbed.session import import_bliss

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python -m {MODULE} SESSION")
    import_bliss()  # the BLISS 2.4 layer first, then gevent's monkey-patching
    bliss_main = _bliss_main()
    return int(bliss_main(["bliss", "-s", args[0], "--no-tmux"]) or 0)


if __name__ == "__main__":
    sys.exit(main())
