"""Prometheus text-format metrics for ``GET /metrics``: requests by operation and status, a
latency histogram per operation, and per-model hosting status, workers, queue depth and
throttling. Updated only from the server's event loop, so it needs no lock. A request whose
client closed the connection before sending its whole body is counted with status 499 (nginx's
"client closed request"): no answer is written, and it is not a server error."""

from __future__ import annotations

import bisect
from collections import Counter

from ..hosting import HOSTED, HOSTING_FAILED, STARTING_HOSTING, STOPPING_HOSTING, Hosting

__all__ = ["LATENCY_BUCKETS", "Metrics"]

# Seconds; from a fast classification call on loopback to a large image on a slow CPU.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HOSTING_STATUSES = (STARTING_HOSTING, HOSTED, HOSTING_FAILED, STOPPING_HOSTING)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        # operation -> (count per bucket, +Inf last; sum of seconds)
        self._histograms: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        self.requests[(operation, status)] += 1
        counts, total = self._histograms.setdefault(
            operation, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        )
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        total[0] += seconds

    def render(self, hosting: Hosting) -> str:
        lines = [
            "# HELP openlookout_requests_total API requests answered, by operation and status.",
            "# TYPE openlookout_requests_total counter",
        ]
        for (operation, status), count in sorted(self.requests.items()):
            lines.append(
                f'openlookout_requests_total{{operation="{_label(operation)}",'
                f'status="{status}"}} {count}'
            )
        lines += [
            "# HELP openlookout_request_duration_seconds Time to answer a request.",
            "# TYPE openlookout_request_duration_seconds histogram",
        ]
        for operation, (counts, total) in sorted(self._histograms.items()):
            op = _label(operation)
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
                cumulative += count
                lines.append(
                    f'openlookout_request_duration_seconds_bucket{{operation="{op}",'
                    f'le="{bound}"}} {cumulative}'
                )
            cumulative += counts[-1]
            lines += [
                f'openlookout_request_duration_seconds_bucket{{operation="{op}",le="+Inf"}} '
                f"{cumulative}",
                f'openlookout_request_duration_seconds_sum{{operation="{op}"}} {total[0]:.6f}',
                f'openlookout_request_duration_seconds_count{{operation="{op}"}} {cumulative}',
            ]
        models = sorted(hosting.models(), key=lambda m: (m.record.project, m.record.version))
        per_model = [
            ("openlookout_model_status", "gauge", "1 for the model's hosting status."),
            ("openlookout_model_workers", "gauge", "Inference workers of a hosted model."),
            ("openlookout_model_running", "gauge", "Calls running on a model's workers."),
            ("openlookout_model_queue_depth", "gauge", "Calls waiting for a worker."),
            ("openlookout_model_queue_capacity", "gauge", "Calls that may wait before throttling."),
            ("openlookout_model_completed_total", "counter", "Inference calls completed."),
            ("openlookout_model_throttled_total", "counter", "Calls refused with 429."),
        ]
        for name, kind, help_text in per_model:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for hosted in models:
                labels = (
                    f'project="{_label(hosted.record.project)}",version="{hosted.record.version}"'
                )
                if name == "openlookout_model_status":
                    for hosting_status in _HOSTING_STATUSES:
                        flag = int(hosted.status == hosting_status)
                        lines.append(f'{name}{{{labels},status="{hosting_status}"}} {flag}')
                    continue
                value = {
                    "openlookout_model_workers": hosted.workers,
                    "openlookout_model_running": hosted.running,
                    "openlookout_model_queue_depth": hosted.queued,
                    "openlookout_model_queue_capacity": hosted.max_queue,
                    "openlookout_model_completed_total": hosted.completed,
                    "openlookout_model_throttled_total": hosted.throttled,
                }[name]
                lines.append(f"{name}{{{labels}}} {value}")
        return "\n".join(lines) + "\n"
