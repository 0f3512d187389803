"""Study files (studies/*.toml): what a study searches, validated before anything is stored.

A study file fixes WHAT is searched (fixed values, search space, labelled reference trials,
sampler, pruner, objective); CLI flags only change how and where it runs. Every problem is
a SpecError whose message is one line: file, key path, bad value, what is allowed.
Standard library only.

Modules: study (StudySpec and load_spec), rules (each table of a study file checked).
"""

from ..errors import SpecError
from .rules import (
    CONSTRAINTS,
    MAX_PLANNED,
    MAX_REPLICATES,
    MAX_TRIALS,
    OBJECTIVES,
    PRUNERS,
    REPLICATE_MARK,
    SAMPLERS,
    TOP_KEYS,
    Reference,
)
from .study import StudySpec, base_label, load_spec, reference_params

__all__ = ["CONSTRAINTS", "MAX_PLANNED", "MAX_REPLICATES", "MAX_TRIALS", "OBJECTIVES", "PRUNERS",
           "REPLICATE_MARK", "Reference", "SAMPLERS", "SpecError", "StudySpec", "TOP_KEYS",
           "base_label", "load_spec", "reference_params"]
