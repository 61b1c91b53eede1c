"""Stages 1-4: supervised fine-tuning of a LoRA/QLoRA adapter with TRL's SFTTrainer.

    python -m train --stage 1 --config train/configs/stage1.yaml --model DIR --data rows.jsonl

Top to bottom: validate + format the data, check the base / adapter / chat template before any
weights load, hold out the validation rows, load the base and attach the adapter (fresh for stage 1,
the previous stage's for 2-4), build the trainer, train (resuming if a checkpoint exists), save the
best adapter. Loss is on the assistant turns only (`assistant_only_loss`): the prompt —
instructions, repository context, failing test output — is read, never imitated.
"""

from __future__ import annotations

from train.config import TrainConfig
from train.schema import TrainInputError


def build_sft_config(cfg: TrainConfig, common: dict, choice: dict, assistant_only_loss: bool | None = None):
    from trl import SFTConfig

    return SFTConfig(
        **common,
        # Only the assistant turns count: the chat template wraps them in {% generation %}.
        assistant_only_loss=cfg.assistant_only_loss if assistant_only_loss is None else assistant_only_loss,
        # bfd packing fills each max_length row with whole examples, padding-free (flash-attn only;
        # accel.choose turns it off on SDPA). Code rows of ~300 tokens at max_length 2048: ~6 per row.
        packing=choice["packing"],
        packing_strategy="bfd",
        # None: tokenize in this process. num_proc >= 1 makes `datasets` spawn a pool (seconds of
        # start-up per stage) and swap os.environ for a copy (datasets 5.2, arrow_dataset.map).
        dataset_num_proc=None,
    )


def build_trainer(cfg: TrainConfig, session, model, tokenizer, dataset, assistant_only_loss=None,
                  eval_dataset=None):
    """The trainer exactly as `python -m train` builds it; bench/train_bench.py reuses it."""
    from trl import SFTTrainer

    from train.callbacks import quiet
    from train.model import upcast_trainable

    common = session.training_kwargs(evaluate=eval_dataset is not None)
    args = build_sft_config(cfg, common, session.choice, assistant_only_loss)
    trainer = quiet(SFTTrainer(
        model=model,
        args=args,
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

    # 1. Data first: a bad row fails in a second, before minutes of model loading (exit 2 upstream).
    dataset = data.load_stage_dataset(cfg.data, cfg.spec, cfg.system_prompt, cfg.data_split)

    # 2. Before any weights load: the base's config.json against the previous adapter (layers, hidden
    #    size, vocabulary), and the chat template (the fallback where the base's has no {% generation %}
    #    markers) rendering this stage's rows. Each problem is one line, exit 2.
    base_config = preflight.load_base_config(cfg.model)
    notes = preflight.check_adapter_fits_base(cfg.adapter_from, cfg.model, base_config) if cfg.adapter_from else []
    tokenizer, template_note = M.load_tokenizer(cfg.model)
    preflight.check_template_renders(tokenizer, dataset, cfg.spec, cfg.model, cfg.assistant_only_loss)

    # 3. Session: output dir, train.log, accelerant choice (bf16/fp16, attention, packing, liger, optim), mirror,
    #    stop signals. Then the held-out rows, chosen by content hash (the same ones on every re-run).
    session = Session(cfg, template_note, preflight.adapter_meta(cfg, base_config, template_note))
    for note in notes:
        session.reporter.line(f"amigo train: {note}")
    train_rows, eval_rows = session.held_out(dataset)

    # 4. The frozen base (bf16/fp16/fp32 for LoRA, NF4 for QLoRA), then the adapter: fresh LoRA for stage 1
    #    (or --from-base), the previous stage's adapter loaded trainable otherwise.
    base = M.load_base_model(cfg.model, cfg.method, session.choice)
    model = M.with_adapter(base, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    session.reporter.line(f"amigo train: trainable params {trainable:,} / {total:,} ({100 * trainable / total:.2f}%)")

    # 5. Trainer (the adapter in fp32). Gradient checkpointing (use_reentrant=False) is switched on by the
    #    Trainer, which also puts the model in train mode — checkpointing is skipped in eval mode.
    trainer = build_trainer(cfg, session, model, tokenizer, train_rows, eval_dataset=eval_rows)
    session.prepared(trainer, len(train_rows), eval_rows)
    if len(trainer.train_dataset) == 0:
        raise TrainInputError(
            f"{cfg.data}: no row keeps an assistant token within max_length={cfg.max_length} "
            "(raise max_length, or shorten the prompts)"
        )

    # 6. Train, continuing from the newest complete checkpoint (local, else the store) with --resume auto.
    #    Local main process first: it fetches from the store, the other local ranks then find it on disk.
    with trainer.args.main_process_first(local=True):
        resume = session.resume_checkpoint()
    session.train(trainer, resume)  # an OOM in the first steps: half the micro-batch, twice the accumulation

    # 7. adapter/ (the best evaluated one, or the last) + amigo_adapter.json + metrics.json + AMIGO_DONE.
    #    Exit 3 if the budget ended the run, 4 if a stop signal did (a checkpoint of that step is saved).
    return session.finish(trainer, tokenizer)
