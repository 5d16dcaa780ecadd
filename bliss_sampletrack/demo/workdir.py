"""The demo's work folder (``--workdir``): made for one demo, reused by the next.

A folder the demo made holds a marker file, :data:`MARKER`. Giving that folder again reuses it:

- kept: the tracking service's database (``service.db``: the events of the earlier runs, so the
  timeline page goes on), its tokens (``tokens.env``, when the service still accepts them), the
  data (``data/``: new scans go into new datasets, BLISS never overwrites a dataset folder) and
  the service's log (appended to);
- rebuilt: :data:`REBUILT`, the folders made from the repository at each start (the beacon
  configuration, beacon's database and Redis files, the NexusWriter's Tango database). Redis
  never saved anything to disk: the tracker starts with no recorded state (UNKNOWN until a mount
  or an unmount settles it) and an empty outbox.

Refused, with a message saying what to do, and before anything is started: a folder that is not
empty and was not made by the demo (the demo deletes folders in its work folder: it never does so
in someone else's), and a folder that another running demo uses (a lock on the marker file, held
while the demo runs and released by the kernel when its process ends, however it ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: the file that says "made by sampletrack demo"; its lock says "in use"; it holds the user's pid
MARKER = ".sampletrack-demo"
#: what every start makes anew from the repository (nothing a user made lives there)
REBUILT = ("config", "beacon", "nexus_writer")
#: what a demo folder made before the marker existed holds (recognised as a demo folder too)
OLD_DEMO_FILES = ("tokens.env", "service.db")


@dataclass(frozen=True)
class DemoFolder:
    path: Path
    #: True when an earlier demo's folder is reused (its service database, tokens and data kept)
    reused: bool


def _refuse(message: str) -> SystemExit:
    return SystemExit(f"sampletrack demo: {message}")


def _is_demo_folder(path: Path) -> bool:
    return (path / MARKER).is_file() or all((path / name).is_file() for name in OLD_DEMO_FILES)


def _holder(marker: Path) -> str:
    """Who holds the folder, as written by that demo ("pid N"), for the refusal message."""
    try:
        text = marker.read_text().strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def demo_folder(workdir: Path | None) -> Iterator[DemoFolder]:
    """The work folder for this demo, locked for the block: a new temporary folder when
    ``workdir`` is None, ``workdir`` (created) when new or empty, or an earlier demo's folder,
    reused (see the module's docstring). Raises SystemExit with what to do when refused."""
    if workdir is None:
        path = Path(tempfile.mkdtemp(prefix="sampletrack-demo-"))
    else:
        path = Path(workdir).expanduser().absolute()
        if path.exists() and not path.is_dir():
            raise _refuse(
                f"--workdir {path} is a file, not a folder; give a folder (new, or an earlier demo's)"
            )
        path.mkdir(parents=True, exist_ok=True)
    reused = any(path.iterdir())
    if reused and not _is_demo_folder(path):
        raise _refuse(
            f"--workdir {path} is not empty and was not made by sampletrack demo; give a new or "
            "empty folder, or an earlier demo's folder to reuse it (or no --workdir: a new "
            "temporary folder)"
        )
    marker = path / MARKER
    # opened without O_TRUNC: the pid of a demo that holds the lock must stay readable until we
    # have the lock ourselves; the descriptor is not inherited by the servers (Python's default)
    fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refuse(
                f"--workdir {path} is in use by another sampletrack demo ({_holder(marker)}); stop "
                "that demo (exit its shell, or Ctrl-C) or give another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        if reused:
            for name in REBUILT:
                _remove(path / name)
        yield DemoFolder(path, reused)
    finally:
        os.close(fd)  # releases the lock
