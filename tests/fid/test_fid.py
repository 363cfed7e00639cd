"""The FID port equals pytorch-fid: with the same random weights in pytorch-fid's
``InceptionV3`` (its weights download patched to return them) and in the Flax port, the
pool3 features of random images agree to 1e-4 relative, the resize to 299 equals
``F.interpolate``, grey images are repeated to RGB, and the Fréchet distance of random
statistics equals ``calculate_frechet_distance`` to 1e-6 relative; the statistics file
round-trips in pytorch-fid's format and bad files are one-line errors naming them."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_fid.inception as pytorch_fid   # a test dependency (requirements-test.txt)
import torch
from pytorch_fid import fid_score

from dgmjax.convert.inception import load_inception
from dgmjax.fid import frechet, inception


def _random_fid_state_dict(seed: int) -> dict:
  """An Inception3 state_dict in the layout of pytorch-fid's weights file, with random
  conv weights and BN statistics (scaled so activations stay O(1) over 94 layers)."""
  torch.manual_seed(seed)
  net = pytorch_fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  for name, cls, arg in (("Mixed_5b", pytorch_fid.FIDInceptionA, (192, 32)),
                         ("Mixed_5c", pytorch_fid.FIDInceptionA, (256, 64)),
                         ("Mixed_5d", pytorch_fid.FIDInceptionA, (288, 64)),
                         ("Mixed_6b", pytorch_fid.FIDInceptionC, (768, 128)),
                         ("Mixed_6c", pytorch_fid.FIDInceptionC, (768, 160)),
                         ("Mixed_6d", pytorch_fid.FIDInceptionC, (768, 160)),
                         ("Mixed_6e", pytorch_fid.FIDInceptionC, (768, 192)),
                         ("Mixed_7b", pytorch_fid.FIDInceptionE_1, (1280,)),
                         ("Mixed_7c", pytorch_fid.FIDInceptionE_2, (2048,))):
    setattr(net, name, cls(*arg))
  sd = net.state_dict()
  g = torch.Generator().manual_seed(seed)
  for k, v in sd.items():
    if k.endswith("conv.weight"):
      fan_in = v[0].numel()
      sd[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
    elif k.endswith("running_var"):
      sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    elif k.endswith(("running_mean", "bn.bias")):
      sd[k] = 0.1 * torch.randn(v.shape, generator=g)
    elif k.endswith("bn.weight"):
      sd[k] = 0.8 + 0.4 * torch.rand(v.shape, generator=g)
  return sd


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  sd = _random_fid_state_dict(0)
  path = tmp_path_factory.mktemp("fid") / "pt_inception-random.pth"
  torch.save(sd, path)
  return sd, str(path)


def _pytorch_fid_model(sd, monkeypatch, resize: bool):
  monkeypatch.setattr(pytorch_fid, "load_state_dict_from_url", lambda *a, **k: sd)
  return pytorch_fid.InceptionV3([3], resize_input=resize, normalize_input=True).eval()


def test_features_equal_pytorch_fid_with_the_same_weights(weights, monkeypatch):
  sd, path = weights
  params = load_inception(path)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)      # the smallest input size
  ours = np.asarray(inception.features(params, x, 256, resize=False))
  model = _pytorch_fid_model(sd, monkeypatch, resize=False)
  with torch.no_grad():
    want = model(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).astype(np.float32) / 255))[0]
  want = want[:, :, 0, 0].numpy()
  assert ours.shape == want.shape == (2, 2048)
  np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_resize_and_grey_images_as_pytorch_fid():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 17, (2, 8, 8, 1), dtype=np.uint8)
  ours = np.asarray(inception.preprocess(x, 17))
  t = torch.from_numpy(np.repeat(x, 3, -1).transpose(0, 3, 1, 2).astype(np.float32) / 16)
  want = 2 * torch.nn.functional.interpolate(t, size=(299, 299), mode="bilinear",
                                             align_corners=False) - 1
  np.testing.assert_allclose(ours, want.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match=r"FID needs images \[B,H,W,1 or 3\]"):
    inception.preprocess(np.zeros((1, 8, 8, 2), np.uint8), 17)


def test_frechet_distance_equals_pytorch_fid_and_stats_round_trip(tmp_path):
  rng = np.random.default_rng(2)
  d = 64
  feats = [rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) * s for s in (1.0, 1.3)]
  stats = []
  for f in feats:
    running = frechet.RunningStats(d)
    for chunk in np.array_split(f, 7):
      running.add(chunk)
    mu, sigma = running.finish()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-8)
    stats.append((mu, sigma))
  (m1, s1), (m2, s2) = stats
  want = fid_score.calculate_frechet_distance(m1, s1, m2, s2)
  assert frechet.frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-6)
  assert frechet.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6)
  path = frechet.save_stats(str(tmp_path / "ref.npz"), m1, s1)
  with np.load(path) as f:                               # pytorch-fid's reader
    np.testing.assert_array_equal(f["mu"][:], m1)
  got = frechet.load_stats(path, dim=d)
  np.testing.assert_array_equal(got[1], s1)
  np.savez(tmp_path / "bad.npz", mean=m1)
  with pytest.raises(ValueError, match=r"bad.npz is not FID statistics"):
    frechet.load_stats(str(tmp_path / "bad.npz"), dim=d)
  with pytest.raises(ValueError, match=r"ref.npz holds mu \(64,\)"):
    frechet.load_stats(path)
