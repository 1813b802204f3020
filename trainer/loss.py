"""The weighted diffusion loss. A weighting is defined in eps-MSE units (trainer.weighting); the
loss converts so that it means the same for eps, x0 and v targets:
    loss(t) = w(t) * c(t) * ||target - model||^2,   c(t) * MSE_target = MSE_eps."""
from __future__ import annotations

import torch

from trainer.diffusion import learned_log_variance, posterior_mean, predict_x0_eps, target_factor, training_target, vb_terms_bpd
from trainer.schedules import Schedule, _gather as gather
from trainer.weighting import uses_progress, weight_table


class WeightedLoss:
    """Built once per run: the weight table w(t), the target conversion c(t) and the t sampler.

    t_sampling="uniform": t ~ U{0..T-1}, per-sample weight w(t).
    t_sampling="importance": t ~ p(t) proportional to w(t), per-sample weight mean(w): the same
    expected gradient as uniform sampling with lower variance."""

    def __init__(self, schedule: Schedule, weighting: str, params: dict | None = None, *, target: str = "eps",
                 normalize: bool = False, t_sampling: str = "uniform", learn_sigma: bool = False):
        if t_sampling not in ("uniform", "importance"):
            raise ValueError(f"unknown t_sampling {t_sampling!r}; valid: uniform, importance")
        self.schedule, self.target, self.t_sampling, self.learn_sigma = schedule, target, t_sampling, learn_sigma
        self.weighting, self.params, self.normalize = weighting, params, normalize
        self.curriculum = uses_progress(weighting)
        self.factor = target_factor(schedule, target)
        self.progress = -1.0
        self.set_progress(0.0 if self.curriculum else 1.0)

    def set_progress(self, progress: float) -> None:
        """A curriculum's table at this fraction of training (recomputed per 0.1% of progress);
        a no-op for the other weightings."""
        progress = round(min(max(progress, 0.0), 1.0), 3)
        if progress == self.progress or (not self.curriculum and self.progress >= 0):
            return
        self.progress = progress
        self.weights = weight_table(self.schedule.snr, self.weighting, self.params, normalize=self.normalize,
                                    progress=progress)  # float64 [T]
        self.probs = self.weights / self.weights.sum()

    def at_step(self, step: int, total_steps: int) -> None:
        self.set_progress(step / max(total_steps, 1))

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.t_sampling == "importance":
            return torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return torch.randint(0, self.schedule.num_timesteps, (n,), generator=generator)

    def sample_weight(self, t: torch.Tensor) -> torch.Tensor:
        w = self.weights.mean().expand(t.shape) if self.t_sampling == "importance" else self.weights[t]
        return w * self.factor[t]

    def __call__(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, class_labels=None) -> dict[str, torch.Tensor]:
        """Unreduced per-sample terms [N]: loss, mse (target units), mse_eps (eps units), vb."""
        x_t = self.schedule.q_sample(x0, t, noise)
        out = model(x_t, t, class_labels=class_labels).sample
        if self.learn_sigma:
            out, v = out.chunk(2, dim=1)
        target = training_target(self.target, x0, noise, t, self.schedule)
        mse = (out.float() - target).pow(2).flatten(1).mean(1)
        t_cpu = t.cpu()  # the float64 tables stay on the CPU; index them there, then move
        factor = self.factor[t_cpu].to(x0.device, torch.float32)
        terms = {"mse": mse, "mse_eps": factor * mse}
        terms["loss"] = self.sample_weight(t_cpu).to(x0.device, torch.float32) * mse
        if self.learn_sigma:
            # ADM hybrid loss: unweighted VB term trains the variance; the mean is frozen (stop-grad)
            x0_hat, _ = predict_x0_eps(self.target, out.detach().float(), x_t, t, self.schedule)
            log_var = learned_log_variance(self.schedule, v.float(), t)
            vb = vb_terms_bpd(self.schedule, x0, x_t, t, posterior_mean(self.schedule, x0_hat, x_t, t), log_var)
            terms["vb"] = vb * (self.schedule.num_timesteps / 1000.0)  # ADM RESCALED_MSE
            terms["loss"] = terms["loss"] + terms["vb"]
        return terms


def quartile_of(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Timestep quartile 0..3 (improved-diffusion log_loss_dict)."""
    return (4 * t // num_timesteps).clamp(max=3)
