"""The results layer: what a study found, as rows (show, export, pandas), figures and a report.

Submodules: rows (load_results and the tables of show/export), figures, report.
"""

__all__: list[str] = []  # nothing here: import the submodules
