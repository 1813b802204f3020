"""The loss: per-sample terms, target equivalence, importance sampling, the hybrid VB term."""
import pytest
import torch

from trainer.diffusion import predict_x0_eps, target_factor
from trainer.loss import WeightedLoss, quartile_of
from trainer.models import build_unet
from trainer.schedules import get_schedule
from trainer.weighting import WEIGHTINGS

S = get_schedule("linear", 1000)


class Fixed(torch.nn.Module):
    """A 'model' returning a fixed tensor, in whatever target units we give it."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, class_labels=None):
        return type("Out", (), {"sample": self.out})()


def _same_prediction_in_each_target(x0, noise, t, delta):
    """An eps prediction eps + delta, expressed as eps, x0 and v outputs of one model."""
    x_t = S.q_sample(x0, t, noise)
    eps_hat = noise + delta
    x0_hat, _ = predict_x0_eps("eps", eps_hat, x_t, t, S)
    a = S.sqrt_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    s = S.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    v_hat = a * eps_hat - s * x0_hat
    return {"eps": eps_hat, "x0": x0_hat, "v": v_hat}


@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_a_weighting_means_the_same_for_every_target(weighting):
    torch.manual_seed(0)
    x0, noise = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(6, 1, 8, 8)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    outs = _same_prediction_in_each_target(x0.double(), noise.double(), t, 0.1 * torch.randn(6, 1, 8, 8).double())
    losses = {k: WeightedLoss(S, weighting, target=k)(Fixed(v), x0.double(), t, noise.double()) for k, v in outs.items()}
    for k in ("x0", "v"):
        torch.testing.assert_close(losses[k]["loss"], losses["eps"]["loss"], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(losses[k]["mse_eps"], losses["eps"]["mse"], rtol=1e-5, atol=1e-9)
        # loss in x0/v units times the conversion factor = eps-MSE times the weight
        w = WeightedLoss(S, weighting).weights[t]
        torch.testing.assert_close(losses[k]["mse"] * target_factor(S, k)[t] * w, losses["eps"]["mse"].double() * w, rtol=1e-5, atol=1e-9)


def test_terms_are_per_sample_and_weighted():
    model = build_unet("tiny", in_channels=1, sample_size=8)
    x0, noise, t = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 500, 998, 999])
    terms = WeightedLoss(S, "debias")(model, x0, t, noise)
    assert set(terms) == {"loss", "mse", "mse_eps"}
    assert all(v.shape == (5,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["mse"] * S.snr[t].rsqrt().float())


def test_importance_sampling_has_the_uniform_expected_loss():
    uni, imp = WeightedLoss(S, "debias"), WeightedLoss(S, "debias", t_sampling="importance")
    f = torch.linspace(0.5, 2.0, 1000, dtype=torch.float64)  # any per-t loss
    all_t = torch.arange(1000)
    expected_uniform = (uni.sample_weight(all_t) * f).mean()
    expected_importance = (imp.probs * imp.sample_weight(all_t) * f).sum()
    assert expected_importance.item() == pytest.approx(expected_uniform.item(), rel=1e-12)
    t = imp.sample_t(200_000, generator=torch.Generator().manual_seed(0))
    assert (t >= 900).double().mean().item() == pytest.approx(0.566, abs=0.01)


def test_learn_sigma_adds_an_unweighted_vb_term_with_frozen_mean():
    torch.manual_seed(0)
    x0, noise, t = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8), torch.tensor([0, 3, 400, 999])
    out = torch.randn(4, 2, 8, 8, requires_grad=True)
    terms = WeightedLoss(S, "debias", learn_sigma=True)(Fixed(out), x0, t, noise)
    assert torch.isfinite(terms["vb"]).all() and (terms["vb"] >= 0).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] * S.snr[t].rsqrt().float() + terms["vb"])
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert grad[:, :1].abs().max() == 0  # stop-gradient on the mean
    assert grad[:, 1:].abs().max() > 0  # the variance channel learns from VB


def test_unknown_target_and_sampling_are_refused():
    with pytest.raises(ValueError, match="valid targets: eps, x0, v"):
        WeightedLoss(S, "constant", target="score")
    with pytest.raises(ValueError, match="valid: uniform, importance"):
        WeightedLoss(S, "constant", t_sampling="sorted")


def test_quartiles():
    assert quartile_of(torch.tensor([0, 249, 250, 500, 999]), 1000).tolist() == [0, 0, 1, 2, 3]
