"""Write the design page's map from each module to the test files that run its code.

    rm -rf /tmp/map
    MNIST_SEARCH_MODULE_MAP=/tmp/map .venv/bin/python -m pytest -m "not slow"
    .venv/bin/python tests/module_map.py /tmp/map

The conftest records, in each test process, which package modules' functions each test file
ran (not code run in worker processes, nor the `slow` files); this script merges those
records and rewrites the table between the markers in docs/design.md, the test files that
import the module first. A module no traced test ran is listed with the test files that
import it, or as reached only in the processes tests start.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "design.md"
BEGIN, END = "<!-- module-map: begin -->", "<!-- module-map: end -->"
MOST = 8  # test files named per module; the rest are counted


def modules() -> list[str]:
    out = []
    for path in sorted((REPO / "mnist_search").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] not in ("__init__", "__main__"):
            out.append(".".join(parts))
    return out


def importers() -> dict[str, set[str]]:
    """Module -> the test files that import it (or a name from it) directly."""
    found: dict[str, set[str]] = {}
    for test in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(test.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] \
                if isinstance(node, ast.ImportFrom) else []
            for name in names:
                found.setdefault(name, set()).add(test.name)
    return found


def table(traced: dict[str, set[str]]) -> str:
    direct = importers()
    rows = ["| module | test files that run it |", "| --- | --- |"]
    for module in modules():
        ran = {Path(t).name for t in traced.get(module, ())}
        named = direct.get(module, set())
        tests = sorted(ran & named) + sorted(ran - named)  # those that import it first
        note = ""
        if not tests:
            tests = sorted(named)
            note = "imported by " if tests else "only in the processes tests start " \
                "(`procs`: the command, worker processes)"
        shown = ", ".join(f"`{t}`" for t in tests[:MOST])
        more = f" and {len(tests) - MOST} more" if len(tests) > MOST else ""
        rows.append(f"| `{module.removeprefix('mnist_search.')}` | {note}{shown}{more} |")
    return "\n".join(rows)


def main(folder: str) -> None:
    traced: dict[str, set[str]] = {}
    for record in Path(folder).glob("map-*.json"):
        for module, tests in json.loads(record.read_text()).items():
            traced.setdefault(module, set()).update(tests)
    text = PAGE.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    PAGE.write_text(f"{head}{BEGIN}\n{table(traced)}\n{END}{tail}")


if __name__ == "__main__":
    main(sys.argv[1])
