"""``mmbench prepare DATASET``: check a dataset's layout, build its cache, report what was found.

The CLI calls :func:`prepare_report` with the adapter built from the card (and ``--data-root``);
it returns the text to print. Errors are :class:`~mmbench.errors.DataError` one-liners.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
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


def prepare(adapter: DatasetAdapter, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Run the adapter's ``prepare`` (file-backed adapters) or summarise its splits (generated data)."""
    fn = getattr(adapter, "prepare", None)
    if fn is not None:
        return fn(rich_progress if progress else no_progress, force=force)
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
    return {
        "dataset": getattr(type(adapter), "registry_name", type(adapter).__name__),
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
    table = Table(
        title=f"{report['dataset']}: {report['task']}, {report['num_classes']} classes, "
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
    console.print(
        f"cache: {report['cache']}"
        + ("  (already built; --force rebuilds)" if report.get("reused_cache") else "")
    )
    for note in report.get("notes", []):
        console.print(f"note:  {note}")
    return buf.getvalue().rstrip() + "\n"


def prepare_report(adapter: DatasetAdapter, progress: bool = True, force: bool = False) -> str:
    """Check, cache and describe one dataset; the text ``mmbench prepare`` prints."""
    try:
        return format_report(prepare(adapter, progress=progress, force=force))
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:  # malformed files the adapter did not anticipate
        raise DataError(
            f"{getattr(type(adapter), 'registry_name', 'dataset')}: could not read the data "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
