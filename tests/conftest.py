"""Shared fixtures: a tiny synthetic dataset and batches with chosen missing patterns."""

from __future__ import annotations

import functools

import pytest
import torch

from mmbench.data.base import DataInfo, Split
from mmbench.data.batch import Batch
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.encoders.config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from mmbench.models.base import BuildContext

# Tiny tensors: one intra-op thread is much faster than oversubscribed OpenMP threads, and it makes
# the suite's speed independent of what else runs on the machine.
torch.set_num_threads(1)

#: presence rows by pattern name
ROWS = {"complete": (True, True), "image_only": (True, False), "tabular_only": (False, True)}


@functools.lru_cache(maxsize=4)
def tiny_data(n: int = 96, size: int = 16) -> tuple[DataInfo, dict[str, Split]]:
    """A small synthetic dataset (cached per process)."""
    return SyntheticDataset(SyntheticOptions(n_samples=n, image_size=size)).load()


def tiny_ctx(hidden: int = 16) -> BuildContext:
    """Build context with the smallest encoders."""
    info, _ = tiny_data()
    enc = EncodersConfig(image=ImageEncoderConfig(name="test_resnet", output_stride=8),
                         tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0))
    return BuildContext(info=info, encoders=enc, hidden=hidden)


def make_batch(patterns: list[str], split: str = "train", offset: int = 0) -> Batch:
    """A batch whose row i has missing pattern ``patterns[i]`` (zero-filled by the split's collate)."""
    _, splits = tiny_data()
    sp = splits[split]
    idx = torch.arange(offset, offset + len(patterns))
    present = torch.ones(len(sp), 2, dtype=torch.bool)
    present[idx] = torch.tensor([ROWS[p] for p in patterns], dtype=torch.bool)
    return sp.batch(idx, present)


def batch_with_presence(split: Split, present) -> Batch:
    """A batch of the first ``len(present)`` rows of ``split`` with presence rows ``present``
    (a bool tensor or a list of (image, tabular) pairs)."""
    present = torch.as_tensor(present, dtype=torch.bool)
    n = present.shape[0]
    full = torch.ones(len(split), 2, dtype=torch.bool)
    full[:n] = present
    return split.batch(torch.arange(n), full)


MIXED = ["complete", "image_only", "tabular_only", "complete", "image_only", "tabular_only", "complete", "complete"]


@pytest.fixture
def ctx() -> BuildContext:
    return tiny_ctx()


@pytest.fixture
def mixed_batch() -> Batch:
    return make_batch(MIXED)
