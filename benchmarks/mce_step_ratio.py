"""MCE training-step time relative to the same method without it (M = 2 modalities).

For each method and missing rate, the method is built twice with the same seed (balancer ``none``
and ``mce``), the MCE copy is set up (reference stage, ``--ref-epochs``), and both are timed
round-robin on the same batch: a step is forward, loss terms, backward and an Adam step. The
extra cost of MCE is one batched forward/backward of every complete row under each single-modality
subset, so the ratio grows with the share of complete rows ``1 - eta``. Setup time (the reference
stage, once per run) is reported separately.

    python benchmarks/mce_step_ratio.py                          # late_fusion, eta 0.7 / 0.5 / 0
    python benchmarks/mce_step_ratio.py --methods late_fusion shaspec --rates 0.7 --head dpl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from mmbench.balancers.mce import MCEConfig
from mmbench.config import encoders_config, load_dataset
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.models.base import BuildContext
from mmbench.pipeline import Pipeline
from mmbench.protocols import MissingSpec, simulate_presence
from mmbench.registry import BALANCERS, HEADS, METHODS


@dataclass
class TrainLoader:
    """What ``Balancer.setup`` reads from the trainer's loader."""

    split: object
    present: torch.Tensor
    batch_size: int
    device: torch.device = torch.device("cpu")


def build(method: str, head: str, balancer: str, ctx: BuildContext, ref_epochs: int, seed: int,
          max_subset_rows: int = 0) -> Pipeline:
    torch.manual_seed(seed)
    cls = METHODS.get(method)
    model = cls(ctx, cls.Config())
    dims = model.embed_dims()
    h = HEADS.get(head)(ctx, dims, HEADS.get(head).Config())
    cfg = (MCEConfig(ref_epochs=ref_epochs, max_subset_rows=max_subset_rows) if balancer == "mce"
           else BALANCERS.get(balancer).Config())
    return Pipeline(model, h, BALANCERS.get(balancer)(ctx, dims, cfg))


def step(pipe: Pipeline, opt: torch.optim.Optimizer, batch) -> None:
    out = pipe(batch)
    loss = torch.stack([t.float() for t in pipe.loss_terms(batch, out).values()]).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["late_fusion"])
    ap.add_argument("--head", default="native")
    ap.add_argument("--rates", nargs="+", type=float, default=[0.7, 0.5, 0.0], help="'both' missing rates")
    ap.add_argument("--dataset", default="synthetic", help="card giving encoders, hidden size, image size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-samples", type=int, default=600, help="synthetic samples (reference stage data)")
    ap.add_argument("--ref-epochs", type=int, default=1)
    ap.add_argument("--max-subset-rows", type=int, default=0, help="MCE's cap on subset pairs (0 = exact)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    card = load_dataset(args.dataset)
    opts = SyntheticOptions(n_samples=args.n_samples, image_size=card.options.get("image_size", 32))
    info, splits = SyntheticDataset(opts).load()
    train = splits["train"]
    ctx = BuildContext(info=info, encoders=encoders_config(card), hidden=card.hidden)
    print(f"# CPU, {torch.get_num_threads()} thread(s); card {card.name}: {opts.image_size}px, hidden "
          f"{card.hidden}, batch {args.batch_size}; head {args.head}; max_subset_rows "
          f"{args.max_subset_rows}; median of {args.rounds} rounds x "
          f"{args.steps} steps")
    print(f"{'method':<14} {'eta':>4} {'complete':>8} {'base ms':>8} {'mce ms':>8} {'ratio':>6} "
          f"{'setup s':>8} {'(epochs)':>8}")
    for method in args.methods:
        for rate in args.rates:
            present = torch.from_numpy(simulate_presence(len(train), MissingSpec("both", rate), "train", args.seed))
            batch = train.batch(torch.arange(args.batch_size), present)
            pipes, opts_ = {}, {}
            for bal in ("none", "mce"):
                pipe = build(method, args.head, bal, ctx, args.ref_epochs, args.seed, args.max_subset_rows)
                t0 = time.perf_counter()
                pipe.balancer.setup(pipe, {"train": TrainLoader(train, present, args.batch_size)})
                setup_s = time.perf_counter() - t0
                pipe.train()
                opts_[bal] = torch.optim.Adam([p for p in pipe.parameters() if p.requires_grad], lr=1e-4)
                for _ in range(args.warmup):
                    step(pipe, opts_[bal], batch)
                pipes[bal] = pipe
            times: dict[str, list[float]] = {"none": [], "mce": []}
            for _ in range(args.rounds):
                for bal in ("none", "mce"):
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step(pipes[bal], opts_[bal], batch)
                    times[bal].append((time.perf_counter() - t0) / args.steps)
            base, mce = statistics.median(times["none"]), statistics.median(times["mce"])
            n_complete = int(batch.present.all(dim=1).sum())
            print(f"{method:<14} {rate:>4.1f} {n_complete:>8d} {1e3 * base:>8.1f} {1e3 * mce:>8.1f} "
                  f"{mce / base:>6.2f} {setup_s:>8.1f} {args.ref_epochs:>8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
