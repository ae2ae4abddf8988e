# Tiny preset: random tiny models built from configs (no packages, no conversion), espeak-only data.
# Runs stages 0-4 in a few minutes: the CI smoke test of the recipe plumbing.
model_conf=aura_tiny
whisper=none
llm=tiny
teacher_dir=""                              # aura_tiny's teacher is a config, not a directory
llm_dir=$exp_root/models/tiny-llm
data_preset=tiny
cache_batch_size=4
bench_utts=8
distill_overrides="trainer.max_steps=8 trainer.val_check_interval=4 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=4"
reading=vocab
distill_more_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=2"   # stage 3, reading=vocab: conf/distill_more.yaml overrides
reading_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=2"
reading_more=yes                            # the continuation runs too, shrunk
reading_more_overrides="trainer.max_steps=2 trainer.val_check_interval=1 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=2"
bridge_reading_more_overrides="$reading_more_overrides"
hearing_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=2"
bridge_qa_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10"
aura_finetune_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10"   # stage 5, AuRA: conf/aura_qa.yaml, shrunk
text_qa_args="--steps 4 --batch-size 2 --dev-limit 2 --max-new-tokens 4"
front_end_readers=yes
front_end_reader_args="--steps 2 --batch-size 2 --dev-limit 2 --max-new-tokens 4"
bridge_reading_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10 exp_manager.checkpoint_callback_params.every_n_train_steps=2"   # stage 5, reading=vocab: conf/bridge_reading_ctc.yaml, shrunk as the AuRA reading run
bridge_asr_overrides="trainer.max_steps=4 trainer.val_check_interval=2 model.train_ds.batch_duration=10 model.validation_ds.batch_duration=10"
cascade_asr=$exp_root/models/tiny-ctc.nemo
score_args="--sweep-seconds 1,2 --max-new-tokens 4"
bench_systems="topline,topline_ft,cascade,cascade_ft,bridge,aura,aura_text"
extra_test_manifests=""
hearing_systems="topline,cascade,oracle_repeat,oracle_collapsed,aura,bridge,topline_ft,cascade_ft,aura_ctc_ft,bridge_ctc_ft"
hearing_score_args="--max-new-tokens 4"
ablation_args="--steps 2 --items 4 --text-items 2 --only baseline,vocab_ctc,audio_only_lora"   # stage 7
probe_args="--layers 0 2 --teacher-layers 3 --train-limit 8 --epochs 2"   # stage 7
probe_stage5_args="--layers 2 4 --train-limit 8 --epochs 2"   # stage 7
pretrained_name=aura_tiny                   # stage 6: the final AuRA exported as a pretrained model (exp/<tag>/pretrained/)
pretrained_args=""                           # stage 6: export_pretrained.py options
