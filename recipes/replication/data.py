# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Data of the small replication: a real corpus that every machine has offline.

Corpus: the Python standard library's own top-level sources, `sysconfig.get_paths()["stdlib"]/*.py`
(about 170 files, 4-5 MB, no test suites), sorted by name. Files go to the held-out split when

    crc32(file name) % heldout_every == 0

so the split depends only on names (stable across runs and machines that share a Python version).

Tokenizer: a byte-level BPE trained on the fly on the training files only, with `<|endoftext|>` at id 0
(document separator = pad = eos) and `<|mask|>` appended as the last id, so `vocab_size = mask_id + 1`.

Windows: each split's files are tokenised, joined with `<|endoftext|>` and cut into non-overlapping
windows of `seq_len` tokens; `window_order` fixes which windows each training step sees.
"""

import sysconfig
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mask|>"


def stdlib_files(root: Optional[str] = None) -> List[Path]:
    """The sorted top-level `*.py` files of the standard library (or of `root`)."""
    directory = Path(root or sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in directory.glob("*.py") if p.is_file())
    if not files:
        raise ValueError(f"no *.py files under {str(directory)!r}; pass a corpus directory that has some.")
    return files


def split_files(
    files: Sequence[Path], heldout_every: int = 10, max_files: Optional[int] = None
) -> Tuple[List[Path], List[Path]]:
    """(train, held_out): a file is held out when crc32(its name) % heldout_every == 0.

    `max_files` keeps the first max_files training files and the first max_files // heldout_every
    (at least one) held-out files, for quick runs.
    """
    if heldout_every < 2:
        raise ValueError(f"heldout_every={heldout_every} must be >= 2 (1 in heldout_every files is held out).")
    held = [f for f in files if zlib.crc32(f.name.encode()) % heldout_every == 0]
    train = [f for f in files if zlib.crc32(f.name.encode()) % heldout_every != 0]
    if not held or not train:
        raise ValueError(f"{len(files)} files give an empty split with heldout_every={heldout_every}; use more files.")
    if max_files:
        train, held = train[:max_files], held[: max(1, max_files // heldout_every)]
    return train, held


def read_texts(files: Sequence[Path]) -> Iterator[str]:
    for f in files:
        yield f.read_text(encoding="utf-8", errors="replace")


def train_tokenizer(files: Sequence[Path], vocab_size: int):
    """A byte-level BPE with `vocab_size` ids in all: EOS at 0, the BPE tokens, then MASK last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} must be >= 300 (256 bytes + specials + some merges).")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the mask token takes the last id
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(read_texts(files), trainer=trainer)
    tokenizer.add_special_tokens([MASK_TOKEN])
    return tokenizer


def special_ids(tokenizer) -> Tuple[int, int]:
    """(eos_id, mask_id) of a tokenizer from `train_tokenizer`."""
    return tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(MASK_TOKEN)


def token_windows(tokenizer, files: Sequence[Path], seq_len: int) -> torch.Tensor:
    """All files tokenised and joined with EOS, cut into (n, seq_len) windows (the tail is dropped)."""
    eos, _ = special_ids(tokenizer)
    stream: List[int] = []
    for text in read_texts(files):
        stream.extend(tokenizer.encode(text).ids)
        stream.append(eos)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"{len(stream)} tokens make no window of seq_len={seq_len}; lower seq_len or add files.")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (n, l)


def window_order(num_windows: int, num_steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """(num_steps, batch_size) window indices: concatenated seeded permutations (epochs), cut into batches.

    The same (num_windows, seed) always gives the same order, so two arms with one seed see one order.
    """
    g = torch.Generator().manual_seed(seed)
    need = num_steps * batch_size
    epochs = [torch.randperm(num_windows, generator=g) for _ in range(-(-need // num_windows))]
    return torch.cat(epochs)[:need].view(num_steps, batch_size)
