# Data-scale preset: as default_x2, with every train text in four distinct voices (4x the
# distillation audio); the default's wavs and teacher targets are linked the same way.
#   bash recipes/aura/run.sh --preset default_x4 --stage 1 --stop-stage 3
# shellcheck source=/dev/null
source recipes/aura/presets/default_x2.sh
data_preset=default_x4
