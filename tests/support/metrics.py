"""Reading `/metrics` in tests: where the listener is, and what it exports."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import request
from tests.support.servers import ServerProcess

_METRICS_AT = re.compile(r"metrics on http://([^\s:]+):(\d+)/metrics")


def metrics_address(proc: ServerProcess) -> tuple[str, int]:
    """The --metrics-listen address the server logged when it bound it."""
    found = _METRICS_AT.search(proc.log)
    assert found is not None, f"no metrics listener logged:\n{proc.log}"
    return found.group(1), int(found.group(2))


@dataclass(frozen=True, slots=True)
class Scrape:
    """One answer of `GET /metrics`: its families' types, label names and samples."""

    types: dict[str, str]  # family name (counters with _total) -> counter, gauge, histogram
    # Family name -> the label names its samples carry (not `le`); None: no samples yet.
    labels: dict[str, set[str] | None]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly `labels`; 0 when it is not exported (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)


async def scrape(address: tuple[str, int]) -> Scrape:
    """`GET /metrics`, checked and parsed."""
    response = await request(address, "GET", "/metrics", jar=None)
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    types: dict[str, str] = {}
    label_names: dict[str, set[str] | None] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        types[name] = family.type
        names: set[str] = set()
        for sample in family.samples:
            names |= set(sample.labels) - {"le"}
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        label_names[name] = names if family.samples else None
    return Scrape(types, label_names, samples)
