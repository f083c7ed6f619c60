"""A throw-away stack for `hpsearch regress --spec` when no server is named: SQLite in a
temporary data dir, the API server in a thread and worker processes, as `hpsearch demo` runs
them. A CI job needs nothing but hpsearch installed."""

from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.client import ApiClient
from service.gate.errors import GateError


@dataclass
class EmbeddedStack:
    api: ApiClient
    workers: list[subprocess.Popen[bytes]]
    log_dir: Path

    def problem(self) -> str | None:
        """Why the study can no longer finish (every worker exited), or None."""
        if any(worker.poll() is None for worker in self.workers):
            return None
        codes = ", ".join(str(worker.returncode) for worker in self.workers)
        return f"every embedded worker exited (codes {codes}){self._last_log_line()}"

    def _last_log_line(self) -> str:
        for log in sorted(self.log_dir.glob("worker-*.log")):
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            if lines:
                return f"; {log.name}: {lines[-1][:300]}"
        return ""


@contextmanager
def embedded_stack(workers: int = 1, device: str = "auto") -> Iterator[EmbeddedStack]:
    """Start the stack in a temporary directory; everything is stopped and removed on exit."""
    from service.config import Settings
    from service.stack import BackgroundServer, base_url, prepare, spawn_workers, stop_workers

    with tempfile.TemporaryDirectory(prefix="hpsearch-regress-") as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            database_url=None,
            api_token=secrets.token_urlsafe(32),  # a generated one would be logged
            host="127.0.0.1",
            port=_free_port(),
        )
        prepare(settings)
        server = BackgroundServer(settings)
        try:
            server.start()
        except RuntimeError as error:
            raise GateError(f"the embedded server did not start: {error}") from None
        processes: list[subprocess.Popen[bytes]] = []
        api = ApiClient(base_url(settings), settings.api_token)
        try:
            processes = spawn_workers(settings, workers, device, threads=1)
            yield EmbeddedStack(api, processes, settings.data_dir / "logs")
        finally:
            api.close()
            stop_workers(processes)
            server.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
