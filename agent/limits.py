"""Every size, count and time limit of the agent, as values with units, in one frozen object.

A leaf module. The agent config may override these (``limits:`` in the YAML); code reads
them only from the ``Limits`` it was handed, never from module globals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds that protect the agent from hostile or broken input."""

    http_body_max: int = 4_000_000  # bytes: one request body (a FHIR Bundle, an HL7 batch)
    hl7_message_max: int = 1_000_000  # bytes: one MLLP frame
    bundle_download_max: int = 64_000_000  # bytes: any single file pulled from a registry
    registry_index_max: int = 1_000_000  # bytes: a registry index document
    manifest_max: int = 4_000_000  # bytes: manifest.json
    wasm_module_max: int = 32_000_000  # bytes: model.wasm
    explain_nodes_max: int = 1_000_000  # tree nodes in a bundle's explain.json, all trees
    explain_depth_max: int = 64  # levels of one tree in explain.json (TreeSHAP recurses)
    model_memory_max: int = 64 * 1024 * 1024  # bytes: linear memory a model may grow to
    model_fuel_per_row: int = 5_000_000  # wasm fuel units per scored row (the deadline)
    batch_rows_max: int = 1024  # rows per call into a module
    records_per_request_max: int = 10_000  # FHIR resources in one request
    inline_score_max: int = 65_536  # bytes: HTTP bodies up to this are scored on the event
    # loop itself (a thread hop costs ~0.13 ms, more than scoring a small record); larger
    # ones go to a worker thread so the loop keeps answering health checks meanwhile
    request_timeout: float = 10.0  # seconds for one HTTP request end to end
    http_connections_max: int = 1024  # HTTP connections open at once (TLS handshakes
    # included): past it the oldest idle one is closed, or the new one if none is idle
    http_tls_handshakes_max: int = 256  # TLS handshakes in progress at once (each holds a
    # 256 KiB buffer): past it the oldest is closed
    http_idle_timeout: float = 10.0  # seconds a connection may go without starting a
    # request, from its accept (TLS handshake included) or its previous request's start
    http_keep_alive_timeout: float = 5.0  # seconds an idle HTTP connection is kept open
    http_header_max: int = 65_536  # bytes: an HTTP request's target and headers (431 past it)
    drain_timeout: float = 20.0  # seconds to finish in-flight work on SIGTERM
    log_repeat_interval: float = 10.0  # seconds: a warning a flood repeats (a refused
    # connection, a failed accept) is logged at most this often, with the count held back
    archive_header_max: int = 65_536  # bytes: one tar extended header (PAX, GNU long name)
    pull_timeout: float = 300.0  # seconds: an operator's `models pull`, end to end
    shadow_queue_max: int = 256  # requests waiting for their candidate's shadow scoring;
    # past it a request's shadow work is dropped and counted, never waited for
    shadow_start_delay: float = 0.005  # seconds: the shadow lane starts a task no sooner
    # than this after it was queued, so the request that queued it sends its answer first
    audit_queue_max: int = 10_000  # audit entries waiting for the writer thread; past it
    # (the disk is not keeping up) new entries are dropped and counted, never waited for
    audit_queue_bytes_max: int = 64 * 1024 * 1024  # bytes: request bodies those entries hold
    # until the writer computes their HMAC (large bodies fill this before the count)
    audit_refusal_window: float = 1.0  # seconds: identical edge refusals (HTTP, MLLP) from one
    # client within it after the first are audited as one entry with their count
    prediction_queue_max: int = 10_000  # scorings whose predictions wait for the
    # prediction store's writer thread; past it they are not kept (counted)
    writer_gather: float = 0.005  # seconds a writer thread (audit log, prediction store),
    # woken by a first queued item, waits for more before it writes them as one batch: one
    # wake-up for several answers (agent/writebehind.py); a flush or stop cuts it short
    writer_flush_wait: float = 5.0  # seconds a caller that must see what was queued
    # before it waits for a writer thread (an outcome for its predictions, a lifecycle
    # event for its audit entry); past it (a disk that hangs) it goes on without
    histogram_values_min: int = 10  # live values: a feature's live histogram on the status
    # page is not drawn from fewer (a handful of values in a bin could single a patient out)
    comparison_checkpoint: float = 60.0  # seconds between keeping each candidate's
    # comparison in the store (and at every stop), so a restart resumes it
    comparison_window: int = 10_000  # records: pairs kept for a candidate's comparison
    # quantiles, PSI and histograms (counts and correlation cover every pair)
