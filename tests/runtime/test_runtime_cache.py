"""The compiled-module cache: hits load the right module, damaged files are never trusted."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from agent.limits import Limits
from agent.runtime.cache import ModuleCache, cache_path
from agent.runtime.model import WasmModel

WAT = """
(module
  (memory (export "memory") 1)
  (func (export "edge_abi_version") (result i32) i32.const 1)
  (func (export "edge_n_features") (result i32) i32.const 1)
  (func (export "edge_n_outputs") (result i32) i32.const 1)
  (func (export "edge_max_batch") (result i32) i32.const 4)
  (func (export "edge_input_ptr") (result i32) i32.const 0)
  (func (export "edge_output_ptr") (result i32) i32.const 64)
  (func (export "edge_predict") (param $n i32) (result i32) (local $i i32)
    (block $done (loop $rows
      (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
      (f32.store offset=64 (i32.shl (local.get $i) (i32.const 2))
        (f32.mul (f32.load (i32.shl (local.get $i) (i32.const 2))) (f32.const FACTOR)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows)))
    i32.const 0))
"""


def in_folder(root: Path) -> ModuleCache:
    """The cache as the pipeline lays it out: files in one folder, digests in another."""
    return ModuleCache(root / "cache", root / "digests")


def wasm(factor: float) -> bytes:
    return bytes(wasmtime.wat2wasm(WAT.replace("FACTOR", repr(factor))))


def test_cache_hit_loads_the_same_module_without_rewriting(tmp_path: Path) -> None:
    module = wasm(3.0)
    first = WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    entry = cache_path(in_folder(tmp_path), module)
    assert entry.is_file()
    stamp = entry.stat().st_mtime_ns
    second = WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    assert first.predict([[2.0]]) == second.predict([[2.0]]) == [[6.0]]
    assert entry.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # no temp files


def test_different_modules_never_share_an_entry(tmp_path: Path) -> None:
    WasmModel.load(wasm(3.0), limits=Limits(), cache=in_folder(tmp_path))
    other = WasmModel.load(wasm(5.0), limits=Limits(), cache=in_folder(tmp_path))
    assert other.predict([[2.0]]) == [[10.0]]
    assert len(list((tmp_path / "cache").iterdir())) == 2


@pytest.mark.parametrize("damage", ["flip-payload", "truncate", "garbage", "forged-digest"])
def test_a_damaged_cache_file_is_not_trusted(tmp_path: Path, damage: str) -> None:
    import hashlib

    module = wasm(3.0)
    WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    entry = cache_path(in_folder(tmp_path), module)
    blob = bytearray(entry.read_bytes())
    if damage == "flip-payload":
        blob[-100] ^= 0xFF
    elif damage == "truncate":
        del blob[len(blob) // 2 :]
    elif damage == "garbage":
        blob = bytearray(b"not a cache file at all")
    else:  # a well-formed entry whose payload is not a serialized module
        payload = b"\x7fELF" + b"\0" * 200
        header = blob[: blob.index(b"\n") + 1]
        blob = bytearray(header + hashlib.sha256(payload).digest() + payload)
    entry.write_bytes(bytes(blob))
    reloaded = WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    assert reloaded.predict([[2.0]]) == [[6.0]]
    rewritten = entry.read_bytes()
    assert rewritten != bytes(blob)
    assert WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path)).predict([[1.0]]) == [
        [3.0]
    ]


def test_an_unwritable_cache_does_not_fail_the_load(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    model = WasmModel.load(wasm(2.0), limits=Limits(), cache=in_folder(blocker))
    assert model.predict([[4.0]]) == [[8.0]]


def test_a_planted_entry_with_a_valid_self_digest_is_not_served(tmp_path: Path) -> None:
    """Someone who can write the cache folder plants another module's compiled code under
    this module's name, in the cache's own format: the digest kept apart does not match."""
    module, planted = wasm(3.0), wasm(7.0)
    WasmModel.load(planted, limits=Limits(), cache=in_folder(tmp_path))
    WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    cache_path(in_folder(tmp_path), module).write_bytes(
        cache_path(in_folder(tmp_path), planted).read_bytes()
    )
    assert WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path)).predict([[1.0]]) == [
        [3.0]
    ]


@pytest.mark.parametrize("folder", ["cache", "digests"])
def test_a_folder_others_can_write_is_not_used(tmp_path: Path, folder: str) -> None:
    module = wasm(3.0)
    WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path))
    entry = cache_path(in_folder(tmp_path), module)
    entry.unlink()
    (tmp_path / folder).chmod(0o777)
    assert WasmModel.load(module, limits=Limits(), cache=in_folder(tmp_path)).predict([[1.0]]) == [
        [3.0]
    ]
    assert not entry.exists()  # neither read nor written
