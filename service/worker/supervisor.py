"""Several worker processes on one host: one per GPU (or `trials_per_device` per GPU), or
`trials_per_device` on the CPU, each a plain `python -m service.worker --device D`.

Processes, not threads: a trial holds the GIL for whole epochs, and a process dies, is killed
and is retried alone. The supervisor forwards SIGTERM/SIGINT (each child checkpoints its trial
and hands it over), restarts a child that crashes, and exits 0 once every child has stopped.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger(__name__)


def plan_devices(device: str, trials_per_device: int, cuda_count: int) -> list[str]:
    """The device of each worker process to start.

    `cuda` (no index), or `auto` on a host with GPUs: every visible GPU; `cuda:N` that one GPU;
    `cpu`, or `auto` without a GPU: the CPU. Each device gets `trials_per_device` processes.
    """
    if trials_per_device < 1:
        raise ValueError(f"trials_per_device must be at least 1, got {trials_per_device}")
    if device == "cuda" or (device == "auto" and cuda_count > 0):
        if cuda_count == 0:
            raise ValueError("--device cuda: no CUDA device is visible to torch")
        devices = [f"cuda:{index}" for index in range(cuda_count)]
    elif device == "auto":
        devices = ["cpu"]
    else:
        devices = [device]
    return [name for name in devices for _ in range(trials_per_device)]


@dataclass
class Supervisor:
    devices: list[str]
    worker_args: list[str]
    restart_delay_s: float = 2.0
    children: dict[int, tuple[str, subprocess.Popen[bytes]]] = field(default_factory=dict)
    stopping: bool = False

    def command(self, device: str) -> list[str]:
        return [sys.executable, "-m", "service.worker", "--device", device, *self.worker_args]

    def start(self, slot: int) -> None:
        device = self.devices[slot]
        self.children[slot] = (device, subprocess.Popen(self.command(device)))
        logger.info("worker process %s on %s started", self.children[slot][1].pid, device)

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        self.stopping = True
        for _device, child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        for slot in range(len(self.devices)):
            self.start(slot)
        while self.children:
            time.sleep(0.2)
            for slot, (device, child) in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[slot]
                if code != 0 and not self.stopping:
                    logger.warning(
                        "worker process %s on %s exited with %s; restarting it in %.0f s",
                        child.pid,
                        device,
                        code,
                        self.restart_delay_s,
                    )
                    time.sleep(self.restart_delay_s)
                    self.start(slot)
        return 0


def run_supervisor(devices: list[str], worker_args: list[str]) -> int:
    supervisor = Supervisor(devices, worker_args)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    logger.info("starting %s worker processes: %s", len(devices), ", ".join(devices))
    return supervisor.run()
