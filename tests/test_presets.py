"""Every shipped config composes; paper-scale presets build their distributed strategies."""
import pytest

from nemo_aura.train import compose_config, trainer_kwargs


@pytest.mark.parametrize("name,overrides", [
    ("distill", []), ("distill", ["model=aura_tiny"]), ("distill", ["model=aura_paper_scale"]),
    ("finetune", ["init_from_nemo=x.nemo"]), ("distill_ddp", ["model=aura_paper_scale"]),
    ("distill_fsdp", ["model=aura_paper_scale"]), ("hearing", ["init_from_nemo=x.nemo"]),
    ("hearing_questions", ["init_from_nemo=x.nemo"]), ("aura_qa", ["init_from_nemo=x.nemo"]),
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


def test_stage5_aura_config_trains_through_the_span_generation_reads():
    """conf/aura_qa.yaml: the collapsed span split by the boundary head, next-token + textual-teacher + layer-K losses."""
    cfg = compose_config(["init_from_nemo=x.nemo"], config_name="aura_qa")
    assert dict(cfg.model.reading) == {"span": "collapsed", "train_segments": "head"}
    assert cfg.model.audio_span.lora == "audio"
    loss = cfg.model.loss
    assert (loss.lm_weight, loss.text_teacher_weight, loss.text_align_weight, loss.distill_weight) == (1.0, 1.0, 1.0, 0.0)
