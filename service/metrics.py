"""Prometheus metrics: one registry per app (tests build many apps), never the global one.

- `hps_studies{status}` and `hps_trials{state}` gauges and the `hps_trial_duration_seconds`
  histogram are computed from the database at scrape time by `DatabaseCollector`, so every API
  replica reports the same truth and nothing has to be kept in step with the workers.
- `hps_api_request_duration_seconds{method,route,status}` is observed in-process by the API's
  middleware, labelled by route template (`/api/v1/studies/{study_id}`), never the raw path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.studies import ServiceStats, collect_stats

logger = logging.getLogger(__name__)

TRIAL_DURATION_BOUNDS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 86_400,
)  # fmt: skip
"""Seconds: a trial takes from about a second (tiny MLP) to hours (a CNN on a big set)."""

_DURATIONS = "hps_trial_duration_seconds"
_DURATIONS_HELP = "duration of finished trials (from the database at scrape time)"

REQUEST_DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    request_duration: Histogram

    def render(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    request_duration = Histogram(
        "hps_api_request_duration_seconds",
        "API request latency by route template",
        ["method", "route", "status"],
        buckets=REQUEST_DURATION_BOUNDS,
        registry=registry,
    )
    return Metrics(registry, request_duration)


class DatabaseCollector(Collector):
    """Study and trial gauges and the trial-duration histogram, read from the database."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples (registering must not query the database)."""
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        try:
            with self._session_factory() as session:
                stats = collect_stats(session, TRIAL_DURATION_BOUNDS)
        except SQLAlchemyError:
            logger.exception("metrics: cannot read the database")
            stats = None
        yield from self._families(stats)

    def _families(self, stats: ServiceStats | None) -> Iterator[Metric]:
        up = GaugeMetricFamily("hps_database_up", "1 if the last scrape could read the database")
        studies = GaugeMetricFamily("hps_studies", "studies by status", labels=["status"])
        trials = GaugeMetricFamily("hps_trials", "trials by state", labels=["state"])
        if stats is None:
            up.add_metric([], 0.0)
            yield from (up, studies, trials)
            yield HistogramMetricFamily(_DURATIONS, _DURATIONS_HELP)
            return
        up.add_metric([], 1.0)
        for status, count in stats.studies_by_status.items():
            studies.add_metric([status], count)
        for state, count in stats.trials_by_state.items():
            trials.add_metric([state], count)
        durations = stats.trial_durations
        buckets = [
            (_bound(bound), count)
            for bound, count in zip(durations.bounds, durations.cumulative_counts, strict=True)
        ]
        yield from (up, studies, trials)
        yield HistogramMetricFamily(
            _DURATIONS,
            _DURATIONS_HELP,
            buckets=[*buckets, ("+Inf", durations.count)],
            sum_value=durations.total_s,
        )


def _bound(value: float) -> str:
    return repr(float(value))
