"""Lhotse datasets and corpus builders.

``AuRADataset`` is imported lazily: the corpus builder (stage 1) and its pool workers should not pay for
importing NeMo's prompt formatters.
"""
__all__ = ["AuRADataset"]


def __getattr__(name):
    if name == "AuRADataset":
        from nemo_aura.data.dataset import AuRADataset

        return AuRADataset
    raise AttributeError(f"module 'nemo_aura.data' has no attribute {name!r}")
