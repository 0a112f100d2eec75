"""Speedup, best share and corpus diagnostics against answers known in closed form."""
import math

import numpy as np
import pytest

from synthjax.analyze import diagnostics, share, speedup
from synthjax.errors import UserError


def test_speedup_of_a_curve_with_k_times_more_effective_data_is_k():
  natural = dict(E=2.0, B=400.0, beta=0.3)
  k = 4.0
  mixture = dict(E=2.0, B=400.0 / k ** 0.3, beta=0.3)  # L_mix(D) = L_nat(k D)
  rows = speedup.speedup_table(natural, mixture, [1e7, 1e8, 1e9], (1e6, 1e10), (1e7, 1e8))
  for r in rows:
    assert r["speedup"] == pytest.approx(k, rel=1e-9)
    assert r["loss"] == pytest.approx(speedup.loss_at(natural, k * r["D"]))
  assert [r["extrapolated"] for r in rows] == [False, False, True]


def test_speedup_is_infinite_below_natural_floor():
  natural = dict(E=2.5, B=400.0, beta=0.3)
  mixture = dict(E=2.0, B=400.0, beta=0.3)
  row = speedup.speedup_table(natural, mixture, [1e12], (1, 1e13), (1, 1e13))[0]
  assert row["loss"] < 2.5 and math.isinf(row["speedup"]) and row["extrapolated"]


def test_best_share_of_a_parabola_is_its_vertex():
  shares = [0, 1 / 3, 2 / 3, 1]
  out = share.best_share(shares, [3.0 + (r - 0.3) ** 2 for r in shares])
  assert out["best_share"] == pytest.approx(0.3, abs=1e-9)
  assert out["interval"] == pytest.approx((0.3, 0.3), abs=1e-6)  # no residual, no spread
  # Monotone losses put the best share at an end of [0, 1].
  assert share.best_share(shares, [3.0, 3.1, 3.2, 3.3])["best_share"] == 0.0
  noisy = share.best_share(shares + shares, [3.0 + (r - 0.3) ** 2 + e for r, e in
                                             zip(shares * 2, [0.01, -0.01, 0.01, -0.01] * 2)])
  lo, hi = noisy["interval"]
  assert lo < 0.3 < hi
  with pytest.raises(UserError, match="3 or more distinct shares"):
    share.best_share([0, 1], [3.0, 3.1])


def test_corpus_diagnostics_on_known_texts():
  natural = ["the cat sat on the mat", "a dog ran in the park"]
  assert diagnostics.compare(natural, natural)["unigram_kl_syn_nat"] == pytest.approx(0.0)
  repetitive = ["the cat the cat the cat the cat"] * 2
  out = diagnostics.compare(natural, repetitive)
  assert out["unigram_kl_syn_nat"] > 0.1 and out["bigram_kl_syn_nat"] > 0.1
  assert out["vocab_coverage"] == pytest.approx(2 / 10)  # 'the', 'cat' of 10 natural types
  assert out["synthetic/distinct_1"] == pytest.approx(2 / 16)
  assert out["synthetic/compression_ratio"] < out["natural/compression_ratio"]
  novel = diagnostics.compare(natural, ["the cat sat on a log"])
  # 3-grams of the synthetic text: (the cat sat) (cat sat on) are natural, (sat on a) (on a log) not
  assert novel["novel_3gram_share"] == pytest.approx(0.5)


def test_domain_gaps_subtract_natural_at_same_size_and_budget():
  recs = [{"N": 1, "D": 2, "mixture": "natural", "share": 0.0, "domains": {"x": 3.0}},
          {"N": 1, "D": 2, "mixture": "m", "share": 0.5, "domains": {"x": 3.25}},
          {"N": 1, "D": 9, "mixture": "m", "share": 0.5, "domains": {"x": 1.0}}]
  assert diagnostics.domain_gaps(recs) == [
      {"N": 1, "D": 2, "mixture": "m", "domain": "x", "gap": 0.25}]
