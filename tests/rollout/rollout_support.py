"""Shared pieces of the candidate-rollout tests: a candidate module whose risk differs from
the demo model's (and traps on very high heart rates), and many distinct demo patients."""

from __future__ import annotations

import json
import random

from tests.integration.reliability_support import PATIENT_BUNDLE

DEMO_PATIENT = "739b45d0-7746-59f2-9b42-f7efa74cec54"  # the demo bundle's Patient id
HEART_RATE = "8867-4"
TRAP_ABOVE = 170.0  # beats per minute at which the candidate module traps

# A conforming module for the demo manifest's 9 features: probability_1 = heart_rate / 200
# (the first feature), probability_0 = 1 - that, label 0; it traps (unreachable) on a heart
# rate above TRAP_ABOVE, as a faulty new version might on data it never saw.
CANDIDATE_WAT = f"""
(module
  (memory (export "memory") 1 1)
  (func (export "edge_abi_version") (result i32) (i32.const 1))
  (func (export "edge_n_features") (result i32) (i32.const 9))
  (func (export "edge_n_outputs") (result i32) (i32.const 3))
  (func (export "edge_max_batch") (result i32) (i32.const 64))
  (func (export "edge_input_ptr") (result i32) (i32.const 1024))
  (func (export "edge_output_ptr") (result i32) (i32.const 4096))
  (func (export "edge_predict") (param $n i32) (result i32) (local $r i32) (local $p f32)
    (if (i32.gt_u (local.get $n) (i32.const 64)) (then (return (i32.const 1))))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $r) (local.get $n)))
      (local.set $p (f32.div
        (f32.load offset=1024 (i32.mul (local.get $r) (i32.const 36))) (f32.const 200)))
      (if (f32.gt (local.get $p) (f32.const {TRAP_ABOVE / 200})) (then unreachable))
      (f32.store offset=4096 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0))
      (f32.store offset=4100 (i32.mul (local.get $r) (i32.const 12))
        (f32.sub (f32.const 1) (local.get $p)))
      (f32.store offset=4104 (i32.mul (local.get $r) (i32.const 12)) (local.get $p))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows)))
    (i32.const 0)))
"""


def patient_bundle(index: int, heart_rate: float) -> str:
    """The demo patient's Bundle as another patient (its own id) with ``heart_rate``."""
    bundle = json.loads(PATIENT_BUNDLE.decode().replace(DEMO_PATIENT, f"rollout-{index:05d}"))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        codes = {c.get("code") for c in resource.get("code", {}).get("coding", [])}
        if resource["resourceType"] == "Observation" and HEART_RATE in codes:
            resource["valueQuantity"]["value"] = heart_rate
    return json.dumps(bundle)


def patients_ndjson(indices: range, seed: int, trap_share: float = 0.0) -> bytes:
    """One Bundle per line, one patient each; ``trap_share`` of them with a heart rate the
    candidate module traps on."""
    rng = random.Random(seed)
    lines = []
    for index in indices:
        trap = rng.random() < trap_share
        rate = rng.uniform(TRAP_ABOVE + 5, 240) if trap else rng.uniform(45, 160)
        lines.append(patient_bundle(index, round(rate, 1)))
    return ("\n".join(lines) + "\n").encode()
