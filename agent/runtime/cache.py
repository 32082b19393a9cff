"""On-disk cache of compiled (native) model modules, so a restart skips Cranelift.

Threat: ``wasmtime.Module.deserialize`` trusts its input completely; a crafted file is
native code run inside the agent, outside the sandbox. So the cache only ever loads files
this module wrote, and checks them before use:

* the file name is derived from the SHA-256 of the wasm bytes (the digest the signed
  manifest pins, checked by verification before any load), the wasmtime version and the
  engine configuration (``ENGINE_FINGERPRINT``), so a different module, wasmtime upgrade
  or engine setting can never pick up a stale entry;
* the SHA-256 of each file's payload, as the agent wrote it, is kept apart in the
  verified store's state (``ModuleCache.digests``), and a cached file is used only if it
  still has that digest: an entry planted in, or changed in, the cache folder is
  discarded and the module recompiled from the signed wasm;
* each file also starts with a magic tag and the SHA-256 of its payload (a torn write
  shows without the ledger), and is written to a temporary name, fsynced and
  ``os.replace``-d into place, so a reader never sees half a file;
* both folders must be real directories owned by the agent's user and not writable by
  group or others; otherwise the cache is not used at all (modules are compiled in
  memory) and a warning says why, so a loosened folder is noticed, not trusted.

What remains: someone who can write both folders as the agent's user can forge a matching
pair; such an attacker could equally replace the agent's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from agent.durable import write_atomic
from agent.runtime.engine import ENGINE_FINGERPRINT, compile_module

log = logging.getLogger(__name__)

_MAGIC = b"EDGECWASM1\n"
_DIGEST_BYTES = 32


@dataclass(frozen=True)
class ModuleCache:
    """Where compiled modules live (``folder``) and where the digest of each is kept
    (``digests``: in the verified store's state, not beside the files)."""

    folder: Path
    digests: Path


def cache_key(wasm: bytes) -> str:
    """Hex key of a module: its bytes plus the engine that compiles it."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(wasm).digest())
    digest.update(ENGINE_FINGERPRINT.encode("utf-8"))
    return digest.hexdigest()


def cache_path(cache: ModuleCache, wasm: bytes) -> Path:
    return cache.folder / f"{cache_key(wasm)}.cwasm"


def load_or_compile(
    engine: wasmtime.Engine, wasm: bytes, cache: ModuleCache | None
) -> wasmtime.Module:
    """Return the compiled module for ``wasm``, from the cache when a valid entry exists.

    Compilation errors propagate as ``wasmtime.WasmtimeError``; cache I/O problems never
    fail a load (the module is then simply compiled in memory).
    """
    if cache is None or not all(_private_dir(p) for p in (cache.folder, cache.digests)):
        return compile_module(engine, wasm)
    key = cache_key(wasm)
    path = cache_path(cache, wasm)
    ledger = cache.digests / key
    cached = _read_verified(path, ledger)
    if cached is not None:
        try:
            return wasmtime.Module.deserialize(engine, cached)
        except wasmtime.WasmtimeError:
            _discard(path)
    module = compile_module(engine, wasm)
    payload = bytes(module.serialize())
    with contextlib.suppress(OSError):
        digest = hashlib.sha256(payload).digest()
        write_atomic(ledger, digest.hex().encode("ascii"), mode=0o600)
        write_atomic(path, _MAGIC + digest + payload, mode=0o600)
    return module


def _private_dir(folder: Path) -> bool:
    """Create ``folder`` (0700) if missing; True if it is a directory of the agent's user
    that group and others cannot write to."""
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        info = folder.lstat()
    except OSError:
        return False
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        log.warning(
            "compiled-module cache not used: folder is not private to the agent",
            extra={"path": str(folder)},
        )
        return False
    return True


def _read_verified(path: Path, ledger: Path) -> bytes | None:
    try:
        blob = path.read_bytes()
        expected = bytes.fromhex(ledger.read_text("ascii").strip())
    except (OSError, ValueError):
        _discard(path)
        return None
    header = len(_MAGIC) + _DIGEST_BYTES
    payload = blob[header:]
    digest = hashlib.sha256(payload).digest()
    if (
        not blob.startswith(_MAGIC)
        or len(blob) <= header
        or digest != blob[len(_MAGIC) : header]
        or digest != expected
    ):
        _discard(path)
        return None
    return payload


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
