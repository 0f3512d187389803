"""The package's shape, read from its source with ast: imports go one way (no cycles, counting
imports inside functions), no module takes another's private names, only the space package knows
search-parameter names, and the import-linter layers contract holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnist_search"
PARAMETER_NAMES = {"depth", "width", "penalty", "penalty_lambda", "hidden"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import statement, anywhere."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None) if sub in MODULES else (target, a.name))
    return [(m, n) for m, n in out if m.split(".")[0] == "mnist_search"]


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports(m) if t in MODULES and t != m} for m in MODULES}


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt == "mnist_search":  # the root's lazy exports are not module imports
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_no_module_imports_another_modules_private_names():
    private = [f"{m} imports {t}.{n}" for m in MODULES for t, n in imports(m)
               if n is not None and n.startswith("_") and not n.startswith("__") and t != m]
    assert not private, private


def public_names(module: str) -> set[str] | None:
    """The module's __all__, or None when it has none."""
    for node in ast.parse(MODULES[module].read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            return set(ast.literal_eval(node.value))
    return None


def test_every_module_imports_only_what_others_export():
    """A name one module takes from another is in that one's __all__ (a package's
    __init__ counts as exporting its submodules)."""
    hidden = [f"{m} imports {t}.{n}" for m in MODULES for t, n in imports(m)
              if n is not None and t in MODULES and t != m
              and f"{t}.{n}" not in MODULES and n not in (public_names(t) or set())]
    assert not hidden, hidden


def test_every_module_says_what_it_exports():
    missing = [m for m in MODULES if public_names(m) is None
               and not m.endswith("__main__")]
    assert not missing, missing


def test_only_space_compares_parameter_names_to_literals():
    found = []
    for m, path in MODULES.items():
        if m == "mnist_search.space" or m.startswith("mnist_search.space."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in PARAMETER_NAMES:
                        found.append(f"{m}:{node.lineno} compares with {side.value!r}")
    assert not found, found


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint)], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("module", ["mnist_search.training.train", "mnist_search.config",
                                    "mnist_search.spec", "mnist_search.space",
                                    "mnist_search.data"])
def test_training_and_lower_layers_know_nothing_of_optuna(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_parent_of_run_never_imports_torch_or_matplotlib():
    code = ("import sys, mnist_search.workers.pool, mnist_search.cli; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("storage", ["sqlite:///{tmp}/t.db", "postgresql+psycopg://u:pw@h/db"])
def test_run_starts_its_workers_before_importing_optuna_or_sqlalchemy(tmp_path, storage):
    """What `run` does before its workers start (the study file, the URL's check, whether a
    SQLite storage already holds the study) imports neither: their 0.3-0.4 s, paid first,
    was that much later that every worker started, on every run."""
    code = ("import sys\n"
            "from mnist_search.workers import spawn\n"
            "def start_early(*args):\n"
            "    print(sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))\n"
            "    sys.exit(0)\n"
            "spawn.start_early = start_early\n"
            "from mnist_search.cli import main\n"
            f"sys.argv = ['mnist-search', 'run', 'studies/notebook.toml', '--storage', "
            f"{storage.format(tmp=tmp_path)!r}]\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_api_is_lazy_and_complete():
    code = ("import sys, mnist_search as ms; before = 'torch' in sys.modules; "
            "names = [n for n in ms.__all__ if getattr(ms, n) is not None]; "
            "print(before, ' '.join(sorted(names)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "Objective", "StudySpec", "TrainConfig",
                                  "TrainResult", "__version__", "confirm", "dashboard",
                                  "load_data", "load_model", "load_results", "load_spec",
                                  "open_study", "report", "rerun_trial", "run_study",
                                  "summary", "train"]


TENSOR_MAKERS = {"zeros", "ones", "full", "empty", "tensor", "as_tensor", "arange", "rand",
                 "randn", "randint", "randperm", "eye", "linspace", "Generator"}


def test_every_tensor_made_in_training_names_its_device():
    """A tensor made without `device=` lands on the CPU: on a GPU that was Adam's state
    (every such trial failed at its first step). The *_like and new_* forms inherit it."""
    unnamed = []
    for name, path in MODULES.items():
        if not name.startswith("mnist_search.training"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in TENSOR_MAKERS and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "torch" \
                    and not any(k.arg == "device" for k in node.keywords):
                unnamed.append(f"{path.name}:{node.lineno} torch.{node.func.attr}")
    assert not unnamed, unnamed


DOOR = "mnist_search.storage.internals"  # the one module that touches Optuna's private parts
OPTUNA_PACKAGES = ("optuna", "optuna_dashboard")


def private_optuna_uses(module: str, allowed: set[str]) -> list[str]:
    """Where `module` imports a private name of Optuna or optuna-dashboard, or reads or sets
    a private attribute it did not define itself (on anything but `os._exit`), or names one
    in getattr/setattr/hasattr; `allowed` names the private attributes it may use."""
    tree = ast.parse(MODULES[module].read_text())
    own = {n.name for n in ast.walk(tree)
           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    own |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.ctx, ast.Store) and ast.unparse(n.value) in ("self", "cls")}
    found = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names if not node.level]
            for name in names:
                parts = name.split(".")
                if parts[0] in OPTUNA_PACKAGES and any(p.startswith("_") for p in parts):
                    found.append(f"{where} imports {name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and node.attr != "_repr_html_":
            receiver = ast.unparse(node.value)
            if receiver == "os" or node.attr in allowed or \
                    (receiver in ("self", "cls") and node.attr in own):
                continue
            found.append(f"{where} uses {receiver}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr", "delattr") and \
                len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and \
                str(node.args[1].value).startswith("_"):
            found.append(f"{where} names {node.args[1].value!r} in {node.func.id}")
    return found


def test_only_one_module_touches_optunas_private_parts():
    """Optuna's private names and attributes go through storage/internals.py; the retrying
    storage may name the RDBStorage methods it overrides, and nothing else."""
    from mnist_search.storage.retry import RETRIED, RetryingRDBStorage

    overrides = set(RetryingRDBStorage.OPTUNA_OVERRIDES) | {n for n in RETRIED
                                                            if n.startswith("_")}
    found = [use for m in MODULES if m != DOOR for use in private_optuna_uses(
        m, overrides if m == "mnist_search.storage.retry" else set())]
    assert not found, found
    assert private_optuna_uses(DOOR, set()), "the door uses nothing private: rule checks nothing"


def test_the_rule_catches_a_private_import_and_attribute(tmp_path, monkeypatch):
    """The rule above fails on the uses it is for (a rule that cannot fail checks nothing)."""
    planted = tmp_path / "planted.py"
    planted.write_text("from optuna.storages._rdb import models\n"
                       "def f(study):\n    study._thread_local.x = None\n"
                       "    return getattr(study, '_storage', None)\n")
    monkeypatch.setitem(MODULES, "planted", planted)
    uses = private_optuna_uses("planted", set())
    assert len(uses) == 3, uses


def test_each_package_docstring_names_all_its_modules():
    """A package's docstring is its map: every module in it is named there."""
    missing = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for sub in sorted(path.parent.glob("*.py")):
            if sub.name not in ("__init__.py", "__main__.py") and sub.stem not in doc.split(
                    ) and not any(w.strip("(),;:.`-") == sub.stem for w in doc.split()):
                missing.append(f"{name} does not name {sub.stem}")
    assert not missing, missing


def test_workers_start_and_end_trials_only_through_the_lifecycle():
    """workers/ imports nothing of the storage layer's rows or its door to Optuna's private
    parts: a trial's start and end are search.lifecycle's verbs, whoever runs them."""
    found = [f"{m} imports {t}" for m in MODULES if m.startswith("mnist_search.workers")
             for t, _ in imports(m)
             if t in ("mnist_search.storage.rows", "mnist_search.storage.internals")]
    assert not found, found
