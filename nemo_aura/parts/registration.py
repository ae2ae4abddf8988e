"""Make NeMo accept nemo-aura classes as config targets.

NeMo 3.0 instantiates ``target``/``_target_`` entries (e.g. in ``restore_from``) only from an allow-list
of module prefixes; a plugin adds its own namespace once, on import.
"""
from nemo.core.classes import common as _nemo_common

PLUGIN_PREFIX = "nemo_aura."


def register_plugin_namespace() -> None:
    if PLUGIN_PREFIX not in _nemo_common.ALLOWED_TARGET_PREFIXES:
        _nemo_common.ALLOWED_TARGET_PREFIXES.append(PLUGIN_PREFIX)
