# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Small CPU replication of the paper's language-modelling experiment (Section 4.1): does SM help?

Usage:
    python recipes/replicate_small.py --claims C1 C2 C3 C4 C5 C6 C7 C8   # make replicate: every claim
    python recipes/replicate_small.py --claims C4    # a subset: the task corpus only (~8 min)
    python recipes/replicate_small.py            # the stdlib, structured and task corpora
    python recipes/replicate_small.py --quick    # pipeline check, ~1 min, no claims (make replicate-quick)
    python recipes/replicate_small.py --corpora stdlib --lr_sm 0.01 --continue_steps 1500   # the paper's SM rate

Per corpus (the Python standard library's sources; a synthetic corpus of exactly checkable code-like
lines; a synthetic task corpus with one checkable answer per line), trains a tiny Dream-architecture
model from scratch with binary masking, then continues it for the same steps with binary masking and
with soft-masking (p_sm 0.8, k 3), per seed, and writes
results.json, report.md and report.png (the paper's claims C1-C8 with verdicts, paired differences with
bootstrap intervals) to --output_dir.
Every field of `replication.train.ReplicationArgs` is a flag. See docs/replication.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `replication` next to this file, also when imported

from replication.train import main  # noqa: E402

if __name__ == "__main__":
    main()
