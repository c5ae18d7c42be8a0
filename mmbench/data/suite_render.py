"""Rendering of the suite's readings: glyph images and tables, both exactly decodable (numpy only).

Image: a ``grid x grid`` array of 8-px cells (``8 * grid`` px square, RGB). A cell is empty or holds one
glyph of a fixed bank of 6x6 binary patterns (pairwise Hamming distance >= :data:`MIN_DISTANCE`),
optionally surrounded by a 1-px frame on the cell border. Which cells are used is random per row.
Nuisance: a background colour per image (each channel uniform in [0, 0.3]), a grey foreground level per
image (uniform in [0.7, 1]), Gaussian pixel noise (std <= 0.05). With a contrast of at least 0.4 and glyphs
differing in >= 10 pixels, the glyphs and frames are recovered exactly from the pixels
(:func:`decode_cells`), so a posterior given the readings is the posterior given the image.

Table: one categorical column per table reading (its value), one continuous column per table reading
(a fixed code of the value plus independent jitter, so it carries nothing the categorical column does
not), and nuisance columns independent of everything (standard normal; uniform over 4 levels).
"""

from __future__ import annotations

import functools

import numpy as np

from .suite_tasks import Task

CELL = 8
GLYPH = 6
MIN_DISTANCE = 10
N_GLYPHS = 48
_BANK_SEED = 20_260_610  # the glyph bank is part of the task definition: fixed, whatever the data seed
_CHUNK = 2048


@functools.cache
def glyph_bank() -> np.ndarray:
    """``N_GLYPHS x 6 x 6`` bool patterns with 14..22 pixels on and pairwise Hamming distance >= 10."""
    rng = np.random.default_rng(_BANK_SEED)
    bank: list[np.ndarray] = []
    while len(bank) < N_GLYPHS:
        g = rng.random(GLYPH * GLYPH) < 0.5
        if not 14 <= g.sum() <= 22:
            continue
        if all((g != b).sum() >= MIN_DISTANCE for b in bank):
            bank.append(g)
    return np.stack(bank).reshape(N_GLYPHS, GLYPH, GLYPH)


@functools.cache
def cell_masks() -> tuple[np.ndarray, np.ndarray]:
    """(``(N_GLYPHS + 1) x 8 x 8`` glyph masks, the last one empty; ``8 x 8`` frame mask)."""
    pad = (CELL - GLYPH) // 2
    masks = np.zeros((N_GLYPHS + 1, CELL, CELL), dtype=bool)
    masks[:N_GLYPHS, pad:pad + GLYPH, pad:pad + GLYPH] = glyph_bank()
    frame = np.zeros((CELL, CELL), dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    return masks, frame


def layout_cells(task: Task, obs: dict[str, np.ndarray], grid: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Glyph id per cell (``-1`` empty) and frame flag per cell, ``N x grid^2`` each.

    The task's parts and then its distractors go to distinct cells chosen uniformly at random per row.
    """
    n = len(next(iter(obs.values())))
    k = len(task.parts) + task.n_distractors
    cells = np.full((n, grid * grid), -1, dtype=np.int64)
    framed = np.zeros((n, grid * grid), dtype=bool)
    pos = np.argsort(rng.random((n, grid * grid)), axis=1)[:, :k]
    rows = np.arange(n)
    for j, part in enumerate(task.parts):
        cells[rows, pos[:, j]] = np.asarray(part.glyphs)[obs[part.reading]]
        framed[rows, pos[:, j]] = part.framed
    if task.n_distractors:
        pool = np.asarray(task.distractor_glyphs)
        for j in range(len(task.parts), k):
            cells[rows, pos[:, j]] = pool[rng.integers(0, len(pool), n)]
    return cells, framed


def render_cells(cells: np.ndarray, framed: np.ndarray, grid: int, rng: np.random.Generator,
                 pixel_noise: float) -> np.ndarray:
    """``N x 3 x S x S`` uint8 images (``S = 8 * grid``) from a cell layout (vectorised, in chunks)."""
    n, size = cells.shape[0], CELL * grid
    masks, frame = cell_masks()
    bg = rng.uniform(0.0, 0.3, size=(n, 3, 1, 1)).astype(np.float32)
    fg = rng.uniform(0.7, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        m = masks[cells[a:b]] | (framed[a:b, :, None, None] & frame)  # chunk x G^2 x 8 x 8
        m = m.reshape(b - a, grid, grid, CELL, CELL).transpose(0, 1, 3, 2, 4).reshape(b - a, 1, size, size)
        img = bg[a:b] + (fg[a:b] - bg[a:b]) * m
        if pixel_noise > 0:
            img += rng.normal(0.0, pixel_noise, size=img.shape).astype(np.float32)
        out[a:b] = (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return out


def decode_cells(images: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Recover (glyph id per cell or -1, frame flag per cell) from rendered images; the inverse of
    :func:`layout_cells` + :func:`render_cells` (used to check that the readings are in the pixels)."""
    n = images.shape[0]
    x = images.astype(np.float32).mean(axis=1) / 255.0  # N x S x S
    lo, hi = x.reshape(n, -1).min(1), x.reshape(n, -1).max(1)
    on = x > ((lo + hi) / 2)[:, None, None]
    on = on.reshape(n, grid, CELL, grid, CELL).transpose(0, 1, 3, 2, 4).reshape(n, grid * grid, CELL, CELL)
    masks, frame = cell_masks()
    framed = on[:, :, frame].mean(axis=2) > 0.5
    pad = (CELL - GLYPH) // 2
    inner = on[:, :, pad:pad + GLYPH, pad:pad + GLYPH].reshape(n, grid * grid, -1)
    bank = masks[:, pad:pad + GLYPH, pad:pad + GLYPH].reshape(N_GLYPHS + 1, -1)
    dist = (inner[:, :, None, :] != bank[None, None]).sum(axis=3)  # N x G^2 x (N_GLYPHS + 1)
    ids = dist.argmin(axis=2)
    return np.where(ids == N_GLYPHS, -1, ids), framed


def decode_readings(task: Task, cells: np.ndarray, framed: np.ndarray) -> dict[str, np.ndarray]:
    """The image readings of ``task`` recovered from decoded cells: parts that share an alphabet and a
    frame flag are exchangeable copies and get their values in cell order (the posterior does not depend
    on which copy is which); unframed distractors next to a framed part are skipped."""
    out: dict[str, np.ndarray] = {}
    groups: dict[tuple[tuple[int, ...], bool], list[str]] = {}
    for part in task.parts:
        groups.setdefault((part.glyphs, part.framed), []).append(part.reading)
    for (glyphs, is_framed), names in groups.items():
        lookup = np.full(N_GLYPHS + 1, -1)
        lookup[list(glyphs)] = np.arange(len(glyphs))
        value = lookup[cells]  # -1 for empty cells (index -1 wraps to the last, unused entry) and others
        hit = (value >= 0) & (framed == is_framed)
        if not (hit.sum(axis=1) == len(names)).all():
            raise ValueError(f"cells do not hold {len(names)} glyph(s) of {names} in every row")
        ordered = np.sort(np.where(hit, np.arange(cells.shape[1]), cells.shape[1]), axis=1)[:, :len(names)]
        for j, name in enumerate(names):
            out[name] = value[np.arange(cells.shape[0]), ordered[:, j]]
    return out


def numeric_code(arity: int) -> np.ndarray:
    """The continuous code of each value of an ``arity``-valued reading (evenly spaced in [-1.5, 1.5])."""
    return np.linspace(-1.5, 1.5, arity) if arity > 1 else np.zeros(1)


def build_table(task: Task, obs: dict[str, np.ndarray], rng: np.random.Generator, n_nuisance_num: int,
                n_nuisance_cat: int) -> tuple[np.ndarray, np.ndarray]:
    """(``N x (columns + nuisance)`` int64 categorical codes, ``N x (columns + nuisance)`` float32)."""
    n = len(next(iter(obs.values())))
    cats, nums = [], []
    for name in task.columns:
        arity = task.model.reading(name).arity
        cats.append(obs[name])
        spacing = 3.0 / max(arity - 1, 1)
        nums.append(numeric_code(arity)[obs[name]] + rng.normal(0.0, 0.1 * spacing, n))
    cats += [rng.integers(0, 4, n) for _ in range(n_nuisance_cat)]
    nums += [rng.standard_normal(n) for _ in range(n_nuisance_num)]
    cat = np.column_stack(cats).astype(np.int64) if cats else np.zeros((n, 0), dtype=np.int64)
    num = np.column_stack(nums).astype(np.float32) if nums else np.zeros((n, 0), dtype=np.float32)
    return cat, num
