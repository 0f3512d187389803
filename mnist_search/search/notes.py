"""Dashboard notes (optuna-dashboard's Markdown notes): one per study, one per trial.

The study note holds the file's description and a per-label table against the notebook;
a trial's note says in one line what the run is.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import BaseTrial

from ..config import TrainConfig
from ..spec import StudySpec
from .summary import finished_trials, label_table

__all__ = ["trial_note", "write_study_note"]


def write_study_note(study: optuna.Study, spec: StudySpec) -> None:
    """The study's dashboard note: the file's description and a per-label summary table."""
    from optuna_dashboard import save_note

    seed = study.user_attrs.get("seed", spec.seed)
    lines = [f"# {spec.name}", "", spec.description, "",
             f"Objective: **{', '.join(spec.objectives)}** ({'/'.join(spec.directions)}); "
             f"sampler {spec.sampler_kind}; "
             f"study seed {seed}; file `{Path(spec.path).name}`."]
    if spec.selects_on_test:
        lines.append("")
        lines.append("Selection uses test accuracy: the best value is optimistic.")
    rows = label_table(finished_trials(study), [r.label for r in spec.references])
    if rows:
        lines += ["", "| label | n | mean test acc. (%) | 95% CI | notebook (%) |",
                  "| --- | --- | --- | --- | --- |"]
        for r in rows:
            ci = "" if r["ci95"] is None else f"+/- {r['ci95']:.2f}"
            nb = "" if r["notebook"] is None else f"{r['notebook']:.2f}"
            lines.append(f"| {r['label']} | {r['n']} | {r['mean']:.2f} | {ci} | {nb} |")
    save_note(study, "\n".join(lines))


def trial_note(trial: BaseTrial, config: TrainConfig) -> str:
    """A one-line dashboard note for the trial's page: what this run is, at a glance."""
    label = trial.user_attrs.get("label")
    head = f"**{label}** · " if label else ""
    return (f"{head}{config.architecture} · lr {config.lr} · momentum {config.momentum} · "
            f"dropout {config.dropout} · l1 {config.l1} · l2 {config.l2} · seed {config.seed}")
