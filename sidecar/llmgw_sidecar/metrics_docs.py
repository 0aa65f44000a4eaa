"""Generate the metric list of docs/metrics.md from the Metrics class itself (a test keeps the doc in sync)."""

from __future__ import annotations

from .docgen import cli
from .metrics import Metrics

BEGIN = "<!-- BEGIN GENERATED METRICS (python -m llmgw_sidecar.metrics_docs) -->"
END = "<!-- END GENERATED METRICS -->"


def generate() -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    m = Metrics()
    seen = set()
    for metric in vars(m).values():
        name = getattr(metric, "_name", None)
        if name is None and hasattr(metric, "collect"):  # a custom collector (TopScopes): document its families
            for fam in metric.collect():
                labels = ", ".join(f"`{x}`" for x in sorted({k for s in fam.samples for k in s.labels})) or "-"
                lines.append(f"| `{fam.name}_total` | {fam.type} | {labels} | {fam.documentation} |")
            continue
        if name is None or name in seen:
            continue
        seen.add(name)
        kind = metric._type
        shown = f"{name}_total" if kind == "counter" else name
        labels = ", ".join(f"`{x}`" for x in metric._labelnames) or "-"
        lines.append(f"| `{shown}` | {kind} | {labels} | {metric._documentation} |")
    return "\n".join([BEGIN, *lines, END])


if __name__ == "__main__":
    cli(BEGIN, END, generate)
