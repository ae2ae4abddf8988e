"""Config nodes as plain data: what modules built from ``cfg`` and NeMo's decoding configs are read as."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass

from omegaconf import DictConfig, OmegaConf


def plain_dict(node) -> dict:
    """A DictConfig (resolved), a dataclass instance, a mapping or None as a plain ``dict`` ({} for None)."""
    if node is None:
        return {}
    if is_dataclass(node) and not isinstance(node, type):
        return asdict(node)
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)
