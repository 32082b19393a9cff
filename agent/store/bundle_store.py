"""Verified bundles on disk: versions per model, an atomically switched active version.

Layout under ``root``::

    versions/<model>/<version>/   one verified bundle, exactly the files that verified
    active/<model>                the active version, one line ("1.4.0")
    candidate/<model>             the staged candidate version and when it was staged
                                  ("1.5.0 2026-12-04T19:30:00+00:00"), when there is one
    state/highest/<model>         the highest version ever installed (rollback floor)
    state/registries/<name>       the highest registry index version seen (a number)
    state/comparisons/<model>     the candidate's running comparison with the active version
                                  (JSON, ``agent.rollout.candidates``), kept across restarts
    tmp/                          staging; anything left here after a crash is discarded
    cache/                        the runtime's precompiled modules (not managed here)

Crash safety: a version is staged in ``tmp/`` (every file and directory fsynced) and
renamed into place, so ``versions/`` never holds half a bundle. The active pointer and the
state files are written to a temporary file, fsynced and ``os.replace``d, then the folder
is fsynced: after a crash at any point the old or the new content is there, never none.
Mutations take an exclusive ``flock`` on ``root/.lock`` so the daemon and an operator's
``edge-agent models`` command cannot interleave.

Nothing on disk is trusted: ``load`` re-verifies the signature and every digest at each
load, so a bundle changed at rest (a bad disk, a curious administrator, malware) is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from agent.bundle.archive import read_bundle_dir
from agent.bundle.manifest import SemVer
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle, verify_bundle
from agent.durable import fsync_dir, write_atomic
from agent.errors import BundleError, RollbackError, StoreError
from agent.limits import Limits
from agent.store.config import StoreConfig

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise StoreError("not a valid model name")
    return name


def _write(path: Path, data: bytes) -> None:
    """A state file, atomically, creating its folder on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _semver(version: str) -> SemVer:
    try:
        return SemVer(version)
    except ValueError as exc:
        raise StoreError("not a semantic version MAJOR.MINOR.PATCH") from exc


class BundleStore:
    """The on-disk store. Safe to share between threads and processes (see module doc)."""

    def __init__(self, root: Path, *, keep_versions: int = 3) -> None:
        if keep_versions < 1:
            raise StoreError("keep_versions must be at least 1")
        self.root = root
        self.keep_versions = keep_versions
        for sub in ("versions", "active", "candidate", "state", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        with self._locked():
            for leftover in (root / "tmp").iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    @classmethod
    def from_config(cls, config: StoreConfig) -> BundleStore:
        """The store the ``store:`` config section describes."""
        return cls(config.root, keep_versions=config.keep_versions)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # --- reading ----------------------------------------------------------------------
    def models(self) -> list[str]:
        """Models with at least one installed version."""
        return sorted(p.name for p in (self.root / "versions").iterdir() if self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Installed versions of ``name``, oldest first (semantic version order)."""
        folder = self.root / "versions" / _check_name(name)
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            with contextlib.suppress(ValueError):
                found.append(SemVer(entry.name))
        return [str(v) for v in sorted(found)]

    def version_dir(self, name: str, version: str) -> Path:
        """Folder of one version (it may not exist); refuses names that could escape."""
        return self.root / "versions" / _check_name(name) / str(_semver(version))

    def active_version(self, name: str) -> str | None:
        """The active version, or None when the model has never been activated."""
        pointer = self.root / "active" / _check_name(name)
        try:
            text = pointer.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return str(_semver(text))

    def candidate(self, name: str) -> tuple[str, datetime] | None:
        """The staged candidate version and when it was staged, or None."""
        pointer = self.root / "candidate" / _check_name(name)
        try:
            version, since = pointer.read_text(encoding="ascii").split()
            return str(_semver(version)), datetime.fromisoformat(since)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"the candidate pointer of {name!r} is corrupt") from exc

    def highest_installed(self, name: str) -> str | None:
        """The highest version ever installed, even if since pruned (the rollback floor)."""
        candidates = [SemVer(v) for v in self.versions(name)]
        with contextlib.suppress(FileNotFoundError):
            text = (self.root / "state" / "highest" / _check_name(name)).read_text("ascii")
            candidates.append(_semver(text.strip()))
        return str(max(candidates)) if candidates else None

    def load(
        self, name: str, trust: TrustStore, limits: Limits, version: str | None = None
    ) -> VerifiedBundle:
        """Read and re-verify a version (default: the active one) from disk.

        Stops: use of a bundle altered at rest, or signed by a key revoked since it was
        installed (verification runs again with today's trust store), and a bundle moved
        into another model's or version's folder (BundleError).
        """
        if version is None:
            version = self.active_version(name)
            if version is None:
                raise StoreError(f"model {name!r} has no active version")
        folder = self.version_dir(name, version)
        if not folder.is_dir():
            raise StoreError(f"model {name!r} version {version} is not installed")
        verified = verify_bundle(read_bundle_dir(folder, limits), trust, limits=limits)
        if verified.manifest.name != name or verified.manifest.semver != SemVer(version):
            raise BundleError(f"bundle in the folder of {name} {version} is another bundle")
        return verified

    # --- changing ---------------------------------------------------------------------
    def install(self, verified: VerifiedBundle, *, allow_rollback: bool = False) -> Path:
        """Write a verified bundle to ``versions/<name>/<version>/`` atomically.

        Stops rollback: a version not newer than the highest ever installed is refused
        (RollbackError) unless an operator passes ``allow_rollback``, so a registry (or an
        attacker replaying old signed bundles) cannot downgrade a model to a version with a
        known flaw. Installing an identical bundle again is a no-op; the same version with
        other content is a StoreError. Installing does not activate.
        """
        manifest = verified.manifest
        name, version = _check_name(manifest.name), manifest.semver
        with self._locked():
            highest = self.highest_installed(name)
            if highest is not None and version <= SemVer(highest) and not allow_rollback:
                raise RollbackError(
                    f"{name} {version} is not newer than installed version {highest}"
                )
            target = self.version_dir(name, str(version))
            if target.exists():
                if (target / "manifest.json").read_bytes() == verified.manifest_bytes:
                    return target
                raise StoreError(f"{name} {version} is installed with different content")
            staging = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=f"{name}-"))
            try:
                self._write_files(staging, verified)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir(target.parent)
            if highest is None or version > SemVer(highest):
                _write(self.root / "state" / "highest" / name, f"{version}\n".encode("ascii"))
        log.info("bundle installed", extra={"model": name, "version": str(version)})
        return target

    @staticmethod
    def _write_files(staging: Path, verified: VerifiedBundle) -> None:
        folders = {staging}
        for rel, data in verified.files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.add(path.parent)
            with path.open("xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            path.chmod(0o444)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)

    def activate(self, name: str, version: str) -> None:
        """Make an installed version the active one (one atomic pointer replace), then prune.

        It does not verify: ``load`` does, at every load. A crash leaves the old or the new
        version active, never none.
        """
        version = str(_semver(version))
        with self._locked():
            if not self.version_dir(name, version).is_dir():
                raise StoreError(f"model {name!r} version {version} is not installed")
            _write(self.root / "active" / name, f"{version}\n".encode("ascii"))
            self._prune_locked(name)
        log.info("bundle activated", extra={"model": name, "version": version})

    def set_candidate(self, name: str, version: str, since: datetime) -> None:
        """Stage an installed version as the model's candidate (one atomic pointer write);
        the active version is unchanged. ``since`` is kept for the ``min_days`` gate."""
        version = str(_semver(version))
        with self._locked():
            if not self.version_dir(name, version).is_dir():
                raise StoreError(f"model {name!r} version {version} is not installed")
            _write(
                self.root / "candidate" / name,
                f"{version} {since.isoformat()}\n".encode("ascii"),
            )
        log.info("bundle staged as candidate", extra={"model": name, "version": version})

    def clear_candidate(self, name: str) -> None:
        """The model has no candidate any more (promoted or abandoned). The version stays
        installed, so the updater does not pull it again."""
        with self._locked():
            (self.root / "candidate" / _check_name(name)).unlink(missing_ok=True)
            fsync_dir(self.root / "candidate")
            self._comparison_path(name).unlink(missing_ok=True)

    # --- the candidate's comparison ---------------------------------------------------
    def comparison(self, name: str) -> bytes | None:
        """What ``keep_comparison`` last kept for ``name``'s candidate, or None."""
        try:
            return self._comparison_path(name).read_bytes()
        except FileNotFoundError:
            return None

    def keep_comparison(self, name: str, data: bytes) -> None:
        """Keep ``data`` (the candidate's comparison) atomically, replacing what was kept."""
        with self._locked():
            _write(self._comparison_path(name), data)

    def _comparison_path(self, name: str) -> Path:
        return self.root / "state" / "comparisons" / _check_name(name)

    def previous_version(self, name: str) -> str:
        """The installed version just below the active one (what ``rollback`` goes to)."""
        active = self.active_version(name)
        older = [v for v in self.versions(name) if active is None or SemVer(v) < SemVer(active)]
        if not older:
            raise StoreError(f"model {name!r} has no installed version to roll back to")
        return older[-1]

    def rollback(self, name: str, version: str | None = None) -> str:
        """The operator's way back: activate ``version``, or the installed version just
        below the active one. Returns the version now active. Newer versions stay installed,
        so the updater does not re-install them; publish a newer version to move forward.
        """
        target = version if version is not None else self.previous_version(name)
        self.activate(name, target)
        return str(_semver(target))

    def discard(self, name: str, version: str, *, floor: str | None) -> None:
        """Remove an installed version that never became active, and set the rollback
        floor back to ``floor`` (what it was before that install).

        For the updater when the pipeline refuses a verified bundle (say the site mapping
        does not fit its schema): the version is retried at the next poll, so it goes live
        once the site is fixed. Refuses to discard the active version (StoreError).
        """
        version = str(_semver(version))
        with self._locked():
            if self.active_version(name) == version:
                raise StoreError(f"model {name!r} version {version} is active")
            self._remove_version(name, version)
            highest = self.root / "state" / "highest" / name
            if floor is None:
                highest.unlink(missing_ok=True)
            else:
                _write(highest, f"{_semver(floor)}\n".encode("ascii"))

    def _prune_locked(self, name: str) -> list[str]:
        active = self.active_version(name)
        staged = self.candidate(name)
        installed = self.versions(name)
        keep = set(installed[-self.keep_versions :]) | ({active} if active else set())
        keep |= {staged[0]} if staged else set()
        removed = [v for v in installed if v not in keep]
        for version in removed:
            self._remove_version(name, version)
        if removed:
            log.info("versions pruned", extra={"model": name, "count": len(removed)})
        return removed

    def _remove_version(self, name: str, version: str) -> None:
        # Move out of versions/ first, so a crash never leaves half a version installed.
        folder = self.version_dir(name, version)
        if folder.is_dir():
            doomed = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="removed-"))
            os.rename(folder, doomed / "bundle")
            shutil.rmtree(doomed, ignore_errors=True)

    # --- registry state ---------------------------------------------------------------
    def last_index_version(self, registry: str) -> int:
        """Highest index version seen from ``registry`` (0 if never)."""
        path = self.root / "state" / "registries" / self._registry_name(registry)
        try:
            return int(path.read_text("ascii").strip())
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise StoreError(f"registry state for {registry!r} is corrupt") from exc

    def record_index_version(self, registry: str, version: int) -> None:
        """Remember the index version seen (only ever raised, never lowered)."""
        with self._locked():
            if version > self.last_index_version(registry):
                path = self.root / "state" / "registries" / self._registry_name(registry)
                _write(path, f"{version}\n".encode("ascii"))

    @staticmethod
    def _registry_name(registry: str) -> str:
        if not _REGISTRY.match(registry):
            raise StoreError("not a valid registry name")
        return registry
