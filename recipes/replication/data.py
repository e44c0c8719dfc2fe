# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Data of the small replication: two corpora that every machine has offline.

`stdlib` (real text): the Python standard library's own top-level sources, `sysconfig.get_paths()["stdlib"]/*.py`
(about 170 files, 4-5 MB, no test suites), sorted by name. Files go to the held-out split when

    crc32(file name) % heldout_every == 0

so the split depends only on names (stable across runs and machines that share a Python version).

`structured` (synthetic, generated here): code-like lines whose ends are fixed by their beginnings, so a
continuation can be checked exactly (`structured_problem`, `exact_match`). See docs/replication.md.

Tokenizer (per corpus): a byte-level BPE trained on the fly on the training texts only, with `<|endoftext|>` at id 0
(document separator = pad = eos) and `<|mask|>` appended as the last id, so `vocab_size = mask_id + 1`.

Windows: each split's texts (files, or generated documents) are tokenised, joined with `<|endoftext|>` and cut into
non-overlapping windows of `seq_len` tokens; `window_order` fixes which windows each training step sees.
"""

import random
import string
import sysconfig
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

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


def train_tokenizer(texts: Iterable[str], vocab_size: int):
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
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens([MASK_TOKEN])
    return tokenizer


def special_ids(tokenizer) -> Tuple[int, int]:
    """(eos_id, mask_id) of a tokenizer from `train_tokenizer`."""
    return tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(MASK_TOKEN)


def token_windows(tokenizer, texts: Iterable[str], seq_len: int) -> torch.Tensor:
    """All texts tokenised and joined with EOS, cut into (n, seq_len) windows (the tail is dropped)."""
    eos, _ = special_ids(tokenizer)
    stream: List[int] = []
    for text in texts:
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


# ---------------------------------------------------------------- the structured (synthetic) corpus

STRUCTURED_FAMILIES = ("progression", "sorted", "repeat")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def structured_problem(rng: random.Random, family: str) -> Tuple[str, str]:
    """(head, tail) of one synthetic line: `tail` is the only continuation consistent with `head`.

    progression: `xs = [a, a+d, ...]`, 10 terms, a in [0, 100), d in {1, 2}; the first two terms fix d.
    sorted:      `sorted([4 distinct letters]) == [` then the letters in order.
    repeat:      `def set_NAME(self, value):` then NAME three times in one statement (NAME one of 70
                 syllables, so the copies sit at the same token offsets in every line).
    The families are easy on purpose: a 0.37M-parameter model must get some lines exactly right.
    """
    if family == "progression":
        a, d = rng.randrange(100), rng.randrange(1, 3)
        terms = [a + i * d for i in range(10)]
        return f"xs = [{terms[0]}, {terms[1]}", "".join(f", {v}" for v in terms[2:]) + "]"
    if family == "sorted":
        letters = rng.sample(string.ascii_lowercase, 4)
        return f"sorted([{', '.join(letters)}]) == [", ", ".join(sorted(letters)) + "]"
    if family == "repeat":
        name = rng.choice(_SYLLABLES)
        return f"def set_{name}(self, value):", f" self.{name} = value; self.{name}_set = True; return self.{name}"
    raise ValueError(f"unknown structured family {family!r}; choose from {STRUCTURED_FAMILIES}.")


def structured_documents(num_documents: int, lines_per_document: int, seed: int) -> List[List[Tuple[str, str, str]]]:
    """`num_documents` lists of (family, head, tail) lines, families drawn uniformly, from `seed`."""
    rng = random.Random(seed)
    return [[(f, *structured_problem(rng, f))
             for f in (rng.choice(STRUCTURED_FAMILIES) for _ in range(lines_per_document))]
            for _ in range(num_documents)]


def document_text(lines: Sequence[Tuple[str, str, str]]) -> str:
    return "".join(head + tail + "\n" for _, head, tail in lines)


def structured_prompts(tokenizer, documents, seq_len: int, new_tokens: int, count: int) -> Dict:
    """Up to `count` checkable prompts from held-out `documents`, spread evenly over their lines.

    For line k of a document the window is the last `seq_len` tokens of the document's text up to the
    end of line k (without its newline). It is used when the last `new_tokens` tokens lie inside the
    line's tail (the part fixed by the head) and the tokens of the text before the tail are a prefix of
    the window's tokens, so that the reference continuation is exactly those `new_tokens` tokens.
    Returns {"windows": (g, seq_len) ids, "families": [g names]}.
    """
    eos, _ = special_ids(tokenizer)
    candidates = []
    for doc in documents:
        for k, (family, head, tail) in enumerate(doc):
            before = document_text(doc[:k]) + head
            ids_before = tokenizer.encode(before).ids
            ids = [eos] + tokenizer.encode(before + tail).ids  # the document starts after an EOS
            fixed = len(ids) - 1 - len(ids_before)
            if len(ids) >= seq_len and fixed >= new_tokens and ids[1: 1 + len(ids_before)] == ids_before:
                candidates.append((ids[-seq_len:], family))
    if not candidates:
        raise ValueError(f"no structured prompt of seq_len={seq_len} with {new_tokens} fixed new tokens; "
                         "lower the new tokens or raise the lines per document.")
    pick = torch.linspace(0, len(candidates) - 1, min(count, len(candidates))).long().tolist()
    return {"windows": torch.tensor([candidates[i][0] for i in pick], dtype=torch.long),
            "families": [candidates[i][1] for i in pick]}


def exact_match(tokenizer, generated: Sequence[int], reference: Sequence[int]) -> int:
    """1 when the generated continuation's text equals the reference continuation's, else 0.

    The reference is the only continuation consistent with the prompt (`structured_problem`), so this
    checks correctness exactly; comparing text, not ids, accepts another tokenisation of the same text.
    """
    return int(tokenizer.decode(list(generated)) == tokenizer.decode(list(reference)))


# ---------------------------------------------------------------- the task corpus (checkable answers)

TASK_FAMILIES = ("add", "sort", "reverse", "brackets")
_OPENERS, _CLOSERS = "([{<", ")]}>"


def task_problem(rng: random.Random, family: str, length: int) -> Tuple[str, str]:
    """(head, tail) of one task line whose answer `tail` is `length` space-separated symbols, fixed by `head`.

    Every symbol is written with a space before it, so the byte-level BPE (which never merges across a
    space) gives one token per answer symbol once its "Ġx" merges exist (`task_symbols_are_tokens`).
    add:      `add A + B =` with A, B of length - 1 digits; the sum written with exactly `length` digits
              (a leading 0 when there is no final carry), so each digit depends on the carries below it.
    sort:     `sort d1 .. dn :` n = length digits drawn with replacement; the answer is them ascending.
    reverse:  `reverse d1 .. dn :` n = length digits; the answer is them in reverse order.
    brackets: `close ...:` a bracket string over ( [ { < that leaves exactly `length` brackets open
              (random balanced pairs between the open ones); the answer closes them, innermost first.
    """
    if length < 2:
        raise ValueError(f"task length={length} must be >= 2 symbols.")
    spaced = lambda symbols: "".join(f" {s}" for s in symbols)  # noqa: E731
    if family == "add":
        a, b = (rng.randrange(10 ** (length - 1)) for _ in range(2))
        digits = lambda v, n: str(v).zfill(n)  # noqa: E731
        return f"add{spaced(digits(a, length - 1))} +{spaced(digits(b, length - 1))} =", spaced(digits(a + b, length))
    if family in ("sort", "reverse"):
        values = [str(rng.randrange(10)) for _ in range(length)]
        answer = sorted(values) if family == "sort" else values[::-1]
        return f"{family}{spaced(values)} :", spaced(answer)
    if family == "brackets":
        symbols, stack = [], []
        for _ in range(length):
            for _ in range(rng.randrange(3)):  # 0-2 balanced pairs before each bracket that stays open
                kind = rng.randrange(4)
                symbols += [_OPENERS[kind], _CLOSERS[kind]]
            kind = rng.randrange(4)
            symbols.append(_OPENERS[kind])
            stack.append(_CLOSERS[kind])
        return f"close{spaced(symbols)} :", spaced(stack[::-1])
    raise ValueError(f"unknown task family {family!r}; choose from {TASK_FAMILIES}.")


def task_documents(families: Sequence[str], length: int, num_documents: int, lines_per_document: int,
                   seed: int) -> List[List[Tuple[str, str, str]]]:
    """`num_documents` lists of (family, head, tail) task lines, families drawn uniformly, from `seed`."""
    for f in families:
        if f not in TASK_FAMILIES:
            raise ValueError(f"unknown task family {f!r}; choose from {TASK_FAMILIES}.")
    rng = random.Random(seed)
    return [[(f, *task_problem(rng, f, length))
             for f in (rng.choice(list(families)) for _ in range(lines_per_document))]
            for _ in range(num_documents)]


def task_symbols_are_tokens(tokenizer, documents) -> bool:
    """True when every answer of `documents` tokenises to one token per symbol (see `task_problem`)."""
    return all(len(tokenizer.encode(tail).ids) == len(tail.split()) for doc in documents for _, _, tail in doc)
