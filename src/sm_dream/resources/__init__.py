"""Data files shipped with sm_dream: the released Dream-v0-Instruct-7B config and tokenizer (no weights)."""

from pathlib import Path

DREAM_FIXTURE = Path(__file__).parent / "dream-v0-instruct-7b"
