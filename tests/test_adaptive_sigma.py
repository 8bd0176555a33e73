"""Adaptive sigma (`btrans.adaptive_sigma`, off by default): sigma rises when too few groups are informative,
falls when too many are, stays within its bounds, and every trajectory's request carries the step's sigma. The
whole loop through verl's main_ppo is in test_cpu_main_ppo_end_to_end.py."""

from __future__ import annotations

import math

import pytest

from btrans_verl.verl.exploration import SigmaController, controller_for
from btrans_verl.verl.rollout import mind_for
from btrans_verl.verl.settings import AdaptiveSigmaSettings, BTransSettings


def _controller(sigma=0.05, **kw):
    return SigmaController(sigma, AdaptiveSigmaSettings(enable=True, **kw))


def test_sigma_rises_below_target_and_falls_above_it():
    c = _controller(target=0.5, gain=1.0)
    assert c.observe(0.1) == pytest.approx(0.05 * math.exp(0.4))  # all answers alike: explore more
    up = c.sigma
    assert c.observe(0.9) == pytest.approx(up * math.exp(-0.4))  # every group informative: explore less
    assert c.observe(0.5) == pytest.approx(c.sigma)  # on target: unchanged
    assert c.observe(math.nan) == c.sigma and c.steps == 3  # no signal this step: unchanged, not counted


def test_sigma_stays_within_its_bounds():
    c = _controller(sigma=0.1, sigma_min=0.05, sigma_max=0.2, gain=10.0)
    assert c.observe(0.0) == 0.2
    assert c.observe(1.0) == 0.05
    with pytest.raises(ValueError, match="share in \\[0, 1\\]"):
        c.observe(1.5)


def test_settings_refuse_what_the_controller_cannot_do():
    with pytest.raises(ValueError, match=r"btrans.adaptive_sigma.target must be in \(0, 1\)"):
        AdaptiveSigmaSettings(target=1.0)
    with pytest.raises(ValueError, match="btrans.adaptive_sigma.gain must be > 0"):
        AdaptiveSigmaSettings(gain=0)
    with pytest.raises(ValueError, match="0 < sigma_min <= sigma_max"):
        AdaptiveSigmaSettings(sigma_min=0.3, sigma_max=0.2)
    with pytest.raises(ValueError, match="btrans.adaptive_sigma.sigma_min must be a finite number"):
        AdaptiveSigmaSettings(sigma_min="0.1")
    with pytest.raises(ValueError, match=r"btrans.sigma \(0.6\) must lie in"):
        BTransSettings(sigma=0.6, adaptive_sigma=AdaptiveSigmaSettings(enable=True))
    with pytest.raises(ValueError, match="needs btrans.enable=true"):
        BTransSettings(enable=False, adaptive_sigma=AdaptiveSigmaSettings(enable=True))
    node = BTransSettings.from_config({"adaptive_sigma": {"enable": True, "target": 0.3}})
    assert node.adaptive_sigma.target == 0.3 and node.to_dict()["adaptive_sigma"]["enable"] is True
    with pytest.raises(ValueError, match=r"btrans.adaptive_sigma: unknown key\(s\) \['targt'\]"):
        BTransSettings.from_config({"adaptive_sigma": {"targt": 0.3}})


def test_one_controller_per_run_and_none_when_sigma_is_fixed():
    assert controller_for(BTransSettings()) is None
    run = BTransSettings(seed=7, adaptive_sigma=AdaptiveSigmaSettings(enable=True))
    assert controller_for(run) is controller_for(BTransSettings(seed=7, adaptive_sigma=AdaptiveSigmaSettings(
        enable=True)))  # the manager and the replay buffer share it
    assert controller_for(run).sigma == run.sigma


def test_the_request_carries_the_steps_sigma():
    s = BTransSettings(adaptive_sigma=AdaptiveSigmaSettings(enable=True))
    seed, extra = mind_for(s, validate=False, seed=12, sigma=0.0731)
    assert seed == 12 and extra["btrans"]["sigma"] == 0.0731
    assert mind_for(s, validate=False, seed=12)[1]["btrans"]["sigma"] == s.sigma  # fixed sigma: btrans.sigma
