"""The sandboxed model runtime: ``agent.runtime.model.WasmModel`` loads an ABI v1 module
(docs/abi.md) into wasmtime with no imports, a fuel deadline and a memory cap."""
