"""The search space: each kind of search parameter as one object.

A study file's [search] table becomes a Space of Params. Each Param knows which TrainConfig
fields it decides, how to suggest them from an Optuna trial (define-by-run), how to encode a
config back into Optuna parameters (to enqueue a reference trial), how to decode stored
parameters, and its grid points. This is the one package that knows parameter names:
`depth`/`width` (an architecture), `penalty`/`penalty_lambda` (L1 or L2 on one layer),
`hidden` (a list of shapes, stored as '128-64' strings), and plain TrainConfig fields.

Standard library only; Optuna trials are used through their suggest methods. Submodules:
domains (names, what each key may be, ranges and choices), params (the parameter kinds and
the Space), builder (a [search] table validated into a Space).
"""

from .builder import SpaceBuilder
from .domains import NOT_SEARCHABLE, Choices, Range
from .params import Architecture, FieldParam, Param, Penalty, ShapeParam, Space, categorical

__all__ = ["Architecture", "Choices", "FieldParam", "NOT_SEARCHABLE", "Param", "Penalty", "Range",
           "ShapeParam", "Space", "SpaceBuilder", "categorical"]
