# Data-scale preset: the default recipe on 2x the distillation audio — every train text of
# the default corpus in a second voice (the text sources are exhausted at the default size). Dev, QA and every
# default utterance are the default's: stage 1 links the default corpus's wavs and stage 2 its cached teacher
# targets instead of recomputing them, so only the new renditions cost synthesis and teacher time. Needs
# `bash recipes/aura/run.sh --stop-stage 2` (the default) first; the lever compares stage-3 models:
#   bash recipes/aura/run.sh --preset default_x2 --stage 1 --stop-stage 3
#   then the data_scale ablation (recipes/aura/run.sh --stage 7 help text; conf/ablation/data_scale.yaml).
# shellcheck source=/dev/null
source recipes/aura/presets/default.sh
data_preset=default_x2
reuse_from=$exp_root/default
