"""Train an AuRAModel with Lightning and NeMo's exp_manager (recipe stages 3 and 5).

    python -m nemo_aura.train --config-path=<repo>/conf --config-name=distill \
        model.train_ds.cuts_path=... model.validation_ds.cuts_path=... exp_manager.exp_dir=exp/x/stage3

exp_manager gives checkpoints, CSV/TensorBoard logs and resumption: rerunning the same command after
a kill continues from the last checkpoint. Validation metrics before (once, untrained) and after
training are written to ``<report.dir>/validation_{before,after}.json``; each run is appended to the saved
model's ``cfg.training_history``.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.core.config import hydra_runner
from nemo.utils import logging
from nemo.utils.exp_manager import exp_manager

from nemo_aura.models.aura_model import AuRAModel
from nemo_aura.parts.files import write_json_atomic, write_nemo_atomic

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(overrides: list[str], config_name: str = "distill", config_dir: str = CONF_DIR) -> DictConfig:
    """The same config ``python -m nemo_aura.train`` would see, for scripts that share its overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def build_model(cfg: DictConfig, trainer: Trainer) -> AuRAModel:
    """A new model from ``cfg.model``, or a saved ``.nemo`` (``init_from_nemo``) re-pointed at ``cfg.model``'s
    data, optim, losses, prompts and audio_span settings (the levers of fine-tuning), with LoRA added on
    ``lora.reading_layers`` when given."""
    if not cfg.get("init_from_nemo"):
        return AuRAModel(cfg.model, trainer=trainer)
    path = Path(cfg.init_from_nemo)
    if not path.is_file():
        raise FileNotFoundError(f"init_from_nemo: '{path}' is not a file")
    model = AuRAModel.restore_from(str(path), map_location="cpu", trainer=trainer)
    with open_dict(model.cfg):
        for key in ("train_ds", "validation_ds", "optim", "loss", "prompts", "audio_span", "reading", "spec_augment"):
            if cfg.model.get(key) is not None:
                model.cfg[key] = cfg.model[key]
    reading_layers = (cfg.model.get("lora") or {}).get("reading_layers")
    added = model.add_reading_lora(reading_layers) if reading_layers is not None else []
    if not added:  # add_reading_lora already rebuilt the levers for its new layers
        model.setup_reading_levers()
    model.setup_training_data(model.cfg.train_ds)
    model.setup_validation_data(model.cfg.validation_ds)
    return model


def trainer_kwargs(trainer_cfg: DictConfig) -> dict:
    """Trainer arguments; a ``strategy`` given as a config with ``_target_`` (e.g. FSDP options) is instantiated."""
    from hydra.utils import instantiate

    from nemo_aura.parts.precision import resolve_precision

    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    if "precision" in kwargs:
        kwargs["precision"] = resolve_precision(kwargs["precision"], str(kwargs.get("accelerator", "cpu")))
    if isinstance(kwargs.get("strategy"), dict):
        kwargs["strategy"] = instantiate(kwargs["strategy"])
    return kwargs


def metrics_to_json(metrics: list[dict]) -> dict:
    return {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}


def _short_path(path) -> str | None:
    """The last three parts of a path: enough to tell stage-2 caches apart, free of machine-specific roots."""
    return "/".join(Path(str(path)).parts[-3:]) if path else None


def record_training(model: AuRAModel, cfg: DictConfig, steps: int, fit_seconds: float) -> None:
    """Append this run to ``cfg.training_history``, which travels inside the saved ``.nemo``: a model says what
    it was trained on and for how long (stage 6 reports each compared system's budget from it)."""
    train_ds = cfg.model.get("train_ds") or {}
    entry = {
        "name": cfg.get("name"),
        "steps": int(steps),
        "batch_duration": train_ds.get("batch_duration"),
        "train_cuts": _short_path(train_ds.get("cuts_path")),  # e.g. stage2/train/cuts.jsonl.gz
        "init_from": Path(cfg.init_from_nemo).name if cfg.get("init_from_nemo") else None,
        "fit_seconds": round(fit_seconds, 1),  # this process's fit only (a resumed run counts from its restart)
    }
    with open_dict(model.cfg):
        model.cfg.training_history = [*(model.cfg.get("training_history") or []), entry]


def csv_logger(log_dir: Path, resuming: bool) -> CSVLogger:
    """Lightning's CSV log (``csv/metrics.csv``). Its writer deletes an existing file when it starts, so a run resumed
    after a kill would lose the rows (validation points) logged before: when resuming they are put back and the
    new rows appended after them (a step logged after the last checkpoint may appear twice; readers take the last)."""
    logger = CSVLogger(save_dir=str(log_dir), name="", version="csv")
    path = Path(logger.log_dir) / "metrics.csv"
    earlier = path.read_text() if resuming and path.is_file() else ""
    writer = logger.experiment  # created now: this is where the file is removed
    if earlier.strip():
        path.write_text(earlier)
        writer.metrics_keys = sorted(next(csv.reader(io.StringIO(earlier))))
    return logger


def train(cfg: DictConfig) -> AuRAModel:
    OmegaConf.resolve(cfg)
    seed_everything(cfg.get("seed", 0), workers=True)
    trainer = Trainer(**trainer_kwargs(cfg.trainer))
    log_dir = Path(exp_manager(trainer, cfg.get("exp_manager")))
    if cfg.report.get("csv_log", True):
        trainer.loggers = [*trainer.loggers, csv_logger(log_dir, resuming=trainer.ckpt_path is not None)]
    report_dir = Path(cfg.report.dir) if cfg.report.get("dir") else log_dir.parent / f"{cfg.name}_report"
    model = build_model(cfg, trainer)
    resuming = trainer.ckpt_path is not None
    before = report_dir / "validation_before.json"
    if cfg.report.get("validate_before", True) and not resuming and not before.exists():
        write_json_atomic(before, metrics_to_json(trainer.validate(model)), sort_keys=True)
    t0 = time.perf_counter()
    trainer.fit(model, ckpt_path=trainer.ckpt_path)
    record_training(model, cfg, trainer.global_step, time.perf_counter() - t0)
    write_json_atomic(report_dir / "validation_after.json", metrics_to_json(trainer.validate(model)), sort_keys=True)
    if cfg.report.get("save_nemo"):
        out = Path(cfg.report.save_nemo)
        write_nemo_atomic(out, model.save_to)
        logging.info(f"saved {out}")
    return model


@hydra_runner(config_path=CONF_DIR, config_name="distill")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
