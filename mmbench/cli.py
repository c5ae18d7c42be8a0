"""The ``mmbench`` command line (Typer): run, table, check, stats, plot, report, ls, validate, prepare.

A thin layer: planning lives in :mod:`mmbench.plan`, execution behind :mod:`mmbench.executors`,
records in :mod:`mmbench.records`, reports in :mod:`mmbench.report`. Commands that only read
records or configs never import torch. Every bad input ends as one line on stderr and exit code 2
(:func:`main` is the one place that decides how an error is shown).
"""

from __future__ import annotations

import shutil
import sys
from enum import Enum
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


class ExecutorName(str, Enum):
    sequential = "sequential"
    local = "local"
    slurm = "slurm"


class Regime(str, Enum):
    fair = "fair"
    paper = "paper"


class TrackerName(str, Enum):
    mlflow = "mlflow"


class TableFormat(str, Enum):
    md = "md"
    csv = "csv"
    latex = "latex"
    html = "html"


class StatsTest(str, Enum):
    wilcoxon = "wilcoxon"
    ttest = "ttest"
    bootstrap = "bootstrap"
    mcnemar = "mcnemar"


class PlotKind(str, Enum):
    curve = "curve"
    patterns = "patterns"
    seeds = "seeds"
    cd = "cd"
    heatmap = "heatmap"
    attention = "attention"
    tsne = "tsne"


class TableView(str, Enum):
    cells = "cells"
    costs = "costs"
    probes = "probes"


class CurveAxis(str, Enum):
    auto = "auto"
    test_rate = "test_rate"
    rate = "rate"


class DropReference(str, Enum):
    complete = "complete"
    rate0 = "rate0"


class Listable(str, Enum):
    methods = "methods"
    datasets = "datasets"
    protocols = "protocols"
    heads = "heads"
    balancers = "balancers"
    encoders = "encoders"
    defaults = "defaults"


class Metric(str, Enum):
    accuracy = "accuracy"
    macro_f1 = "macro_f1"
    auroc = "auroc"
    prauc = "prauc"
    ece = "ece"
    brier = "brier"
    regret = "regret"


ConfigDirOpt = Annotated[list[str] | None, typer.Option("--config-dir", help="Extra folder with methods/, datasets/, protocols/, heads/, balancers/ YAMLs (searched first).")]
OutputOpt = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder of run records.")]
ResultsOpt = Annotated[Path, typer.Option("--results", "-r", help="Folder of run records.")]
DatasetsOpt = Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")]
MethodsOpt = Annotated[list[str] | None, typer.Option("--method", "-m", help="Only these methods.")]
ProtocolOpt = Annotated[str | None, typer.Option(help="Only runs made under this protocol.")]
MetricOpt = Annotated[Metric | None, typer.Option(help="Metric (default: each dataset's primary).")]
DataRootOpt = Annotated[str | None, typer.Option("--data-root", help="Root of real datasets (else $MMBENCH_DATA).")]
_SLURM = "Slurm (--executor slurm)"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _value(e: Enum | None) -> str | None:
    return None if e is None else e.value


# ------------------------------------------------------------------------------------------- paths
def writable_file(path: Path, flag: str) -> Path:
    """``path`` if a file can be written there (checked before any work); else one line."""
    if path.is_dir():
        raise MMBenchError(f"{flag} {path}: is a folder; expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise MMBenchError(f"{flag} {path}: {p} is a file, not a folder")
            if not _can_write(p):
                raise MMBenchError(f"{flag} {path}: cannot write in {p} (permission denied)")
            break
    return path


def writable_dir(path: Path, flag: str) -> Path:
    """``path`` if it is (or can be created as) a writable folder; else one line."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise MMBenchError(f"{flag} {path}: {p} is a file, not a folder")
            if not _can_write(p):
                raise MMBenchError(f"{flag} {path}: cannot write in {p} (permission denied)")
            break
    return path


def _can_write(p: Path) -> bool:
    import os

    return os.access(p, os.W_OK | os.X_OK)


def write_text(path: Path, text: str, flag: str) -> None:
    """Write ``text`` atomically to a user-given path; file-system errors become one line."""
    from .records import atomic_write_bytes

    try:
        atomic_write_bytes(path, text.encode())
    except OSError as exc:
        raise MMBenchError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------- run
@app.command()
def run(
    method: Annotated[list[str] | None, typer.Option("--method", "-m", help="Method config name (repeatable).")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Dataset card name (repeatable).")] = None,
    scenario: Annotated[str | None, typer.Option(help="none | image | tabular | both | imbalanced (default: both).")] = None,
    rate: Annotated[float | None, typer.Option(help="Missing rate eta for train/val (default 0.5): the fraction of samples that lose a modality.")] = None,
    test_rate: Annotated[float | None, typer.Option("--test-rate", help="Missing rate on the test split (sweeps).")] = None,
    rates: Annotated[str | None, typer.Option(help="Imbalanced per-modality missing rates, e.g. image=0.5,tabular=0.1.")] = None,
    test_rates: Annotated[str | None, typer.Option("--test-rates", help="Imbalanced test missing rates.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds: 0-4, 0,2,5 or 3 (default 0).")] = None,
    sim_seed: Annotated[int | None, typer.Option("--sim-seed", min=0, help="Fix the missingness seed across training seeds.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Protocol grid name (protocols/<name>.yaml).")] = None,
    output_dir: OutputOpt = Path("results"),
    head: Annotated[str | None, typer.Option(help="Output head replacing the method's classifier (e.g. dpl; see `mmbench ls heads`).")] = None,
    balancer: Annotated[str | None, typer.Option(help="Training balancer (e.g. mce; see `mmbench ls balancers`).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a spec key, e.g. train.epochs=5, method.params.num_prototypes=10, head.params.supcon_weight=0.5 (repeatable).")] = None,
    regime: Annotated[Regime | None, typer.Option(help="fair: every method trains with the card's settings and budget (stages split it); paper: each method's published recipe (docs/training.md). Default: the protocol's, else fair.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run cells whose record already exists.")] = False,
    config_dir: ConfigDirOpt = None,
    data_root: DataRootOpt = None,
    executor: Annotated[ExecutorName, typer.Option(help="Where the runs execute.")] = ExecutorName.sequential,
    jobs: Annotated[int | None, typer.Option(min=1, help="Workers for --executor local (default: the usable CPU cores; each worker imports torch once, so the pool pays off for runs of a minute or more).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned runs and their resolved settings, and exit.")] = False,
    gpus: Annotated[str | None, typer.Option(help="--executor local: GPU ids, one per worker (0,1).")] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="Partition.", rich_help_panel=_SLURM)] = None,
    slurm_time: Annotated[str, typer.Option(help="Per run: minutes or 2:00:00.", rich_help_panel=_SLURM)] = "60",
    slurm_gpus: Annotated[int, typer.Option(min=0, help="GPUs per run.", rich_help_panel=_SLURM)] = 0,
    slurm_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs per run.", rich_help_panel=_SLURM)] = None,
    slurm_mem_gb: Annotated[float | None, typer.Option(min=0, help="GB per run.", rich_help_panel=_SLURM)] = None,
    slurm_array_parallelism: Annotated[int, typer.Option(min=1, help="Runs at once.", rich_help_panel=_SLURM)] = 16,
    slurm_log_dir: Annotated[str | None, typer.Option(help="Default <output-dir>/slurm-logs.",
                                                      rich_help_panel=_SLURM)] = None,
    slurm_account: Annotated[str | None, typer.Option(help="Account.", rich_help_panel=_SLURM)] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="QOS.", rich_help_panel=_SLURM)] = None,
    slurm_cluster: Annotated[str, typer.Option(hidden=True, help="slurm | debug (in-process) | local.")] = "slurm",
    tracker: Annotated[TrackerName | None, typer.Option(help="Also mirror each run into an experiment tracker (records stay the source of truth; a tracker error warns once and never fails a run).")] = None,
    tracker_uri: Annotated[str | None, typer.Option("--tracker-uri", help="Tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///<output-dir>/mlflow.db).")] = None,
) -> None:
    """Train and evaluate methods on datasets under a missingness protocol; one record per run.

    Cells that differ only in their test-time missingness (a --test-rate sweep) share one training."""
    from .executors import make_executor
    from .plan import GridRequest, build_plan, parse_rates

    slurm_opts = None
    if executor is ExecutorName.slurm:
        from .slurm import SlurmOptions

        slurm_opts = SlurmOptions(partition=slurm_partition, time=slurm_time, gpus_per_node=slurm_gpus,
                                  cpus_per_task=slurm_cpus, mem_gb=slurm_mem_gb,
                                  array_parallelism=slurm_array_parallelism, log_dir=slurm_log_dir,
                                  account=slurm_account, qos=slurm_qos, cluster=slurm_cluster)
    elif any(v is not None for v in (slurm_partition, slurm_cpus, slurm_mem_gb, slurm_log_dir, slurm_account,
                                      slurm_qos)) or slurm_gpus:
        raise MMBenchError(f"--slurm-* options are for --executor slurm, not {executor.value}")
    if jobs is not None and executor is not ExecutorName.local:
        raise MMBenchError(f"--jobs is for --executor local, not {executor.value}")
    if tracker_uri is not None and tracker is None:
        raise MMBenchError("--tracker-uri is for --tracker mlflow")
    if tracker is TrackerName.mlflow:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise MMBenchError("--tracker mlflow needs MLflow: pip install 'mmbench[mlflow]'")
    writable_dir(output_dir, "--output-dir")
    req = GridRequest(methods=method or [], datasets=dataset or [], scenario=scenario, rate=rate,
                      test_rate=test_rate, rates=parse_rates(rates, "--rates"),
                      test_rates=parse_rates(test_rates, "--test-rates"), seeds=seeds, sim_seed=sim_seed,
                      protocol=protocol, head=head, balancer=balancer, set=set_ or [], config_dir=config_dir,
                      regime=_value(regime))
    plan = build_plan(req)
    runner = make_executor(executor.value, jobs=jobs, gpus=[g.strip() for g in gpus.split(",")] if gpus else None,
                           slurm=slurm_opts)
    if dry_run:
        _print_plan(plan, output_dir, config_dir)
        return
    _run_plan(plan, runner, output_dir, force, data_root, _value(tracker), tracker_uri)


def _run_plan(plan: Any, runner: Any, output_dir: Path, force: bool, data_root: str | None,
              tracker: str | None = None, tracker_uri: str | None = None) -> None:
    from .executors import Hooks, RunContext
    from .plan import plan_status

    status = plan_status(plan, output_dir, force)
    trainings = len(plan.units())
    console.print(f"[bold]mmbench run[/]: {len(plan)} run(s)"
                  + (f" from {trainings} training(s)" if trainings != len(plan) else "")
                  + f", {sum(status.done)} already done -> {output_dir}  (executor: {runner.name})")
    for i, why in status.superseded.items():
        console.print(f"[yellow]re-running[/] {plan.specs[i].label} {plan.specs[i].short_name()}: its record was "
                      f"made by older code ({why})")
    before = set(output_dir.rglob("*")) if output_dir.exists() else set()
    ctx = RunContext(output_dir, force, data_root, tracker, tracker_uri)
    try:
        if runner.name == "sequential" and console.is_terminal:
            outcomes = _run_with_progress(plan, runner, ctx)
        else:
            hooks = Hooks(on_done=lambda i, o: console.print(_one_line(o)), log=console.print,
                          on_epoch=_plain_epoch_lines if runner.name == "sequential" else None)
            outcomes = runner.run(plan, ctx, hooks)
    except BaseException:
        _discard_scaffolding(output_dir, before)
        raise
    errors = [o for o in outcomes if o.status == "error"]
    if errors and all(o.record is None or o.skipped for o in outcomes):
        _discard_scaffolding(output_dir, before)
    _print_summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        err_console.print(f"[red]failed[/] {o.spec.label} {o.spec.missing.describe()} seed {o.spec.train_seed}: "
                          f"{o.record.error}", highlight=False, soft_wrap=True)
    if errors:
        if len(plan) == 1:
            raise MMBenchError(errors[0].error or "unknown error")
        raise MMBenchError(f"{len(errors)} of {len(plan)} run(s) stopped on bad input: "
                           + "; ".join(f"{o.spec.label} seed {o.spec.train_seed}: {o.error}" for o in errors[:3])
                           + ("" if len(errors) <= 3 else f"; +{len(errors) - 3} more (see the grid manifest)"))
    if failed:
        raise typer.Exit(1)


def _plain_epoch_lines(i: int, spec: Any) -> Any:
    """One plain line per epoch (for logs and Slurm output, where a progress bar shows nothing)."""
    def cb(row: dict) -> None:
        losses = " ".join(f"{k}={v:.4g}" for k, v in row["train_loss"].items())
        v = row["val"].get(spec.dataset.primary_metric)
        console.print(f"{spec.label} seed {spec.train_seed} · {row['stage']} epoch {row['epoch']}: {losses} · "
                      f"val {spec.dataset.primary_metric} {_pct(v)} · {row['seconds']:.1f}s",
                      highlight=False, soft_wrap=True)
    return cb


def _run_with_progress(plan: Any, runner: Any, ctx: Any) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors import Hooks

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=True) as progress:
        grid = progress.add_task("runs", total=len(plan), info="")
        epochs = progress.add_task("epochs", total=1, info="")

        def on_start(i: int, spec: Any) -> None:
            label = f"{spec.label} · {spec.missing.label()} · seed {spec.train_seed}"
            progress.update(epochs, completed=0, total=spec.train.epochs, description=label, info="")

        def on_epoch(i: int, spec: Any) -> Any:
            def cb(row: dict) -> None:
                v = row["val"].get(spec.dataset.primary_metric)
                progress.update(epochs, completed=row["epoch"],
                                info=f"{row['stage']} loss {row['train_loss'].get('total', 0):.3f} val {_pct(v)}")
            return cb

        def on_done(i: int, outcome: Any) -> None:
            progress.advance(grid)
            progress.console.print(_one_line(outcome))

        return runner.run(plan, ctx, Hooks(on_start=on_start, on_epoch=on_epoch, on_done=on_done,
                                           log=progress.console.print))


def _discard_scaffolding(output_dir: Path, before: set[Path]) -> None:
    """After a command that finished nothing: remove what it created that is not a finished record
    (lock files, a manifest of a grid that finished nothing, empty folders)."""
    from .records import is_scaffolding

    if not output_dir.exists():
        return
    new = set(output_dir.rglob("*")) - before
    for p in new:
        if p.is_file() and is_scaffolding(p, output_dir):
            p.unlink(missing_ok=True)
    for p in sorted(new | {output_dir}, key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not any(p.iterdir()) and (p in new or not before):
            p.rmdir()


def _one_line(o: Any) -> str:
    spec, rec = o.spec, o.record
    state = {"cached": "[dim]cached[/]", "ok": "[green]ok[/]", "failed": "[red]failed[/]",
             "error": "[red]error[/]"}[o.status]
    m = spec.dataset.primary_metric
    tail = f"test {m} {_pct(rec.test_value())}" if rec is not None else (o.error or "")
    return f"{state} {spec.label} on {spec.dataset.name} · {spec.missing.describe('test')} · seed {spec.train_seed}: {tail}"


def _print_plan(plan: Any, output_dir: Path, config_dir: list[str] | None = None) -> None:
    from .config import budget_summary
    from .plan import plan_status
    from .records import record_path
    from .typed import dump

    status = plan_status(plan, output_dir, False)
    t = Table(title=f"Planned runs ({len(plan)}, {sum(status.done)} already done)")
    for col in ("method", "dataset", "cell (train)", "test", "seed", "run id", "training", "state"):
        t.add_column(col)
    for i, (s, done) in enumerate(zip(plan.specs, status.done, strict=True)):
        state = "done" if done else ("re-run: " + status.superseded[i] if i in status.superseded else "to run")
        t.add_row(s.label, s.dataset.name, s.missing.describe("train"), s.missing.describe("test"),
                  str(s.train_seed), s.run_id[:8], s.training_id[:8], state)
    console.print(t)
    settings: dict[tuple[str, str], list[str]] = {}
    for s in plan.specs:
        train = dump(s.train)
        stages = train.pop("stages")
        key = ", ".join(f"{k}={v}" for k, v in train.items()) + "".join(
            f"; {name}: " + ", ".join(f"{k}={v}" for k, v in over.items()) for name, over in stages.items())
        settings.setdefault((f"regime={s.regime}, {key}", budget_summary(s, config_dir)), []).append(s.label)
    t = Table(title="Resolved trainer settings", show_lines=True)
    t.add_column("methods")
    t.add_column("train")
    t.add_column("budget")
    for (key, budget), labels in settings.items():
        t.add_row(", ".join(dict.fromkeys(labels)), key, budget)
    console.print(t)
    if plan.specs:
        console.print(f"records go to {record_path(output_dir, plan.specs[0]).parents[1]}")


def _short_avail(label: str) -> str:
    """``Image 75% / Tabular 75%`` -> ``I75/T75``."""
    return "/".join(p[0] + p.split(" ")[1].rstrip("%") for p in label.split(" / "))


def _print_summary(outcomes: list) -> None:
    from .core import PATTERNS

    recs = [(o, o.record) for o in outcomes if o.record is not None]
    if not recs:
        return
    m = recs[0][1].primary_metric
    t = Table(title=f"Test {m} (%) per missing pattern · ceiling = Bayes-optimal accuracy per pattern "
                    "(complete/image-only/tabular-only) · avail. = % of samples with image / table",
              title_justify="left")
    for col, just in (("method", "left"), ("avail.", "left"), ("seed", "right"), ("status", "left"),
                      ("all", "right"), ("compl.", "right"), ("img", "right"), ("tab", "right"),
                      ("ceiling", "right"), ("regret", "right"), ("sec", "right")):
        t.add_column(col, justify=just)
    for o, r in recs:
        lab, mm = r.labels, r.primary_metric
        by = r.metrics.test_by_pattern
        ceil = r.ceiling or {}
        ceiling = "/".join(f"{100 * ceil[p]:.0f}" for p in PATTERNS if ceil.get(p) is not None) \
            if ceil and mm == "accuracy" else "–"
        avail = _short_avail(lab.availability)
        if lab.test_availability != lab.availability:
            avail += " → test " + _short_avail(lab.test_availability)
        regret = (r.metrics.regret or {}).get("overall")
        t.add_row(lab.method, avail, str(lab.seed), "cached" if o.skipped else r.status,
                  _pct(r.metrics.test.get(mm)), *[_pct((by.get(p) or {}).get(mm)) for p in PATTERNS], ceiling,
                  _pct(regret), f"{r.timing.train_seconds or 0:.0f}")
    console.print(t)


# ------------------------------------------------------------------------------------------- bench
@app.command()
def bench(
    methods: Annotated[list[str] | None, typer.Option("--methods", "-m", help="Method configs, comma-separated or repeated (late_fusion, the baseline, is always timed).")] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset card: its encoders, sizes and trainer settings.")] = "synthetic",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a spec key, e.g. train.batch_size=16 (repeatable).")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Timing rounds (shuffled order; ratios paired per round).")] = 10,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per method per round.")] = 2,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps per method first.")] = 2,
    rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="'both' missing rate of the timed batch.")] = 0.5,
    frozen: Annotated[bool, typer.Option("--frozen/--no-frozen", help="Also time each method in frozen-encoder mode.")] = True,
    stand_in: Annotated[str | None, typer.Option("--stand-in", help="Shape of the random stand-in used when the card's data are absent: classes=C,cat=K,num=N.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="JSON file of the measurements (default bench-<dataset>.json).")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    config_dir: ConfigDirOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Training-step time of each method / late_fusion's, loader and evaluation throughput, peak memory and the
    frozen-encoder speed-up, measured in one process on the card's encoders; a table and a JSON file."""
    import json

    from .bench import run_bench
    from .config import parse_set

    names = [n.strip() for item in methods or [] for n in item.split(",") if n.strip()]
    out = writable_file(json_out or Path(f"bench-{Path(dataset).stem}.json"), "--json")
    result = run_bench(names, dataset, overrides=parse_set(set_), rounds=rounds, steps=steps, warmup=warmup,
                       rate=rate, seed=seed, frozen=frozen, stand_in=stand_in, data_root=data_root,
                       config_dir=config_dir, log=lambda msg: err_console.print(msg, highlight=False))
    console.print(bench_table(result))
    write_text(out, json.dumps(result, indent=1) + "\n", "--json")
    console.print(f"wrote {out}")


def bench_table(result: dict) -> Table:
    """The rich table of a ``run_bench`` result, each goal marked."""
    goals = result["goals"]
    t = Table(title=f"mmbench bench · {result['data']} · {result['device']} ({result['threads']} thread(s)) · "
                    f"batch {result['batch_size']} · {result['encoders']['image']} + {result['encoders']['tabular']} · "
                    f"{result['rounds']} rounds x {result['steps_per_round']} steps", title_justify="left")
    for col in ("method", "step ms", "× late_fusion (IQR)", "loader/step", "eval/s", "peak MB", "frozen ms",
                "frozen speed-up (IQR)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    mark = lambda ok: "[green]✓[/]" if ok else "[red]✗[/]"  # noqa: E731
    for r in result["methods"]:
        if r.get("error"):
            t.add_row(r["method"], "[red]error[/]", r["error"], *[""] * 5)
            continue
        f = r.get("frozen") or {}
        frozen_ms = f"{f['step_ms']:.1f}" if "step_ms" in f else ("refused" if f.get("error") else "–")
        speed = f"{f['speedup']:.1f} ({f['speedup_iqr'][0]:.1f}–{f['speedup_iqr'][1]:.1f}) " \
            f"{mark(f['speedup'] >= goals['frozen'])}" if "speedup" in f else ("refused (see JSON)" if f.get("error") else "–")
        t.add_row(r["method"], f"{r['step_ms']:.1f}",
                  f"{r['ratio']:.2f} ({r['ratio_iqr'][0]:.2f}–{r['ratio_iqr'][1]:.2f}) {mark(r['ratio'] <= r['goal_step'])}",
                  f"{r['loader_over_step']:.1f} {mark(r['loader_over_step'] >= goals['loader'])}",
                  f"{r['eval_samples_per_s']:.0f}", "–" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}",
                  frozen_ms, speed)
    return t


# ----------------------------------------------------------------------------------- reading records
def _load(results: Path, dataset: list[str] | None = None, method: list[str] | None = None,
          protocol: str | None = None) -> list:
    """Records under ``results`` passing the filters; files left out are named in one warning line each."""
    return _load_set(results, dataset, method, protocol)[0]


def _load_set(results: Path, dataset: list[str] | None = None, method: list[str] | None = None,
              protocol: str | None = None) -> tuple[list, Any]:
    """:func:`_load` and the whole :class:`~mmbench.records.RecordSet` it came from."""
    from .records import load_records

    rs = load_records(results)
    for line in rs.warnings():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    recs = rs.records
    if dataset:
        recs = [r for r in recs if r.labels.dataset in dataset]
    if method:
        recs = [r for r in recs if r.labels.method in method]
    if protocol:
        recs = [r for r in recs if r.labels.protocol == protocol]
    if not recs:
        raise MMBenchError(f"no run records under {results} match the given filters")
    return recs, rs


@app.command()
def table(
    results: ResultsOpt = Path("results"),
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    metric: MetricOpt = None,
    fmt: Annotated[TableFormat, typer.Option("--format", "-f", help="Output format.")] = TableFormat.md,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file (atomically) instead of stdout.")] = None,
    stats_: Annotated[bool, typer.Option("--stats", help="Dagger on the methods not significantly different "
                                         "from the row's best.")] = False,
    stats_test: Annotated[StatsTest, typer.Option("--stats-test", help="wilcoxon | ttest (paired by seed) | bootstrap | "
                                                  "mcnemar (paired over test rows, from the .npz predictions).")] = StatsTest.wilcoxon,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Significance level for --stats (Holm within the row).")] = 0.05,
    view: Annotated[TableView, typer.Option(help="cells: methods x missingness cells of --metric (ece and brier are lower-is-better) | costs: per method the metric, ECE and Brier next to parameters, step time and peak memory | probes: linear-probe R² of each true latent from each method's feature groups (datasets that know their latents).")] = TableView.cells,
) -> None:
    """Comparison table (mean ± std over seeds, best per row marked) built only from records."""
    from .report.tables import render

    if out is not None:
        writable_file(out, "--out")
    recs = _load(results, dataset, method, protocol)
    if view is not TableView.cells and stats_:
        raise MMBenchError(f"--stats is for --view cells (the {view.value} view has no per-cell comparison)")
    if view is TableView.probes:
        from .report.probes import render_probes

        text = render_probes(recs, fmt.value)
    elif view is TableView.costs:
        from .report.costs import render_costs

        text = render_costs(recs, fmt.value, _value(metric))
    elif stats_:
        text = _render_stats(recs, fmt.value, _value(metric), stats_test.value, alpha, results)
    else:
        text = render(recs, fmt.value, _value(metric))
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text, "--out")
        console.print(f"wrote {out}")


@app.command()
def check(
    results: ResultsOpt = Path("results"),
    reference: Annotated[Path, typer.Option("--reference", help="Reference CSV (from `mmbench table --format csv`).")] = Path("results/reference/reference.csv"),
    tolerance: Annotated[float, typer.Option(min=0.0, help="Smallest allowed drop of a cell's mean (absolute, e.g. 0.01): the floor under k standard errors.")] = 0.02,
    k: Annotated[float, typer.Option("--k-se", min=0.0, help="A cell may drop by k standard errors of the difference of the two seed means (from the reference's and the results' std and n); 0 = the tolerance alone.")] = 3.0,
    save_reference: Annotated[bool, typer.Option("--save-reference", help="Write the reference from the results instead of checking.")] = False,
) -> None:
    """Compare each cell's primary metric to a reference: exit 0 if none regresses beyond the tolerance, else 1."""
    from .report.check import compare, read_reference
    from .report.tables import render

    if save_reference:
        writable_file(reference, "--reference")
        recs = _load(results)
        write_text(reference, render(recs, "csv"), "--reference")
        console.print(f"wrote reference {reference} ({len(recs)} runs)")
        return
    ref = read_reference(reference)
    recs = _load(results)
    rows = compare(recs, ref, tolerance, k)
    t = Table(title=f"mmbench check (a cell may drop by max({k:g} SE, {tolerance:g}))")
    for col in ("cell", "reference", "current", "delta", "allowed", "status"):
        t.add_column(col)
    for r in rows:
        color = {"ok": "green", "regressed": "red", "missing": "yellow"}[r.status]
        t.add_row(r.cell, f"{r.reference:.4f}", "–" if r.current is None else f"{r.current:.4f}",
                  "–" if r.delta is None else f"{r.delta:+.4f}", "–" if r.allowed is None else f"{r.allowed:.4f}",
                  f"[{color}]{r.status}[/]")
    console.print(t)
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        err_console.print(f"{len(bad)} of {len(rows)} cell(s) regressed or missing:")
        for r in bad:
            err_console.print(f"  {r.status}: {r.cell}" + ("" if r.delta is None else f" ({r.delta:+.4f})"))
        raise typer.Exit(1)
    console.print(f"all {len(rows)} cell(s) within tolerance")


# ----------------------------------------------------------------------------------------- configs
@app.command("ls")
def ls(
    what: Annotated[Listable, typer.Argument(help="What to list.")],
    config_dir: ConfigDirOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """List registered methods, datasets, protocols, heads, balancers or encoders, or print the trainer defaults."""
    from .config import list_names, load_component, load_dataset, load_method, load_protocol
    from .registry import ENCODERS

    t = Table(title=what.value)
    if what is Listable.methods:
        for col in ("name", "impl", "head", "balancer", "cite"):
            t.add_column(col)
        for n in list_names("methods", config_dir):
            mc = load_method(n, config_dir)
            t.add_row(n, mc.impl, mc.head, mc.balancer, mc.cite)
    elif what is Listable.datasets:
        from .core import data_root as resolve_root

        root = resolve_root(data_root)
        for col in ("name", "adapter", "task", "metric", "found", "description"):
            t.add_column(col)
        for n in list_names("datasets", config_dir):
            card = load_dataset(n, config_dir)
            t.add_row(n, card.adapter, card.task, card.primary_metric, _found(card, root), card.description)
    elif what is Listable.protocols:
        for col in ("name", "cells", "seeds", "description"):
            t.add_column(col)
        for n in list_names("protocols", config_dir):
            p = load_protocol(n, config_dir)
            t.add_row(n, str(len(p.cells())), ",".join(map(str, p.seeds)), p.description)
    elif what in (Listable.heads, Listable.balancers):
        from .registry import BALANCERS, HEADS

        reg = HEADS if what is Listable.heads else BALANCERS
        t.add_column("name")
        t.add_column("about")
        t.add_column("cite")
        for n in reg.names():
            comp = load_component(what.value, n, config_dir)
            t.add_row(n, comp.description, comp.cite)
    elif what is Listable.defaults:
        from .regime import DEFAULTS_FILE

        console.print(f"# {DEFAULTS_FILE} (the trainer defaults; docs/training.md)", highlight=False)
        console.print(DEFAULTS_FILE.read_text(), highlight=False, markup=False)
        return
    else:
        t.add_column("name")
        t.add_column("config")
        for n in ENCODERS.names():
            t.add_row(n, (ENCODERS.config(n).__doc__ or "").strip().split("\n")[0])
    console.print(t)


def _found(card: Any, root: str | None) -> str:
    from .config import adapter_options
    from .registry import DATASETS

    if card.adapter == "synthetic" or not DATASETS.config(card.adapter).__dataclass_fields__.get("dir"):
        return "built in"
    try:
        adapter = DATASETS.get(card.adapter)(adapter_options(card), data_root=root)
        return "yes" if adapter.available() else "no"
    except MMBenchError:
        return "no"


def _check_defaults() -> None:
    """``configs/defaults.yaml`` validates as trainer settings."""
    from .config import TrainConfig
    from .regime import DEFAULTS_FILE, trainer_defaults
    from .typed import validate as check

    check(TrainConfig, trainer_defaults(), str(DEFAULTS_FILE))


@app.command()
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="YAML files or folders (default: every packaged config).")] = None,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Check YAML configs (methods, datasets, protocols, heads, balancers): exit 0 if all are valid, 2 with the first error."""
    from .config import PACKAGE_CONFIGS, load_component, load_dataset, load_method, load_protocol

    files: list[Path] = []
    for p in paths or [PACKAGE_CONFIGS, *[Path(d) for d in config_dir or []]]:
        if not p.exists():
            raise MMBenchError(f"{p}: no such file or folder")
        files.extend(sorted(p.rglob("*.yaml")) if p.is_dir() else [p])
    loaders = {"methods": load_method, "datasets": load_dataset, "protocols": load_protocol,
               "heads": lambda f, d: load_component("heads", f, d),
               "balancers": lambda f, d: load_component("balancers", f, d)}
    for f in files:
        kind = f.parent.name
        if f.resolve() == (PACKAGE_CONFIGS / "defaults.yaml").resolve():
            _check_defaults()
            continue
        if kind not in loaders:
            raise MMBenchError(f"{f}: cannot tell its kind (expected it inside a methods/, datasets/, protocols/, "
                               "heads/ or balancers/ folder)")
        loaders[kind](str(f), config_dir)
    console.print(f"{len(files)} config file(s) valid")


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset card name.")],
    data_root: DataRootOpt = None,
    config_dir: ConfigDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the cache even if it exists.")] = False,
) -> None:
    """Check a dataset's layout, report what was found, and build its decoded-tensor cache."""
    from .config import adapter_options, load_dataset
    from .core import data_root as resolve_root
    from .data.prepare import prepare_report
    from .registry import DATASETS

    card = load_dataset(dataset, config_dir)
    adapter = DATASETS.get(card.adapter)(adapter_options(card), data_root=resolve_root(data_root))
    if not hasattr(adapter, "prepare"):
        info, splits = adapter.load()
        console.print(f"{card.name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        return
    console.print(prepare_report(adapter, force=force, name=card.name), markup=False, highlight=False)


# ------------------------------------------------------------------------------------------- stats
def _render_stats(recs: list, fmt: str, metric: str | None, test: str, alpha: float, results: Path) -> str:
    from .report.stats import min_wilcoxon_p, prediction_paths, render_with_stats

    preds = prediction_paths(results) if test in ("bootstrap", "mcnemar") else None
    text, comp = render_with_stats(recs, fmt, metric, test=test, alpha=alpha, predictions=preds)
    n = comp.loc[~comp["best"], "n"] if len(comp) else []
    if test == "wilcoxon" and len(n) and int(n.min()) < 6:
        k = int(n.min())
        err_console.print(f"[yellow]warning:[/] some cells have only {k} paired seed(s): with fewer than "
                          f"6 seeds the exact two-sided Wilcoxon p is at least 2/2^{k} = "
                          f"{min_wilcoxon_p(k):.3g}, so it cannot reach p < 0.05 and every method there gets "
                          "a dagger; use >= 6 seeds or --stats-test ttest", highlight=False)
    return text


@app.command()
def plot(
    results: ResultsOpt = Path("results"),
    kind: Annotated[PlotKind, typer.Option(help="curve (metric vs missing rate) | patterns (per-pattern bars + "
                                           "ceiling) | seeds (box plot over seeds) | cd (critical-difference "
                                           "diagram; needs mmbench[report]) | heatmap (train x test rate) | "
                                           "attention (DFPL CMA weights per class) | tsne (saved embeddings).")] = PlotKind.curve,
    out: Annotated[Path | None, typer.Option("--out", help="Output file, written as <stem>.png and "
                                             "<stem>.pdf (default results/plots/<kind>).")] = None,
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    scenario: Annotated[list[str] | None, typer.Option(help="Only these scenarios.")] = None,
    rate: Annotated[list[float] | None, typer.Option(help="Only these train missing rates.")] = None,
    test_rate: Annotated[list[float] | None, typer.Option("--test-rate", help="Test missing rates only.")] = None,
    metric: MetricOpt = None,
    x: Annotated[CurveAxis, typer.Option("--x", help="Curve axis: auto | test_rate (test sweeps) | rate "
                                          "(train = val = test rate).")] = CurveAxis.auto,
) -> None:
    """Draw a figure from run records only (PNG and PDF, written atomically)."""
    from .report.plots import PLOTS

    out = out or Path("results/plots") / kind.value
    if out.is_dir():
        raise MMBenchError(f"--out {out}: is a folder; expected a file name (written as <name>.png and <name>.pdf)")
    writable_file(out.with_suffix(".png"), "--out")
    recs = _load(results, dataset, method, protocol)
    recs = _filter_cells(recs, scenario, rate, test_rate, results)
    draw = PLOTS[kind.value]
    try:
        if kind is PlotKind.curve:
            paths = draw(recs, out, _value(metric), x=x.value)
        elif kind in (PlotKind.attention, PlotKind.tsne):
            from .report.stats import prediction_paths

            paths = draw(recs, out, prediction_paths(results))
        else:
            paths = draw(recs, out, _value(metric))
    except OSError as exc:
        raise MMBenchError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _filter_cells(recs: list, scenario: list[str] | None, rate: list[float] | None,
                  test_rate: list[float] | None, where: Path) -> list:
    def near(v: Any, targets: list[float]) -> bool:
        return v is not None and any(abs(float(v) - t) < 1e-9 for t in targets)

    if scenario:
        recs = [r for r in recs if r.labels.scenario in scenario]
    if rate:
        recs = [r for r in recs if near(r.labels.rate, rate)]
    if test_rate:
        recs = [r for r in recs if near(r.labels.test_rate, test_rate)]
    if not recs:
        raise MMBenchError(f"no run records under {where} match the given filters")
    return recs


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="Folder of run records (the --output-dir of `mmbench run`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and figures/ (PNG and PDF).")] = Path("report"),
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    metric: MetricOpt = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Significance level of the marks and the critical-difference diagram.")] = 0.05,
) -> None:
    """One self-contained HTML page for a results folder: tables, figures, environment, settings, runs."""
    from .report.page import build_report

    writable_dir(out, "--out")
    recs, rs = _load_set(results, dataset, method, protocol)
    paths = {r.run_id: p for r, p in zip(rs.records, rs.paths, strict=True)}
    try:
        rep = build_report(recs, results, out, paths, metric=_value(metric), alpha=alpha, failed=len(rs.failed))
    except OSError as exc:
        raise MMBenchError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    for note in rep.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"wrote {rep.index} and {len(rep.figures)} figure file(s) in {out / 'figures'}")


@app.command()
def stats(
    results: ResultsOpt = Path("results"),
    dataset: DatasetsOpt = None,
    method: MethodsOpt = None,
    protocol: ProtocolOpt = None,
    metric: MetricOpt = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Significance level (after Holm adjustment).")] = 0.05,
    x: Annotated[CurveAxis, typer.Option("--x", help="Missing-rate axis of the AUC.")] = CurveAxis.auto,
    reference: Annotated[DropReference, typer.Option(help="Drop reference: complete (the same run's complete rows) | "
                                                     "rate0 (the run at 0% missing).")] = DropReference.complete,
    csv_dir: Annotated[Path | None, typer.Option("--csv-dir", help="Also write ranks, pairwise, vs_best, auc "
                                                 "and drop CSVs to this folder.")] = None,
    test: Annotated[StatsTest, typer.Option("--stats-test", help="Test of each method against its cell's best: "
                                            "wilcoxon | ttest (by seed) | bootstrap | mcnemar (test rows).")] = StatsTest.wilcoxon,
) -> None:
    """Average ranks, Friedman test over cells (seeds averaged), pairwise Wilcoxon-Holm, AUC and drop."""
    from .report import stats as st

    if csv_dir is not None:
        writable_dir(csv_dir, "--csv-dir")
    recs = _load(results, dataset, method, protocol)
    metric_name = _value(metric)
    fr = st.friedman_summary(recs, metric_name, alpha)
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
    vs_best = st.compare_to_best(recs, metric_name, test=test.value, alpha=alpha,
                                 predictions=st.prediction_paths(results) if test.value in ("bootstrap", "mcnemar")
                                 else None)
    tables = {"ranks": fr.ranks, "pairwise": fr.pairwise, "vs_best": vs_best}
    _print_power(vs_best, test.value, alpha)
    try:
        auc = st.auc_summary(recs, metric_name, x.value)
    except MMBenchError as exc:
        console.print(f"[dim]no AUC summary: {exc}[/]")
    else:
        tables["auc"] = auc
        t = Table(title="Area under the metric vs missing-rate curve (normalised by the rate range; %)",
                  title_justify="left")
        for col in ("curve", "method", "AUC", "n seeds", "missing rates"):
            t.add_column(col)
        for r in auc.itertuples():
            t.add_row(r.group, r.method, f"{100 * r.auc:.2f} ± {100 * r.std:.2f}", str(r.n),
                      f"{r.x_min:g}-{r.x_max:g} ({r.n_points})")
        console.print(t)
    try:
        drop = st.drop_summary(recs, metric_name, reference.value)
    except MMBenchError as exc:
        console.print(f"[dim]no drop summary: {exc}[/]")
    else:
        tables["drop"] = drop
        t = Table(title=f"Change vs full modality (reference: {reference.value}; value - reference, pp)",
                  title_justify="left")
        for col in ("dataset", "cell (available)", "method", "value (%)", "reference (%)", "delta"):
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
            write_text(csv_dir / f"{name}.csv", df.to_csv(index=False, float_format="%.6f"), "--csv-dir")
        console.print(f"wrote {', '.join(f'{n}.csv' for n in tables)} to {csv_dir}")


def _print_power(vs_best: Any, test: str, alpha: float) -> None:
    """Per cell, each method against the best: gap, spread of the paired differences, MDD, seeds needed."""
    if vs_best.empty:
        return
    t = Table(title=f"Against each cell's best: paired gap, minimum detectable difference (80% power, alpha 0.05) "
                    f"and {test} p (Holm)", title_justify="left")
    for col, just in (("cell", "left"), ("method", "left"), ("gap (pp)", "right"), ("sd of diff (pp)", "right"),
                      ("seeds", "right"), ("MDD (pp)", "right"), ("detectable", "left"),
                      ("seeds for this gap", "right"), ("p (Holm)", "right")):
        t.add_column(col, justify=just)
    for r in vs_best.itertuples():
        if r.best:
            continue
        cell = f"{r.dataset} {r.scenario} {r.rate}" + ("" if r.test_rate in ("", r.rate) else f"→{r.test_rate}")
        mdd = "–" if r.mdd != r.mdd else f"{100 * r.mdd:.2f}"
        detectable = "–" if r.mdd != r.mdd else ("no (tied)" if r.below_mdd else "yes")
        need = "–" if r.seeds_needed is None or r.seeds_needed != r.seeds_needed else str(int(r.seeds_needed))
        # an exact test on 20,000 rows can underflow double precision: say so rather than print 0
        p = "–" if r.p_holm != r.p_holm else (f"{r.p_holm:.3g}" if r.p_holm > 0 else "< 1e-300")
        sd = "–" if r.sd_diff != r.sd_diff else f"{100 * r.sd_diff:.2f}"
        t.add_row(cell, r.method, f"{100 * r.gap:+.2f}", sd, str(r.n), mdd, detectable, need, p)
    console.print(t)


# -------------------------------------------------------------------------------------------- main
def _usage_error_types() -> tuple[type, ...]:
    """Click's exception base classes: click's own and the copy vendored by recent Typer releases."""
    import click

    types: list[type] = [click.exceptions.ClickException]
    try:
        from typer._click import exceptions as vendored  # Typer >= 0.25 ships its own click
    except ImportError:
        pass
    else:
        types.append(vendored.ClickException)
    return tuple(types)


def _usage_line(exc: Any) -> str:
    import difflib
    import re

    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) if ctx is not None else None
    where = f"{path}: " if path else ""
    hint = f" (see `{path} --help`)" if path else ""
    msg = " ".join(str(exc.format_message()).split()).replace("Value error, ", "")
    choice = re.search(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)", msg)
    if choice:
        options = re.findall(r"'([^']*)'", choice.group(2))
        close = difflib.get_close_matches(choice.group(1), options, n=1)
        if close:
            msg = msg.rstrip(".") + f"; did you mean {close[0]!r}?"
    return f"{where}{msg}{hint}"


def main() -> None:
    """Console entry point: every user error -> one line on stderr, exit code 2."""
    usage = _usage_error_types()
    try:
        rc = app(standalone_mode=False, prog_name="mmbench")  # returns the code of a typer.Exit in this mode
        sys.exit(rc if isinstance(rc, int) else 0)
    except MMBenchError as exc:
        err_console.print(f"[red]mmbench: error:[/] {' '.join(str(exc).split())}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("mmbench: interrupted; finished runs are saved, re-run the same command to resume")
        sys.exit(130)
    except usage as exc:
        if type(exc).__name__ == "Abort":
            err_console.print("mmbench: interrupted; finished runs are saved, re-run the same command to resume")
            sys.exit(130)
        err_console.print(f"[red]mmbench: error:[/] {_usage_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
