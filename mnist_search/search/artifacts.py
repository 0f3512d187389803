"""Every COMPLETE trial's model as an Optuna artifact (a safetensors file), where it lives,
and how many are kept.

Files go to a FileSystemArtifactStore: beside a SQLite database by default
(`<database>.artifacts/`), else `--artifacts DIR` or $MNIST_SEARCH_ARTIFACTS (a PostgreSQL
storage has no file beside it). A model is staged whole in the store's folder, then renamed
into place before the artifact is recorded (in the transaction of the trial's results, as
upload_artifact would record it in one of its own), so no reader ever sees half a file; a
store that is full or read-only costs the model, never the trial's result.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import ArtifactMeta, FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

from ..errors import UsageError
from ..storage.connect import sqlite_path
from ..storage.internals import artifact_attr

__all__ = ["ENV_VAR", "MODEL_MIMETYPE", "ModelSaver", "ModelStore", "artifact_dir",
           "model_artifact", "storage_files"]

log = logging.getLogger(__name__)

ENV_VAR = "MNIST_SEARCH_ARTIFACTS"
MODEL_MIMETYPE = "application/vnd.safetensors"
STAGING = ".staging"
WriteModel = Callable[[Path], None]  # writes the model file to the path it is given


def artifact_dir(url: str, explicit: str | Path | None = None) -> Path:
    """--artifacts beats $MNIST_SEARCH_ARTIFACTS beats `<database>.artifacts` for SQLite."""
    chosen = explicit or os.environ.get(ENV_VAR)
    if chosen:
        return Path(chosen)
    db = sqlite_path(url)
    if db is None:
        raise UsageError(f"models need a folder: storage {url.split('://')[0]}:// has no file "
                         "to keep them beside; pass --artifacts DIR or set "
                         f"${ENV_VAR} (on every machine, a folder they all share)")
    return db.with_name(db.name + ".artifacts")


def storage_files(url: str, explicit: str | Path | None = None) -> list[Path]:
    """What belongs to a storage, which no output file may replace: its SQLite database
    (with what SQLite keeps beside it) and its models' folder."""
    db = sqlite_path(url)
    kept = [] if db is None else [db]
    try:
        kept.append(artifact_dir(url, explicit))
    except UsageError:  # a server's storage and no models' folder: nothing on this disk
        pass
    return kept


class ModelStore(FileSystemArtifactStore):
    """A FileSystemArtifactStore whose writes are all-or-nothing (temporary file, rename)."""

    def __init__(self, base_path: str | Path) -> None:
        self.base = Path(base_path)
        super().__init__(self.base)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if not artifact_id or Path(artifact_id).name != artifact_id:
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        target = self.base / artifact_id
        staged = Path(getattr(content_body, "name", ""))
        if staged.parent == self.base / STAGING:  # already complete on this disk: rename
            os.replace(staged, target)
            return
        tmp = self.base / STAGING / f"{artifact_id}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(content_body, fh)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


def model_artifact(trial: FrozenTrial, storage: optuna.storages.BaseStorage
                   ) -> optuna.artifacts.ArtifactMeta | None:
    """The model artifact recorded on a trial, if any."""
    metas = [m for m in get_all_artifact_meta(trial, storage=storage)
             if m.filename.endswith(".safetensors")]
    return metas[-1] if metas else None


class ModelSaver:
    """Saves each COMPLETE trial's model (before its tell: a finished trial is read-only),
    keeping only the `keep` best trials' files (None: all; ranked by the first objective)."""

    def __init__(self, directory: Path, keep: int | None = None) -> None:
        self.store = ModelStore(directory)
        self.directory, self.keep = directory, keep

    @property
    def ranks(self) -> bool:
        """Whether it keeps only the best K (K > 0): a trial is ranked against those told
        before it, so trials are settled and told one at a time."""
        return bool(self.keep)

    def place(self, trial: optuna.Trial, write: WriteModel) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
        """Stage the file (`write(path)`) and move it into the store; (user attrs, system
        attrs) that record it on the trial, for the caller to write in the transaction of
        the trial's results: the artifact as upload_artifact records it, or, when the
        folder is full or read-only, a warning naming the cause and a `model_error` (the
        trial's result is not touched)."""
        if self.keep == 0:
            return {}, {}
        staged = self.directory / STAGING / f"trial-{trial.number}.safetensors"
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            write(staged)
            meta = ArtifactMeta(artifact_id=str(uuid.uuid4()), filename=staged.name,
                                mimetype=MODEL_MIMETYPE, encoding=None)
            with open(staged, "rb") as fh:
                self.store.write(meta.artifact_id, fh)
            return {}, dict([artifact_attr(meta)])
        except OSError as exc:
            cause = f"{type(exc).__name__}: {exc.strerror or exc}"
            log.warning("trial %d: model not saved to %s (%s); its result is kept",
                        trial.number, self.directory, cause)
            return {"model_error": cause}, {}
        finally:
            staged.unlink(missing_ok=True)

    def admits(self, trial: optuna.Trial, value: float) -> bool:
        """Whether the trial about to finish with `value` ranks among the `keep` best; the
        files of finished trials it pushes out of them are removed now."""
        if self.keep is None:
            return True
        study = trial.study
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number != trial.number and t.values]
        sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        ranked = sorted([(sign * t.values[0], t.number) for t in done] +
                        [(sign * value, trial.number)])
        kept = {number for _, number in ranked[:self.keep]}
        for t in done:
            if t.number not in kept:
                self._remove(t, trial.storage)
        return trial.number in kept

    def _remove(self, trial: FrozenTrial, storage: optuna.storages.BaseStorage) -> None:
        meta = model_artifact(trial, storage)
        if meta is None:
            return
        try:
            self.store.remove(meta.artifact_id)
        except Exception:  # noqa: BLE001 - gone already (another worker removed it)
            return

