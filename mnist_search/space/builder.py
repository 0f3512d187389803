"""A study file's [search] table, validated and built into a Space."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import MAX_DEPTH, MAX_WIDTH, RULES, is_int, is_num
from ..errors import SpecFaults
from .domains import (
    CATEGORICAL_ONLY,
    CLASHES,
    DEPTH,
    HIDDEN,
    INT_KEYS,
    PENALTIES,
    PENALTY,
    PENALTY_LAMBDA,
    SEARCH_KEYS,
    WIDTH,
    Choices,
    Domain,
    Range,
)
from .params import Architecture, FieldParam, Param, Penalty, ShapeParam, Space

__all__ = ["SpaceBuilder"]


class SpaceBuilder(SpecFaults):
    """Validate a [search] table and build its Space; every problem is a one-line SpecError
    naming the file, the key, the value and what is allowed (errors.SpecFaults)."""

    def build(self, raw: Mapping[str, Any], fixed: Mapping[str, Any], sampler: str) -> Space:
        domains: dict[str, Domain] = {}
        for name, value in raw.items():
            if name not in SEARCH_KEYS:
                raise self.unknown(f"search.{name}", SEARCH_KEYS)
            clash = CLASHES.get(name, (name,))
            if any(c in fixed for c in clash):
                raise self.error(f"search.{name} is also set in [fixed] "
                                 f"({', '.join(c for c in clash if c in fixed)}); "
                                 "a key is either fixed or searched")
            domains[name] = self.domain(name, f"search.{name}", value, sampler)
        self.check_pairs(domains, sampler)
        return Space(tuple(self.params(domains)))

    def params(self, domains: dict[str, Domain]) -> Iterable[Param]:
        for name, d in domains.items():
            if name == DEPTH:
                yield Architecture(d, domains[WIDTH])
            elif name == PENALTY:
                assert isinstance(d, Choices)  # check_value allows only lists for it
                yield Penalty(d, domains.get(PENALTY_LAMBDA))
            elif name == HIDDEN:
                assert isinstance(d, Choices)
                yield ShapeParam(d.options)
            elif name not in (WIDTH, PENALTY_LAMBDA):  # those belong to the two above
                yield FieldParam(name, d)

    def check_pairs(self, d: dict[str, Domain], sampler: str) -> None:
        if (DEPTH in d) != (WIDTH in d):
            raise self.error("search.depth and search.width go together "
                             "(width_1..width_depth are suggested from the width range)")
        if DEPTH in d and HIDDEN in d:
            raise self.error("search.hidden and search.depth/width both set the "
                             "architecture; keep one")
        penalty = d.get(PENALTY)
        if isinstance(penalty, Choices) and set(penalty.options) - {"none"} and \
                PENALTY_LAMBDA not in d:
            raise self.error("search.penalty needs search.penalty_lambda "
                             "(the lambda of the chosen l1 or l2 penalty)")
        if PENALTY_LAMBDA in d and PENALTY not in d:
            raise self.error("search.penalty_lambda needs search.penalty (none, l1, l2)")
        if sampler == "grid" and DEPTH in d:
            raise self.error("search.depth/width cannot be a grid; use "
                             "search.hidden = [[128, 64], [256, 128]] instead")

    def domain(self, name: str, key: str, value: Any, sampler: str) -> Domain:
        if isinstance(value, list):
            if not value:
                raise self.fail(key, value, "a non-empty list of values")
            for i, choice in enumerate(value):
                self.check_value(name, f"{key}[{i}]", choice)
            options = tuple(tuple(c) if isinstance(c, list) else c for c in value)
            if len(set(options)) != len(options):
                raise self.fail(key, value, "a list without repeated values")
            return Choices(options)
        if sampler == "grid":
            raise self.fail(key, value, "a list of values (sampler.kind = 'grid' needs grids)")
        if not isinstance(value, dict):
            raise self.fail(key, value, "a list of choices or a range {low, high[, log, step]}")
        for k in value:
            if k not in ("low", "high", "log", "step"):
                raise self.unknown(f"{key}.{k}", ("low", "high", "log", "step"))
        if name in CATEGORICAL_ONLY:
            raise self.fail(key, value, f"a list of choices ({name} is categorical)")
        return self.range(name, key, value)

    def range(self, name: str, key: str, value: dict[str, Any]) -> Range:
        low, high, log = value.get("low"), value.get("high"), value.get("log", False)
        for end, v in (("low", low), ("high", high)):
            if v is None:
                raise self.error(f"{key}.{end} is missing")
            if name in INT_KEYS and not is_int(v):
                raise self.fail(f"{key}.{end}", v, "an integer")
            self.check_value(name, f"{key}.{end}", v)
        assert low is not None and high is not None
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", log, "true or false")
        if not low < high:
            raise self.fail(f"{key}.low", low, f"a value below high ({high})")
        if log and low <= 0:
            raise self.fail(f"{key}.low", low, "a value > 0 for a log range")
        step = value.get("step")
        if step is not None and (not is_num(step) or step <= 0 or (log and step)):
            raise self.fail(f"{key}.step", step, "a number > 0, and no step with log")
        return Range(low, high, log=log, step=step, integer=name in INT_KEYS)

    def check_value(self, name: str, key: str, value: Any) -> None:
        if name == PENALTY:
            if value not in PENALTIES:
                raise self.fail(key, value, " or ".join(map(repr, PENALTIES)))
        elif name in (DEPTH, WIDTH):
            most = MAX_DEPTH if name == DEPTH else MAX_WIDTH
            if not (is_int(value) and 1 <= value <= most):
                raise self.fail(key, value, f"an integer in [1, {most}]")
        elif name == PENALTY_LAMBDA:
            if not (is_num(value) and value >= 0):
                raise self.fail(key, value, "a number >= 0")
        else:
            check, allowed = RULES[name]
            if isinstance(value, float) and math.isnan(value) or not check(value):
                raise self.fail(key, value, allowed)
