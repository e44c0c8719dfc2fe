# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The small CPU replication (research code, not part of the installed `sm_dream` package).

`recipes/replicate_small.py` is the entry point; see docs/replication.md.
- `train`: settings, pretraining, the two continuation arms, the run;
- `data`: the corpus, the BPE and the training windows;
- `evaluate`: held-out NLL and generation metrics;
- `report`: report.md and report.png.
"""
