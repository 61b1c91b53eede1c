"""`python -m train --stage N ...`: parse, dispatch to sft.py (stages 1-4) or dpo.py (stage 5).

Exit codes: 0 done · 2 bad input (one line on stderr, nothing trained) · 3 stopped by
--max-runtime-s · 4 stopped by SIGTERM/SIGINT (3 and 4: checkpoint + adapter saved at the step
boundary; --resume auto continues) · anything else: a crash (traceback).
"""

from __future__ import annotations

import sys

from train.schema import EXIT_BAD_INPUT, TrainInputError


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """OWN_PROCESS: this is `python -m train` itself (not an in-process caller): leave out what the
    method does not use (train/lean.py)."""
    import signal
    import threading

    from train import config

    # the session catches SIGTERM/SIGINT to stop at a step boundary; an in-process caller gets its own back
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        cfg = config.parse(argv)
        if own_process:
            from train.lean import skip_bitsandbytes

            skip_bitsandbytes(cfg.method, training=True)
        if cfg.spec.trainer == "dpo":
            from train import dpo

            return dpo.run(cfg)
        from train import sft

        return sft.run(cfg)
    except TrainInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    finally:
        for s, h in handlers.items():
            if h is not None and threading.current_thread() is threading.main_thread():
                signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main(own_process=True))
