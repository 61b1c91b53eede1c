"""Stage 5: preference tuning (DPO) of the stage-4 adapter with TRL's DPOTrainer.

    python -m train --stage 5 --config train/configs/stage5.yaml --model DIR --data pairs.jsonl \
        --adapter-from runs/stage4/adapter

Reference model without a second copy of the base: the policy is the stage-4 adapter loaded
trainable on the frozen base, and `ref_model=None`. TRL 1.x (peft >= 0.20) then adds a frozen
"ref" adapter initialised from the policy's weights and computes reference log-probs by switching
to it: extra memory = one LoRA adapter (~40M params, 80 MB in bf16 on an 8B base) instead of a
second base model (16 GB in bf16). Only the trained "default" adapter is saved to adapter/.
"""

from __future__ import annotations

from train.config import TrainConfig


def build_dpo_config(cfg: TrainConfig, common: dict):
    from trl import DPOConfig

    return DPOConfig(
        **common,
        # beta: strength of the KL pull towards the reference; lower lets the policy drift further.
        beta=cfg.beta,
        loss_type=["sigmoid"],  # the original DPO loss
        # Each step runs the reference forward (no grad) and the policy forward+backward on the
        # concatenated chosen+rejected batch: 2 × batch sequences per micro-batch.
        precompute_ref_log_probs=False,
        # None: tokenize in this process. num_proc >= 1 makes `datasets` spawn a pool (seconds of
        # start-up per stage) and swap os.environ for a copy (datasets 5.2, arrow_dataset.map).
        dataset_num_proc=None,
    )


def build_trainer(cfg: TrainConfig, session, model, tokenizer, dataset):
    from trl import DPOTrainer

    from train.callbacks import quiet

    return quiet(DPOTrainer(
        model=model,
        ref_model=None,  # the frozen reference is an adapter copy, see the module docstring
        args=build_dpo_config(cfg, session.training_kwargs()),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=session.callbacks(),
    ))


def run(cfg: TrainConfig) -> int:
    from train import data
    from train import model as M
    from train.session import Session

    # 1. Pairs first: a bad row fails before any model loads (exit 2 upstream).
    dataset = data.load_stage_dataset(cfg.data, cfg.spec, cfg.system_prompt, cfg.data_split)

    # 2. Session: output dir, train.log, accelerant choice, store mirror.
    session = Session(cfg)
    session.reporter.line(f"amigo train: {len(dataset)} preference pairs from {cfg.data}")

    # 3. Tokenizer, frozen base, policy adapter (stage 4's, trainable; fresh only with --from-base).
    tokenizer = M.load_tokenizer(cfg.model)
    base = M.load_base_model(cfg.model, cfg.method, session.choice)
    model = M.with_adapter(base, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    session.reporter.line(f"amigo train: trainable params {trainable:,} / {total:,} ({100 * trainable / total:.2f}%)")

    # 4. Trainer (it adds the frozen "ref" adapter and turns gradient checkpointing on in train mode).
    trainer = build_trainer(cfg, session, model, tokenizer, dataset)

    # 5. Train, resuming from the newest complete checkpoint (local, else the store).
    with trainer.args.main_process_first(local=True):
        resume = session.resume_checkpoint()
    trainer.train(resume_from_checkpoint=resume)

    # 6. adapter/ (the "default" adapter only), metrics.json, AMIGO_DONE; exit 3 if the budget stopped us.
    return session.finish(trainer, tokenizer)
