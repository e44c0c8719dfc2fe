# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The model: config, modeling, soft-masking and diffusion generation.

Every module here is copied into a saved checkpoint (`save_pretrained` follows the relative imports of
`configuration_sm_dream.py` and `modeling_sm_dream.py`), so a saved model loads with
`trust_remote_code=True` where sm_dream is not installed. They import only torch, transformers and
each other (relative imports), never anything above this folder.
"""
