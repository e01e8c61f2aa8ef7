"""Geometry of the world's shapes, its named colours and its background textures.

Shapes are polygons in unit coordinates (centred on the origin, extent about 1, y pointing down as
in images); a shape is a list of (polygon, fill) layers painted in order, fill 1 adds, 0 cuts out.
"""

from __future__ import annotations

import numpy as np

Layer = tuple[np.ndarray, int]


def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], axis=1)


def _regular(n: int, radius: float, start_deg: float = 90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), -radius * np.sin(t)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    t = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), -r * np.sin(t)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, -y], axis=1) / 16.0
    return pts - (pts.max(0) + pts.min(0)) / 2


def _cross(arm: float, half_width: float) -> np.ndarray:
    a, w = arm, half_width
    quarter = np.array([[-w, -a], [w, -a], [w, -w]], dtype=float)
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees clockwise on screen
    return np.concatenate([quarter @ np.linalg.matrix_power(turn, k).T for k in range(4)])


def _arrow() -> np.ndarray:
    xs = [-1.0, 0.15, 0.15, 1.0, 0.15, 0.15, -1.0]
    ys = [-0.25, -0.25, -0.7, 0.0, 0.7, 0.25, 0.25]
    return np.stack([xs, ys], axis=1)


def _shift(pts: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return pts + np.array([dx, dy])


def _box(hx: float, hy: float) -> np.ndarray:
    return np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]], dtype=float)


SHAPES: dict[str, list[Layer]] = {
    "circle": [(_arc(0, 0, 1.0, 1.0, 0, 2 * np.pi, 64), 1)],
    "semicircle": [(_arc(0, 0.45, 1.15, 1.15, 0, np.pi, 40), 1)],
    "crescent": [
        (_arc(0, 0, 1.0, 1.0, 0, 2 * np.pi, 64), 1),
        (_arc(0.5, 0, 0.85, 0.85, 0, 2 * np.pi, 64), 0),
    ],
    "ellipse": [(_arc(0, 0, 1.05, 0.55, 0, 2 * np.pi, 64), 1)],
    "ring": [
        (_arc(0, 0, 1.0, 1.0, 0, 2 * np.pi, 64), 1),
        (_arc(0, 0, 0.55, 0.55, 0, 2 * np.pi, 64), 0),
    ],
    "triangle": [(_shift(_regular(3, 1.15), 0, 0.2), 1)],
    "square": [(_box(0.8, 0.8), 1)],
    "rectangle": [(_box(1.05, 0.5), 1)],
    "pentagon": [(_shift(_regular(5, 1.0), 0, 0.1), 1)],
    "hexagon": [(_regular(6, 1.0, 0.0), 1)],
    "diamond": [(np.array([[0, -1.1], [0.65, 0], [0, 1.1], [-0.65, 0]], dtype=float), 1)],
    "trapezoid": [(np.array([[-0.5, -0.6], [0.5, -0.6], [1.05, 0.6], [-1.05, 0.6]]), 1)],
    "star": [(_shift(_star(5, 1.15, 0.48), 0, 0.1), 1)],
    "cross": [(_cross(1.0, 0.32), 1)],
    "heart": [(_heart(), 1)],
    "arrow": [(_arrow(), 1)],
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (240, 230, 30),
    "green": (30, 180, 50),
    "cyan": (30, 210, 220),
    "blue": (40, 70, 240),
    "purple": (150, 50, 210),
    "pink": (250, 120, 200),
    "white": (245, 245, 245),
    "brown": (140, 80, 30),
}

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checker", "grid", "wavy")


def texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey background texture, values in [0, 255]: (size, size) float32.

    Each call draws its own random base level, contrast, period, orientation and phase.
    """
    base = rng.uniform(30, 70)
    amp = rng.uniform(50, 80)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if name == "plain":
        pattern = np.zeros((size, size), np.float32)
    elif name == "striped":
        period = rng.uniform(4.0, 6.0)
        theta = rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10, 10)
        t = np.deg2rad(theta)
        u = (x * np.cos(t) + y * np.sin(t)) / period + rng.uniform()
        pattern = (u % 1.0 < 0.5).astype(np.float32)
    elif name == "dotted":
        period = rng.uniform(4.5, 6.0)
        ox, oy = rng.uniform(0, period, 2)
        dx = (x - ox) % period - period / 2
        dy = (y - oy) % period - period / 2
        pattern = np.clip(1.6 - np.hypot(dx, dy), 0.0, 1.0)
    elif name == "checker":
        cell = int(rng.integers(3, 5))
        ox, oy = rng.integers(0, cell, 2)
        pattern = (((x + ox) // cell + (y + oy) // cell) % 2).astype(np.float32)
    elif name == "grid":
        period = int(rng.integers(5, 7))
        ox, oy = rng.integers(0, period, 2)
        pattern = (((x + ox) % period < 1) | ((y + oy) % period < 1)).astype(np.float32)
    elif name == "wavy":
        period = rng.uniform(5.0, 7.0)
        phase = rng.uniform(0, 2 * np.pi)
        u = (y + 1.5 * np.sin(2 * np.pi * x / 8.0 + phase)) / period
        pattern = (u % 1.0 < 0.5).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {name!r}; known: {list(TEXTURES)}")
    return base + amp * pattern
