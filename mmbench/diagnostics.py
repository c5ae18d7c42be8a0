"""Training diagnostics recorded in every run (``record["diagnostics"]``).

Two things, both cheap because they are taken at a few steps only:

* **Per-term gradient norms.** At the first step of a few epochs (1, 2, 3, 5, 9, 17, ...: epoch 0
  and every epoch ``2^k``, 0-based, counted across stages) the gradient of every weighted loss term
  w.r.t. the trainable parameters is computed separately (``torch.autograd.grad``, before clipping)
  and its L2 norm recorded, with the ratio of the largest auxiliary term to the task term. A ratio
  far above 1 at initialisation means an auxiliary term, not the task, decides the first updates
  (and, under a global clip, shrinks the task's share of every step).
* **The method's own diagnostics** (:meth:`mmbench.models.base.Method.diagnostics`, e.g. DFPL's
  prototype variance and CMA attention shares) at the same steps on the training batch, and once
  after training on the validation split with the selected weights (row-weighted mean over batches).

See ``docs/diagnostics.md`` for the record layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .data.batch import Batch, Output

#: the term every auxiliary term is compared with
TASK_TERM = "task"


def default_epochs(epoch: int) -> bool:
    """Probe epoch 0 and every power of two (0-based, across stages): 1, 2, 3, 5, 9, 17, ... 1-based."""
    return epoch == 0 or (epoch & (epoch - 1)) == 0


def grad_norm(grads: Iterable[Tensor | None]) -> float:
    """L2 norm of a list of gradients (``None`` = the parameter does not depend on the term)."""
    norms = [g.detach().float().norm() for g in grads if g is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def term_grad_norms(terms: dict[str, Tensor], params: list[nn.Parameter]) -> dict[str, float]:
    """L2 norm of the gradient of each loss term w.r.t. ``params`` (the graph is kept for ``backward``).

    ``"total"`` is the norm of the gradient of the sum. Terms that do not depend on any parameter
    get 0.
    """
    out: dict[str, float] = {}
    total: list[Tensor | None] = [None] * len(params)
    for name, term in terms.items():
        if not term.requires_grad:
            out[name] = 0.0
            continue
        grads = torch.autograd.grad(term.float(), params, retain_graph=True, allow_unused=True)
        out[name] = grad_norm(grads)
        total = [a if b is None else (b if a is None else a + b) for a, b in zip(total, grads, strict=True)]
    out["total"] = grad_norm(total)
    return out


def dominance(norms: dict[str, float], task: str = TASK_TERM) -> tuple[str | None, float | None]:
    """(name, ratio) of the auxiliary term with the largest gradient norm relative to ``task``."""
    aux = {k: v for k, v in norms.items() if k not in (task, "total")}
    if task not in norms or not aux or norms[task] <= 0:
        return None, None
    name = max(aux, key=aux.__getitem__)
    return name, aux[name] / norms[task]


def variance_ratio(x: Tensor) -> float:
    """Between-sample variance over squared mean of ``N x ... x D`` features (NaN for fewer than 2 rows).

    For each slot (the middle dimensions, e.g. the K prototypes) ``sum_d Var_n(x_nd) / sum_d mean_n(x_nd)^2``
    with the population variance, then the mean over slots. 0 = the same vector for every sample
    (input-independent); about 1 or more = the per-sample part is as large as the common part.
    """
    if x.shape[0] < 2:
        return float("nan")
    x = x.detach().float().flatten(1, -2) if x.dim() > 2 else x.detach().float().unsqueeze(1)
    var = x.var(dim=0, unbiased=False).sum(-1)
    sq_mean = x.mean(dim=0).pow(2).sum(-1)
    return float((var / sq_mean.clamp_min(1e-12)).mean())


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


class TrainingDiagnostics:
    """Collects per-term gradient norms and method diagnostics at a few steps of :func:`mmbench.train.fit`.

    Args:
        epochs: which epochs (0-based, counted across stages) to probe; default :func:`default_epochs`.
        steps: which steps inside a probed epoch (0-based); default the first one only.
    """

    def __init__(self, epochs: Callable[[int], bool] = default_epochs, steps: tuple[int, ...] = (0,)) -> None:
        self.epochs = epochs
        self.steps = steps
        self.probes: list[dict[str, Any]] = []
        self.final: dict[str, float] = {}

    def wants(self, epoch: int, step: int) -> bool:
        """Whether step ``step`` of epoch ``epoch`` (both 0-based) is probed."""
        return step in self.steps and self.epochs(epoch)

    def probe(self, method: nn.Module, stage: str, epoch: int, step: int, batch: Batch, out: Output,
              terms: dict[str, Tensor], params: list[nn.Parameter]) -> None:
        """Record loss values, per-term gradient norms and the method's diagnostics of one training step."""
        norms = term_grad_norms(terms, params)
        name, ratio = dominance(norms)
        with torch.no_grad():
            extra = _floats(method.diagnostics(batch, out)) if hasattr(method, "diagnostics") else {}
        self.probes.append({
            "stage": stage, "epoch": epoch + 1, "step": step, "rows": len(batch),
            "loss": {k: float(v.detach()) for k, v in terms.items()},
            "grad_norm": norms, "max_aux_term": name, "max_aux_ratio": ratio, "method": extra,
        })

    @torch.no_grad()
    def summarise(self, pipeline: nn.Module, loader: Iterable[Batch], amp: bool = False) -> None:
        """Row-weighted mean of the method's diagnostics over ``loader`` (eval mode, final weights)."""
        method = getattr(pipeline, "method", pipeline)
        if not hasattr(method, "diagnostics"):
            return
        pipeline.eval()
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for batch in loader:
            device_type = batch.present.device.type
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"):
                out = pipeline(batch)
            n = float(len(batch))
            for k, v in method.diagnostics(batch, out).items():
                v = float(v)
                if math.isfinite(v):
                    sums[k] = sums.get(k, 0.0) + n * v
                    weights[k] = weights.get(k, 0.0) + n
        self.final = {k: sums[k] / weights[k] for k in sums}

    def as_dict(self) -> dict[str, Any]:
        """What goes into ``record["diagnostics"]``."""
        return {"probes": self.probes, "val": self.final}
