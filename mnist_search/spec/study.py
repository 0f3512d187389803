"""A validated study: StudySpec, and load_spec reading a study file, a bundled study's name,
TOML text or a dict into one (spec.rules checks each table)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..bundled import resolve_study
from ..config import ConfigError, TrainConfig
from ..errors import SpecError
from ..space import Space, categorical
from .rules import REPLICATE_MARK, TOP_KEYS, Reference, TableChecks

__all__ = ["StudySpec", "base_label", "load_spec", "reference_params"]


def base_label(label: str) -> str:
    """'baseline#2' -> 'baseline': replicates count as their reference."""
    return label.split(REPLICATE_MARK, 1)[0]


@dataclass(frozen=True)
class StudySpec:
    path: str
    name: str
    description: str
    directions: tuple[str, ...]
    objectives: tuple[str, ...]
    seed: int
    trials: int | None
    replicates: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    fixed: dict[str, Any]
    search: Space
    references: tuple[Reference, ...]
    text_hash: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # [fixed] values set in code
    constraints: Mapping[str, float] = field(default_factory=dict)  # CONSTRAINTS key -> cap
    warm_start: str | None = None  # "OTHER" or "OTHER:K": begin with OTHER's K best configs

    @property
    def sampler_kind(self) -> str:
        return str(self.sampler["kind"])

    @property
    def objective(self) -> str:
        """The (first) objective."""
        return self.objectives[0]

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def selects_on_test(self) -> bool:
        """A study that *searches* on test accuracy reports an optimistic best value: a
        grid picks its best on test as any sampler does."""
        return "test_accuracy" in self.objectives and bool(self.search)

    def reference(self, label: str) -> Reference | None:
        base = base_label(label)
        return next((r for r in self.references if r.label == base), None)

    def base_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**self.fixed, **overrides})

    @cached_property
    def reference_space(self) -> Space:
        """Categoricals for the fields references vary outside the search space, so every
        reference trial shows the same parameter names in the dashboard."""
        configs = [self.base_config(**r.values) for r in self.references]
        keys = sorted({k for r in self.references for k in r.values} - self.search.fields)
        return Space(tuple(categorical(k, [getattr(c, k) for c in configs]) for k in keys))

    def reference_params(self, ref: Reference) -> dict[str, Any]:
        """The Optuna parameters of a reference trial: its varied fields and searched values."""
        config = self.base_config(**ref.values)
        return {**self.reference_space.encode(config), **self.search.encode(config)}

    def with_fixed(self, **values: Any) -> StudySpec:
        """This study with [fixed] values overridden, validated as if the file said so."""
        if not values:
            return self
        raw = copy.deepcopy(dict(self.raw))
        raw["fixed"] = {**raw.get("fixed", {}), **values}
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        spec = _Validator(Path(self.path), f"{self.path} with {shown}").build(raw)
        return dataclasses.replace(spec, overrides={**self.overrides, **values})


def reference_params(spec: StudySpec) -> list[dict[str, Any]]:
    """Each reference's Optuna parameters, in the file's order."""
    return [spec.reference_params(r) for r in spec.references]


def load_spec(study: str | Path | Mapping[str, Any]) -> StudySpec:
    """Read and validate a study: a study file's path, the name of a bundled study such as
    "notebook", a study file's TOML text (a string of several lines), or its contents as a
    dict (as tomllib reads it). Raise SpecError (one line) on any problem."""
    if isinstance(study, Mapping):
        return _build(dict(study), _IN_MEMORY)
    if isinstance(study, str) and "\n" in study:
        return _from_text(study, _IN_MEMORY)
    path = resolve_study(study)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, expected a .toml study file")
    try:
        text = _read_regular(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    if not text.strip():
        raise SpecError(f"{path}: empty file; expected a TOML study file (see studies/)")
    return _from_text(text, str(path))


_IN_MEMORY = "<study>"  # the source named in errors about a study given as text or a dict
MAX_FILE_BYTES = 1_000_000  # a study file is a page of TOML; a megabyte is a mistake
MAX_NAME = 200


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES: a FIFO would hang the read and
    /dev/zero never end it."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(f"{path}: is not a regular file (a pipe, a device); expected a "
                            ".toml study file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; expected a study file")
    return data


def _from_text(text: str, source: str) -> StudySpec:
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(f"{source}: larger than {MAX_FILE_BYTES:,} characters; expected a "
                        "study file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: malformed TOML ({exc})") from None
    except (RecursionError, ValueError) as exc:  # 100,000 nested arrays; a 5,000-digit int
        what = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise SpecError(f"{source}: TOML this reader refuses ({what})") from None
    return _build(raw, source)


def _build(raw: dict[str, Any], source: str) -> StudySpec:
    """The validated study; what the checks did not foresee in a dict given in code (a
    circular list, keys that do not sort, nesting too deep) is one line too."""
    try:
        return _Validator(Path(source), source).build(raw)
    except SpecError:
        raise
    except (RecursionError, ValueError, TypeError) as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise SpecError(f"{source}: cannot be read as a study ({text})") from None


class _Validator(TableChecks):
    """The tables' checks, then what spans them (a grid's points, the objective's
    holdout), into one StudySpec."""

    def __init__(self, path: Path, source: str) -> None:
        super().__init__(source)
        self.path = path

    def build(self, raw: dict[str, Any]) -> StudySpec:
        self.known(raw, TOP_KEYS, "")
        default = "study" if str(self.path) == _IN_MEMORY else self.path.stem
        name = raw.get("name", default)
        if not (isinstance(name, str) and name.strip() and len(name) <= MAX_NAME
                and name.isprintable() and "/" not in name and "\\" not in name
                and name not in (".", "..")):
            # a name is a key in a shared storage and the default report folder's name
            raise self.fail("name", name, f"a non-empty printable string of at most "
                            f"{MAX_NAME} characters, without '/' or '\\'")
        objectives, directions = self.objectives(raw)
        seed, trials = raw.get("seed", 0), raw.get("trials")
        replicates, description = raw.get("replicates", 1), raw.get("description", "")
        self.check_counts(seed, trials, replicates)
        if not isinstance(description, str):
            raise self.fail("description", description, "a string")
        fixed = self.fixed(raw.get("fixed", {}))
        sampler = self.sampler(raw.get("sampler", {"kind": "tpe"}))
        search = self.space.build(self.table(raw.get("search", {}), "search"), fixed,
                                  sampler["kind"])
        refs = self.references(raw.get("reference", []), fixed, search)
        self.check_planned(len(refs), search.grid_size() if sampler["kind"] == "grid" else 0,
                           replicates)
        if sampler["kind"] == "grid":
            self.grid_configs(fixed, search)
        if "val_accuracy" in objectives and not fixed.get("val_size"):
            raise self.fail("objective", raw.get("objective"),
                            "'test_accuracy', or set fixed.val_size > 0 to hold out images")
        if len(objectives) > 1 and sampler["kind"] == "cmaes":
            raise self.fail("sampler.kind", "cmaes", "'tpe', 'random' or 'grid' for several "
                            "objectives (CMA-ES optimizes one)")
        canonical = json.dumps(raw, sort_keys=True, default=str)
        return StudySpec(
            path=str(self.path), name=name, description=description.strip(),
            directions=directions, objectives=objectives, seed=seed, trials=trials,
            replicates=replicates, sampler=sampler, pruner=self.pruner(raw.get("pruner", {})),
            fixed=fixed, search=search, references=refs,
            text_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], raw=raw,
            constraints=self.constraints(raw.get("constraints", {})),
            warm_start=self.warm_start(raw.get("warm_start")),
        )

    def grid_configs(self, fixed: dict[str, Any], search: Space) -> None:
        """Each grid point, on top of [fixed], must be a valid TrainConfig (a penalty_layer
        beyond a point's depth, say): a grid is enqueued whole, so a bad point is refused now,
        not in a worker."""
        for i, point in enumerate(search.grid()):
            try:
                TrainConfig(**{**fixed, **search.decode(point)})
            except ConfigError as exc:
                raise self.error(f"grid point {i} ({json.dumps(point)}): "
                                f"{exc}") from None
