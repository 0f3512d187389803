"""The study files that ship with the package, and finding a study file by name.

`run notebook` works from any directory once the package is installed: a name that is not
a file is looked up among the bundled studies (mnist_search/studies/*.toml, package data).
A local file wins: `notebook` means ./notebook.toml when that exists, with a notice.
Standard library only.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

from .errors import SpecError

__all__ = ["BUNDLED_DIR", "bundled_studies", "resolve_study", "study_summary"]

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "studies"


def bundled_studies() -> dict[str, Path]:
    """Bundled study name -> its file, by name."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.toml"), key=lambda p: p.stem)}


def resolve_study(study: str | Path) -> Path:
    """The file a study argument names: an existing path as it is; else, for a bare name
    (`notebook` or `notebook.toml`), a local NAME.toml, then the bundled study NAME."""
    path = Path(study)
    bundled = bundled_studies()
    name = path.name.removesuffix(".toml")
    if path.exists():
        if path.parent == Path(".") and name in bundled and \
                path.resolve() != bundled[name].resolve():
            log.info("%s: a local file, used instead of the bundled study %r", path, name)
        return path
    if path.parent == Path("."):
        local = Path(f"{name}.toml")
        if local.exists():
            log.info("%s: using the local file %s (not the bundled study of that name)",
                     study, local)
            return local
        if name in bundled:
            return bundled[name]
    known = ", ".join(bundled) or "none"
    raise SpecError(f"{study}: no such study file, nor a bundled study (bundled: {known}; "
                    "mnist-search init NAME copies one out)")


def study_summary(path: Path) -> str:
    """The first sentence of a study file's description (or '' when it has none)."""
    try:
        text = str(tomllib.loads(path.read_text(encoding="utf-8")).get("description", ""))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    flat = " ".join(text.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[:end + 1]
