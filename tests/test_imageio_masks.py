"""Completion masks are read by what the PNG shows, in every PNG mode: the same 8x8
checkerboard (32 observed pixels) drawn as 1-bit, palette, grey, 16-bit grey, RGB, RGBA
and grey+alpha gives the same mask; grey pixels, a wrong size and a non-PNG are refused
with one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dgmjax import imageio

H = W = 8
BOARD = (np.add.outer(np.arange(H), np.arange(W)) % 2 == 0)    # 32 True


def _save(tmp_path, name, img):
  path = str(tmp_path / name)
  img.save(path)
  return path


def _drawings(tmp_path):
  white = BOARD.astype(np.uint8) * 255
  yield "1-bit", Image.fromarray(white).convert("1")
  pal = Image.fromarray(BOARD.astype(np.uint8), "P")      # index 1 = white, 0 = black...
  pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
  yield "palette", pal
  inverted = Image.fromarray((~BOARD).astype(np.uint8), "P")   # ...or the other way round
  inverted.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
  yield "palette (index 0 white)", inverted
  yield "grey", Image.fromarray(white)
  yield "grey 16-bit", Image.fromarray(BOARD.astype(np.uint16) * 65535)
  yield "rgb", Image.fromarray(np.stack([white] * 3, -1))
  rgba = np.full((H, W, 4), 255, np.uint8)
  rgba[..., 3] = white                                     # transparent shows black
  yield "rgba (alpha)", Image.fromarray(rgba)
  yield "grey+alpha", Image.fromarray(np.stack([white, np.full_like(white, 255)], -1), "LA")


def test_every_png_mode_gives_the_pixels_the_picture_shows(tmp_path):
  for i, (what, img) in enumerate(_drawings(tmp_path)):
    mask = imageio.read_mask_png(_save(tmp_path, f"m{i}.png", img), H, W)
    np.testing.assert_array_equal(mask, BOARD, err_msg=what)
    assert mask.sum() == 32, what


def test_ambiguous_wrong_size_and_unreadable_masks_are_refused(tmp_path):
  grey = BOARD.astype(np.uint8) * 255
  grey[2, 3] = 128
  path = _save(tmp_path, "grey.png", Image.fromarray(grey))
  with pytest.raises(ValueError, match=r"grey.png is ambiguous: 1 pixel.*row 2, column 3"):
    imageio.read_mask_png(path, H, W)
  with pytest.raises(ValueError, match=r"must be 4x8"):
    imageio.read_mask_png(path, 4, W)
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"bad.png is not a readable PNG"):
    imageio.read_mask_png(str(bad), H, W)
  with pytest.raises(ValueError, match="not found"):
    imageio.read_mask_png(str(tmp_path / "none.png"), H, W)
