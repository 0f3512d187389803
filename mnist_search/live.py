"""Progress where the user looks: a display updated in place in a Jupyter cell, a tqdm bar
on a terminal, nothing otherwise.

Shared by a run's progress (workers/progress.py) and confirm's, so both look alike. In a
kernel it is tqdm.auto's widget where ipywidgets is installed, else one IPython display
updated by its id (no widget needed, as in a plain Jupyter or a notebook run headless).
"""

from __future__ import annotations

import html
import sys
from typing import Any, Protocol

__all__ = ["Display", "Line", "in_kernel", "live_display"]


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel shell, not a terminal)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return shell is not None and hasattr(shell, "kernel")


class Display(Protocol):
    """What a progress display offers: tqdm's own names, so a tqdm bar is one."""

    n: int

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...


class Line:
    """One line of progress, as a notebook shows it (HTML) and as text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<pre style='margin:0'>{html.escape(self.text)}</pre>"


class CellDisplay:
    """Progress in a notebook cell, updated in place (see the module's docstring)."""

    def __init__(self, name: str, total: int, unit: str) -> None:
        self.name, self.total, self.unit, self.n, self.postfix = name, total, unit, 0, ""
        self.widget: Any = None
        self.handle: Any = None
        try:
            import ipywidgets  # noqa: F401 - what tqdm.auto's widget needs
            from tqdm.auto import tqdm

            self.widget = tqdm(total=total, desc=name, unit=unit)
        except ImportError:
            from IPython.display import display

            self.handle = display(Line(f"{name}: starting"),  # type: ignore[no-untyped-call]
                                  display_id=True)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        if self.widget is not None:
            self.widget.n = self.n
            self.widget.set_postfix_str(self.postfix)
            self.widget.refresh()
        elif self.handle is not None:
            self.handle.update(Line(f"{self.name}: {self.n}/{self.total} {self.unit}s "
                                    f"finished, {self.postfix}"))

    def close(self) -> None:
        if self.widget is not None:
            self.widget.close()


def live_display(name: str, total: int, unit: str, show: bool | None) -> Display | None:
    """A cell display in a kernel, a tqdm bar on a terminal's stderr, None otherwise; `show`
    True or False decides instead (True off a terminal: the bar on stderr anyway)."""
    if show is False or (show is None and not (in_kernel() or sys.stderr.isatty())):
        return None
    if in_kernel():
        return CellDisplay(name, total, unit)
    from tqdm import tqdm

    bar: Display = tqdm(total=total, desc=name, unit=unit, file=sys.stderr,
                        dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{postfix}]")
    return bar
