# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Two-pass SM training: noise, losses, data, PEFT adapters, the Trainer, run arguments, export and
the `finetune` entry point (docs/training.md). Needs the `train` extra (peft, accelerate, datasets)."""
