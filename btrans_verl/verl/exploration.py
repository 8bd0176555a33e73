"""Adaptive sigma: the exploration intensity steered, step by step, toward a target GRPO signal.

    python -m verl.trainer.main_ppo +btrans=on btrans.adaptive_sigma.enable=true btrans.adaptive_sigma.target=0.5

The paper calls sigma "the control for exploration intensity" and leaves adapting it as future work. The signal
here is the share of informative groups of the step just trained (`btrans/informative_groups`: groups whose
rewards are not all equal, the only ones in which GRPO's advantage is non-zero). Too few (every answer alike):
explore more; too many: explore less. Multiplicative and bounded, so sigma stays positive and moves by the same
factor up as down:

    sigma_{t+1} = clip(sigma_t * exp(gain * (target - signal_t)), sigma_min, sigma_max),   sigma_0 = btrans.sigma

A step without a signal (no group of two or more trajectories) leaves sigma unchanged. The controller lives in
the trainer process: the agent-loop manager reads `sigma` before each step's rollout (`rollout.py`, column
`btrans_step_sigma`), the replay buffer calls `observe` after each step's sample (`replay_buffer.py`). Every
trajectory stores the sigma its mind was drawn with (field `btrans_sigma`) and its vLLM request carries it, so
every mind stays replayable from (seed, sigma). A resumed run restarts from btrans.sigma.
"""

from __future__ import annotations

import math

from btrans_verl.verl.settings import AdaptiveSigmaSettings, BTransSettings


class SigmaController:
    """The control law of the module docstring. `sigma` is what the next step's minds use."""

    def __init__(self, sigma: float, settings: AdaptiveSigmaSettings):
        if not settings.sigma_min <= sigma <= settings.sigma_max:
            raise ValueError(f"adaptive sigma: the start {sigma!r} is outside [{settings.sigma_min!r}, "
                             f"{settings.sigma_max!r}]")
        self.sigma, self.settings = float(sigma), settings
        self.steps = 0

    def observe(self, signal: float) -> float:
        """Update from the last step's informative-group share (NaN: no signal, no change); return the new sigma."""
        if signal is None or math.isnan(signal):
            return self.sigma
        if not 0.0 <= signal <= 1.0:
            raise ValueError(f"adaptive sigma: the signal is a share in [0, 1], got {signal!r}")
        s = self.settings
        self.sigma = min(max(self.sigma * math.exp(s.gain * (s.target - signal)), s.sigma_min), s.sigma_max)
        self.steps += 1
        return self.sigma


_CONTROLLERS: dict[tuple, SigmaController] = {}


def controller_for(settings: BTransSettings) -> SigmaController | None:
    """This process's controller of the run with these settings (one per run), or None when sigma is fixed."""
    if not (settings.enable and settings.adaptive_sigma.enable):
        return None
    a = settings.adaptive_sigma
    key = (settings.seed, settings.sigma, a.target, a.gain, a.sigma_min, a.sigma_max)
    if key not in _CONTROLLERS:
        _CONTROLLERS[key] = SigmaController(settings.sigma, a)
    return _CONTROLLERS[key]
