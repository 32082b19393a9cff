"""WebAssembly has no exp or log instruction: these are the WAT library functions the
kernels call, included in a module only when a kernel asks for them.

Both work in f64 and are accurate to a few ulps of f64, far below the f32 rounding every
ABI output goes through, so an f32 result matches a correctly rounded libm result except
in rare last-bit ties (ONNX Runtime's own float math differs from libm by as much).
"""

from __future__ import annotations

from math import factorial

_EXP_TERMS = 14  # Taylor terms for |r| <= ln2/2: error below 1e-17


def _horner(var: str, coefficients: list[float]) -> str:
    """WAT for c0 + v*(c1 + v*(c2 + ...)) with ``var`` an f64 local."""
    expr = f"(f64.const {coefficients[-1]!r})"
    for c in reversed(coefficients[:-1]):
        expr = f"(f64.add (f64.const {c!r}) (f64.mul (local.get {var}) {expr}))"
    return expr


def _exp() -> str:
    poly = _horner("$r", [1.0 / factorial(i) for i in range(_EXP_TERMS)])
    return f"""
(func $exp (param $x f64) (result f64) (local $k f64) (local $r f64) (local $p f64) (local $ki i64)
  (if (f64.ne (local.get $x) (local.get $x)) (then (return (local.get $x))))
  (if (f64.gt (local.get $x) (f64.const 709.782712893384)) (then (return (f64.const inf))))
  (if (f64.lt (local.get $x) (f64.const -745.1332191019412)) (then (return (f64.const 0))))
  (local.set $k (f64.nearest (f64.mul (local.get $x) (f64.const 1.4426950408889634))))
  (local.set $r (f64.sub
    (f64.sub (local.get $x) (f64.mul (local.get $k) (f64.const 0.6931471803691238)))
    (f64.mul (local.get $k) (f64.const 1.9082149292705877e-10))))
  (local.set $p {poly})
  (local.set $ki (i64.trunc_f64_s (local.get $k)))
  (if (i64.gt_s (local.get $ki) (i64.const 1023)) (then
    (local.set $p (f64.mul (local.get $p) (f64.const 0x1p1023)))
    (local.set $ki (i64.sub (local.get $ki) (i64.const 1023)))))
  (if (i64.lt_s (local.get $ki) (i64.const -1022)) (then
    (local.set $p (f64.mul (local.get $p) (f64.const 0x1p-1022)))
    (local.set $ki (i64.add (local.get $ki) (i64.const 1022)))))
  (f64.mul (local.get $p)
    (f64.reinterpret_i64 (i64.shl (i64.add (local.get $ki) (i64.const 1023)) (i64.const 52)))))
"""


def _log() -> str:
    poly = _horner("$z", [1.0 / (2 * i + 1) for i in range(11)])
    return f"""
(func $log (param $x f64) (result f64) (local $bits i64) (local $e f64) (local $m f64)
    (local $s f64) (local $z f64)
  (if (f64.ne (local.get $x) (local.get $x)) (then (return (local.get $x))))
  (if (f64.lt (local.get $x) (f64.const 0)) (then (return (f64.const nan))))
  (if (f64.eq (local.get $x) (f64.const 0)) (then (return (f64.const -inf))))
  (if (f64.eq (local.get $x) (f64.const inf)) (then (return (local.get $x))))
  (if (f64.lt (local.get $x) (f64.const 0x1p-1022)) (then
    (local.set $x (f64.mul (local.get $x) (f64.const 0x1p54)))
    (local.set $e (f64.const -54))))
  (local.set $bits (i64.reinterpret_f64 (local.get $x)))
  (local.set $e (f64.add (local.get $e) (f64.convert_i64_s
    (i64.sub (i64.shr_u (local.get $bits) (i64.const 52)) (i64.const 1023)))))
  (local.set $m (f64.reinterpret_i64 (i64.or
    (i64.and (local.get $bits) (i64.const 0x000FFFFFFFFFFFFF)) (i64.const 0x3FF0000000000000))))
  (if (f64.gt (local.get $m) (f64.const 1.4142135623730951)) (then
    (local.set $m (f64.mul (local.get $m) (f64.const 0.5)))
    (local.set $e (f64.add (local.get $e) (f64.const 1)))))
  (local.set $s (f64.div (f64.sub (local.get $m) (f64.const 1))
    (f64.add (local.get $m) (f64.const 1))))
  (local.set $z (f64.mul (local.get $s) (local.get $s)))
  (f64.add (f64.mul (f64.mul (f64.const 2) (local.get $s)) {poly})
           (f64.mul (local.get $e) (f64.const 0.6931471805599453))))
"""


def _sigmoid() -> str:
    # ONNX Runtime's form: 1/(1+exp(-|x|)), mirrored for negative x.
    return """
(func $sigmoid (param $x f64) (result f64) (local $v f64)
  (local.set $v (f64.div (f64.const 1)
    (f64.add (f64.const 1) (call $exp (f64.neg (f64.abs (local.get $x)))))))
  (if (result f64) (f64.lt (local.get $x) (f64.const 0))
    (then (f64.sub (f64.const 1) (local.get $v))) (else (local.get $v))))
"""


def _tanh() -> str:
    return """
(func $tanh (param $x f64) (result f64) (local $t f64)
  (local.set $t (f64.sub (f64.const 1) (f64.div (f64.const 2)
    (f64.add (call $exp (f64.mul (f64.const 2) (f64.abs (local.get $x)))) (f64.const 1)))))
  (f64.copysign (local.get $t) (local.get $x)))
"""


# name -> (WAT source, helpers it calls)
_LIBRARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "exp": (_exp(), ()),
    "log": (_log(), ()),
    "sigmoid": (_sigmoid(), ("exp",)),
    "tanh": (_tanh(), ("exp",)),
}


def library_source(names: set[str]) -> str:
    """WAT of the requested helpers and everything they call, each once."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(_LIBRARY[name][1])
    return "".join(_LIBRARY[name][0] for name in sorted(wanted))
