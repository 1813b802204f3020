import pytest
import torch

from trainer.loss import WeightedLoss
from trainer.schedules import get_schedule
from trainer.schedules import get_schedule as _schedule
from trainer.weighting import (
    WEIGHTINGS,
    uses_progress,
    validate,
    weight_table,
    weighting_params,
)

SNR = get_schedule("linear", 1000).snr


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_every_weighting_is_positive_and_finite_over_the_schedule(name):
    w = weight_table(SNR, name)
    assert w.shape == SNR.shape and w.dtype == torch.float64
    assert torch.isfinite(w).all() and (w > 0).all()


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_normalize_gives_mean_one_and_keeps_shape(name):
    w, wn = weight_table(SNR, name), weight_table(SNR, name, normalize=True)
    assert wn.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(wn / wn[500], w / w[500])


def test_debias_is_eq8_and_157_at_t999():
    w = weight_table(SNR, "debias")
    assert w[999].item() == pytest.approx(157.41, abs=0.01)
    torch.testing.assert_close(w, 1 / SNR.sqrt())
    # 1/sqrt(SNR) spans four orders of magnitude, 57% of its mass at t >= 900
    assert w[0].item() == pytest.approx(0.01, rel=1e-3)
    assert (w[900:].sum() / w.sum()).item() == pytest.approx(0.566, abs=0.001)


def test_closed_forms():
    torch.testing.assert_close(weight_table(SNR, "min_snr"), torch.minimum(SNR, torch.tensor(5.0, dtype=torch.float64)) / SNR)
    torch.testing.assert_close(weight_table(SNR, "min_snr", {"gamma": 1}), SNR.clamp(max=1) / SNR)
    torch.testing.assert_close(weight_table(SNR, "p2"), 1 / (1 + SNR))
    torch.testing.assert_close(weight_table(SNR, "p2", {"k": 2, "gamma": 0.5}), (2 + SNR) ** -0.5)
    torch.testing.assert_close(weight_table(SNR, "inv_snr") * SNR, torch.ones_like(SNR))
    torch.testing.assert_close(weight_table(SNR, "soft_min_snr"), 5 / (5 + SNR))
    torch.testing.assert_close(weight_table(SNR, "trunc_snr"), torch.maximum(1 / SNR, torch.ones_like(SNR)))
    assert (weight_table(SNR, "constant") == 1).all()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown weighting 'snr_max'; valid weightings: constant, debias"):
        weight_table(SNR, "snr_max")


def test_unknown_parameter_lists_valid_parameters():
    with pytest.raises(ValueError, match="unknown parameter.*beta.*valid parameters: k, gamma"):
        validate("p2", {"beta": 2})
    with pytest.raises(ValueError, match="valid parameters: none"):
        validate("debias", {"gamma": 2})


def test_parameters_are_read_from_signatures():
    assert weighting_params("min_snr") == {"gamma": 5.0}
    assert weighting_params("p2") == {"k": 1.0, "gamma": 1.0}
    assert validate("min_snr", {"gamma": 1}) == {"gamma": 1.0}


def test_degenerate_parameters_are_refused():
    with pytest.raises(ValueError, match="non-positive or non-finite"):
        validate("min_snr", {"gamma": 0})


def test_variants_beyond_the_paper_never_fall_below_constant():
    floor, clip = weight_table(SNR, "debias_floor"), weight_table(SNR, "debias_clip")
    torch.testing.assert_close(floor, torch.maximum(1 / SNR.sqrt(), torch.ones_like(SNR)))
    torch.testing.assert_close(clip, (1 / SNR.sqrt()).clamp(1, 4))
    assert (floor >= 1).all() and (clip >= 1).all() and clip.max().item() == 4.0
    assert (floor[1:] >= floor[:-1]).all() and (clip[1:] >= clip[:-1]).all()  # monotone in t, like debias
    # the cap bounds the weight mass of the last 100 steps: 57% under debias, 15% with cap=4
    assert (floor[900:].sum() / floor.sum()).item() == pytest.approx(0.562, abs=0.001)
    assert (clip[900:].sum() / clip.sum()).item() == pytest.approx(0.147, abs=0.001)
    assert weighting_params("debias_clip") == {"cap": 4.0}


def test_curriculum_anneals_from_constant_to_debias():
    assert uses_progress("curriculum") and not uses_progress("debias")
    assert weighting_params("curriculum") == {"anneal": 0.5}  # progress is supplied, never tuned
    torch.testing.assert_close(weight_table(SNR, "curriculum", progress=0.0), torch.ones_like(SNR))
    torch.testing.assert_close(weight_table(SNR, "curriculum", progress=0.25), SNR ** -0.25)
    torch.testing.assert_close(weight_table(SNR, "curriculum", progress=0.5), weight_table(SNR, "debias"))
    torch.testing.assert_close(weight_table(SNR, "curriculum", {"anneal": 1.0}, progress=0.5), SNR ** -0.25)
    with pytest.raises(ValueError, match="valid parameters: anneal"):
        validate("curriculum", {"progress": 0.5})


def test_the_loss_follows_a_curriculum_step_by_step():
    loss = WeightedLoss(_schedule("linear", 1000), "curriculum", {"anneal": 1.0}, t_sampling="importance")
    t = torch.tensor([10, 999])
    assert loss.sample_weight(t).tolist() == [1.0, 1.0] and loss.probs[999] == pytest.approx(1e-3)
    loss.at_step(500, 1000)
    torch.testing.assert_close(loss.weights, SNR ** -0.25)
    assert loss.probs[999] > loss.probs[10]  # importance sampling follows the current table
    fixed = WeightedLoss(_schedule("linear", 1000), "debias")
    before = fixed.weights
    fixed.at_step(500, 1000)
    assert fixed.weights is before  # not a curriculum: the table is built once


COSINE = get_schedule("cosine", 1000).snr


def test_every_entry_but_the_table_weightings_is_pointwise():
    from trainer.weighting import TABLE_WEIGHTINGS

    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    for name in set(WEIGHTINGS) - TABLE_WEIGHTINGS:
        torch.testing.assert_close(WEIGHTINGS[name](SNR[perm]), WEIGHTINGS[name](SNR)[perm])
    assert TABLE_WEIGHTINGS == {"sigmoid"}  # sigmoid reads the spacing of lambda: not pointwise
    assert not torch.allclose(WEIGHTINGS["sigmoid"](SNR[perm]), WEIGHTINGS["sigmoid"](SNR)[perm])


def test_every_entry_has_a_formula_and_a_source():
    from trainer.weighting import ABOUT

    assert set(ABOUT) == set(WEIGHTINGS)
    assert all(row["formula"] and row["source"] for row in ABOUT.values())


def test_uniform_lambda_density_is_the_density_of_log_snr_under_uniform_t():
    from trainer.schedules import log_snr_widths
    from trainer.weighting import uniform_lambda_density

    for snr in (SNR, COSINE):
        p, widths = uniform_lambda_density(snr), log_snr_widths(snr)
        assert (p * widths).sum().item() == pytest.approx(1.0, rel=1e-12)  # unit mass by the trapezoid rule
        lam = snr.log()
        assert torch.trapezoid(p.flip(0), lam.flip(0)).item() == pytest.approx(1.0, rel=1e-12)
    # closed form inside the cosine schedule: SNR = cot^2(pi v / 2), v = (t+1)/T shifted by s:
    # p(lambda) = (1 + s) / (pi (e^{-lambda/2} + e^{lambda/2}))
    lam = COSINE.log()[100:900]
    closed = (1 + 0.008) / (torch.pi * (torch.exp(-lam / 2) + torch.exp(lam / 2)))
    torch.testing.assert_close(uniform_lambda_density(COSINE)[100:900], closed, rtol=5e-3, atol=0)


def test_sigmoid_is_kingma_gao_as_an_effective_weight_over_lambda():
    from trainer.weighting import uniform_lambda_density

    assert weighting_params("sigmoid") == {"b": 2.0}
    for snr in (SNR, COSINE):
        for b in (-2.0, 0.0, 2.0):
            w = weight_table(snr, "sigmoid", {"b": b})
            torch.testing.assert_close(w * uniform_lambda_density(snr), torch.sigmoid(b - snr.log()))
    # lambda = b is the midpoint: half the (asymptotic) effective weight
    w, p = weight_table(SNR, "sigmoid", {"b": 0.0}), uniform_lambda_density(SNR)
    t_mid = int(SNR.log().abs().argmin())
    assert (w * p)[t_mid].item() == pytest.approx(1 / (1 + SNR[t_mid].item()), rel=1e-12)
    assert (w * p)[t_mid].item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="non-positive or non-finite"):
        validate("sigmoid", {"b": -1000})


def test_edm_weight_in_eps_units():
    # EDM: lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2 on the x0 error; x0 error = sigma * eps error
    sigma = SNR.rsqrt()
    edm_x0 = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(weight_table(SNR, "edm"), edm_x0 * sigma**2)
    torch.testing.assert_close(weight_table(SNR, "edm"), 1 + 4 / SNR)
    torch.testing.assert_close(weight_table(SNR, "edm", {"sigma_data": 1.0}), 1 + 1 / SNR)
    assert weighting_params("edm") == {"sigma_data": 0.5}
