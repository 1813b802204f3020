"""The loss: per-sample terms, target equivalence, importance sampling, the hybrid VB term."""
import math

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


def _eps_batch(mse_per_sample, shape=(1, 2, 2)):
    """x0, noise and a Fixed eps prediction whose eps-MSE per sample is mse_per_sample."""
    n = len(mse_per_sample)
    x0, noise = torch.zeros(n, *shape), torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    out = noise + mse_per_sample.float().sqrt().view(-1, 1, 1, 1) * torch.ones(n, *shape)
    return x0, noise, Fixed(out)


def test_learned_weighting_is_edm2s_uncertainty_loss():
    loss = WeightedLoss(S, "debias", learned_weighting=True)
    assert (loss.logvar_table() == 0).all()  # starts as w(t) itself
    torch.testing.assert_close(loss.learned_weights(), loss.weights)
    with torch.no_grad():
        loss.logvar.bias.fill_(0.7)
    t, mse = torch.tensor([10, 500, 990]), torch.tensor([4.0, 1.0, 0.01])
    x0, noise, model = _eps_batch(mse)
    terms = loss(model, x0, t, noise)
    w = S.snr[t].rsqrt().float()
    torch.testing.assert_close(terms["loss"], w * terms["mse"] / math.exp(0.7) + 0.7)
    torch.testing.assert_close(loss.learned_weights(), loss.weights / math.exp(0.7))
    # d loss_i / d u_i = 1 - w mse / exp(u): u rises (the learned weight falls) where w * mse is large
    grads = [torch.autograd.grad(terms["loss"][i], loss.logvar.bias, retain_graph=True)[0].item() for i in range(3)]
    torch.testing.assert_close(torch.tensor(grads), 1 - (w * terms["mse"]).detach() / math.exp(0.7))
    big, small = (w * terms["mse"]).argmax(), (w * terms["mse"]).argmin()
    assert grads[big] < 0 < grads[small]


def test_learned_log_variance_converges_to_log_of_weighted_mse():
    # the minimiser of w/exp(u) mse + u is u = log(w mse): the learned weight w/exp(u) = 1/mse balances every t
    loss = WeightedLoss(S, "p2", learned_weighting=True)
    t = torch.arange(0, 1000, 5)
    mse = (0.05 * torch.exp(torch.sin(S.snr[t].log() / 3))).float()  # a smooth per-t MSE
    x0, noise, model = _eps_batch(mse)
    opt = torch.optim.Adam(loss.logvar.parameters(), lr=0.02)
    for _ in range(1500):
        opt.zero_grad()
        loss(model, x0, t, noise)["loss"].mean().backward()
        opt.step()
    target = (loss.weights[t] * mse.double()).log()
    assert (loss.logvar_table()[t] - target).abs().max().item() < 0.05


def test_loss_aware_weights_by_inverse_probability_and_records_the_per_t_loss():
    s = get_schedule("linear", 4)
    loss = WeightedLoss(s, "debias", t_sampling="loss_aware", t_sampling_params={"history_per_term": 1, "uniform_prob": 0.5})
    t, mse = torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    x0, noise, model = _eps_batch(mse)
    terms = loss(model, x0, t, noise)
    w = s.snr.rsqrt().float()
    torch.testing.assert_close(terms["loss_t"], w * terms["mse"])  # warm-up: p uniform, weight 1/(T p) = 1
    torch.testing.assert_close(terms["loss"], terms["loss_t"])
    loss.record(t, terms["loss_t"])
    rms = (w * terms["mse"]).double()
    expected = 0.5 * rms / rms.sum() + 0.5 / 4
    torch.testing.assert_close(loss.probs, expected)
    terms = loss(model, x0, t, noise)
    torch.testing.assert_close(terms["loss"], terms["loss_t"] / (4 * expected.float()))
    torch.testing.assert_close(loss.sample_weight(t).float(), w / (4 * expected.float()))
    # unbiased: the expected loss under p equals uniform sampling's
    assert (loss.probs * loss.sample_weight(t) * mse.double()).sum().item() == pytest.approx((s.snr.rsqrt() * mse.double()).mean().item())
    terms = WeightedLoss(s, "debias", t_sampling="lognormal")(model, x0, t, noise)
    assert "loss_t" not in terms
    torch.testing.assert_close(terms["loss"], w * terms["mse"])  # the density is the objective: no importance weight
