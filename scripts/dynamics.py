"""Training dynamics of one run, step by step: loss terms, per-term gradient norms (also per module),
and the method's own diagnostics (DFPL: prototype variance, CMA attention shares, OT cost scale).

It trains exactly as ``mmbench run`` does (same spec resolution, masks, loaders and ``fit``), but
probes more often, so a collapse can be watched as it happens:

    PYTHONPATH=. python scripts/dynamics.py dfpl --dataset synthetic --seed 0
    PYTHONPATH=. python scripts/dynamics.py dfpl dfpl-literal -d synthetic --epochs 3 --steps 0,5,10,20
    PYTHONPATH=. python scripts/dynamics.py dfpl --set train.grad_clip=0 --json /tmp/dyn.json

Per probe it prints each weighted loss term with its gradient norm (w.r.t. all trainable
parameters, before clipping), the largest auxiliary/task gradient ratio, and the method's
diagnostics; ``--modules`` also splits every term's gradient norm by the method's top-level modules
(and, for DFPL, the TPE queries). After training: the method's diagnostics on the validation split,
the validation / test accuracy and, with ``--latents`` on a dataset that keeps its generative latents
(``synthetic``), how well a linear probe recovers each latent from each feature.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.config import parse_set, resolve
from mmbench.data.base import SPLITS
from mmbench.data.batch import Batch, Output
from mmbench.diagnostics import TrainingDiagnostics, grad_norm
from mmbench.metrics import compute_metrics, metrics_by_pattern
from mmbench.protocols import MissingSpec
from mmbench.runner import build_adapter, build_pipeline, load_data, presence_masks
from mmbench.train import Loader, fit, predict, seed_everything


def module_groups(method: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by top-level module of the method; TPE queries get their own group."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        if name.endswith(".queries"):
            top = "tpe.queries"
        groups.setdefault(top, []).append(p)
    return groups


class ModuleDiagnostics(TrainingDiagnostics):
    """Also records every term's gradient norm per module group."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], **kw: Any) -> None:
        super().__init__(**kw)
        self.groups = groups

    def probe(self, method: nn.Module, stage: str, epoch: int, step: int, batch: Batch, out: Output,
              terms: dict[str, Tensor], params: list[nn.Parameter]) -> None:
        super().probe(method, stage, epoch, step, batch, out, terms, params)
        by_module: dict[str, dict[str, float]] = {}
        for term_name, term in terms.items():
            if not term.requires_grad:
                continue
            for g, ps in self.groups.items():
                grads = torch.autograd.grad(term.float(), ps, retain_graph=True, allow_unused=True)
                by_module.setdefault(g, {})[term_name] = grad_norm(grads)
        self.probes[-1]["grad_norm_by_module"] = by_module


def test_latents(spec: Any) -> Any:
    """The generative latents (z_s, z_i, z_t) of the test split of a ``synthetic`` card, else None."""
    if spec.dataset["adapter"] != "synthetic":
        return None
    adapter = build_adapter(spec, None)
    n, fr = adapter.options.n_samples, adapter.options.split_fractions
    start = int(round(fr[0] * n)) + int(round(fr[1] * n))  # the adapter's contiguous train/val/test cut
    return adapter.generate()["latents"][start:]


@torch.no_grad()
def latent_r2(pipeline: nn.Module, loader: Loader, latents: Any, names: tuple[str, ...] = ("z_s", "z_i", "z_t"),
              ) -> dict[str, dict[str, float]]:
    """Cross-validated (5-fold) ridge R^2 of each known latent from each per-modality feature of the
    method's ``aux`` (``t_*`` global features, ``p_*`` aggregated prototypes), over the complete rows."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_score

    pipeline.eval()
    feats: dict[str, list[Tensor]] = {}
    rows: list[Tensor] = []
    for batch in loader:
        out = pipeline(batch)
        keep = batch.present.all(1)
        rows.append(batch.index[keep])
        for k, v in out.aux.items():
            if k[:2] in ("t_", "p_") and v.dim() == 2:
                feats.setdefault(k, []).append(v[keep].float())
    index = torch.cat(rows).numpy()
    z = torch.as_tensor(latents)[index].numpy()
    res: dict[str, dict[str, float]] = {}
    for k, parts in sorted(feats.items()):
        x = torch.cat(parts).numpy()
        res[k] = {n: float(cross_val_score(RidgeCV(alphas=(0.1, 1.0, 10.0, 100.0)), x, z[:, j], cv=5,
                                           scoring="r2").mean()) for j, n in enumerate(names)}
    return res


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}"


def print_probe(p: dict[str, Any]) -> None:
    """One probe as a few readable lines."""
    print(f"-- epoch {p['epoch']} step {p['step']} ({p['rows']} rows); largest aux/task gradient: "
          f"{p['max_aux_term']} x{_fmt(p['max_aux_ratio'])}")
    names = list(p["loss"])
    print("   term      " + " ".join(f"{n:>11}" for n in names))
    print("   loss      " + " ".join(f"{_fmt(p['loss'][n]):>11}" for n in names))
    print("   |grad|    " + " ".join(f"{_fmt(p['grad_norm'].get(n)):>11}" for n in names)
          + f"   total {_fmt(p['grad_norm']['total'])}")
    for g, row in p.get("grad_norm_by_module", {}).items():
        print(f"   {g[:9]:<9} " + " ".join(f"{_fmt(row.get(n)):>11}" for n in names))
    if p["method"]:
        print("   " + ", ".join(f"{k} {_fmt(v)}" for k, v in p["method"].items()))


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one method config with dense probes; return probes, final diagnostics and accuracies."""
    overrides = parse_set(args.set)
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    cell = MissingSpec(args.scenario, args.rate)
    spec = resolve(name, args.dataset, cell, args.seed, overrides=overrides)
    cfg = spec.train
    torch.set_num_threads(max(1, cfg.num_threads or 1))
    info, splits, *_ = load_data(spec, None)
    presents, indices, _ = presence_masks(spec, splits)
    seed_everything(spec.train_seed)
    pipeline = build_pipeline(spec, info)
    loaders = {s: Loader(splits[s], presents[s], cfg.batch_size if s == "train" else cfg.eval_batch_size,
                         shuffle=s == "train", seed=spec.train_seed, indices=indices[s]) for s in SPLITS}
    steps = tuple(int(s) for s in args.steps.split(","))
    epochs = (lambda e: True) if args.every_epoch else (lambda e: e == 0 or (e & (e - 1)) == 0)
    if args.modules:
        diag: TrainingDiagnostics = ModuleDiagnostics(module_groups(pipeline.method), epochs=epochs, steps=steps)
    else:
        diag = TrainingDiagnostics(epochs=epochs, steps=steps)
    print(f"===== {name} on {args.dataset} ({cell.scenario} {cell.rate}), seed {args.seed}, "
          f"{cfg.epochs} epochs, optimiser {cfg.optimizer}, clip {cfg.grad_clip}")
    result = fit(pipeline, loaders, cfg, primary_metric="accuracy", task=info.task, diagnostics=diag,
                 on_epoch=lambda row: print(f"   epoch {row['epoch']}: val acc {row['val'].get('accuracy', 0):.3f}, "
                                            + ", ".join(f"{k} {v:.3g}" for k, v in row["train_loss"].items())))
    for p in result.diagnostics["probes"]:
        print_probe(p)
    final = result.diagnostics["val"]
    print("   val (best weights): " + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
    test = predict(pipeline, loaders["test"])
    val = predict(pipeline, loaders["val"])
    acc = {"val": compute_metrics(val.logits, val.y, info.task).get("accuracy"),
           "test": compute_metrics(test.logits, test.y, info.task).get("accuracy"),
           "test_by_pattern": {k: v.get("accuracy") for k, v in
                               metrics_by_pattern(test.logits, test.y, test.present, info.task).items()}}
    print(f"   accuracy: val {acc['val']:.4f}, test {acc['test']:.4f}, by pattern "
          + ", ".join(f"{k} {_fmt(v)}" for k, v in acc["test_by_pattern"].items()))
    r2 = {}
    latents = test_latents(spec) if args.latents else None
    if latents is not None:
        r2 = latent_r2(pipeline, loaders["test"], latents)
        for k, v in r2.items():
            print(f"   R2 {k:<18} " + ", ".join(f"{n} {x:.2f}" for n, x in v.items()))
    return {"method": name, "seed": args.seed, "best_epoch": result.best_epoch, "diagnostics": result.diagnostics,
            "accuracy": acc, "latent_r2": r2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="+", help="method config names (methods/<name>.yaml)")
    ap.add_argument("--dataset", "-d", default="synthetic")
    ap.add_argument("--scenario", default="both")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--set", action="append", default=[], help="override, as mmbench run --set")
    ap.add_argument("--steps", default="0", help="steps inside a probed epoch, e.g. 0,5,10")
    ap.add_argument("--every-epoch", action="store_true", help="probe every epoch (default: 1, 2, 3, 5, 9, ...)")
    ap.add_argument("--modules", action="store_true", help="split gradient norms by module")
    ap.add_argument("--latents", action="store_true",
                    help="ridge R^2 of the known latents (synthetic card) from each feature, test complete rows")
    ap.add_argument("--json", default=None, help="write all results to this file")
    args = ap.parse_args(argv)
    results = [run_one(name, args) for name in args.methods]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
