"""BridgeModel: the encoder-kept baseline (ASR encoder + projector + the same LLM with LoRA), as NeMo's SALM.

It shares AuRAModel's prompting, LoRA student, data, training and generation code; only the audio
front end differs (``cfg.bridge`` instead of ``cfg.patch_embedding``) and there is no distillation:
it trains on the next-token loss (transcripts, then answers). Its encoder is frozen, so batches that
carry stage-2 cached teacher states of ``bridge.layer`` skip the encoder pass during training.
"""
from __future__ import annotations

from lightning.pytorch import Trainer
from omegaconf import DictConfig
from torch import Tensor

from nemo_aura.models.aura_model import AuRAModel
from nemo_aura.parts.config import plain_dict
from nemo_aura.modules.bridge import EncoderProjector


class BridgeModel(AuRAModel):
    def __init__(self, cfg: DictConfig, trainer: Trainer | None = None):
        if cfg.get("teacher") or cfg.get("distillation"):
            raise ValueError("BridgeModel keeps its encoder in cfg.bridge.encoder; cfg.teacher/distillation must be empty")
        super().__init__(cfg=cfg, trainer=trainer)

    def _build_audio_front_end(self) -> EncoderProjector:
        # Held in ``patch_embedding`` so the shared code paths (splicing, generation) work unchanged.
        return EncoderProjector(output_dim=self.llm.config.hidden_size, **plain_dict(self.cfg.bridge))

    def audio_tokens(self, batch: dict) -> tuple[Tensor, Tensor] | None:
        cached = batch.get("teacher_targets")
        front = self.patch_embedding
        if not cached or front.layer not in cached:
            return None
        lens = front.num_patches(front.num_frames(batch["audio_lens"]))
        if not (batch["teacher_target_lens"] == lens).all():
            raise ValueError(f"cached encoder states do not match the bridge's token grid for items {batch.get('cut_ids')}")
        return front.project(cached[front.layer][:, : int(lens.max())].float()), lens


def bridge_config_from_aura(aura_cfg: DictConfig, num_llm_layers: int, lora_on_all_layers: bool = True) -> DictConfig:
    """A bridge config matched to an AuRA config: same LLM, prompts, token grid and teacher encoder.

    LoRA gets the same trainable budget: AuRA's rank r on K layers becomes rank ``round(r*K/L)`` on all L
    layers (SALM's usual placement) when ``lora_on_all_layers``, else the same r on the same K layers.
    The projector has the patch embedding's hidden width.
    """
    from omegaconf import OmegaConf, open_dict

    from nemo_aura.parts.student import lora_depth, update_lora_config

    cfg = OmegaConf.create(OmegaConf.to_container(aura_cfg, resolve=True))
    if not cfg.get("teacher"):
        raise ValueError("the AuRA config has no teacher: the bridge needs its encoder")
    pe = cfg.patch_embedding
    with open_dict(cfg):
        cfg.target = f"{BridgeModel.__module__}.{BridgeModel.__qualname__}"
        cfg.bridge = {
            "encoder": cfg.teacher, "preprocessor": pe.preprocessor, "patch_size": pe.patch_size,
            "hidden_dim": pe.get("hidden_dim", 1024), "layer": None,
        }
        if lora_on_all_layers and cfg.get("lora"):
            r = max(1, round(cfg.lora.r * lora_depth(cfg.lora, num_llm_layers) / num_llm_layers))
            update_lora_config(cfg, r=r, lora_alpha=2 * r, num_layers=None, layers=None)
        for key in ("patch_embedding", "teacher", "distillation"):
            cfg.pop(key, None)
        cfg.loss = {"distill_weight": 0.0, "lm_weight": 1.0}
    return cfg
