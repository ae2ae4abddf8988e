"""Restoring a ``.nemo`` with one copy of the weights in memory.

NeMo's default ``SaveRestoreConnector`` builds the model (the LLM randomly initialised: every page
written), then ``torch.load``s a second full copy of the weights and copies it in: the peak is twice
the model and the first copy's pages stay with the process. Here the LLM skeleton is built without
initialisation (``_setup_student`` under ``transformers``' ``no_init_weights``: its pages are never
touched), the checkpoint is memory-mapped (``torch.load(mmap=True)``) and its tensors become the
parameters (``load_state_dict(assign=True)``): one copy, loaded lazily from the page cache.
"""
from __future__ import annotations

import torch
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector


class MmapSaveRestoreConnector(SaveRestoreConnector):
    """``SaveRestoreConnector`` that maps the weights file and assigns its tensors to the model."""

    @staticmethod
    def _load_state_dict_from_disk(model_weights, map_location="cpu"):
        if map_location is not None and torch.device(map_location).type != "cpu":
            return SaveRestoreConnector._load_state_dict_from_disk(model_weights, map_location=map_location)
        return torch.load(model_weights, map_location="cpu", mmap=True, weights_only=True)

    def load_instance_with_state_dict(self, instance, state_dict, strict):
        if strict:
            # assign=True keeps the module's requires_grad but takes the checkpoint's tensors; a strict load
            # guarantees no uninitialised skeleton weight survives. Assigning unties shared parameters (an
            # LLM's tied embeddings / output layer): tie them again.
            aliases = shared_parameter_aliases(instance)
            instance.load_state_dict(state_dict, strict=True, assign=True)
            for alias, source in aliases:
                owner, _, leaf = alias.rpartition(".")
                setattr(instance.get_submodule(owner), leaf, instance.get_parameter(source))
        else:
            instance.load_state_dict(state_dict, strict=False)
        instance._set_model_restore_state(is_being_restored=False)


def shared_parameter_aliases(module: torch.nn.Module) -> list[tuple[str, str]]:
    """(alias, source) names of parameters that are the same object as an earlier one (tied weights)."""
    first, aliases = {}, []
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return aliases


def nemo_model_target(path: str) -> str | None:
    """The class a ``.nemo`` names (``target`` of its ``model_config.yaml``), read from the archive without
    unpacking the weights; a clear error naming the file when it is not a readable ``.nemo`` (not a tar, no
    config, or truncated: a member that ends after the end of the file)."""
    import tarfile
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model '{path}' does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    size = p.stat().st_size
    with open(p, "rb") as f:
        plain = f.read(2) != b"\x1f\x8b"  # NeMo writes plain tars; a gzipped one is read up to its config only
    target, found = None, False
    try:
        with tarfile.open(p, "r:*") as tar:
            for member in tar:
                if plain and member.isfile() and member.offset_data + member.size > size:  # headers only: cheap
                    raise ValueError(f"{path}: not a readable .nemo model (truncated: '{member.name}' ends after the "
                                     "end of the file)")
                if member.name.lstrip("./") == "model_config.yaml":
                    target, found = (yaml.safe_load(tar.extractfile(member)) or {}).get("target"), True
                    if not plain:
                        break
    except (tarfile.TarError, EOFError, OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable .nemo model ({type(e).__name__}: {e})") from None
    if not found:
        raise ValueError(f"{path}: not a .nemo model (no model_config.yaml in the archive)")
    return target


def check_aura_target(path: str, target: str | None, cls: type) -> None:
    """Refuse a saved model of another class (a NeMo CTC ``.nemo`` or ``.ckpt``) up front, naming the class it holds:
    building it with AuRA's config code would fail later with an unrelated error."""
    if not target:
        return
    name = target.rsplit(".", 1)[-1]
    ours = {c.__name__ for c in (cls, *cls.__subclasses__())} | {"AuRAModel", "BridgeModel"}
    if not target.startswith("nemo_aura.") or name not in ours:
        raise ValueError(f"{path}: holds a {target}, not an AuRA model ({cls.__name__}); load it with its own class "
                         "(e.g. nemo.collections.asr.models.ASRModel)")
