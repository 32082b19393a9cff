"""Validation on Dask workers, for a health system's years of history: the driver reads the
records and matches them to the outcome rows as in process; batches of jobs go to the
workers, each of which builds the same serving pipeline from the same agent config (the
bundle from the site's store, verified again, and the site mapping) once, and scores them.
The report is the one the in-process run writes (tests/validation compare them).

The workers must see the config and the store at the same paths (one host: a LocalCluster;
several: a shared filesystem). Dask is an optional dependency (the ``dask`` extra).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.validation.run import Job, JobRunner, Scored, score_job
from agent.validation.setup import ValidationSetup, validation_setup

BATCH = 64  # jobs per task: a task's result carries scores only, never records
IN_FLIGHT_PER_WORKER = 2  # batches queued per worker: bounds the driver's memory


def dask_runner(client: Any, config_path: Path, model: str, labelled: bool) -> JobRunner:
    """A JobRunner on the Dask ``client``'s workers (see the module docstring)."""
    import distributed

    dask: Any = distributed  # typed loosely upstream
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    limit = workers * IN_FLIGHT_PER_WORKER

    def submit(batch: list[Job]) -> Any:
        # pure=False: a random task key. The default hashes every argument to name the
        # task (dask.tokenize), which cost more CPU than scoring the batch on the worker.
        return client.submit(_score_batch, str(config_path), model, labelled, batch, pure=False)

    def run(jobs: Iterable[Job]) -> Iterator[tuple[Job, list[Scored]]]:
        batches = _batches(jobs)
        pending = dask.as_completed()
        for batch in islice(batches, limit):
            pending.add(submit(batch))
        for done in pending:
            yield from done.result()
            following = next(batches, None)
            if following is not None:
                pending.add(submit(following))

    return run


def connect(address: str | None, workers: int | None) -> Any:
    """A Dask client: to the scheduler at ``address``, else to a LocalCluster of
    ``workers`` processes on this machine."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--dask and --workers need Dask: pip install 'edge-inference-agent[dask]'"
        ) from None
    dask: Any = distributed  # typed loosely upstream
    if address is not None:
        return dask.Client(address)
    cluster = dask.LocalCluster(
        n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return dask.Client(cluster)


def _batches(jobs: Iterable[Job]) -> Iterator[list[Job]]:
    source = iter(jobs)
    while batch := list(islice(source, BATCH)):
        yield batch


@functools.cache
def _setup(config_path: str, model: str, labelled: bool) -> ValidationSetup:
    """Each worker process builds its pipeline once (the first batch it receives)."""
    return validation_setup(Path(config_path), model, labelled)


def _score_batch(
    config_path: str, model: str, labelled: bool, jobs: list[Job]
) -> list[tuple[Job, list[Scored]]]:
    setup = _setup(config_path, model, labelled)
    return [(job, score_job(setup.pipeline, setup.model, setup.labeler, job)) for job in jobs]
