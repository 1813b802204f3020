"""The weighted diffusion loss. A weighting is defined in eps-MSE units (trainer.weighting); the
loss converts so that it means the same for eps, x0 and v targets:
    loss(t) = w(t) * c(t) * ||target - model||^2,   c(t) * MSE_target = MSE_eps.
t is drawn by a t-sampling (trainer.t_sampling); the unbiased ones also multiply by 1/(T p(t)).
With a learned weighting (EDM2) the per-t loss is w(t) c(t) MSE / exp(u(t)) + u(t)."""
from __future__ import annotations

import math

import torch

from trainer import t_sampling as TS
from trainer.diffusion import learned_log_variance, posterior_mean, predict_x0_eps, target_factor, training_target, vb_terms_bpd
from trainer.schedules import Schedule, _gather as gather
from trainer.weighting import uses_progress, weight_table


class LogVar(torch.nn.Module):
    """EDM2's learned uncertainty u(lambda) (Karras et al. 2024, NVlabs/edm2 networks_edm2.py logvar_fourier
    and logvar_linear, trained by training_loop.py EDM2Loss): a linear map of fixed random Fourier features
    of c_noise = ln(sigma)/4 = -lambda/8 (lambda = log SNR), so u is a smooth function of the noise level
    shared by neighbouring t. It lives beside the UNet (never in unet/ or unet_ema/, which diffusers
    loads), is trained by the same optimizer and saved in training_state.pt. The linear map starts at
    zero (EDM2 starts it random), so training starts from w(t) itself."""

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)  # its own generator: the global RNG (dropout, init) is untouched
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels, generator=g))
        self.weight = torch.nn.Parameter(torch.zeros(channels))
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, lam: torch.Tensor) -> torch.Tensor:
        """u at each lambda (float32 [N]); computed in float32 even under autocast."""
        with torch.autocast(lam.device.type, enabled=False):
            c_noise = -lam.float() / 8
            features = torch.cos(c_noise[:, None] * self.freqs + self.phases) * math.sqrt(2)  # EDM2 MPFourier
            return features @ self.weight + self.bias


class WeightedLoss:
    """Built once per run: the weight table w(t), the target conversion c(t), the t sampler and,
    when asked for, the sampler's loss history and the learned log-variance u.

    t_sampling="uniform": t ~ U{0..T-1}, per-sample weight w(t).
    t_sampling="importance": t ~ p(t) proportional to w(t), per-sample weight mean(w): the same
    expected gradient as uniform sampling with lower variance.
    t_sampling="lognormal" | "logit_normal": t ~ p(t) of EDM / SD3, per-sample weight w(t): the
    density is part of the objective.
    t_sampling="loss_aware": t ~ p(t) from the recent losses (record() feeds them), per-sample
    weight w(t) / (T p(t)) on the whole per-t loss (improved-diffusion): uniform's objective.
    learned_weighting: per-t loss w(t) c(t) MSE / exp(u(t)) + u(t) (EDM2), u = self.logvar."""

    def __init__(self, schedule: Schedule, weighting: str, params: dict | None = None, *, target: str = "eps",
                 normalize: bool = False, t_sampling: str = "uniform", t_sampling_params: dict | None = None,
                 learned_weighting: bool = False, learn_sigma: bool = False):
        self.t_params = TS.validate(t_sampling, t_sampling_params)
        self.schedule, self.target, self.t_sampling, self.learn_sigma = schedule, target, t_sampling, learn_sigma
        self.weighting, self.params, self.normalize = weighting, params, normalize
        self.curriculum = uses_progress(weighting)
        self.factor = target_factor(schedule, target)
        self.lam = schedule.snr.log()  # float64 [T]
        k = self.t_params.get("history_per_term")
        self.history = TS.LossHistory(schedule.num_timesteps, int(k)) if t_sampling == "loss_aware" else None
        self.logvar = LogVar() if learned_weighting else None
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
        self._update_probs()

    def _update_probs(self) -> None:
        """p(t), float64 [T]: what sample_t draws from now."""
        self.probs = TS.probs(self.t_sampling, self.schedule.snr, self.t_params, weights=self.weights, history=self.history)

    def at_step(self, step: int, total_steps: int) -> None:
        self.set_progress(step / max(total_steps, 1))

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.t_sampling == "uniform":
            return torch.randint(0, self.schedule.num_timesteps, (n,), generator=generator)
        return torch.multinomial(self.probs, n, replacement=True, generator=generator)

    def importance_weight(self, t: torch.Tensor) -> torch.Tensor:
        """1/(T p(t)) for the unbiased samplers (the objective stays uniform sampling's), else 1."""
        if self.t_sampling in TS.UNBIASED:
            return 1.0 / (self.schedule.num_timesteps * self.probs[t])
        return torch.ones(t.shape, dtype=torch.float64)

    def sample_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The weight of a sample's target-units MSE: w(t) c(t) times its importance weight."""
        if self.t_sampling == "importance":
            w = self.weights.mean().expand(t.shape)  # = w(t) / (T p(t)) with p proportional to w
        elif self.t_sampling in TS.UNBIASED:
            w = self.weights[t] * self.importance_weight(t)
        else:
            w = self.weights[t]
        return w * self.factor[t]

    def record(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """loss_aware: the per-t losses (terms["loss_t"]) of a whole global batch, in batch order."""
        self.history.update(t.cpu(), losses.detach().cpu())
        self._update_probs()

    def logvar_table(self) -> torch.Tensor:
        """The learned u(t) at every t (float64 [T])."""
        with torch.no_grad():
            return self.logvar(self.lam.to(self.logvar.freqs.device)).cpu().double()

    def learned_weights(self) -> torch.Tensor:
        """The weighting a learned run trains with now, in eps units: w(t) / exp(u(t)) (float64 [T])."""
        return self.weights / self.logvar_table().exp()

    def state_dict(self) -> dict:
        """What a checkpoint must keep for a resumed run to replay the uninterrupted one ({} if nothing)."""
        out = {}
        if self.history is not None:
            out["history"] = self.history.state_dict()
        if self.logvar is not None:
            out["logvar"] = {k: v.detach().cpu().clone() for k, v in self.logvar.state_dict().items()}
        return out

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise ValueError(f"the saved loss state lacks {', '.join(missing)} (t_sampling={self.t_sampling!r}, "
                             f"learned_weighting={self.logvar is not None})")
        if self.history is not None:
            self.history.load_state_dict(state["history"])
            self._update_probs()
        if self.logvar is not None:
            self.logvar.load_state_dict(state["logvar"])

    def __call__(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, class_labels=None) -> dict[str, torch.Tensor]:
        """Unreduced per-sample terms [N]: loss, mse (target units), mse_eps (eps units), vb, and for
        loss_aware loss_t (the per-t loss before the importance weight: what record() wants)."""
        x_t = self.schedule.q_sample(x0, t, noise)
        out = model(x_t, t, class_labels=class_labels).sample
        if self.learn_sigma:
            out, v = out.chunk(2, dim=1)
        target = training_target(self.target, x0, noise, t, self.schedule)
        mse = (out.float() - target).pow(2).flatten(1).mean(1)
        t_cpu = t.cpu()  # the float64 tables stay on the CPU; index them there, then move
        factor = self.factor[t_cpu].to(x0.device, torch.float32)
        terms = {"mse": mse, "mse_eps": factor * mse}
        outer = self.t_sampling == "loss_aware"  # its importance weight multiplies the whole per-t loss
        w = self.weights[t_cpu] * self.factor[t_cpu] if outer else self.sample_weight(t_cpu)
        terms["loss"] = w.to(x0.device, torch.float32) * mse
        if self.logvar is not None:  # EDM2Loss: w/exp(u) * mse + u; u's term carries the importance weight w holds
            u = self.logvar(self.lam[t_cpu].to(x0.device))
            iw = 1.0 if outer else self.importance_weight(t_cpu).to(x0.device, torch.float32)
            terms["loss"] = terms["loss"] / u.exp() + iw * u
        if self.learn_sigma:
            # ADM hybrid loss: unweighted VB term trains the variance; the mean is frozen (stop-grad)
            x0_hat, _ = predict_x0_eps(self.target, out.detach().float(), x_t, t, self.schedule)
            log_var = learned_log_variance(self.schedule, v.float(), t)
            vb = vb_terms_bpd(self.schedule, x0, x_t, t, posterior_mean(self.schedule, x0_hat, x_t, t), log_var)
            terms["vb"] = vb * (self.schedule.num_timesteps / 1000.0)  # ADM RESCALED_MSE
            terms["loss"] = terms["loss"] + terms["vb"]
        if outer:
            terms["loss_t"] = terms["loss"].detach()
            terms["loss"] = self.importance_weight(t_cpu).to(x0.device, torch.float32) * terms["loss"]
        return terms


def quartile_of(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Timestep quartile 0..3 (improved-diffusion log_loss_dict)."""
    return (4 * t // num_timesteps).clamp(max=3)
