#!/usr/bin/env bash
# Which reading interface hears? The stage-3 models compared on the hearing sets, with the ceiling first:
#   text topline, cascade, oracle_repeat / oracle_collapsed (the LLM's own layer-K text states in place of the span),
#   distilled_only (stage 3's distillation alone), collapsed (the recipe's text-aligned runs, reading.span collapsed),
#   frames (the same two runs with reading.span frames: one position per patch, each pulled to its token's state).
# Same init, data, steps and seed for both spans. Rerun-safe: trained models and scored systems are kept.
#   bash recipes/aura/local/hearing_compare.sh [--preset default] [--limit 60]
set -euo pipefail
preset=default
limit=60
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    *) echo "hearing_compare.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
exp_root=exp
# shellcheck source=/dev/null
source "recipes/aura/presets/$preset.sh"
exp=$exp_root/$preset
python=${NEMO_AURA_VENV:-$root/.venv}/bin/python
lhotse=$exp/stage1/lhotse
out=$exp/hearing
for need in "$exp/stage3/aura_distilled.nemo" "$exp/stage3/aura_hearing.nemo" "$exp/stage3/hearing_train_mix.jsonl.gz" \
            "$exp/stage3/hearing_questions_mix.jsonl.gz"; do
  [ -f "$need" ] || { echo "hearing_compare.sh: $need is missing: run 'bash recipes/aura/run.sh --stage 3 --stop-stage 3' first" >&2; exit 2; }
done
sets=(--set "mf_dev=$lhotse/mf_dev_cuts.jsonl.gz" --set "mf_test=$lhotse/mf_test_cuts.jsonl.gz"
      --set "mf_test_seen=$lhotse/mf_test_seen_cuts.jsonl.gz" --set "closed_book=$lhotse/qa_test_cuts.jsonl.gz:closed_book")
model_overrides=("model=$model_conf" "model.student.pretrained_path=$llm_dir")
[ -n "$teacher_dir" ] && model_overrides+=("model.teacher.pretrained_path=$teacher_dir")

# The frames variant: the recipe's two text-aligned runs (all the speech, then the questions) with the other span length.
train_frames() {  # <config> <init> <train cuts> <dev cuts> <out .nemo>
  [ -f "$5" ] && return 0
  # shellcheck disable=SC2086
  "$python" -m nemo_aura.train --config-name "$1" "${model_overrides[@]}" name="$1_frames" init_from_nemo="$2" \
    'model.reading={span: frames}' model.train_ds.cuts_path="$3" model.validation_ds.cuts_path="$4" \
    exp_manager.exp_dir="$out/frames" report.dir="$out/frames/$1_report" report.save_nemo="$5" ${hearing_overrides:-}
}
frames=$out/frames/model.nemo
train_frames hearing "$exp/stage3/aura_distilled.nemo" "$exp/stage3/hearing_train_mix.jsonl.gz" \
  "$exp/stage2/dev/cuts.jsonl.gz" "$out/frames/broad.nemo"
train_frames hearing_questions "$out/frames/broad.nemo" "$exp/stage3/hearing_questions_mix.jsonl.gz" \
  "$lhotse/mf_dev_cuts.jsonl.gz" "$frames"

score() {  # <name> <aura .nemo> <systems>
  mkdir -p "$out/$1/systems"
  for shared in topline cascade oracle_repeat oracle_collapsed; do  # the reference rows are scored once
    [ -f "$out/reference/systems/$shared.json" ] && cp -n "$out/reference/systems/$shared.json" "$out/$1/systems/"
  done
  "$python" recipes/aura/local/score_hearing.py "${sets[@]}" --systems "$3" --aura "$2" --llm-dir "$llm_dir" \
    --asr "$cascade_asr" --limit "$limit" --out "$out/$1"
}
score reference "$exp/stage3/aura_hearing.nemo" topline,oracle_collapsed,oracle_repeat,cascade
score collapsed "$exp/stage3/aura_hearing.nemo" topline,oracle_collapsed,oracle_repeat,cascade,aura
score frames "$frames" topline,oracle_collapsed,oracle_repeat,cascade,aura
score distilled_only "$exp/stage3/aura_distilled.nemo" topline,oracle_collapsed,oracle_repeat,cascade,aura
"$python" recipes/aura/local/hearing_table.py --out "$out" collapsed frames distilled_only
