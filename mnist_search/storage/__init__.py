"""The storage layer: Optuna's RDB storage as this package uses it, importing nothing of the
package but errors (and Optuna, SQLAlchemy).

Submodules:
- connect (URLs, opening a storage, SQLite set up for several local workers);
- lock (the study lock: enqueue and claim under it);
- retry (RetryingRDBStorage: Optuna's RDBStorage riding out transient faults);
- transient (what counts as a transient fault, the retry loop);
- faults (a storage error in one line: its real cause, what to do; naming a stored value
  that does not decode);
- rows (a trial's rows written as Optuna writes them, several in one transaction);
- internals (the one door to Optuna's and optuna-dashboard's private names).
"""

__all__: list[str] = []  # nothing here: import the submodules
