"""The embedded stack behind `hpsearch up` and `hpsearch demo`: API server + worker processes.

Workers are separate processes (`python -m service.worker`), not threads: training holds the
GIL for long stretches, and a separate process is what survives, and is retried, like any
remote worker. They get the server's settings through the same `HPS_*` environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.markup import escape

from service.api.app import create_app
from service.api.auth import resolve_api_tokens
from service.client import ApiClient, ApiError
from service.client.display import follow_study, print_leaderboard
from service.config import Settings
from service.db.migrate import upgrade

console = Console()


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    environment = dict(os.environ)
    environment["HPS_DATABASE_URL"] = settings.effective_database_url
    environment["HPS_DATA_DIR"] = str(settings.data_dir.resolve())
    if settings.plugins is not None:  # workers load the server's allow-list
        environment["HPS_PLUGINS"] = settings.plugins
    return environment


def spawn_workers(
    settings: Settings, count: int, device: str, threads: int | None
) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "service.worker", "--device", device]
    if threads is not None:
        command += ["--threads", str(threads)]
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    for index in range(count):
        with (log_dir / f"worker-{index}.log").open("ab") as log:
            workers.append(
                subprocess.Popen(
                    command, env=settings_environment(settings), stdout=log, stderr=log
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
    """SIGTERM: each worker checkpoints its trial at the epoch's end and hands it over."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class BackgroundServer:
    """uvicorn in a thread, so the calling thread can drive a demo against it."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings), host=settings.host, port=settings.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout_s: float = 30) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start (is the port free?)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def prepare(settings: Settings) -> str:
    """Migrate the embedded database and return the API token clients must send."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_embedded_sqlite:
        upgrade(settings.effective_database_url)
    return resolve_api_tokens(settings)[0].decode()


def base_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}"


def dashboard_url(settings: Settings, token: str, path: str = "/") -> str:
    """The dashboard's address with the token, which the page keeps and strips from the URL."""
    return f"{base_url(settings)}{path}?token={token}"


def run_up(settings: Settings, workers: int, device: str, threads: int | None) -> int:
    token = prepare(settings)
    processes = spawn_workers(settings, workers, device, threads)
    console.print(f"dashboard: {dashboard_url(settings, token)}", soft_wrap=True)
    console.print(f"API: {base_url(settings)}/docs  ({workers} worker(s) on {device})")
    console.print(f"token: {token}   (send it as 'Authorization: Bearer <token>')")
    console.print(f"worker logs in {settings.data_dir / 'logs'}; Ctrl-C stops everything")
    try:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
    finally:
        stop_workers(processes)
    return 0


def run_demo(
    settings: Settings, spec_path: Path, workers: int, device: str, exit_when_done: bool
) -> int:
    token = prepare(settings)
    server = BackgroundServer(settings)
    server.start()
    processes = spawn_workers(settings, workers, device, threads=1)
    api = ApiClient(base_url(settings), token)
    try:
        spec = json.loads(spec_path.read_text())
        try:
            study = api.submit_study(spec)
        except ApiError as error:
            console.print(f"[red]the demo study was refused:[/red] {escape(error.message)}")
            return 2
        console.print(
            f"study {study['id']} '{study['name']}' queued: {study['n_trials']} trials; "
            f"API {base_url(settings)}/docs, token {token}"
        )
        study_page = dashboard_url(settings, token, f"/studies/{study['id']}")
        console.print(f"follow it live: {study_page}", soft_wrap=True)
        final = follow_study(api, study, console)
        print_leaderboard(api, final, console)
        if not exit_when_done:
            console.print(
                f"serving the dashboard at {dashboard_url(settings, token)} until Ctrl-C",
                soft_wrap=True,
            )
            while True:
                time.sleep(3600)
        return 0 if final["status"] == "completed" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        api.close()
        stop_workers(processes)
        server.stop()
