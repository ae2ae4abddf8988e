#!/usr/bin/env bash
# AuRA recipe (ESPnet style): distil a frozen ASR encoder into an LLM's first K layers, then drop it.
#
#   bash recipes/aura/run.sh [--stage N] [--stop-stage M] [--preset default|tiny|default_x2|default_x4] [--tag T] [--nj N] \
#        [--exp-root DIR (default exp; models go to DIR/models, results to DIR/<tag>)] \
#        [-- hydra.overrides for stage 3, e.g. trainer.max_steps=100 model.lora.r=16]
#
# Stages (each announced, timed, writing under exp/<tag>/stageN, skipped when its output exists):
#   0 environment + offline models   1 spoken corpus       2 teacher-target cache
#   3 distillation, then the reading run the preset's $reading names: vocab (default: the distillation continued on
#     the sentences and spoken questions, conf/distill_more.yaml, then character CTC at layer K on all
#     the transcribed speech with Whisper still teaching layers 1..K, conf/reading_ctc.yaml, continued with
#     reading_more=yes by conf/reading_ctc_more.yaml) or collapsed (text-aligned reading at layer K,
#     conf/hearing.yaml then conf/hearing_questions.yaml)
#   4 encoder removal                5 text-QA readers, speech-QA fine-tuning (collapsed: AuRA) + bridge baseline
#   6 scoring: AuRA vs bridge vs cascade vs text topline (accuracy, latency, memory), and hearing on the
#     multi-fact sets (F1 with the own question vs a question about another entity of the same context)
#   7 (optional, not in the default 0..6) reading ablation: the levers of conf/ablation/reading.yaml
#     from the stage-3 model, scored on dev WER / QA F1 / text ability, and a linear CTC probe of the
#     distilled layers vs the teacher's and of the stage-5 model's upper layers (exp/<tag>/ablation,
#     exp/<tag>/ablation/probe, exp/<tag>/ablation/probe_stage5)
# Presets default_x2 / default_x4 (lever 7, data scale) rebuild stages 1-3 on 2x / 4x the distillation audio,
# linking the default run's wavs and teacher targets; conf/ablation/data_scale.yaml then compares the corpora.
set -euo pipefail

stage=0
stop_stage=6
preset=default
tag=""
nj=2
exp_root=exp
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "run.sh: $1 needs a value" >&2; usage >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    --preset) need_value "$@"; preset=$2; shift 2 ;;
    --tag) need_value "$@"; tag=$2; shift 2 ;;
    --nj) need_value "$@"; nj=$2; shift 2 ;;
    --exp-root) need_value "$@"; exp_root=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
extra_overrides=("$@")
last_stage=7
for pair in "--stage:$stage" "--stop-stage:$stop_stage"; do
  value=${pair#*:}
  case "$value" in
    ''|*[!0-9]*) echo "run.sh: ${pair%%:*} must be a stage number 0..$last_stage, got '$value'" >&2; exit 2 ;;
  esac
  [ "$value" -le "$last_stage" ] || { echo "run.sh: ${pair%%:*} $value: the stages are 0..$last_stage" >&2; exit 2; }
done
[ "$stage" -le "$stop_stage" ] || { echo "run.sh: --stage $stage is after --stop-stage $stop_stage: nothing to run" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
preset_file=recipes/aura/presets/$preset.sh
[ -f "$preset_file" ] || { echo "run.sh: no preset '$preset' ($preset_file)" >&2; exit 2; }
reuse_from=""   # a preset may name another tag's exp dir whose stage-1 wavs and stage-2 targets it shares
# shellcheck source=/dev/null
source "$preset_file"
tag=${tag:-$preset}
exp=$exp_root/$tag
models=$exp_root/models
python=${NEMO_AURA_VENV:-$root/.venv}/bin/python
local=recipes/aura/local
mkdir -p "$exp"

log() { echo "[$(date -u +%H:%M:%S)] $*"; }
# run_stage N "description" cmd...: announce, time, and record a stage that is in [stage, stop_stage].
run_stage() {
  local n=$1 desc=$2; shift 2
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return 0; fi
  log "stage $n: $desc"
  local t0=$SECONDS
  "$@"
  local dt=$((SECONDS - t0))
  log "stage $n done in ${dt} s"
  printf '%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$n" "$dt" "$desc" >> "$exp/stage_times.tsv"
}

model_overrides=("model=$model_conf" "model.student.pretrained_path=$llm_dir")
[ -n "$teacher_dir" ] && model_overrides+=("model.teacher.pretrained_path=$teacher_dir")
stage1=$exp/stage1
distill_train=$stage1/lhotse/distill_train_cuts.jsonl.gz
distill_dev=$stage1/lhotse/distill_dev_cuts.jsonl.gz
qa_train=$stage1/lhotse/qa_train_cuts.jsonl.gz
qa_dev=$stage1/lhotse/qa_dev_cuts.jsonl.gz
qa_test=$stage1/lhotse/qa_test_cuts.jsonl.gz
mf_train=$stage1/lhotse/mf_train_cuts.jsonl.gz
words_train=$stage1/lhotse/words_train_cuts.jsonl.gz   # random word sequences (presets with word_sequences > 0)
mf_dev=$stage1/lhotse/mf_dev_cuts.jsonl.gz
mf_test=$stage1/lhotse/mf_test_cuts.jsonl.gz
mf_test_seen=$stage1/lhotse/mf_test_seen_cuts.jsonl.gz
distilled=$exp/stage3/aura_distilled.nemo
hearing_broad=$exp/stage3/aura_hearing_broad.nemo
hearing_nemo=$exp/stage3/aura_hearing.nemo
# reading=vocab: AuRA's and the bridge's reading runs, each continued with reading_more=yes (conf/*reading_ctc_more.yaml)
reading_more=${reading_more:-no}
reading_ctc_first=$exp/stage3/aura_reading_ctc.nemo bridge_reading_first=$exp/stage5/bridge_reading_ctc.nemo
reading_ctc_nemo=$reading_ctc_first bridge_trained=$bridge_reading_first
if [ "$reading_more" = yes ]; then
  reading_ctc_nemo=$exp/stage3/aura_reading_ctc_more.nemo bridge_trained=$exp/stage5/bridge_reading_ctc_more.nemo
fi
distilled_more=$exp/stage3/aura_distilled_more.nemo
text_qa_reader=$exp/stage5/text_qa_reader
aura_qa_reader=$exp/stage5/aura_qa_reader         # front_end_readers=yes: trained on AuRA's CTC transcripts
cascade_qa_reader=$exp/stage5/cascade_qa_reader   # front_end_readers=yes: trained on the cascade ASR's transcripts
bridge_qa_reader=$exp/stage5/bridge_qa_reader     # front_end_readers=yes, reading=vocab: on the bridge's CTC transcripts
reading=${reading:-vocab}
asr_window_seconds=${asr_window_seconds-10,20}   # the cascade's Whisper: shorter windows it may encode (stage 5 readers, stage 6)
# reading=vocab: the character CTC read is decoded by beam search with a character 8-gram LM of the training
# transcripts (add_decoding_lm.py; the LM travels inside each .nemo); ctc_lm=no keeps the greedy read.
ctc_lm=${ctc_lm:-yes}
char_lm=$exp/stage4/char_lm.arpa
aura_trained=$exp/stage4/aura_encoder_free.nemo
case $reading in
  vocab) stage3_final=$reading_ctc_nemo; aura_final=$aura_trained bridge_final=$bridge_trained
         if [ "$ctc_lm" = yes ]; then
           aura_final=$exp/stage4/aura_encoder_free_lm.nemo bridge_final=$exp/stage5/bridge_reading_ctc_lm.nemo
         fi ;;
  collapsed) stage3_final=$hearing_nemo; aura_final=$exp/stage5/aura_qa.nemo; bridge_final=$exp/stage5/bridge_qa.nemo ;;
  none) stage3_final=$distilled; aura_final=$exp/stage5/aura_qa.nemo; bridge_final=$exp/stage5/bridge_qa.nemo ;;
  *) echo "run.sh: preset $preset: reading must be vocab, collapsed or none, got '$reading'" >&2; exit 2 ;;
esac
# What stage 6 scores: with reading=vocab and front_end_readers=yes, each model carries the reader trained on its own
# transcripts (a second adapter on its LLM, attach_reader.py); otherwise the models as trained.
aura_answering=$aura_final bridge_answering=$bridge_final
if [ "$reading" = vocab ] && [ "${front_end_readers:-no}" = yes ]; then
  aura_answering=$exp/stage5/aura_with_reader.nemo bridge_answering=$exp/stage5/bridge_with_reader.nemo
fi

# train CONFIG INIT TRAIN_CUTS DEV_CUTS EXP_DIR OUT [--report-dir D] [-- overrides]: one run of nemo_aura.train
# (conf/CONFIG.yaml holds its settings and budget; INIT "" = from the config), skipped when OUT exists.
train() {
  local config=$1 init=$2 train_cuts=$3 dev_cuts=$4 exp_dir=$5 out=$6; shift 6
  local args=(--config "$config" --train-cuts "$train_cuts" --dev-cuts "$dev_cuts" --exp-dir "$exp_dir" --out "$out")
  [ -n "$init" ] && args+=(--init "$init")
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  "$python" $local/train_run.py "${args[@]}" -- "${model_overrides[@]}" "$@"
}

stage0() {
  bash tools/setup_env.sh test
  local voices_args=()
  [ "$data_preset" = tiny ] && voices_args=(--no-piper)  # the tiny corpus is espeak-only
  bash $local/install_voices.sh "$(dirname "$(dirname "$python")")" "${voices_args[@]}"
  if [ "$llm" = tiny ]; then
    "$python" $local/make_tiny_models.py --out "$llm_dir" --asr-out "$cascade_asr"
  else
    "$python" $local/prepare_models.py --out $models --whisper "$whisper" --llm "$llm"
  fi
}

stage1() {
  local reuse_args=()
  [ -n "$reuse_from" ] && reuse_args=(--reuse-audio-from "$reuse_from/stage1")  # same utterances: link, not synthesize
  "$python" $local/prepare_data.py --out "$stage1" --preset "$data_preset" --nj "$nj" --downloads "$exp_root/downloads" \
    "${reuse_args[@]}"
}

stage2() {
  local reuse_args=()
  [ -n "$reuse_from" ] && reuse_args=(--reuse-from "$reuse_from/stage2")  # same audio: link the cached targets
  # The multi-fact questions (and word sequences) too: the reading run and the bridge's would otherwise run the
  # encoder online for every batch that holds one (~3 s a step instead of ~1 on 2 cores).
  local more=(--cuts "mf_train=$mf_train")
  [ -f "$words_train" ] && more+=(--cuts "words_train=$words_train")
  "$python" $local/cache_teacher.py --cuts "train=$distill_train" --cuts "dev=$distill_dev" \
    --cuts "qa_train=$qa_train" --cuts "qa_dev=$qa_dev" "${more[@]}" --out "$exp/stage2" \
    --batch-size "$cache_batch_size" --bench-utts "$bench_utts" "${reuse_args[@]}" -- "${model_overrides[@]}"
}

stage3() {
  if [ -f "$distilled" ]; then
    log "  $distilled exists: skipping the distillation"
  else
    # shellcheck disable=SC2086
    train distill "" "$exp/stage2/train/cuts.jsonl.gz" "$exp/stage2/dev/cuts.jsonl.gz" "$exp/stage3" "$distilled" \
      --report-dir "$exp/stage3" -- $distill_overrides "${extra_overrides[@]}"
    "$python" $local/report_distillation.py --stage-dir "$exp/stage3"
  fi
  case $reading in
    vocab) reading_vocab ;;
    collapsed) reading_collapsed ;;
    none) log "  preset: reading=none, no reading run after the distillation" ;;
  esac
}

# stage2_cuts NAME RAW: the stage-2 cuts of NAME (with cached teacher targets) where stage 2 cached them, else RAW.
stage2_cuts() {
  if [ -f "$exp/stage2/$1/cuts.jsonl.gz" ]; then echo "$exp/stage2/$1/cuts.jsonl.gz"
  else log "  $1: no stage-2 cache (rerun stage 2 to add it): its teacher runs online" >&2; echo "$2"; fi
}

# CTC over the LLM's vocabulary at layer K on all the transcribed speech (distillation sentences, QA and multi-fact
# questions in their prompts, random word sequences); generation reads the greedy tokens as text (reading.span: vocab).
reading_vocab() {
  if [ -f "$reading_ctc_nemo" ]; then log "  $reading_ctc_nemo exists: skipping the vocabulary-CTC reading run"; return 0; fi
  # More distillation first, on the sentences and the spoken QA questions (both with cached Whisper targets): the
  # acoustic content of layers 1..K is what limits the reading (recipes/aura/results/default/HEARING.md).
  "$python" -m nemo_aura.parts.manifest mix "$exp/stage3/distill_more_mix.jsonl.gz" "$exp/stage2/train/cuts.jsonl.gz" \
    "$exp/stage2/qa_train/cuts.jsonl.gz" > /dev/null
  # shellcheck disable=SC2086
  train distill_more "$distilled" "$exp/stage3/distill_more_mix.jsonl.gz" "$exp/stage2/dev/cuts.jsonl.gz" "$exp/stage3" \
    "$distilled_more" -- ${distill_more_overrides:-}
  local words=()
  [ -f "$words_train" ] && words=("$(stage2_cuts words_train "$words_train")")
  # Whisper keeps teaching layers 1..K beside the CTC, from the stage-2 cache (the teacher runs online only for
  # cuts a stage 2 of before 2026-12-08 did not cache).
  "$python" -m nemo_aura.parts.manifest mix "$exp/stage3/reading_ctc_mix.jsonl.gz" "$exp/stage2/train/cuts.jsonl.gz" \
    "$exp/stage2/qa_train/cuts.jsonl.gz" "$(stage2_cuts mf_train "$mf_train")" "${words[@]}" > /dev/null
  reading_runs reading_ctc "$distilled_more" "$exp/stage3" "$reading_ctc_first" "$reading_ctc_nemo" \
    "${reading_overrides:-}" "${reading_more_overrides:-}"
}

# reading_runs CONFIG INIT EXP_DIR FIRST FINAL OVERRIDES MORE_OVERRIDES: CONFIG's run on the reading mix (to FIRST),
# then with reading_more=yes CONFIG_more's from FIRST (to FINAL): AuRA's and the bridge's reading, the same budget.
reading_runs() {
  local config=$1 init=$2 exp_dir=$3 first=$4 final=$5 overrides=$6 more_overrides=$7
  local mix=$exp/stage3/reading_ctc_mix.jsonl.gz dev=$exp/stage2/dev/cuts.jsonl.gz
  # shellcheck disable=SC2086
  train "$config" "$init" "$mix" "$dev" "$exp_dir" "$first" -- $overrides
  # shellcheck disable=SC2086
  if [ "$reading_more" = yes ]; then train "${config}_more" "$first" "$mix" "$dev" "$exp_dir" "$final" -- $more_overrides; fi
}

# Text-aligned reading at layer K on all the transcribed speech (the distillation sentences and the spoken
# questions, both with their cached Whisper targets): the layers above K can read what K then holds.
reading_collapsed() {
  if [ -f "$hearing_broad" ]; then
    log "  $hearing_broad exists: skipping the text-aligned reading run on all the speech"
  else
    "$python" -m nemo_aura.parts.manifest mix "$exp/stage3/hearing_train_mix.jsonl.gz" "$exp/stage2/train/cuts.jsonl.gz" \
      "$exp/stage2/qa_train/cuts.jsonl.gz" > /dev/null
    # shellcheck disable=SC2086
    train hearing "$distilled" "$exp/stage3/hearing_train_mix.jsonl.gz" "$exp/stage2/dev/cuts.jsonl.gz" "$exp/stage3" \
      "$hearing_broad" -- ${hearing_overrides:-}
  fi
  # ... then on the spoken questions (QA and multi-fact training questions), validated on the dev questions.
  if [ -f "$hearing_nemo" ]; then log "  $hearing_nemo exists: skipping the text-aligned run on the questions"; return 0; fi
  "$python" -m nemo_aura.parts.manifest mix "$exp/stage3/hearing_questions_mix.jsonl.gz" "$qa_train" "$mf_train" > /dev/null
  # shellcheck disable=SC2086
  train hearing_questions "$hearing_broad" "$exp/stage3/hearing_questions_mix.jsonl.gz" "$mf_dev" "$exp/stage3" \
    "$hearing_nemo" -- ${hearing_overrides:-}
}

stage4() {
  local args=(--nemo "$stage3_final" --out "$exp/stage4" --dev-cuts "$distill_dev" --llm-dir "$llm_dir")
  [ -n "$teacher_dir" ] && args+=(--teacher-dir "$teacher_dir")
  "$python" $local/export_encoder_free.py "${args[@]}"
  if [ "$reading" = vocab ] && [ "$ctc_lm" = yes ]; then with_lm "$aura_trained" "$aura_final"; fi
}

# with_lm IN OUT: IN decoding its character CTC read by beam search with the character LM of the transcripts it was
# trained to read (built once, shared by AuRA and the bridge).
with_lm() {
  # shellcheck disable=SC2086
  "$python" $local/add_decoding_lm.py --model "$1" --out "$2" --lm "$char_lm" --text "$distill_train" \
    --text "$qa_train" --text "$mf_train" ${ctc_lm_args:-}
}

# front_end_reader OUT ASR: the text-QA reader trained on ASR's transcripts of the training questions' audio.
front_end_reader() {
  # shellcheck disable=SC2086
  "$python" $local/finetune_text_qa.py --llm-dir "$llm_dir" --train "$qa_train" --train "$mf_train" --dev "$mf_dev" \
    --out "$1" --questions-from-asr "$2" --asr-window-seconds "$asr_window_seconds" ${front_end_reader_args:-}
}

# own_reader OUT TRAINED MODEL ANSWERING: a vocab model's reader, trained on TRAINED's (greedy) transcripts as the
# cascade's on its ASR's, attached to MODEL (TRAINED with its decoding LM) as ANSWERING: a second adapter on the same
# LLM (one LLM in memory; text prompts still see the base LLM). Greedy transcripts, not the LM's: the LM has seen
# every training question, and a reader trained on cleaner text answers the test questions' LM transcripts worse
# (recipes/aura/results/default/HEARING.md, finetune_text_qa.py --lm-folds).
own_reader() {
  front_end_reader "$1" "$2"
  "$python" $local/attach_reader.py --model "$3" --reader "$1/reader_adapter" --out "$4"
}

stage5() {
  local s5=$exp/stage5
  mkdir -p "$s5"
  if [ "$reading" = vocab ]; then
    # The LLM reads the CTC tokens as text: no next-token loss reaches the audio path, and the text path is the base
    # LLM's. The stage-4 export is the AuRA that stage 6 scores.
    log "  reading=vocab: AuRA needs no speech-QA fine-tuning (stage 6 scores $aura_answering)"
  else
    # AuRA (conf/aura_qa.yaml): the encoder-free model learns to answer spoken questions (QA and multi-fact) and to
    # transcribe (the distillation sentences), through the collapsed span generation reads; $aura_finetune_overrides
    # only where a preset must shrink the budget.
    "$python" -m nemo_aura.parts.manifest mix "$s5/aura_train_mix.jsonl.gz" "$distill_train" "$qa_train" "$mf_train" > /dev/null
    # shellcheck disable=SC2086
    train aura_qa "$exp/stage4/aura_encoder_free.nemo" "$s5/aura_train_mix.jsonl.gz" "$qa_dev" "$s5" "$s5/aura_qa.nemo" \
      -- ${aura_finetune_overrides:-}
  fi
  # The fine-tuned text-QA reader: the LLM with LoRA on the QA training items as text (finetune_text_qa.py), for the
  # fine-tuned topline and cascade rows of stage 6 and, with reading=vocab, AuRA's CTC transcripts.
  # shellcheck disable=SC2086
  "$python" $local/finetune_text_qa.py --llm-dir "$llm_dir" --train "$qa_train" --train "$mf_train" --dev "$mf_dev" \
    --out "$text_qa_reader" ${text_qa_args:-}
  if [ "${front_end_readers:-no}" = yes ]; then
    # Each speech front end's own reader: the same items with the questions as that front end writes them (the
    # cascade ASR's transcripts, AuRA's CTC text; the bridge's below), the same budget for each, so the fine-tuned
    # rows compare like for like.
    front_end_reader "$cascade_qa_reader" "$cascade_asr"
    if [ "$reading" = vocab ]; then own_reader "$aura_qa_reader" "$aura_trained" "$aura_final" "$aura_answering"; fi
  fi
  if [ "$reading" = vocab ]; then
    # Bridge: encoder + projector + the same LLM with LoRA on the same K layers, trained with AuRA's reading objective
    # (conf/bridge_reading_ctc.yaml: the character CTC at layer K, AuRA's data and budget); read as text like AuRA.
    "$python" $local/make_bridge.py --out "$s5/bridge_init.nemo" --lora-on-first-k -- "${model_overrides[@]}"
    reading_runs bridge_reading_ctc "$s5/bridge_init.nemo" "$s5" "$bridge_reading_first" "$bridge_trained" \
      "${bridge_reading_overrides:-}" "${bridge_reading_more_overrides:-}"
    if [ "$ctc_lm" = yes ]; then with_lm "$bridge_trained" "$bridge_final"; fi
    if [ "${front_end_readers:-no}" = yes ]; then
      own_reader "$bridge_qa_reader" "$bridge_trained" "$bridge_final" "$bridge_answering"
    fi
  else
    # Bridge: encoder + projector + same LLM, equal LoRA budget; transcripts first (conf/bridge_asr.yaml), then QA
    # (conf/bridge_qa.yaml); $bridge_*_overrides only where a preset must shrink the budget.
    "$python" $local/make_bridge.py --out "$s5/bridge_init.nemo" -- "${model_overrides[@]}"
    # shellcheck disable=SC2086
    train bridge_asr "$s5/bridge_init.nemo" "$exp/stage2/train/cuts.jsonl.gz" "$exp/stage2/dev/cuts.jsonl.gz" "$s5" \
      "$s5/bridge_asr.nemo" -- ${bridge_asr_overrides:-}
    # shellcheck disable=SC2086
    train bridge_qa "$s5/bridge_asr.nemo" "$exp/stage2/qa_train/cuts.jsonl.gz" "$exp/stage2/qa_dev/cuts.jsonl.gz" "$s5" \
      "$bridge_final" -- ${bridge_qa_overrides:-}
  fi
}

stage6() {
  # The cascade's Whisper prompted with each item's context: the counterpart of AuRA's and the bridge's context biasing
  local cascade_prompt=()
  if [ "${cascade_context_prompt:-no}" = yes ]; then cascade_prompt=(--asr-context-prompt); fi
  local args=(--items "test=$qa_test" --llm-dir "$llm_dir" --asr "$cascade_asr" --aura "$aura_answering"
              --bridge "$bridge_answering" --out "$exp/stage6" --transcripts --reader-dir "$text_qa_reader"
              --systems "${bench_systems:-topline,cascade,bridge,aura,aura_text}"
              --distill-report "$exp/stage3/distill_report.json")
  if [ "${front_end_readers:-no}" = yes ]; then args+=(--cascade-reader-dir "$cascade_qa_reader"); fi
  for extra in ${extra_test_manifests:-}; do args+=(--items "$(basename "${extra%%.*}")=$extra"); done
  # shellcheck disable=SC2086
  "$python" $local/score_benchmark.py "${args[@]}" --asr-window-seconds "$asr_window_seconds" "${cascade_prompt[@]}" \
    $score_args
  local own_readers=()
  if [ "${front_end_readers:-no}" = yes ]; then
    own_readers+=(--cascade-reader-dir "$cascade_qa_reader")
    if [ "$reading" = vocab ]; then own_readers+=(--aura-reader-dir "$aura_qa_reader" --bridge-reader-dir "$bridge_qa_reader"); fi
  fi
  # Hearing: multi-fact items (names never heard in training, and names heard), closed-book questions.
  # shellcheck disable=SC2086
  "$python" $local/score_hearing.py --set "mf_test=$mf_test" --set "mf_test_seen=$mf_test_seen" \
    --set "closed_book=$qa_test:closed_book" --systems "${hearing_systems:-topline,cascade,oracle_repeat,oracle_collapsed,aura}" --aura "$aura_answering" \
    --bridge "$bridge_answering" --llm-dir "$llm_dir" --asr "$cascade_asr" --asr-window-seconds "$asr_window_seconds" --reader-dir "$text_qa_reader" \
    "${own_readers[@]}" "${cascade_prompt[@]}" --out "$exp/stage6/hearing" ${hearing_score_args:-}
  # The final AuRA as a pretrained model (AuRAModel.from_pretrained): its trainable tensors, config and model card
  # with these scores. Shipping it = copying the directory to nemo_aura/assets/pretrained/.
  # shellcheck disable=SC2086
  "$python" $local/export_pretrained.py --nemo "$aura_answering" --llm-dir "$llm_dir" --name "$pretrained_name" \
    --out "$exp/pretrained/$pretrained_name" --scores "$exp/stage6/results.md" --scores "$exp/stage6/hearing/results.md" \
    --corpus-summary "$stage1/summary.json" --hearing "$exp/stage6/hearing/results.json" ${pretrained_args:-}
}

stage7() {
  # shellcheck disable=SC2086
  "$python" $local/ablation.py --init "$exp/stage3/aura_distilled.nemo" --train-cuts "$distill_train" \
    --train-cuts "$qa_train" --asr-dev "$distill_dev" --qa-dev "$qa_dev" --out "$exp/ablation" $ablation_args \
    -- "${model_overrides[@]}"
  # Is the spoken content in the distilled layers? A linear CTC probe of student and teacher layers ($probe_args);
  # then of the fine-tuned model's upper layers ($probe_stage5_args): does it reach the layers that answer?
  run_probe "$exp/stage3/aura_distilled.nemo" "$exp/ablation/probe" "$probe_args"
  if [ -f "$aura_final" ]; then
    run_probe "$aura_final" "$exp/ablation/probe_stage5" "$probe_stage5_args"
  else
    log "  no $aura_final (stages 4-5 not run): no probe of the final AuRA"
  fi
}

run_probe() {  # <nemo> <out dir> <probe args>; skipped when its results exist
  if [ -f "$2/results.json" ]; then log "  $2/results.json exists: skipping this probe"; return 0; fi
  # shellcheck disable=SC2086
  "$python" $local/probe_layers.py --nemo "$1" --train-cuts "$exp/stage2/train/cuts.jsonl.gz" \
    --dev-cuts "$exp/stage2/dev/cuts.jsonl.gz" --out "$2" $3
}

log "AuRA recipe: preset=$preset tag=$tag stages $stage..$stop_stage (exp dir $exp)"
run_stage 0 "environment and offline models" stage0
run_stage 1 "embedded spoken corpus ($data_preset)" stage1
run_stage 2 "teacher-target cache" stage2
run_stage 3 "layer-wise distillation" stage3
run_stage 4 "encoder removal" stage4
run_stage 5 "text-QA readers, speech-QA fine-tuning (AuRA) and the bridge baseline" stage5
run_stage 6 "scoring: topline, cascade, bridge, AuRA" stage6
run_stage 7 "reading ablation and the layer probe" stage7
log "done; stage wall times in $exp/stage_times.tsv"
