"""Executors of data_prep.build: each runs ``process.process_and_store`` on every clip, locally (in-process or
a pool of spawned processes, one torch thread each) or on Ray, for clusters.

``run_ray`` sends one task per clip (one CPU each: the fit uses one torch thread) to a Ray cluster: the one
named by ``RAY_ADDRESS`` when set (``ray start --head`` on the head node, ``ray start --address=...`` on
the workers, all sharing the dataset and the output folder), else a local one with ``workers`` CPUs. Each
task writes its own work item, exactly as the local executor does, so the two can be mixed and resumed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from data_prep.process import process_and_store

EXECUTORS = ("local", "ray")
_MAX_IN_FLIGHT_PER_CPU = 4  # bounded submission: a million clips are never all queued at once


def run(kind: str, clips: list, cfg, work: Path, workers: int) -> None:
    """Process every clip with executor ``kind`` ("local" or "ray"), ``workers`` processes, with a progress bar."""
    from tqdm import tqdm

    if kind not in EXECUTORS:
        raise ValueError(f"--executor must be one of {EXECUTORS}, got {kind!r}")
    with tqdm(total=len(clips), desc="clips", unit="clip", file=sys.stderr, smoothing=0.1) as bar:
        (run_ray if kind == "ray" else run_local)(clips, cfg, work, workers, bar.update)


def run_local(clips: list, cfg, work: Path, workers: int, on_done: Callable[[], None]) -> None:
    """In this process (``workers`` 1) or in a pool of spawned processes."""
    if workers == 1:
        for clip in clips:
            process_and_store(clip, cfg, work)
            on_done()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_one_thread) as pool:
        for future in as_completed([pool.submit(process_and_store, c, cfg, work) for c in clips]):
            future.result()
            on_done()


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one clip per process: more threads per clip only contend (ENVIRONMENT.md)


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

    torch.set_num_threads(1)
    return process_and_store(clip, cfg, Path(work))
