"""Training-step time of registered methods relative to ``late_fusion``, in one process.

Every method is built with the same dataset card (so the same encoders, hidden size and image size),
trained on the same synthetic batch (``both`` missing at ``--rate``), and timed round-robin: each
round runs ``--steps`` optimiser steps (forward, loss terms, backward, the run's optimiser step) per
method, in a shuffled order, so slow drifts of a shared machine hit every method alike. The ratio
to ``late_fusion`` is taken within each round and the table gives its median and interquartile
range over rounds (paired, so a noisy host moves both sides), next to the median step time.

    python benchmarks/step_time.py                       # every registered method, CPU
    python benchmarks/step_time.py dfpl drfuse --batch-size 64 --image-size 64 --hidden 128

A name is a method config (``methods/<name>.yaml``: its params, head and balancer) or, failing
that, a registered method key built with its ``Config`` defaults. Multi-stage methods are timed in
their last stage (the one whose model is tested). A method that fails to build or step is listed
with its error instead of stopping the table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from mmbench.config import (
    MethodConfig,
    TrainConfig,
    encoders_config,
    list_names,
    load_dataset,
    load_method,
    method_parts,
)
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.models.base import BuildContext
from mmbench.pipeline import Pipeline
from mmbench.protocols import MissingSpec, simulate_presence
from mmbench.registry import BALANCERS, HEADS, METHODS
from mmbench.train import Loader, make_optimizer

BASELINE = "late_fusion"


@dataclass
class Entry:
    """One method under test."""

    name: str
    pipeline: Pipeline | None = None
    optimizer: torch.optim.Optimizer | None = None
    rows: object = None
    times: list[float] | None = None
    error: str = ""


def build(name: str, ctx: BuildContext) -> Pipeline:
    """Method + head + balancer of ``name`` (a method YAML, else a registry key with defaults)."""
    mc = load_method(name) if name in list_names("methods") else MethodConfig(name=name, impl=name)
    params, head_params, balancer_params = method_parts(mc.impl, mc.params, mc.head, mc.head_params, mc.balancer,
                                                        mc.balancer_params, name)
    method = METHODS.get(mc.impl)(ctx, params)
    dims = method.embed_dims()
    head = HEADS.get(mc.head)(ctx, dims, head_params)
    balancer = BALANCERS.get(mc.balancer)(ctx, dims, balancer_params)
    return Pipeline(method, head, balancer)


def step(entry: Entry, batch) -> None:
    """One optimiser step of ``entry`` on ``batch``."""
    assert entry.pipeline is not None and entry.optimizer is not None
    if entry.rows is not None:
        batch = batch.select(entry.rows(batch))
    out = entry.pipeline(batch)
    loss = sum(entry.pipeline.loss_terms(batch, out).values())
    entry.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    entry.optimizer.step()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, time every method, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="*", help="method configs or registry keys (default: all registered)")
    ap.add_argument("--dataset", default="synthetic", help="dataset card giving encoders and hidden size")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=None, help="override the card's image size")
    ap.add_argument("--hidden", type=int, default=None, help="override the card's hidden size")
    ap.add_argument("--rate", type=float, default=0.5, help="'both' missing rate of the batch")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per method per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    card = load_dataset(args.dataset)
    hidden = args.hidden or card.hidden
    opts = SyntheticOptions(n_samples=max(4 * args.batch_size, 64),
                            image_size=args.image_size or card.options.get("image_size", 32))
    info, splits = SyntheticDataset(opts).load()
    split = splits["train"]
    present = torch.from_numpy(simulate_presence(len(split), MissingSpec("both", args.rate), "train", args.seed))
    batch = split.batch(torch.arange(args.batch_size), present)
    enc = encoders_config(card)
    ctx = BuildContext(info=info, encoders=enc, hidden=hidden)

    names = args.methods or METHODS.names()
    if BASELINE not in names:
        names = [BASELINE, *names]
    entries = []
    for name in names:
        e = Entry(name, times=[])
        try:
            torch.manual_seed(args.seed)
            e.pipeline = build(name, ctx)
            loaders = {k: Loader(splits[k], torch.from_numpy(simulate_presence(
                len(splits[k]), MissingSpec("both", args.rate), k, args.seed)), args.batch_size,
                shuffle=k == "train", seed=args.seed) for k in ("train", "val")}
            e.pipeline.balancer.setup(e.pipeline, loaders)  # e.g. MCE's reference predictors (untimed)
            stages = e.pipeline.method.stages()
            e.pipeline.method.begin_stage(stages[-1].name)
            e.rows = stages[-1].rows
            e.pipeline.train()
            e.optimizer = make_optimizer([p for p in e.pipeline.parameters() if p.requires_grad],
                                         TrainConfig(optimizer="adam", lr=1e-4))
            for _ in range(args.warmup):
                step(e, batch)
        except Exception as exc:  # keep the table going for the other methods
            e.error = f"{type(exc).__name__}: {exc}"
        entries.append(e)

    order = list(entries)
    shuffle = random.Random(args.seed).shuffle
    for _ in range(args.rounds):
        shuffle(order)
        for e in order:
            if e.error:
                continue
            try:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(e, batch)
                e.times.append((time.perf_counter() - t0) / args.steps)
            except Exception as exc:
                e.error = f"{type(exc).__name__}: {exc}"

    base = next(e for e in entries if e.name == BASELINE)
    if base.error:
        print(f"{BASELINE} failed: {base.error}", file=sys.stderr)
        return 1
    print(f"# step time on {torch.device('cpu')} ({torch.get_num_threads()} threads), dataset card "
          f"{card.name}: image {opts.image_size}px, hidden {hidden}, batch {args.batch_size} "
          f"(both at {args.rate:g}), {args.rounds} rounds x {args.steps} steps")
    print(f"{'method':<24} {'ms/step':>9} {'ratio':>7} {'ratio IQR':>13} {'params (M)':>11}")
    for e in entries:
        if e.error or not e.times:
            print(f"{e.name:<24} {'error':>9}  {e.error}")
            continue
        ratios = [t / b for t, b in zip(e.times, base.times, strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        n_par = sum(p.numel() for p in e.pipeline.parameters()) / 1e6
        print(f"{e.name:<24} {1e3 * statistics.median(e.times):>9.1f} {statistics.median(ratios):>7.2f} "
              f"{f'{q1:.2f}-{q3:.2f}':>13} {n_par:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

