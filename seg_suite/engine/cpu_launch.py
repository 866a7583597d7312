"""Several training or evaluation processes on the CPU, joined by torch.distributed over gloo.

detectron2's ``launch`` starts one process per GPU and requires CUDA (NCCL, one device per
process). :func:`launch_cpu` is its counterpart for ``MODEL.DEVICE cpu``: the same arguments and
the same per-process state (a global gloo process group, detectron2's per-machine group behind
``comm.get_local_rank``), so the trainer, its DistributedDataParallel model, the samplers and the
evaluators run exactly as they do on N GPUs. It is the way to test multi-process training on a
machine without GPUs.

The machine's CPU threads are divided among the processes (at least one each), as torchrun does
with ``OMP_NUM_THREADS``. A :class:`~seg_suite.errors.UserError` raised in any process (e.g. an
unwritable OUTPUT_DIR) stops every process and is raised again here as the same one line; Ctrl-C
or SIGTERM here stops every process (each keeps the checkpoints written so far).
"""

from __future__ import annotations

import os
import socket
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from seg_suite.errors import UserError

# detectron2's DEFAULT_TIMEOUT for its process groups.
DEFAULT_TIMEOUT = timedelta(minutes=30)


def _free_local_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def launch_cpu(main_func, num_processes: int, num_machines: int = 1, machine_rank: int = 0,
               dist_url: str = "auto", args: tuple = (), timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_processes`` CPU processes on each of ``num_machines``
    machines (this one is ``machine_rank``); one process in all runs it here, in this process.

    ``dist_url``: the torch.distributed rendezvous, ``tcp://HOST:PORT`` of machine 0, or "auto"
    (one machine only) for a free local port. Returns when every process has finished.
    """
    world = num_processes * num_machines
    if world <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise UserError("--dist-url auto works on one machine only; give machine 0's tcp://HOST:PORT")
        dist_url = _free_local_url()
    threads = max(1, torch.get_num_threads() // num_processes)
    with tempfile.TemporaryDirectory(prefix="seg_suite_cpu_launch_") as errors:
        context = mp.start_processes(_worker, nprocs=num_processes, start_method="spawn", join=False, daemon=False,
                                     args=(main_func, args, num_processes, num_machines, machine_rank, dist_url,
                                           threads, timeout, errors))
        try:
            while not context.join():
                pass
        except ProcessException:  # join() has stopped the other processes
            messages = sorted(os.listdir(errors))
            if messages:  # the first rank's mistake
                with open(os.path.join(errors, messages[0]), encoding="utf-8") as fh:
                    raise UserError(fh.read()) from None
            raise
        except BaseException:  # Ctrl-C or SIGTERM reached this process: stop the others too
            _stop(context.processes)
            raise


def _stop(processes, grace_s: float = 60.0) -> None:
    """SIGTERM to each process still running (a training process keeps its checkpoints and stops,
    :mod:`seg_suite.signals`), then SIGKILL to any still running after ``grace_s``."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()


def _worker(local_rank: int, main_func, args: tuple, num_processes: int, num_machines: int, machine_rank: int,
            dist_url: str, threads: int, timeout: timedelta, errors: str) -> None:
    from detectron2.utils import comm

    torch.set_num_threads(threads)
    rank = machine_rank * num_processes + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=num_processes * num_machines,
                            rank=rank, timeout=timeout)
    try:
        # detectron2's per-machine group (comm.get_local_rank / get_local_size), made as its launch
        # makes it: every process creates every machine's group, in the same order.
        for machine in range(num_machines):
            group = dist.new_group(list(range(machine * num_processes, (machine + 1) * num_processes)))
            if machine == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
        comm.synchronize()
        try:
            main_func(*args)
        except UserError as err:
            with open(os.path.join(errors, f"rank{rank:05d}"), "w", encoding="utf-8") as fh:
                fh.write(str(err))
            raise SystemExit(2) from None
    finally:
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()
