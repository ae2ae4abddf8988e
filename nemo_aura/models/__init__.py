from nemo_aura.models.aura_model import AuRAModel

__all__ = ["AuRAModel"]
