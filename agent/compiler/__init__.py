"""The model compiler: ONNX (or a fitted scikit-learn model) -> an ABI v1 WebAssembly module
and an unsigned bundle. Entry points: ``agent.compiler.build.build`` (also ``agent.build``)
and ``agent.compiler.build.compile_onnx``. Needs the ``[build]`` extra; the agent itself
never imports this package. See docs/compiler.md."""
