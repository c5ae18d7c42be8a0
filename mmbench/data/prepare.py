"""``mmbench prepare DATASET``: check a dataset's layout, build its cache, report what was found.

The CLI calls :func:`prepare_report` with the adapter built from the card (and ``--data-root``)
and the card's name; it returns the text to print: a table per split, where the data and the cache
are (and whether the cache was reused, or rebuilt because the data changed), each naturally absent
image file with the reason (the first few per split, then a count), and the adapter's notes.
Errors are :class:`~mmbench.errors.DataError` one-liners.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DataError
from .base import SPLITS, DatasetAdapter
from .batch import MODALITIES
from .io import no_progress

T = TypeVar("T")


def rich_progress(items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]:
    """A :class:`~mmbench.data.io.Progress` drawing a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, total=total, console=Console(stderr=True), transient=True)


def prepare(
    adapter: DatasetAdapter, progress: bool = True, force: bool = False, name: str | None = None
) -> dict[str, Any]:
    """Run the adapter's ``prepare`` (file-backed adapters) or summarise its splits (generated data).

    ``name`` is the dataset card's name (the report's title); the adapter's registered name otherwise.
    """
    fn = getattr(adapter, "prepare", None)
    if fn is not None:
        report = fn(rich_progress if progress else no_progress, force=force)
        return dict(report, dataset=name or report["dataset"])
    info, splits = adapter.load()
    from .cache import split_report

    report = {
        s: split_report(
            splits[s].y.numpy(),
            splits[s].natural_present.numpy(),
            info.class_names or tuple(str(k) for k in range(info.num_classes)),
            info.task == "multilabel",
        )
        for s in SPLITS
    }
    adapter_name = getattr(type(adapter), "registry_name", type(adapter).__name__)
    return {
        "dataset": name or adapter_name,
        "adapter": adapter_name,
        "dir": "(generated)",
        "cache": "(none: generated in memory)",
        "reused_cache": False,
        "task": info.task,
        "num_classes": info.num_classes,
        "image_shape": list(info.image_shape),
        "splits": report,
        "notes": [],
    }


def format_report(report: dict[str, Any], max_classes: int = 12) -> str:
    """The report as text: a summary line, one row per split, class counts, notes."""
    from rich.console import Console
    from rich.table import Table

    splits = report["splits"]
    adapter = report.get("adapter", report["dataset"])
    named = report["dataset"] if adapter == report["dataset"] else f"{report['dataset']} (adapter {adapter})"
    table = Table(
        title=f"{named}: {report['task']}, {report['num_classes']} classes, "
        f"image {'x'.join(map(str, report['image_shape']))}"
    )
    table.add_column("split")
    table.add_column("samples", justify="right")
    for m in MODALITIES:
        table.add_column(f"{m} absent", justify="right")
    table.add_column("classes (count)")
    for s in SPLITS:
        r = splits.get(s, {})
        n = r.get("n", 0)
        miss = r.get("natural_missing", {})
        classes = r.get("classes", {})
        shown = ", ".join(f"{c}:{v}" for c, v in list(classes.items())[:max_classes])
        if len(classes) > max_classes:
            shown += f", ... ({len(classes)} classes)"
        cells = [f"{miss.get(m, 0)} ({100.0 * miss.get(m, 0) / max(n, 1):.1f}%)" for m in MODALITIES]
        table.add_row(s, str(n), *cells, shown)
    buf = io.StringIO()
    console = Console(file=buf, width=140, force_terminal=False, color_system=None)
    console.print(table)
    console.print(f"data:  {report['dir']}")
    status = ""
    if report.get("rebuilt_because"):
        status = f"  (rebuilt: the data changed since it was built: {report['rebuilt_because']})"
    elif report.get("reused_cache"):
        status = "  (already built; --force rebuilds)"
    console.print(f"cache: {report['cache']}{status}", soft_wrap=True)  # long lines stay whole (grep)
    for line in missing_lines(report.get("missing_files", {}), report.get("dir", "")):
        console.print(f"absent: {line}", soft_wrap=True)
    for note in report.get("notes", []):
        console.print(f"note:  {note}", soft_wrap=True)
    return buf.getvalue().rstrip() + "\n"


def missing_lines(missing: dict[str, dict[str, Any]], base: str = "") -> list[str]:
    """One line per split naming its naturally absent image files and why (the first few, then a count)."""
    lines = []
    for s in SPLITS:
        m = missing.get(s)
        if not m:
            continue
        parts = []
        if m.get("no_file"):
            parts.append(f"{m['no_file']} row(s) without a file ({m['no_file_reason']})")
        shown = [f"{_short(path, base)} ({why})" for path, why in m.get("first", [])]
        with_file = m["count"] - m.get("no_file", 0)
        if shown:
            more = with_file - len(shown)
            parts.append(", ".join(shown) + (f" and {more} more file(s)" if more > 0 else ""))
        lines.append(f"{s}: {m['count']} image(s) naturally absent: " + "; ".join(parts))
    return lines


def _short(path: str, base: str) -> str:
    """``path`` relative to the dataset folder when inside it."""
    try:
        return Path(path).relative_to(base).as_posix() if base else path
    except ValueError:
        return path


def prepare_report(
    adapter: DatasetAdapter, progress: bool = True, force: bool = False, name: str | None = None
) -> str:
    """Check, cache and describe one dataset; the text ``mmbench prepare`` prints (``name``: the card's)."""
    try:
        return format_report(prepare(adapter, progress=progress, force=force, name=name))
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:  # malformed files the adapter did not anticipate
        raise DataError(
            f"{getattr(type(adapter), 'registry_name', 'dataset')}: could not read the data "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
