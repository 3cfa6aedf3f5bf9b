"""StepStats: what each training step costs, for planning a cluster run (README, "Training at scale").

A Lightning callback that appends one JSON line per optimiser step to ``path``:

    {"step": 12, "batch_size": 16, "step_s": 21.3, "data_s": 0.4, "peak_rss_mb": 10240.5, "rss_mb": 9876.0,
     "workers_rss_mb": [1712.0, 1698.3], "cuda_peak_mb": null, "peak_rss_since": "step", "pid": 4242}

- ``step_s``: from the batch's arrival to the end of its optimiser step (forward, backward, clipping, step);
- ``data_s``: the wait for the batch since the previous step ended (data loading the workers did not hide);
- ``peak_rss_mb``: the process's peak resident memory during the step (Linux: the peak is reset before each
  step through ``/proc/self/clear_refs``; elsewhere it is the peak since the process started, and
  ``peak_rss_since`` says so). Data workers are other processes, not counted here;
- ``workers_rss_mb``: the resident memory of each child process (the data workers) at the end of the step
  (Linux; shared library pages are counted in each);
- ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` during the step, on a GPU;
- ``pid``: the training process (a resumed run appends under a new one).

Use it from the command line: ``+callbacks.step_stats._target_=src.utils.step_stats.StepStats
+callbacks.step_stats.path=RUN/step_stats.jsonl``. Rank 0 writes.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import lightning as L
import torch


class StepStats(L.Callback):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self._start: float | None = None
        self._end: float | None = None
        self._data_s: float | None = None
        self._reset_works = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._data_s = None if self._end is None else now - self._end
        self._reset_works = reset_peak_rss()
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        cuda = None
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            cuda = round(torch.cuda.max_memory_allocated(pl_module.device) / 2**20, 1)
        record = {"step": trainer.global_step, "batch_size": batch_size(batch), "step_s": round(now - self._start, 4),
                  "data_s": None if self._data_s is None else round(self._data_s, 4),
                  "peak_rss_mb": round(peak_rss_mb(), 1), "rss_mb": round(rss_mb(), 1),
                  "workers_rss_mb": [round(mb, 1) for mb in children_rss_mb()], "cuda_peak_mb": cuda,
                  "peak_rss_since": "step" if self._reset_works else "process start", "pid": os.getpid()}
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        self._end = time.perf_counter()


def batch_size(batch) -> int | None:
    """The leading size of the first tensor in a (nested) batch."""
    if torch.is_tensor(batch):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        size = batch_size(value)
        if size is not None:
            return size
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: VmHWM (since the last reset), else ru_maxrss."""
    value = _status_kb("VmHWM")
    return (value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_mb() -> float:
    value = _status_kb("VmRSS")
    return float("nan") if value is None else value / 1024


def children_rss_mb() -> list[float]:
    """Resident memory (MiB) of each child process of this one (Linux; empty elsewhere)."""
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids += children.read_text().split()
        except OSError:
            continue
    sizes = (_status_kb("VmRSS", f"/proc/{pid}/status") for pid in pids)
    return [kb / 1024 for kb in sizes if kb is not None]


def _status_kb(field: str, path: str = "/proc/self/status") -> float | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None
