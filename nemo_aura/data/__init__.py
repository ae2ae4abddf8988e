"""Lhotse datasets and corpus builders."""
from nemo_aura.data.dataset import AuRADataset

__all__ = ["AuRADataset"]
