"""Every shipped config composes; paper-scale presets build their distributed strategies."""
import pytest

from nemo_aura.train import compose_config, trainer_kwargs


@pytest.mark.parametrize("name,overrides", [
    ("distill", []), ("distill", ["model=aura_tiny"]), ("distill", ["model=aura_paper_scale"]),
    ("finetune", ["init_from_nemo=x.nemo"]), ("distill_ddp", ["model=aura_paper_scale"]),
    ("distill_fsdp", ["model=aura_paper_scale"]),
])
def test_configs_compose(name, overrides):
    cfg = compose_config(overrides, config_name=name)
    assert cfg.model.audio_locator_tag and cfg.trainer.max_steps > 0 and cfg.seed == 0


def test_fsdp_preset_instantiates_its_strategy():
    from lightning.pytorch.strategies import FSDPStrategy

    cfg = compose_config(["model=aura_paper_scale"], config_name="distill_fsdp")
    assert isinstance(trainer_kwargs(cfg.trainer)["strategy"], FSDPStrategy)
    assert cfg.model.student.gradient_checkpointing and cfg.model.lora.num_layers == 16


def test_gradient_checkpointing_option(tiny_cfg):
    from nemo_aura import AuRAModel

    tiny_cfg.student.gradient_checkpointing = True
    model = AuRAModel(tiny_cfg)
    assert model.llm.is_gradient_checkpointing
