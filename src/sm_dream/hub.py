# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Offline-first start for the recipes and `lm_eval --model sm_dream`: when HF_HUB_OFFLINE is not set
and the Hub does not answer one quick request, switch to offline mode, so that a missing model or
dataset fails in seconds from the local cache instead of after huggingface_hub's retries."""

import os
import sys

from .errors import is_main_process

HUB_PROBE_SECONDS = 2.5


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """One HEAD request to the Hub endpoint; False when it does not answer within `timeout` seconds."""
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except Exception:  # noqa: BLE001  (any failure: DNS, refused, timeout, proxy)
        return False
    return True


def offline_when_hub_unreachable() -> bool:
    """Offline-first, as `make` runs: with no HF_HUB_OFFLINE set and the Hub not answering, set it (and
    the libraries' copies read at import), so missing files fail in seconds, not after retries
    (huggingface_hub would retry each request for tens of seconds). Returns True when it switched."""
    if "HF_HUB_OFFLINE" in os.environ or hub_reachable():
        return False
    import huggingface_hub.constants

    import transformers.utils.hub

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read per call by huggingface_hub (and transformers 5)
    if hasattr(transformers.utils.hub, "_is_offline_mode"):  # transformers 4.x: a copy taken at import
        transformers.utils.hub._is_offline_mode = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
    if is_main_process():
        print("note: the Hugging Face Hub is unreachable: running offline (HF_HUB_OFFLINE=1), from local files "
              "and the cache only.", file=sys.stderr)
    return True
