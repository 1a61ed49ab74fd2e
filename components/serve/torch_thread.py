"""One thread for all of serving's torch work in a process.

MLflow's scoring server loads the model in its main thread and answers each request in a
worker thread of asyncio's pool (`asyncio.to_thread`). Every thread that runs torch ops on the
CPU gets its own OpenMP team, and once two threads have run them, every forward is slower:
measured on 2 cores with the demo model and a 4 s clip, 4.1-4.3 s per full answer when one
thread does all the work against 6.0-6.3 s once a second thread has run any (also with
`OMP_WAIT_POLICY=PASSIVE`, which made even one thread slow). Loading and predicting on this
one thread keeps the served model as fast as `emoreason predict`.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

_NAME = "emoreason-torch"
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_NAME)


def on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` run on the process's torch thread (called from that thread, it
    runs directly); its exception is raised here."""
    if threading.current_thread().name.startswith(_NAME):
        return fn(*args, **kwargs)
    return _POOL.submit(fn, *args, **kwargs).result()
