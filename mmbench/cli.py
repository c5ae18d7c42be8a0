"""The ``mmbench`` command line (Typer): run, table, check, ls, validate, prepare, plot, stats."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import MMBenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal classification with missing modalities.")
_WIDTH = max(100, shutil.get_terminal_size((120, 24)).columns)
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

ConfigDirOpt = Annotated[list[str] | None, typer.Option("--config-dir", help="Extra folder with methods/, datasets/, protocols/ YAMLs (searched first).")]
OutputOpt = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder of run records.")]
_SLURM = "Slurm (--executor slurm)"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _parse_rates(text: str | None, flag: str) -> dict[str, float] | None:
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[k.strip()] = float(v)
        except ValueError:
            raise MMBenchError(f"{flag} {text!r}: expected modality=rate pairs like image=0.5,tabular=0.1") from None
    return out


@app.command()
def run(
    method: Annotated[list[str] | None, typer.Option("--method", "-m", help="Method config name (repeatable).")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Dataset card name (repeatable).")] = None,
    scenario: Annotated[str | None, typer.Option(help="none | image | tabular | both | imbalanced (default: both).")] = None,
    rate: Annotated[float | None, typer.Option(help="Missing rate eta for train/val (default 0.5).")] = None,
    test_rate: Annotated[float | None, typer.Option("--test-rate", help="Missing rate on the test split (sweeps).")] = None,
    rates: Annotated[str | None, typer.Option(help="Imbalanced per-modality rates, e.g. image=0.5,tabular=0.1.")] = None,
    test_rates: Annotated[str | None, typer.Option("--test-rates", help="Imbalanced test rates.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds: 0-4, 0,2,5 or 3 (default 0).")] = None,
    sim_seed: Annotated[int | None, typer.Option("--sim-seed", help="Fix the missingness seed across training seeds.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Protocol grid name (protocols/<name>.yaml).")] = None,
    output_dir: OutputOpt = Path("results"),
    head: Annotated[str | None, typer.Option(help="Output head replacing the method's classifier (e.g. dpl; see `mmbench ls heads`).")] = None,
    balancer: Annotated[str | None, typer.Option(help="Training balancer (e.g. mce; see `mmbench ls balancers`).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. train.epochs=5 or head=dpl (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run cells whose record already exists.")] = False,
    config_dir: ConfigDirOpt = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Root of real datasets (else $MMBENCH_DATA).")] = None,
    executor: Annotated[str, typer.Option(help="sequential | local | slurm.")] = "sequential",
    jobs: Annotated[int, typer.Option(help="Parallel workers for --executor local.")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned runs and exit.")] = False,
    gpus: Annotated[str | None, typer.Option(help="--executor local: GPU ids, one per worker (0,1).")] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="Partition.", rich_help_panel=_SLURM)] = None,
    slurm_time: Annotated[str, typer.Option(help="Per run: minutes or 2:00:00.", rich_help_panel=_SLURM)] = "60",
    slurm_gpus: Annotated[int, typer.Option(help="GPUs per run.", rich_help_panel=_SLURM)] = 0,
    slurm_cpus: Annotated[int | None, typer.Option(help="CPUs per run.", rich_help_panel=_SLURM)] = None,
    slurm_mem_gb: Annotated[float | None, typer.Option(help="GB per run.", rich_help_panel=_SLURM)] = None,
    slurm_array_parallelism: Annotated[int, typer.Option(help="Runs at once.", rich_help_panel=_SLURM)] = 16,
    slurm_log_dir: Annotated[str | None, typer.Option(help="Default <output-dir>/slurm-logs.",
                                                      rich_help_panel=_SLURM)] = None,
    slurm_account: Annotated[str | None, typer.Option(help="Account.", rich_help_panel=_SLURM)] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="QOS.", rich_help_panel=_SLURM)] = None,
    slurm_cluster: Annotated[str, typer.Option(hidden=True, help="slurm | debug (in-process) | local.")] = "slurm",
) -> None:
    """Train and evaluate methods on datasets under a missingness protocol; one record per run."""
    from .config import load_protocol, parse_seeds, parse_set, resolve
    from .executors import EXECUTORS
    from .protocols import MissingSpec
    from .records import existing_ok, record_path

    if executor not in EXECUTORS:
        raise MMBenchError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    slurm_opts = None
    if executor == "slurm":
        from .slurm import SlurmOptions

        slurm_opts = SlurmOptions(partition=slurm_partition, time=slurm_time, gpus_per_node=slurm_gpus,
                                  cpus_per_task=slurm_cpus, mem_gb=slurm_mem_gb,
                                  array_parallelism=slurm_array_parallelism, log_dir=slurm_log_dir,
                                  account=slurm_account, qos=slurm_qos, cluster=slurm_cluster)
    overrides = parse_set(set_)
    if head is not None:
        overrides["head"] = head
    if balancer is not None:
        overrides["balancer"] = balancer
    proto_name = None
    if protocol:
        proto = load_protocol(protocol, config_dir)
        proto_name = proto.name
        if scenario or rate is not None or rates:
            raise MMBenchError("--protocol and --scenario/--rate/--rates are exclusive: the protocol defines the cells")
        cells = proto.cells()
        if test_rate is not None:
            cells = [MissingSpec(c.scenario, c.rate, c.rates, test_rate, c.test_rates) for c in cells]
        methods = method or proto.methods
        datasets = dataset or proto.datasets
        seed_list = parse_seeds(seeds) if seeds else list(proto.seeds)
        overrides = {**proto.set, **overrides}
    else:
        sc = scenario or ("imbalanced" if rates else "both")
        imb = _parse_rates(rates, "--rates")
        timb = _parse_rates(test_rates, "--test-rates")
        if sc == "imbalanced" and not imb:
            raise MMBenchError("--scenario imbalanced needs --rates image=R1,tabular=R2")
        if sc != "imbalanced" and imb:
            raise MMBenchError(f"--rates is for --scenario imbalanced, not {sc!r}; use --rate")
        cells = [MissingSpec(sc, 0.5 if rate is None and sc not in ("none", "imbalanced") else (rate or 0.0),
                             imb or {}, test_rate, timb)]
        methods, datasets = method or [], dataset or []
        seed_list = parse_seeds(seeds if seeds is not None else "0")
    if not methods:
        raise MMBenchError("no method given: pass --method NAME (see `mmbench ls methods`)")
    if not datasets:
        raise MMBenchError("no dataset given: pass --dataset NAME (see `mmbench ls datasets`)")
    specs = [resolve(m, d, cell, s, overrides=overrides, sim_seed=sim_seed, config_dir=config_dir)
             for d in datasets for m in methods for cell in cells for s in seed_list]
    cached = [existing_ok(record_path(output_dir, s), s.run_id) is not None and not force for s in specs]
    if dry_run:
        _print_plan(specs, cached, output_dir)
        return
    console.print(f"[bold]mmbench run[/]: {len(specs)} run(s), {sum(cached)} already done "
                  f"-> {output_dir}  (executor: {executor})")
    before = set(output_dir.rglob("*")) if output_dir.exists() else set()
    try:
        results = _execute(specs, output_dir, force=force, root=data_root, protocol=proto_name,
                           executor=executor, jobs=jobs, gpus=gpus.split(",") if gpus else None,
                           slurm=slurm_opts)
    except MMBenchError:
        _discard_scaffolding(output_dir, before)
        raise
    _print_summary(results)
    failed = [r for r, _ in results if r["status"] != "ok"]
    if failed:
        for r in failed:
            err_console.print(f"[red]failed[/] {r['labels']['method']} {r['labels']['availability']} "
                              f"seed {r['labels']['seed']}: {r['error']}")
        raise typer.Exit(1)


def _discard_scaffolding(output_dir: Path, before: set[Path]) -> None:
    """After bad input stopped a run: remove what it created that is not a finished record
    (lock files, a manifest of a grid that finished nothing, empty folders)."""
    if not output_dir.exists():
        return
    new = set(output_dir.rglob("*")) - before
    wrote_record = any(p.suffix == ".json" and p.parent.parent.parent == output_dir for p in new)
    for p in new:
        if p.is_file() and (p.name.endswith(".lock") or (p.parent.name == "grids" and not wrote_record)):
            p.unlink(missing_ok=True)
    for p in sorted(new | {output_dir}, key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not any(p.iterdir()) and (p in new or not before):
            p.rmdir()


def _execute(specs: list, output_dir: Path, *, force: bool, root: str | None, protocol: str | None,
             executor: str, jobs: int, gpus: list[str] | None = None, slurm: Any = None) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors import run_local, run_sequential

    if executor == "local":
        return run_local(specs, output_dir, force=force, root=root, protocol=protocol, jobs=jobs,
                         on_done=lambda i, res: console.print(_one_line(res)), gpus=gpus)
    if executor == "slurm":
        from .slurm import run_slurm

        return run_slurm(specs, output_dir, force=force, root=root, protocol=protocol, options=slurm,
                         on_done=lambda i, res: console.print(_one_line(res)), log=console.print)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=True) as progress:
        grid = progress.add_task("runs", total=len(specs), info="")
        epochs = progress.add_task("epochs", total=1, info="")

        def on_start(i: int, spec: Any) -> None:
            label = f"{spec.method['name']} · {spec.missing_spec.label()} · seed {spec.train_seed}"
            progress.update(epochs, completed=0, total=spec.train_config.epochs, description=label, info="")

        def on_epoch_factory(i: int, spec: Any):
            def cb(row: dict) -> None:
                v = row["val"].get(spec.dataset["primary_metric"])
                progress.update(epochs, completed=row["epoch"],
                                info=f"{row['stage']} loss {row['train_loss'].get('total', 0):.3f} val {_pct(v)}")
            return cb

        def on_done(i: int, res: Any) -> None:
            progress.advance(grid)
            progress.console.print(_one_line(res))

        return run_sequential(specs, output_dir, force=force, root=root, protocol=protocol, on_start=on_start,
                              on_epoch_factory=on_epoch_factory, on_done=on_done)


def _one_line(res: tuple) -> str:
    r, skipped = res
    lab = r["labels"]
    m = r["primary_metric"]
    val = r.get("metrics", {}).get("test", {}).get(m)
    state = "[dim]cached[/]" if skipped else ("[green]ok[/]" if r["status"] == "ok" else "[red]failed[/]")
    return (f"{state} {lab['method']} on {lab['dataset']} · {lab['availability']} · seed {lab['seed']}: "
            f"test {m} {_pct(val)}")


def _print_plan(specs: list, cached: list[bool], output_dir: Path) -> None:
    from .records import record_path

    t = Table(title=f"Planned runs ({len(specs)}, {sum(cached)} already done)")
    for col in ("method", "dataset", "cell", "test", "seed", "run id", "state"):
        t.add_column(col)
    for s, c in zip(specs, cached, strict=True):
        t.add_row(s.method["name"], s.dataset["name"], s.missing_spec.label(), s.missing_spec.label("test"),
                  str(s.train_seed), s.run_id[:8], "done" if c else "to run")
    console.print(t)
    console.print(f"records go to {record_path(output_dir, specs[0]).parents[2] if specs else output_dir}")


def _short_avail(label: str) -> str:
    """``Image 75% / Tabular 75%`` -> ``I75/T75``."""
    return "/".join(p[0] + p.split(" ")[1].rstrip("%") for p in label.split(" / "))


def _print_summary(results: list) -> None:
    from .data.batch import PATTERNS

    if not results:
        return
    r0 = results[0][0]
    t = Table(title=f"Test {r0['primary_metric']} (%) · ceiling = Bayes-optimal per pattern (complete/image-only/"
                    "tabular-only)", title_justify="left")
    for col, just in (("method", "left"), ("avail.", "left"), ("seed", "right"), ("status", "left"),
                      ("all", "right"), ("compl.", "right"), ("img", "right"), ("tab", "right"),
                      ("ceiling", "right"), ("sec", "right")):
        t.add_column(col, justify=just)
    for r, skipped in results:
        lab, m = r["labels"], r["primary_metric"]
        met = r.get("metrics", {})
        by = met.get("test_by_pattern", {})
        ceil = r.get("ceiling") or {}
        ceiling = "/".join(f"{100 * ceil[p]:.0f}" for p in PATTERNS if p in ceil) if ceil and m == "accuracy" else "–"
        avail = _short_avail(lab["availability"])
        if lab.get("test_availability") and lab["test_availability"] != lab["availability"]:
            avail += " → test " + _short_avail(lab["test_availability"])
        t.add_row(lab["method"], avail, str(lab["seed"]),
                  "cached" if skipped else r["status"], _pct(met.get("test", {}).get(m)),
                  *[_pct((by.get(p) or {}).get(m)) for p in PATTERNS], ceiling,
                  f"{r.get('timing', {}).get('train_seconds', 0) or 0:.0f}")
    console.print(t)


@app.command()
def table(
    results: Annotated[Path, typer.Option("--results", "-r", help="Folder of run records.")] = Path("results"),
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", "-m", help="Only these methods.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Only runs made under this protocol.")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric (default: each dataset's primary).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md | csv | latex | html")] = "md",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file (atomically) instead of stdout.")] = None,
    stats_: Annotated[bool, typer.Option("--stats", help="Dagger on the methods not significantly different "
                                         "from the row's best.")] = False,
    stats_test: Annotated[str, typer.Option("--stats-test", help="wilcoxon (paired by seed) | bootstrap "
                                            "(paired over test samples, from the .npz predictions).")] = "wilcoxon",
    alpha: Annotated[float, typer.Option(help="Significance level for --stats (Holm within the row).")] = 0.05,
) -> None:
    """Comparison table (mean ± std over seeds, best per row marked) built only from records."""
    from .metrics import METRICS
    from .records import atomic_write_bytes, load_records
    from .report.tables import render

    if fmt not in ("md", "csv", "latex", "html"):
        raise MMBenchError(f"--format {fmt!r}: expected md, csv, latex or html")
    if metric is not None and metric not in METRICS:
        raise MMBenchError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    recs = _filter(load_records(results), dataset, method, protocol, results)
    if stats_:
        text = _render_stats(recs, fmt, metric, stats_test, alpha, results)
    else:
        text = render(recs, fmt, metric)
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(out, text.encode())
        console.print(f"wrote {out}")


def _filter(recs: list, dataset: list[str] | None, method: list[str] | None, protocol: str | None,
            where: Path) -> list:
    if dataset:
        recs = [r for r in recs if r["labels"]["dataset"] in dataset]
    if method:
        recs = [r for r in recs if r["labels"]["method"] in method]
    if protocol:
        recs = [r for r in recs if r["labels"].get("protocol") == protocol]
    if not recs:
        raise MMBenchError(f"no run records under {where} match the given filters")
    return recs


@app.command()
def check(
    results: Annotated[Path, typer.Option("--results", "-r", help="Folder of run records.")] = Path("results"),
    reference: Annotated[Path, typer.Option("--reference", help="Reference CSV (from `mmbench table --format csv`).")] = Path("results/reference/reference.csv"),
    tolerance: Annotated[float, typer.Option(help="Allowed drop of the primary metric (absolute, e.g. 0.02).")] = 0.02,
    save_reference: Annotated[bool, typer.Option("--save-reference", help="Write the reference from the results instead of checking.")] = False,
) -> None:
    """Compare each cell's primary metric to a reference: exit 0 if none regresses beyond the tolerance, else 1."""
    from .records import atomic_write_bytes, load_records
    from .report.check import compare, read_reference
    from .report.tables import render

    if tolerance < 0:
        raise MMBenchError(f"--tolerance must be >= 0, got {tolerance}")
    recs = load_records(results)
    if save_reference:
        atomic_write_bytes(reference, render(recs, "csv").encode())
        console.print(f"wrote reference {reference} ({len(recs)} runs)")
        return
    rows = compare(recs, read_reference(reference), tolerance)
    t = Table(title=f"mmbench check (tolerance {tolerance:g})")
    for col in ("cell", "reference", "current", "delta", "status"):
        t.add_column(col)
    for r in rows:
        color = {"ok": "green", "regressed": "red", "missing": "yellow"}[r.status]
        t.add_row(r.cell, f"{r.reference:.4f}", "–" if r.current is None else f"{r.current:.4f}",
                  "–" if r.delta is None else f"{r.delta:+.4f}", f"[{color}]{r.status}[/]")
    console.print(t)
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        err_console.print(f"{len(bad)} of {len(rows)} cell(s) regressed or missing:")
        for r in bad:
            err_console.print(f"  {r.status}: {r.cell}" + ("" if r.delta is None else f" ({r.delta:+.4f})"))
        raise typer.Exit(1)
    console.print(f"all {len(rows)} cell(s) within tolerance")


@app.command("ls")
def ls(
    what: Annotated[str, typer.Argument(help="methods | datasets | protocols | heads | balancers | encoders")],
    config_dir: ConfigDirOpt = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Root of real datasets (else $MMBENCH_DATA).")] = None,
) -> None:
    """List registered methods, datasets, protocols, heads, balancers or encoders."""
    from .config import list_names, load_dataset, load_method, load_protocol
    from .registry import BALANCERS, ENCODERS, HEADS

    kinds = ("methods", "datasets", "protocols", "heads", "balancers", "encoders")
    if what not in kinds:
        import difflib

        close = difflib.get_close_matches(what, kinds, n=1)
        raise MMBenchError(f"cannot list {what!r}" + (f"; did you mean {close[0]!r}?" if close else "") +
                           f" (expected one of {', '.join(kinds)})")
    t = Table(title=what)
    if what == "methods":
        for col in ("name", "impl", "head", "balancer", "cite"):
            t.add_column(col)
        for n in list_names("methods", config_dir):
            mc = load_method(n, config_dir)
            t.add_row(n, mc.impl, mc.head, mc.balancer, mc.cite)
    elif what == "datasets":
        from .runner import data_root as resolve_root

        root = resolve_root(data_root)
        for col in ("name", "adapter", "task", "metric", "found", "description"):
            t.add_column(col)
        for n in list_names("datasets", config_dir):
            card = load_dataset(n, config_dir)
            t.add_row(n, card.adapter, card.task, card.primary_metric, _found(card, root), card.description)
    elif what == "protocols":
        for col in ("name", "cells", "seeds", "description"):
            t.add_column(col)
        for n in list_names("protocols", config_dir):
            p = load_protocol(n, config_dir)
            t.add_row(n, str(len(p.cells())), ",".join(map(str, p.seeds)), p.description)
    else:
        reg = {"heads": HEADS, "balancers": BALANCERS, "encoders": ENCODERS}[what]
        t.add_column("name")
        t.add_column("about")
        for n, cls in reg.items():
            t.add_row(n, getattr(cls, "cite", "") or (cls.__doc__ or "").strip().split("\n")[0])
    console.print(t)


def _found(card: Any, root: str | None) -> str:
    from .config import adapter_options
    from .registry import DATASETS

    try:
        adapter = DATASETS.get(card.adapter)(adapter_options(card), data_root=root)
        return "yes" if adapter.available() else "no"
    except MMBenchError:
        return "no"


@app.command()
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="YAML files or folders (default: every packaged config).")] = None,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Check YAML configs (methods, datasets, protocols): exit 0 if all are valid, 2 with the first error."""
    from .config import PACKAGE_CONFIGS, load_dataset, load_method, load_protocol

    files: list[Path] = []
    for p in paths or [PACKAGE_CONFIGS, *[Path(d) for d in config_dir or []]]:
        if not p.exists():
            raise MMBenchError(f"{p}: no such file or folder")
        files.extend(sorted(p.rglob("*.yaml")) if p.is_dir() else [p])
    loaders = {"methods": load_method, "datasets": load_dataset, "protocols": load_protocol}
    for f in files:
        kind = f.parent.name
        if kind not in loaders:
            raise MMBenchError(f"{f}: cannot tell its kind (expected it inside a methods/, datasets/ or "
                               "protocols/ folder)")
        loaders[kind](str(f), config_dir)
    console.print(f"{len(files)} config file(s) valid")


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset card name.")],
    data_root: Annotated[str | None, typer.Option("--data-root", help="Root of real datasets (else $MMBENCH_DATA).")] = None,
    config_dir: ConfigDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the cache even if it exists.")] = False,
) -> None:
    """Check a dataset's layout, report what was found, and build its decoded-tensor cache."""
    from .config import adapter_options, load_dataset
    from .registry import DATASETS
    from .runner import data_root as resolve_root

    card = load_dataset(dataset, config_dir)
    adapter = DATASETS.get(card.adapter)(adapter_options(card), data_root=resolve_root(data_root))
    try:
        from .data.prepare import prepare_report
    except ImportError:
        prepare_report = None
    if prepare_report is None or not hasattr(adapter, "prepare"):
        info, splits = adapter.load()
        console.print(f"{card.name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        return
    console.print(prepare_report(adapter, force=force, name=card.name), markup=False, highlight=False)


def _render_stats(recs: list, fmt: str, metric: str | None, test: str, alpha: float, results: Path) -> str:
    from .report.stats import min_wilcoxon_p, prediction_paths, render_with_stats

    if test not in ("wilcoxon", "bootstrap"):
        raise MMBenchError(f"--stats-test {test!r}: expected wilcoxon or bootstrap")
    preds = prediction_paths(results) if test == "bootstrap" else None
    text, comp = render_with_stats(recs, fmt, metric, test=test, alpha=alpha, predictions=preds)
    n = comp.loc[~comp["best"], "n"] if len(comp) else []
    if test == "wilcoxon" and len(n) and int(n.min()) < 6:
        k = int(n.min())
        err_console.print(f"[yellow]warning:[/] some cells have only {k} paired seed(s): with fewer than "
                          f"6 seeds the exact two-sided Wilcoxon p is at least 2/2^{k} = "
                          f"{min_wilcoxon_p(k):.3g}, so it cannot reach p < 0.05 and every method there gets "
                          "a dagger; use >= 6 seeds or --stats-test bootstrap", highlight=False)
    return text


ResultsOpt = Annotated[Path, typer.Option("--results", "-r", help="Folder of run records.")]
DatasetsOpt = Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")]
MethodsOpt = Annotated[list[str] | None, typer.Option("--method", "-m", help="Only these methods.")]
ProtocolOpt = Annotated[str | None, typer.Option(help="Only runs made under this protocol.")]
MetricOpt = Annotated[str | None, typer.Option(help="Metric (default: each dataset's primary).")]
_KINDS = ("curve (metric vs missing rate) | patterns (per-pattern bars + ceiling) | "
          "seeds (box plot over seeds)")
_AXES = "auto | test_rate (test sweeps) | rate (train = val = test rate)"


@app.command()
def plot(
    results: ResultsOpt = Path("results"),
    kind: Annotated[str, typer.Option(help=_KINDS)] = "curve",
    out: Annotated[Path | None, typer.Option("--out", help="Output file, written as <stem>.png and "
                                             "<stem>.pdf (default results/plots/<kind>).")] = None,
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    scenario: Annotated[list[str] | None, typer.Option(help="Only these scenarios.")] = None,
    rate: Annotated[list[float] | None, typer.Option(help="Only these train missing rates.")] = None,
    test_rate: Annotated[list[float] | None, typer.Option("--test-rate", help="Test rates only.")] = None,
    metric: MetricOpt = None,
    x: Annotated[str, typer.Option("--x", help=f"Curve axis: {_AXES}.")] = "auto",
) -> None:
    """Draw a figure from run records only (PNG and PDF, written atomically)."""
    from .records import load_records
    from .report.plots import PLOTS

    if kind not in PLOTS:
        raise MMBenchError(f"--kind {kind!r}: expected one of {', '.join(PLOTS)}")
    _check_metric(metric)
    recs = _filter(load_records(results), dataset, method, protocol, results)
    recs = _filter_cells(recs, scenario, rate, test_rate, results)
    out = out or Path("results/plots") / kind
    paths = PLOTS[kind](recs, out, metric, x=x) if kind == "curve" else PLOTS[kind](recs, out, metric)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _check_metric(metric: str | None) -> None:
    from .metrics import METRICS

    if metric is not None and metric not in METRICS:
        raise MMBenchError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")


def _filter_cells(recs: list, scenario: list[str] | None, rate: list[float] | None,
                  test_rate: list[float] | None, where: Path) -> list:
    def near(v: Any, targets: list[float]) -> bool:
        return v is not None and any(abs(float(v) - t) < 1e-9 for t in targets)

    if scenario:
        recs = [r for r in recs if r["labels"].get("scenario") in scenario]
    if rate:
        recs = [r for r in recs if near(r["labels"].get("rate"), rate)]
    if test_rate:
        recs = [r for r in recs if near(r["labels"].get("test_rate"), test_rate)]
    if not recs:
        raise MMBenchError(f"no run records under {where} match the given filters")
    return recs


@app.command()
def stats(
    results: ResultsOpt = Path("results"),
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    metric: MetricOpt = None,
    alpha: Annotated[float, typer.Option(help="Significance level (after Holm adjustment).")] = 0.05,
    x: Annotated[str, typer.Option("--x", help=f"Missing-rate axis of the AUC: {_AXES}.")] = "auto",
    reference: Annotated[str, typer.Option(help="Drop reference: complete (the same run's complete rows) | "
                                           "rate0 (the run at 0% missing).")] = "complete",
    csv_dir: Annotated[Path | None, typer.Option("--csv-dir", help="Also write ranks, pairwise, vs_best, auc "
                                                 "and drop CSVs to this folder.")] = None,
) -> None:
    """Average ranks, Friedman test over cells (seeds averaged), pairwise Wilcoxon-Holm, AUC and drop."""
    from .records import atomic_write_bytes, load_records
    from .report import stats as st

    _check_metric(metric)
    recs = _filter(load_records(results), dataset, method, protocol, results)
    fr = st.friedman_summary(recs, metric, alpha)
    t = Table(title=f"Average rank over {fr.n_blocks} cell(s) (dataset x missingness, seeds averaged; "
                    "1 = best)", title_justify="left")
    for col, just in (("rank", "right"), ("method", "left"), ("avg rank", "right"), ("mean (%)", "right")):
        t.add_column(col, justify=just)
    for i, r in enumerate(fr.ranks.itertuples(), start=1):
        t.add_row(str(i), r.method, f"{r.avg_rank:.2f}", _pct(r.mean))
    console.print(t)
    if fr.dropped_blocks:
        console.print(f"[yellow]{fr.dropped_blocks} cell(s) left out: not every method has runs there[/]")
    if fr.n_methods >= 3 and fr.n_blocks >= 2:
        console.print(f"Friedman chi2 = {fr.statistic:.3f}, p = {fr.p:.4g} "
                      f"(k = {fr.n_methods} methods, N = {fr.n_blocks} cells)")
    else:
        console.print("Friedman test not computed (needs >= 3 methods and >= 2 cells)")
    if fr.n_blocks < 6:
        err_console.print(f"[yellow]warning:[/] {fr.n_blocks} cell(s): a pairwise Wilcoxon test over fewer "
                          f"than 6 cells cannot reach p < 0.05 (smallest p = "
                          f"{st.min_wilcoxon_p(fr.n_blocks):.3g})", highlight=False)
    t = Table(title=f"Pairwise Wilcoxon signed-rank over cells, Holm-adjusted (alpha = {alpha:g})",
              title_justify="left")
    for col in ("a", "b", "mean a - b (pp)", "p", "p (Holm)", "significant"):
        t.add_column(col)
    for r in fr.pairwise.itertuples():
        t.add_row(r.a, r.b, f"{100 * r.mean_diff:+.2f}", f"{r.p:.4g}", f"{r.p_holm:.4g}",
                  "[green]yes[/]" if r.significant else "no")
    console.print(t)
    tables = {"ranks": fr.ranks, "pairwise": fr.pairwise,
              "vs_best": st.compare_to_best(recs, metric, alpha=alpha)}
    try:
        auc = st.auc_summary(recs, metric, x)
    except MMBenchError as exc:
        console.print(f"[dim]no AUC summary: {exc}[/]")
    else:
        tables["auc"] = auc
        t = Table(title="Area under the metric vs missing-rate curve (normalised by the rate range; %)",
                  title_justify="left")
        for col in ("curve", "method", "AUC", "n seeds", "rates"):
            t.add_column(col)
        for r in auc.itertuples():
            t.add_row(r.group, r.method, f"{100 * r.auc:.2f} ± {100 * r.std:.2f}", str(r.n),
                      f"{r.x_min:g}-{r.x_max:g} ({r.n_points})")
        console.print(t)
    try:
        drop = st.drop_summary(recs, metric, reference)
    except MMBenchError as exc:
        console.print(f"[dim]no drop summary: {exc}[/]")
    else:
        tables["drop"] = drop
        t = Table(title=f"Change vs full modality (reference: {reference}; value - reference, pp)",
                  title_justify="left")
        for col in ("dataset", "cell", "method", "value (%)", "reference (%)", "delta"):
            t.add_column(col)
        for r in drop.itertuples():
            cell = r.availability
            if r.test_availability != r.availability:
                cell = f"{r.availability} -> test {r.test_availability}"
            t.add_row(r.dataset, cell, r.method, _pct(r.value), _pct(r.reference),
                      f"{100 * r.delta:+.2f} ± {100 * r.std:.2f}")
        console.print(t)
    if csv_dir is not None:
        for name, df in tables.items():
            atomic_write_bytes(csv_dir / f"{name}.csv", df.to_csv(index=False, float_format="%.6f").encode())
        console.print(f"wrote {', '.join(f'{n}.csv' for n in tables)} to {csv_dir}")


def main() -> None:
    """Console entry point: user errors -> one line on stderr, exit code 2."""
    try:
        rc = app(standalone_mode=False)  # click returns the code of a typer.Exit in this mode
        sys.exit(rc if isinstance(rc, int) else 0)
    except MMBenchError as exc:
        err_console.print(f"[red]mmbench: error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("mmbench: interrupted; finished runs are saved, re-run the same command to resume")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
