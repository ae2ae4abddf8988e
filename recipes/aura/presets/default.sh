# Default preset: real Whisper-base teacher + SmolLM2-135M-Instruct student, the embedded corpus.
# Sized for 2 CPU cores (AVX2, fp32); each part measured, the sum not run end to end (2026-12-08, HEARING.md):
# stage 3 ~100 min (distill 15, distill_more 33, AuRA's two character-CTC runs ~50 on the stage-2 cache); stage 5
# ~85 min (readers: text ~7, AuRA's ~9, the cascade's ~14 with Whisper transcribing, the bridge's ~9; the bridge's
# two character-CTC runs ~46); stage 6 ~30 min for the benchmark and ~15 for hearing.
model_conf=aura_base                        # conf/model/<name>.yaml
whisper=base                                # stage 0: which Whisper to convert (base | tiny.en | none)
llm=smollm2                                 # stage 0: which LLM to convert (smollm2 | tiny | none)
teacher_dir=$exp_root/models/whisper-base
llm_dir=$exp_root/models/smollm2-135m-instruct
data_preset=default                         # stage 1: recipes/aura/local/prepare_data.py --preset
cache_batch_size=8                          # stage 2
bench_utts=48                               # stage 2: utterances timed with cache vs online teacher
distill_overrides=""                        # stage 3: extra Hydra overrides
reading=vocab                               # stage 3, reading run: vocab (conf/reading_ctc.yaml) | collapsed | none
distill_more_overrides=""   # stage 3, reading=vocab: conf/distill_more.yaml overrides
reading_overrides=""                        # stage 3, reading=vocab: conf/reading_ctc.yaml overrides
reading_more=yes                            # stages 3 and 5, reading=vocab: each reading run continued for 1000 steps
                                            # (conf/reading_ctc_more.yaml, conf/bridge_reading_ctc_more.yaml): the
                                            # 2000-step AuRA the results describe (dev WER 0.632 -> 0.575)
reading_more_overrides=""                   # stage 3: conf/reading_ctc_more.yaml overrides
bridge_reading_more_overrides=""            # stage 5: conf/bridge_reading_ctc_more.yaml overrides
ctc_lm=yes                                  # stages 4-5, reading=vocab: AuRA and the bridge decode their CTC read by beam
                                            # search with a character 8-gram LM of the training transcripts (~30 s)
ctc_lm_args=""                              # stages 4-5: add_decoding_lm.py options (defaults: --alpha 0.6 --beta 1
                                            # --beam-size 8 --boost-alpha 1 --boost-score 2 --boost-words all
                                            # --rescoring-weight 0)
hearing_overrides=""                        # stage 3, reading=collapsed: conf/hearing*.yaml overrides
aura_finetune_overrides=""                  # stage 5, AuRA (reading=collapsed): conf/aura_qa.yaml holds its budget
text_qa_args=""                             # stage 5: finetune_text_qa.py options (150 steps x 8 items by default: the
                                            # budget of every front end's reader: the fine-tuned rows compare like for like)
front_end_readers=yes                       # stage 5: also a reader per speech front end, on its transcripts (cascade_ft;
                                            # AuRA and the bridge carry theirs as a second adapter: attach_reader.py)
front_end_reader_args=""                    # stage 5: their finetune_text_qa.py options (the text reader's budget)
bridge_reading_overrides=""                 # stage 5, bridge, reading=vocab: conf/bridge_reading_ctc.yaml (AuRA's reading budget)
bridge_asr_overrides=""                     # stage 5, bridge: conf/bridge_asr.yaml (transcripts) holds its budget
bridge_qa_overrides=""                      # stage 5, bridge: conf/bridge_qa.yaml (spoken QA) holds its budget
cascade_asr=$exp_root/models/whisper-base   # stage 6: the cascade's ASR (a Whisper dir or a NeMo .nemo)
cascade_context_prompt=yes                  # stage 6: Whisper prompted with each item's context (what AuRA's and the
                                            # bridge's boosted reads get; recipes/aura/results/default/HEARING.md)
score_args="--sweep-seconds 1,5,10,20,30"   # stage 6: all 150 test items timed and scored (80 before 2026-12-02)
bench_systems="topline,topline_ft,cascade_ft,bridge,aura,aura_text"   # stage 6: timed side by side (the *_ft rows stand in
                                            # for the raw-LLM baselines in the targets; topline checks AuRA's text ability)
extra_test_manifests=""                     # stage 6: more spoken-QA manifests to score (space-separated paths)
hearing_systems="topline,cascade,oracle_repeat,oracle_collapsed,aura,bridge,topline_ft,cascade_ft"   # stage 6: scored on the multi-fact sets
hearing_score_args=""                       # stage 6: e.g. --limit 60
ablation_args="--steps 40 --items 30 --text-items 12"   # stage 7 (optional): steps per variant, dev items scored
probe_args="--layers 0 3 6 --teacher-layers 3 6 --train-limit 1500 --epochs 12"   # stage 7: linear CTC probe of the stage-3 layers (0 = patch embedding) and the teacher's
probe_stage5_args="--layers 6 12 20 30 --train-limit 1500 --epochs 12"   # stage 7: the same probe of the stage-5 model (30 = the last layer)
pretrained_name=aura_smollm2_135m_whisper_base   # stage 6: the final AuRA exported as a pretrained model (exp/<tag>/pretrained/)
pretrained_args="--dtype float16"              # stage 6: export_pretrained.py options
