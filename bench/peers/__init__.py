"""The usual deployment of the demo model, written as a team would without the agent.

A Starlette app under uvicorn that validates FHIR with ``fhir.resources`` (R4B), maps the
bundle with plain Python, and predicts with scikit-learn (peer A) or onnxruntime (peer B).
They exist only to be measured against the agent: same model, same inputs, same machine.
"""
