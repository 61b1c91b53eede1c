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
from train.schema import TrainInputError


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


def build_trainer(cfg: TrainConfig, session, model, tokenizer, dataset, eval_dataset=None):
    from trl import DPOTrainer

    from train.callbacks import quiet
    from train.model import upcast_trainable

    trainer = quiet(DPOTrainer(
        model=model,
        ref_model=None,  # the frozen reference is an adapter copy, see the module docstring
        args=build_dpo_config(cfg, session.training_kwargs(evaluate=eval_dataset is not None)),
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=session.callbacks(),
    ))
    upcast_trainable(trainer.model)  # TRL made a QLoRA adapter bf16: back to fp32 before the optimizer exists
    return trainer


def run(cfg: TrainConfig) -> int:
    from train import data, preflight
    from train import model as M
    from train.session import Session

    # 1. Pairs first: a bad row fails before any model loads (exit 2 upstream).
    dataset = data.load_stage_dataset(cfg.data, cfg.spec, cfg.system_prompt, cfg.data_split)

    # 2. Before any weights load: the stage-4 adapter fits the base, the chat template renders the pairs.
    base_config = preflight.load_base_config(cfg.model)
    notes = preflight.check_adapter_fits_base(cfg.adapter_from, cfg.model, base_config) if cfg.adapter_from else []
    tokenizer, template_note = M.load_tokenizer(cfg.model)
    preflight.check_template_renders(tokenizer, dataset, cfg.spec, cfg.model, assistant_only_loss=False)

    # 3. Session (output dir, train.log, accelerant choice, store mirror, stop signals); held-out pairs.
    session = Session(cfg, template_note, preflight.adapter_meta(cfg, base_config, template_note))
    for note in notes:
        session.reporter.line(f"amigo train: {note}")
    session.reporter.line(f"amigo train: {len(dataset)} preference pairs from {cfg.data}")
    train_pairs, eval_pairs = session.held_out(dataset)

    # 4. Frozen base, policy adapter (stage 4's, trainable; fresh only with --from-base).
    base = M.load_base_model(cfg.model, cfg.method, session.choice)
    model = M.with_adapter(base, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    session.reporter.line(f"amigo train: trainable params {trainable:,} / {total:,} ({100 * trainable / total:.2f}%)")

    # 5. Trainer (it adds the frozen "ref" adapter and turns gradient checkpointing on in train mode).
    #    keep_start truncation: chosen and rejected share one whole prompt (TRL tokenizes it once and
    #    drops a pair whose prompt alone fills max_length); only the ends of long answers are cut.
    trainer = build_trainer(cfg, session, model, tokenizer, train_pairs, eval_dataset=eval_pairs)
    session.prepared(trainer, len(train_pairs), eval_pairs)
    if len(trainer.train_dataset) == 0:
        raise TrainInputError(f"{cfg.data}: no pair's prompt fits within max_length={cfg.max_length} "
                              "(raise max_length, or shorten the prompts)")

    # 6. Train, resuming from the newest complete checkpoint (local, else the store).
    with trainer.args.main_process_first(local=True):
        resume = session.resume_checkpoint()
    session.train(trainer, resume)  # an OOM in the first steps: half the micro-batch, twice the accumulation

    # 7. adapter/ (the "default" adapter, best by held-out DPO loss or last), metrics.json, AMIGO_DONE;
    #    exit 3 if the budget stopped us, 4 if a stop signal did.
    return session.finish(trainer, tokenizer)
