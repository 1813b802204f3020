"""Cells of one leaderboard row are common-random-number pairs (what service.domain.stats.paired
relies on): runs that differ only in the weighting start from the same weights and see the same
batches, timesteps and noise; the evaluator draws each sample's label, x_T and step noise from a
generator seeded by (seed, sample index), whatever the model. Real code, no Ray, tiny preset."""
from __future__ import annotations

import pytest
import torch

from evaluator.sampling import Denoiser, respace, sample, sample_seed
from trainer.config import TrainConfig
from trainer.engine import batch_for_step, build_state, train_step

CFG = dict(preset="tiny", batch_size=8, steps=10, lr=1e-3, class_conditional=True)  # digits, 16x16, labelled
TRAIN_STEPS = 3


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _same_batch(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs():
    """Two runs (constant, debias) of seed 0 and one constant run of seed 1: initial weights and
    the batches of the first steps recorded, then the seed-0 runs trained TRAIN_STEPS steps."""
    states = {key: build_state(TrainConfig(**CFG, weighting=w, seed=seed))
              for key, w, seed in [("constant", "constant", 0), ("debias", "debias", 0), ("seed1", "constant", 1)]}
    initial = {key: _params(s.raw) for key, s in states.items()}
    batches = {key: [batch_for_step(s, step) for step in range(TRAIN_STEPS)] for key, s in states.items()}
    for key in ("constant", "debias"):
        for step in range(TRAIN_STEPS):
            train_step(states[key], step)
    return states, initial, batches


def test_same_seed_other_weighting_gives_the_same_initial_weights(runs):
    states, initial, _ = runs
    assert torch.equal(initial["constant"], initial["debias"])
    assert not torch.equal(initial["constant"], initial["seed1"])


def test_same_seed_other_weighting_gives_the_same_batches(runs):
    states, _, batches = runs
    for step in range(TRAIN_STEPS):
        x0, labels, t, noise = batches["constant"][step]
        assert labels is not None and len(t.unique()) > 1  # the pairing covers labels and timesteps too
        assert _same_batch(batches["constant"][step], batches["debias"][step])
        other = batches["seed1"][step]
        assert not torch.equal(t, other[2]) and not torch.equal(noise, other[3]) and not torch.equal(x0, other[0])
    # batches do not depend on the training trajectory either: after training they are the same
    assert _same_batch(batch_for_step(states["constant"], TRAIN_STEPS), batch_for_step(states["debias"], TRAIN_STEPS))


def test_the_weighting_changes_the_trained_weights(runs):
    states, initial, _ = runs
    trained = {key: _params(states[key].raw) for key in ("constant", "debias")}
    assert not torch.equal(trained["constant"], initial["constant"])
    assert not torch.allclose(trained["constant"], trained["debias"])


class Recorder(torch.nn.Module):
    """A UNet as the Denoiser uses it (called as unet(x, t, class_labels=...).sample, its
    `config` read), recording each call's input and output."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.calls = unet, unet.config, []

    def forward(self, x, t, class_labels=None):
        out = self.unet(x, t, class_labels=class_labels)
        self.calls.append((x.clone(), out.sample.clone()))
        return out


def _denoiser(state, record: bool = False) -> Denoiser:
    unet = state.ema.eval()
    return Denoiser(Recorder(unet) if record else unet, state.loss.schedule.alphas_cumprod)


def test_sampling_the_same_model_in_other_shards_gives_the_same_images(runs):
    """The noise (x_T: the first network input) is bit-identical; the images equal up to float
    rounding of the network run on other batch sizes (amplified by the first step's 1 / sqrt(abar))."""
    whole_den = _denoiser(runs[0]["constant"], record=True)
    whole, y = sample(whole_den, 2, num=4, seed=3, batch_size=4)
    parts, x_T = [], []
    for s, n, b in [(0, 1, 1), (1, 3, 2)]:
        den = _denoiser(runs[0]["constant"], record=True)
        parts.append(sample(den, 2, num=n, start=s, seed=3, batch_size=b))
        x_T += [x for x, _ in den.unet.calls[::2]]  # calls per batch: x_T, then x_1
    assert torch.equal(torch.cat(x_T), whole_den.unet.calls[0][0])
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), whole, atol=1e-4, rtol=0)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert not torch.allclose(sample(_denoiser(runs[0]["constant"]), 2, num=4, seed=4, batch_size=4)[0], whole)


def test_two_models_share_labels_initial_noise_and_step_noise(runs):
    """Two-step DDPM of two different models from seed 3, samples 5..7: the first network input is
    x_T; the second is x' = c0 clip(x0_hat) + ct x_T + sigma z (DDPM Eq. 7, respaced), so z is
    recovered from what each model was called with. Both equal the documented per-index draws."""
    seed, start, num = 3, 5, 3
    a, b = (_denoiser(runs[0][key], record=True) for key in ("constant", "debias"))
    images_a, y_a = sample(a, 2, num=num, start=start, seed=seed, variance="fixed_large")
    images_b, y_b = sample(b, 2, num=num, start=start, seed=seed, variance="fixed_large")
    assert not torch.allclose(images_a, images_b)  # different models, different images

    rs = respace(a.alphas_cumprod, 2)
    abar, abar_prev, beta = (float(v[1]) for v in (rs.alphas_cumprod, rs.alphas_cumprod_prev, rs.betas))
    c0, ct = beta * abar_prev**0.5 / (1 - abar), (1 - abar_prev) * (1 - beta) ** 0.5 / (1 - abar)
    sigma = float(rs.log_variance("fixed_large")[1].exp().sqrt())

    def drawn(den):
        (x_T, eps), (x_next, _) = den.unet.calls
        x0 = ((x_T - (1 - abar) ** 0.5 * eps) / abar**0.5).clamp(-1, 1)
        return x_T, (x_next - c0 * x0 - ct * x_T) / sigma

    (x_T_a, z_a), (x_T_b, z_b) = drawn(a), drawn(b)
    gens = [torch.Generator().manual_seed(sample_seed(seed, k)) for k in range(start, start + num)]
    labels = torch.cat([torch.randint(a.num_classes, (1,), generator=g) for g in gens])
    x_T = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    z = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    assert torch.equal(y_a, labels) and torch.equal(y_b, labels)
    assert torch.equal(x_T_a, x_T) and torch.equal(x_T_b, x_T)
    torch.testing.assert_close(z_a, z, atol=2e-4, rtol=0)
    torch.testing.assert_close(z_b, z, atol=2e-4, rtol=0)
