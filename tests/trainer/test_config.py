"""TrainConfig: the t-sampling and learned-weighting fields, their validation and the config hash."""
import pytest
from pydantic import ValidationError

from trainer.config import TrainConfig


def test_configs_from_before_the_new_fields_keep_their_hash():
    # recorded before t_sampling_params and learned_weighting existed: finished runs are still found finished
    assert TrainConfig().config_hash() == "5fbfe72254452614"
    assert TrainConfig(weighting="debias", t_sampling="importance").config_hash() == "fe5a026dfc0077bc"


def test_every_new_field_changes_the_hash():
    base = TrainConfig(t_sampling="lognormal")
    hashes = {base.config_hash(), TrainConfig().config_hash(),
              TrainConfig(t_sampling="lognormal", t_sampling_params={"p_std": 1.0}).config_hash(),
              TrainConfig(t_sampling="logit_normal").config_hash(),
              TrainConfig(t_sampling="loss_aware").config_hash(),
              TrainConfig(learned_weighting=True).config_hash()}
    assert len(hashes) == 6
    assert TrainConfig(t_sampling="lognormal", t_sampling_params={"p_mean": -1.2}).config_hash() == base.config_hash()


def test_t_sampling_and_its_parameters_are_validated_and_resolved():
    cfg = TrainConfig(t_sampling="lognormal", t_sampling_params={"p_std": 1})
    assert cfg.t_sampling_params == {"p_mean": -1.2, "p_std": 1.0}
    assert TrainConfig(t_sampling="loss_aware").t_sampling_params == {"history_per_term": 10.0, "uniform_prob": 0.001}
    assert TrainConfig().t_sampling_params == {} and TrainConfig().learned_weighting is False
    with pytest.raises(ValidationError, match="unknown t_sampling 'edm'; valid: uniform, importance, lognormal, logit_normal, loss_aware"):
        TrainConfig(t_sampling="edm")
    with pytest.raises(ValidationError, match="unknown parameter.*mean.*valid parameters: m, s"):
        TrainConfig(t_sampling="logit_normal", t_sampling_params={"mean": 0})
    with pytest.raises(ValidationError, match="no valid distribution|s > 0"):
        TrainConfig(t_sampling="logit_normal", t_sampling_params={"s": 0})
    assert TrainConfig.model_validate(TrainConfig(t_sampling="loss_aware", learned_weighting=True).model_dump(mode="json")) == \
        TrainConfig(t_sampling="loss_aware", learned_weighting=True)  # config.json round trip
