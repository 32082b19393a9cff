"""On-disk cache of compiled (native) model modules, so a restart skips Cranelift.

Threat: ``wasmtime.Module.deserialize`` trusts its input completely; a crafted file is
native code run inside the agent, outside the sandbox. So the cache only ever loads files
this module wrote, and checks them before use:

* the file name is derived from the sha256 of the wasm bytes, the wasmtime version and the
  engine configuration (``ENGINE_FINGERPRINT``), so a different module, wasmtime upgrade or
  engine setting can never pick up a stale entry;
* each file starts with a magic tag and the sha256 of its payload; a file that fails the
  check (torn write, disk corruption, truncation) is deleted and the module is recompiled;
* files are written to a temporary name, fsynced and ``os.replace``-d into place, so a
  reader never sees half a file.

What the digest does not stop: someone who can write to the cache directory as the agent's
user can write a file with a matching digest. The directory must therefore belong to the
agent's user with mode 0700 (the agent creates it so); such an attacker could equally
replace the agent's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import wasmtime

from agent.durable import write_atomic
from agent.runtime.engine import ENGINE_FINGERPRINT, compile_module

_MAGIC = b"EDGECWASM1\n"
_DIGEST_BYTES = 32


def cache_key(wasm: bytes) -> str:
    """Hex key of a module: its bytes plus the engine that compiles it."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(wasm).digest())
    digest.update(ENGINE_FINGERPRINT.encode("utf-8"))
    return digest.hexdigest()


def cache_path(cache_dir: Path, wasm: bytes) -> Path:
    return cache_dir / f"{cache_key(wasm)}.cwasm"


def load_or_compile(
    engine: wasmtime.Engine, wasm: bytes, cache_dir: Path | None
) -> wasmtime.Module:
    """Return the compiled module for ``wasm``, from the cache when a valid entry exists.

    Compilation errors propagate as ``wasmtime.WasmtimeError``; cache I/O problems never
    fail a load (the module is then simply compiled in memory).
    """
    if cache_dir is None:
        return compile_module(engine, wasm)
    path = cache_path(cache_dir, wasm)
    cached = _read_verified(path)
    if cached is not None:
        try:
            return wasmtime.Module.deserialize(engine, cached)
        except wasmtime.WasmtimeError:
            _discard(path)
    module = compile_module(engine, wasm)
    with contextlib.suppress(OSError):
        _write_atomically(cache_dir, path, bytes(module.serialize()))
    return module


def _read_verified(path: Path) -> bytes | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    header = len(_MAGIC) + _DIGEST_BYTES
    payload = blob[header:]
    if (
        not blob.startswith(_MAGIC)
        or len(blob) <= header
        or hashlib.sha256(payload).digest() != blob[len(_MAGIC) : header]
    ):
        _discard(path)
        return None
    return payload


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write_atomically(cache_dir: Path, path: Path, payload: bytes) -> None:
    """The cache file (magic, SHA-256 of the payload, payload), owner-only, atomically."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, _MAGIC + hashlib.sha256(payload).digest() + payload, mode=0o600)
