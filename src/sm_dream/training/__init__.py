# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Two-pass SM training: noise, losses, data (records, chat files) and mixtures, PEFT adapters (folded
into their weights for the first pass: `folding`), the Trainer, run arguments, checks before loading
(`validation`), the output-folder policy (`run_folder`), export with a model card, and the `finetune`
entry point (docs/training.md). Needs the `train` extra (peft, accelerate, datasets)."""
