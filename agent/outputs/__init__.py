"""Renderings of a ``Prediction`` for the caller's protocol (JSON, FHIR, CDS Hooks).

Shared by every intake path so that a drop-folder line and an HTTP answer say the same.
"""
