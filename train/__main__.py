"""`python -m train --stage N ...`: parse, dispatch to sft.py (stages 1-4) or dpo.py (stage 5).

Exit codes: 0 done · 2 bad input (one line on stderr, nothing trained) · 3 stopped by
--max-runtime-s (checkpoint + adapter saved) · anything else: a crash (traceback).
"""

from __future__ import annotations

import sys

from train.schema import EXIT_BAD_INPUT, TrainInputError


def main(argv: list[str] | None = None) -> int:
    from train import config

    try:
        cfg = config.parse(argv)
        if cfg.spec.trainer == "dpo":
            from train import dpo

            return dpo.run(cfg)
        from train import sft

        return sft.run(cfg)
    except TrainInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
