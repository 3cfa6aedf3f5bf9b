"""Executors for data_prep.build beyond local processes: Ray, for clusters.

``run_ray`` sends one task per clip (one CPU each: the fit uses one torch thread) to a Ray cluster: the one
named by ``RAY_ADDRESS`` when set (``ray start --head`` on the head node, ``ray start --address=...`` on
the workers, all sharing the dataset and the output folder), else a local one with ``workers`` CPUs. Each
task writes its own work item, exactly as the local executor does, so the two can be mixed and resumed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

_MAX_IN_FLIGHT_PER_CPU = 4  # bounded submission: a million clips are never all queued at once


def run_ray(clips: list, cfg, work: Path, workers: int, on_done: Callable[[], None]) -> None:
    try:
        import ray
    except ImportError as err:
        raise ImportError("--executor ray needs Ray: pip install 'personatalk[ray]' (or 'ray>=2.40')") from err

    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    task = ray.remote(num_cpus=1)(_task)
    limit = _MAX_IN_FLIGHT_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", workers)))
    pending, queue = [], list(clips)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                pending.append(task.remote(queue.pop(0), cfg, str(work)))
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # re-raises a task's crash (clip errors are already caught and recorded)
            on_done()
    finally:
        if started:
            ray.shutdown()


def _task(clip, cfg, work: str) -> str:
    import torch

    from data_prep.build import process_and_store

    torch.set_num_threads(1)
    return process_and_store(clip, cfg, Path(work))
