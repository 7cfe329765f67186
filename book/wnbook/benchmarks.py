"""The CPU benchmark table written by ``python -m wnlib.bench`` (``wnbook/data/bench_cpu.md``), read back.

:func:`read_bench` parses the Markdown table of :func:`wnlib.bench.table` into :class:`BenchRow`\\ s;
:func:`target_report` holds each row against the targets of :data:`TARGETS` and against the faster of
torch's two weight-norm APIs, calling a gap within the measured noise a tie (:func:`versus_torch`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BENCH_COLUMNS",
    "SHORT_COLUMNS",
    "TARGETS",
    "VARIANTS",
    "BenchRow",
    "BenchTable",
    "faster_torch",
    "read_bench",
    "short_header_markdown",
    "target_report",
    "versus_torch",
]

# The targets for wnlib's Linear forward + backward, as a ratio to the plain layer.
TARGETS: dict[str, float] = {"Linear 256×1024→1024": 1.10, "Linear 64×4096→4096": 1.15}
VARIANTS = ("wnlib", "torch parametrizations", "torch legacy")
# The header :func:`wnlib.bench.table` writes: case, the plain layer's time, one ratio per variant, and
# the peak memory of all four versions in one cell ("a / b / c / d").
BENCH_COLUMNS = (
    "case",
    "plain (ms)",
    *(f"{n} (× plain)" for n in VARIANTS),
    "peak MiB: plain / " + " / ".join(VARIANTS),
)


# The same columns with short headers for the page: "parametrizations" is one word too long to break, so
# the full header makes the table wider than the text column on a desktop screen.
SHORT_NAMES = {"wnlib": "wnlib", "torch parametrizations": "torch param.", "torch legacy": "torch legacy"}
SHORT_COLUMNS = (
    "case",
    "plain (ms)",
    *(f"{SHORT_NAMES[n]} (×)" for n in VARIANTS),
    "peak MiB: plain / wnlib / param. / legacy",
)


@dataclass(frozen=True)
class BenchRow:
    """One case of ``python -m wnlib.bench``: the plain network's time and each variant's ratio to it,
    with the run-to-run noise of that ratio (half its interquartile range over rounds)."""

    case: str
    plain_ms: float
    ratios: dict[str, float]
    peak_mib: dict[str, float]
    noise: dict[str, float]


@dataclass(frozen=True)
class BenchTable:
    """The benchmark file: where it was measured, its column headers and its rows."""

    where: str
    rows: list[BenchRow]
    columns: tuple[str, ...] = ()


def _ratio_cell(cell: str) -> tuple[float, float]:
    """"1.03 ±0.02" -> (1.03, 0.02)."""
    ratio, _, noise = cell.partition("±")
    return float(ratio), float(noise or 0.0)


def read_bench(path: Path) -> BenchTable:
    """Parse the Markdown table written by :func:`wnlib.bench.table`.

    Rows have the six cells of :data:`BENCH_COLUMNS`: ratios as "median ±noise", and in the last cell
    the four peak-memory values "plain / wnlib / torch parametrizations / torch legacy". A table with
    other columns is an error.
    """
    text = path.read_text()
    match = re.search(r"Measured on: (.*)\.\s*$", text.splitlines()[0])
    where = match.group(1) if match else "unknown"
    rows = []
    columns: tuple[str, ...] = ()
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "case":
            columns = tuple(cells)
            if columns != BENCH_COLUMNS:
                raise ValueError(f"{path}: unexpected columns {columns}; expected {BENCH_COLUMNS}")
            continue
        if set("".join(cells)) <= {"-", ":"}:
            continue
        if len(cells) != len(BENCH_COLUMNS):
            raise ValueError(f"{path}: row {line!r} has {len(cells)} cells, expected {len(BENCH_COLUMNS)}")
        parsed = [_ratio_cell(c) for c in cells[2:5]]
        ratios = {n: r for n, (r, _) in zip(VARIANTS, parsed, strict=True)}
        noise = {n: e for n, (_, e) in zip(VARIANTS, parsed, strict=True)}
        peaks = dict(zip(("plain", *VARIANTS), (float(c) for c in cells[5].split("/")), strict=True))
        rows.append(BenchRow(cells[0], float(cells[1]), ratios, peaks, noise))
    return BenchTable(where, rows, columns)


def short_header_markdown(path: Path) -> str:
    """The benchmark file's Markdown with :data:`SHORT_COLUMNS` as the table's header (rows unchanged).

    Raises:
        ValueError: the file's header is not :data:`BENCH_COLUMNS` (checked by :func:`read_bench`).
    """
    read_bench(path)
    full = "| " + " | ".join(BENCH_COLUMNS) + " |"
    text = path.read_text()
    if full not in text:
        raise ValueError(f"{path}: header row not written as {full!r}")
    return text.replace(full, "| " + " | ".join(SHORT_COLUMNS) + " |", 1)


def faster_torch(row: BenchRow) -> str:
    """The faster of torch's two weight-norm APIs on this row."""
    return min(("torch parametrizations", "torch legacy"), key=lambda n: row.ratios[n])


def versus_torch(row: BenchRow) -> str:
    """"faster", "tie" (the gap is within the two ratios' combined noise) or "slower": wnlib against
    the faster of torch's two APIs on this row."""
    best = faster_torch(row)
    gap = row.ratios["wnlib"] - row.ratios[best]
    noise = row.noise["wnlib"] + row.noise[best]
    if gap < -noise:
        return "faster"
    return "tie" if gap <= noise else "slower"


def target_report(table: BenchTable) -> str:
    """Each target of the issue against the table: wnlib's ratio per size, and wnlib vs the faster of
    torch's two APIs on every row (a gap within the measured noise is a tie)."""
    by_case = {r.case: r for r in table.rows}
    lines = []
    for case, limit in TARGETS.items():
        if case not in by_case:
            lines.append(f"{case}: wnlib ≤ {limit:.2f}× plain — not in this table (run without --quick)")
            continue
        ratio = by_case[case].ratios["wnlib"]
        verdict = "met" if ratio <= limit else "NOT met"
        lines.append(f"{case}: wnlib {ratio:.2f}× plain (target ≤ {limit:.2f}×): {verdict}")
    for r in table.rows:
        best = faster_torch(r)
        lines.append(
            f"{r.case}: wnlib {r.ratios['wnlib']:.2f}× vs {best} {r.ratios[best]:.2f}×: {versus_torch(r)}"
        )
    return "\n".join(lines)

