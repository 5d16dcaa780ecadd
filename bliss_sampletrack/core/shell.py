"""The shell's side of the tracker's and the changers' commands: argument checks that say what
was wrong, and tab completion that offers commands. Pure Python (beartype, which BLISS ships):
in the core so that every layer's BLISS objects can use it.

BLISS's ``typecheck`` decorator answers a wrong argument with "Intended Usage: mount(self)": it
lists only the parameters without a default (here, ``self``) and then beartype's own text.
:func:`command` checks the same type hints (with beartype's ``is_bearable``) and names the
argument, what it got, and the whole signature::

    TypeError: tracker.mount(): argument 'barcode' must be str | None, got int 42
      usage: tracker.mount(barcode: str | None = None, name: str | None = None, force: bool = False)

The decorated method keeps its signature (``functools.wraps``), which jedi shows as the shell's
call tip. Wrong calls (a missing or unexpected argument) get the same usage line.

:func:`commands_dir` is for ``__dir__``: the BLISS shell completes ``tracker.<Tab>`` from
``dir(tracker)`` (through jedi) and already hides names starting with ``_``; the public methods
that changers and macros use (``record_mount``, ``changing``...) are not for typing at the prompt.
"""

from __future__ import annotations

import functools
import inspect
import logging
import reprlib
import typing
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from beartype.door import is_bearable

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother = 60, 60


def usage(function: Callable[..., Any], owner: str) -> str:
    """``owner.name(param: hint = default, ...)`` as written in the source (without ``self``)."""
    params = []
    for param in list(inspect.signature(function).parameters.values())[1:]:
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            hint = (
                param.annotation
                if isinstance(param.annotation, str)
                else inspect.formatannotation(param.annotation)
            )
            text += f": {hint}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            text = f"*{text}"
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{text}"
        params.append(text)
    return f"{owner}.{function.__name__}({', '.join(params)})"


def command(function: Callable[P, R]) -> Callable[P, R]:
    """Type-check a shell command's arguments against its hints; a wrong one raises TypeError
    naming the argument, the value and the usage (see the module). ``self.name`` names the object."""
    signature = inspect.signature(function)
    hints: dict[str, Any] | None = None  # resolved at the first call: the module may not be done yet

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        nonlocal hints
        owner = str(getattr(args[0], "name", type(args[0]).__name__)) if args else "?"
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:  # missing, extra or unknown arguments: Python's words + the usage
            raise TypeError(
                f"{owner}.{function.__name__}(): {exc}\n  usage: {usage(function, owner)}"
            ) from None
        if hints is None:
            hints = typing.get_type_hints(function)
        for name, value in list(bound.arguments.items())[1:]:
            hint = hints.get(name)
            if hint is None or is_bearable(value, hint):
                continue
            written = signature.parameters[name].annotation
            expected = written if isinstance(written, str) else inspect.formatannotation(hint)
            raise TypeError(
                f"{owner}.{function.__name__}(): argument {name!r} must be {expected}, got "
                f"{type(value).__name__} {_REPR.repr(value)}\n  usage: {usage(function, owner)}"
            )
        return function(*args, **kwargs)

    return checked


def commands_dir(commands: Iterable[str]) -> list[str]:
    """What ``__dir__`` returns: the shell's commands and the few attributes worth reading."""
    return sorted(set(commands))
