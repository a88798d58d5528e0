"""The printed table: one row per implementation per workload, then a summary of ratios."""
from __future__ import annotations

from dataclasses import dataclass, field

from .timing import Measurement

PEERS = ("micrograd", "torch", "jax", "autograd")  # the automatic-differentiation libraries
WIDTHS = (38, 8, 11, 11, 7, 12, 9)


@dataclass
class Row:
    workload: str
    label: str
    implementation: str  # the implementation's key: numba, numpy, tracegrad, ...
    status: str = "ok"  # ok, FAILED, ERROR or skipped
    first_call: float | None = None
    measurement: Measurement | None = None
    ratio: float | None = None
    note: str = ""
    details: str = field(default="", repr=False)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def line(cells) -> str:
    first, *rest = cells
    return f"  {first:<{WIDTHS[0]}}" + "".join(f" {cell:>{width}}" for cell, width in zip(rest, WIDTHS[1:]))


def print_table_header() -> None:
    print(line(("implementation", "check", "first call", "per step", "spread", "samples", "vs numba")))


def print_row(row: Row) -> None:
    m = row.measurement
    print(line((row.label, row.status, seconds(row.first_call), seconds(m.per_call if m else None),
                f"{m.spread * 100:.1f}%" if m else "-", m.describe() if m else "-",
                ratio_text(row.ratio))), flush=True)
    if row.note:
        print(f"      -> {row.note}", flush=True)


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:.1f}" if ratio < 100 else f"{ratio:.0f}"


def ratio_cell(row: Row | None) -> str:
    if row is None:
        return "-"
    return row.status if row.status != "ok" else ratio_text(row.ratio)


def print_summary(workloads: list[str], rows: list[Row], column_order: list[str]) -> None:
    """Per-step time over the numba reference, per workload and implementation."""
    by_key = {(row.workload, row.implementation): row for row in rows}
    present = {row.implementation for row in rows}
    keys = [key for key in column_order if key in present and key != "numba"]
    print("\nSummary: per-step time / hand-written numba (lower is faster); "
          "last column: tracegrad / fastest AD peer (< 1: tracegrad is faster)")
    print(f"  {'workload':<10}" + "".join(f" {key:>11}" for key in keys) + f" {'tg/best peer':>17}")
    for workload in workloads:
        cells = [ratio_cell(by_key.get((workload, key))) for key in keys]
        best_peer = versus_best_peer(workload, rows)
        print(f"  {workload:<10}" + "".join(f" {cell:>11}" for cell in cells) + f" {best_peer:>17}")


def versus_best_peer(workload: str, rows: list[Row]) -> str:
    timed = {row.implementation: row for row in rows if row.workload == workload and row.status == "ok"
             and row.measurement is not None}
    peers = [timed[key] for key in PEERS if key in timed]
    if "tracegrad" not in timed or not peers:
        return "-"
    best = min(peers, key=lambda row: row.measurement.per_call)
    return f"{ratio_text(timed['tracegrad'].measurement.per_call / best.measurement.per_call)} ({best.implementation})"


def print_problems(rows: list[Row]) -> None:
    for row in rows:
        if row.details:
            print(f"\n--- {row.workload} / {row.label}: traceback ---\n{row.details.rstrip()}")
