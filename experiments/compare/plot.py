"""Figures for ``dgmjax compare`` drawn with PIL alone (matplotlib is not a dependency).

- ``line_plot``: curves y(x) on log-log (or linear) axes with ticks, labels and a legend,
  saved as a PNG; used for the sampling-cost curve (seconds per batch vs pixels).
- ``labelled_rows``: image grids (uint8 [h,w,C] each, e.g. ``imageio.make_grid`` rows)
  stacked vertically with a text label left of each row.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (140, 86, 75), (23, 190, 207)]


def _font():
  from PIL import ImageFont
  return ImageFont.load_default()


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
  if log:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    inside = lambda ts: [t for t in ts if lo / 1.0001 <= t <= hi * 1.0001]
    ticks = inside([10.0 ** k for k in range(a, b + 1)])
    if len(ticks) < 4:   # a narrow range: add 2x and 5x
      ticks = inside(sorted(10.0 ** k * m for k in range(a, b + 1) for m in (1, 2, 5)))
    return ticks
  step = 10 ** math.floor(math.log10(max(hi - lo, 1e-12)))
  return list(np.arange(math.ceil(lo / step) * step, hi + step / 2, step))


def _fmt(v: float) -> str:
  return f"{v:g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.0e}"


def line_plot(path: str, series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = True,
              logy: bool = True, xtick_labels: dict[float, str] | None = None,
              size: tuple[int, int] = (640, 440)) -> str:
  """Writes a PNG of ``series`` = {label: (xs, ys)} (positive values on log axes)."""
  from PIL import Image, ImageDraw
  if not series:
    raise ValueError("line_plot needs at least one series")
  xs_all = [float(v) for xs, _ in series.values() for v in xs]
  ys_all = [float(v) for _, ys in series.values() for v in ys if v is not None]
  for name, vals, log in (("x", xs_all, logx), ("y", ys_all, logy)):
    if not vals or not all(math.isfinite(v) for v in vals):
      raise ValueError(f"line_plot: {name} values must be finite numbers; got {vals}")
    if log and min(vals) <= 0:
      raise ValueError(f"line_plot: {name} values must be > 0 on a log axis; got {min(vals)}")
  w, h = size
  left, right, top, bottom = 70, 170, 44, 50
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  font = _font()

  def span(vals, log):
    lo, hi = min(vals), max(vals)
    if log:
      lo, hi = lo / 1.5, hi * 1.5
    elif hi == lo:
      lo, hi = lo - 1, hi + 1
    else:
      pad = 0.05 * (hi - lo)
      lo, hi = lo - pad, hi + pad
    return lo, hi

  (x0, x1), (y0, y1) = span(xs_all, logx), span(ys_all, logy)
  tr = (lambda v, log: math.log10(v) if log else v)

  def px(x, y):
    fx = (tr(x, logx) - tr(x0, logx)) / (tr(x1, logx) - tr(x0, logx))
    fy = (tr(y, logy) - tr(y0, logy)) / (tr(y1, logy) - tr(y0, logy))
    return left + fx * (w - left - right), h - bottom - fy * (h - top - bottom)

  d.rectangle([left, top, w - right, h - bottom], outline="black")
  xt = sorted(xtick_labels) if xtick_labels else _ticks(x0, x1, logx)
  for t in xt:
    x, _ = px(t, y0)
    d.line([x, h - bottom, x, h - bottom + 4], fill="black")
    d.line([x, top, x, h - bottom], fill=(230, 230, 230))
    label = xtick_labels[t] if xtick_labels else _fmt(t)
    d.text((x - 3 * len(label), h - bottom + 6), label, fill="black", font=font)
  for t in _ticks(y0, y1, logy):
    _, y = px(x0, t)
    d.line([left - 4, y, left, y], fill="black")
    d.line([left, y, w - right, y], fill=(230, 230, 230))
    label = _fmt(t)
    d.text((left - 8 - 6 * len(label), y - 5), label, fill="black", font=font)
  d.rectangle([left, top, w - right, h - bottom], outline="black")
  for i, (name, (xs, ys)) in enumerate(series.items()):
    colour = COLOURS[i % len(COLOURS)]
    pts = [px(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len(pts) > 1:
      d.line(pts, fill=colour, width=2)
    for x, y in pts:
      d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    ly = top + 8 + 16 * i
    d.line([w - right + 10, ly + 5, w - right + 30, ly + 5], fill=colour, width=2)
    d.text((w - right + 35, ly), name, fill="black", font=font)
  if title:
    d.text((left, 6), title, fill="black", font=font)
  if xlabel:
    d.text(((left + w - right) / 2 - 3 * len(xlabel), h - 20), xlabel, fill="black", font=font)
  if ylabel:
    d.text((4, top - 16), ylabel, fill="black", font=font)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


def labelled_rows(path: str, rows: Sequence[tuple[str, np.ndarray]], scale: int = 4,
                  label_width: int = 230) -> str:
  """Stacks image rows (label, uint8 [h,w,C] with C in {1,3}) into one labelled PNG."""
  from PIL import Image, ImageDraw
  if not rows:
    raise ValueError("labelled_rows needs at least one row")
  arrays = []
  for label, a in rows:
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[-1] not in (1, 3) or a.dtype != np.uint8:
      raise ValueError(f"row {label!r}: expected uint8 [h,w,C] with C in (1, 3); got "
                       f"{a.dtype} {a.shape}")
    a = a.repeat(3, axis=-1) if a.shape[-1] == 1 else a
    arrays.append(a.repeat(scale, axis=0).repeat(scale, axis=1))
  width = label_width + max(a.shape[1] for a in arrays)
  height = sum(a.shape[0] for a in arrays)
  img = Image.new("RGB", (width, height), "white")
  d = ImageDraw.Draw(img)
  font = _font()
  y = 0
  for (label, _), a in zip(rows, arrays):
    img.paste(Image.fromarray(a), (label_width, y))
    d.text((4, y + a.shape[0] // 2 - 5), label, fill="black", font=font)
    y += a.shape[0]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path
