"""Property: `mnist-search check` answers every study file in one line, never a traceback.

Mutations of the shipped study files (deleted keys, wrong types, nan/inf, huge and negative
numbers, empty lists and tables, unknown keys, odd strings) are written back as TOML and
checked in process. Run with -s to see how many files were tried.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_search.cli import cli
from mnist_search.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {p.name: tomllib.loads(p.read_text()) for p in sorted((REPO / "studies").glob("*.toml"))}
TRIED = {"files": 0, "ok": 0, "error": 0}


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def dump(doc: dict[str, Any]) -> str:
    """A TOML writer for what study files hold: top-level values, tables, arrays of tables."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v
                                                 and all(isinstance(x, dict) for x in v))]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += [f"[{toml_key(k)}]"] + [f"{toml_key(a)} = {toml_value(b)}"
                                             for a, b in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += [f"[[{toml_key(k)}]]"] + [f"{toml_key(a)} = {toml_value(b)}"
                                                   for a, b in item.items()]
    return "\n".join(lines) + "\n"


ODD_STRINGS = st.sampled_from(["", " ", "none", "l3", "grid", "tpe", "maximize", "../../etc",
                               "mnist", "fashion-mnist", "cuda:9", "é", "128-64", "#", "0"])
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 10**12, -(10**12)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.5, 0.5, 1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
    st.booleans(), ODD_STRINGS)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.just([]), st.just({}),
                   st.dictionaries(st.sampled_from(["low", "high", "log", "step", "x"]),
                                   SCALARS, max_size=4),
                   st.lists(st.lists(st.integers(-2, 600), max_size=3), max_size=3))


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in the document (into tables and arrays of tables)."""
    out: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) and all(isinstance(x, dict) for x in doc) else []
    for k, v in items:
        out.append((*prefix, k))
        if isinstance(v, (dict, list)):
            out += paths(v, (*prefix, k))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = json.loads(json.dumps(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))],
                                default=str))
    for _ in range(draw(st.integers(1, 3))):
        targets = paths(doc)
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["colour", "lr", "epochs", "hidden", "kind", "low",
                                         "penalty", "depth", "label", "dataset"]))] = \
                draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return dump(doc)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=mutated())
def check_mutated_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "s.toml"
    path.write_text(text)
    res = CliRunner().invoke(cli, ["check", str(path)], obj={})
    TRIED["files"] += 1
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and not res.stderr.strip(), res.output
    if res.exit_code == 0:
        TRIED["ok"] += 1
        assert lines[0].startswith(f"{path}: ok: ")
        spec = load_spec(path)  # and what check calls valid really builds
        for ref in spec.references:
            spec.base_config(**ref.values)
    else:
        TRIED["error"] += 1
        assert res.exit_code == 2 and lines[0].startswith("error: "), res.output


def test_check_answers_every_mutated_study_file_in_one_line(tmp_path_factory):
    """Hypothesis generates the files; the counts are this test's own, whatever ran
    before it, and both kinds of answer must have been given."""
    TRIED.update(files=0, ok=0, error=0)
    check_mutated_files(tmp_path_factory)
    print(f"\ncheck fuzz: {TRIED['files']} generated study files, {TRIED['ok']} valid, "
          f"{TRIED['error']} refused in one line, 0 tracebacks")
    assert TRIED["files"] >= 100 and TRIED["ok"] > 0 and TRIED["error"] > 0
