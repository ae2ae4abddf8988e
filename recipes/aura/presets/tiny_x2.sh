# Tiny data-scale preset: the tiny corpus's train texts in a second voice, linking the wavs and teacher targets
# of the tiny run under $exp_root/tiny (the CI check of the default_x2 / default_x4 path).
# shellcheck source=/dev/null
source recipes/aura/presets/tiny.sh
data_preset=tiny_x2
reuse_from=$exp_root/tiny
