"""The results layer: what a study found, as rows (show, export, pandas), figures and a report.

Submodules: rows (load_results and the tables of show/export), figures (the report's
figures), optuna_plots (Optuna's own plots for a report), confirmed (a confirmed search's
figure), report (the HTML or Markdown report), display (results in a notebook: summary,
report, dashboard), dashboard (optuna-dashboard served from this process).
"""

__all__: list[str] = []  # nothing here: import the submodules
