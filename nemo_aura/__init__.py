"""nemo-aura: AuRA for NVIDIA NeMo — an LLM that reads speech through LoRA, with no audio encoder at inference.

``AuRAModel`` is imported lazily so that light tools (asset converters, corpus builders) do not pay
for importing NeMo's ASR collection.
"""
__version__ = "0.1.0"
__all__ = ["AuRAModel"]


def __getattr__(name):
    if name == "AuRAModel":
        from nemo_aura.models.aura_model import AuRAModel

        return AuRAModel
    raise AttributeError(f"module 'nemo_aura' has no attribute {name!r}")
