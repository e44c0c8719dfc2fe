"""Writes chat_tiny.jsonl: 320 short procedural chat records (arithmetic, strings, small Python
functions, multi-turn) for the tiny CPU recipe. Deterministic: `python make_chat_tiny.py`."""

import json
import random
from pathlib import Path

OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
WORDS = ["apple", "river", "planet", "window", "garden", "silver", "rocket", "pencil", "forest", "candle",
         "bridge", "marble", "summer", "winter", "dragon", "castle", "button", "ladder", "mirror", "orange"]
FUNCS = [
    ("returns the square of x", "square", "x", "return x * x"),
    ("returns the sum of a list xs", "total", "xs", "return sum(xs)"),
    ("returns True if n is even", "is_even", "n", "return n % 2 == 0"),
    ("returns the largest item of a list xs", "largest", "xs", "return max(xs)"),
    ("reverses a string s", "reverse", "s", "return s[::-1]"),
    ("counts the vowels in a string s", "count_vowels", "s", "return sum(c in 'aeiou' for c in s.lower())"),
    ("returns the absolute value of x", "absolute", "x", "return x if x >= 0 else -x"),
    ("returns the last item of a list xs", "last", "xs", "return xs[-1]"),
]


def arithmetic(rng):
    a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice(list(OPS))
    return [{"role": "user", "content": f"What is {a} {op} {b}?"},
            {"role": "assistant", "content": f"{a} {op} {b} is {OPS[op](a, b)}."}]


def strings(rng):
    w = rng.choice(WORDS)
    if rng.random() < 0.5:
        return [{"role": "user", "content": f"Spell the word '{w}' backwards."},
                {"role": "assistant", "content": f"The word '{w}' backwards is '{w[::-1]}'."}]
    return [{"role": "user", "content": f"How many letters does the word '{w}' have?"},
            {"role": "assistant", "content": f"The word '{w}' has {len(w)} letters."}]


def code(rng):
    desc, name, arg, body = rng.choice(FUNCS)
    return [{"role": "user", "content": f"Write a Python function that {desc}."},
            {"role": "assistant", "content": f"```python\ndef {name}({arg}):\n    {body}\n```"}]


def sorting(rng):
    xs = rng.sample(range(1, 50), rng.randint(3, 6))
    return [{"role": "user", "content": f"Sort these numbers in increasing order: {', '.join(map(str, xs))}."},
            {"role": "assistant", "content": f"In increasing order: {', '.join(map(str, sorted(xs)))}."}]


def multi_turn(rng):
    first, second = arithmetic(rng), arithmetic(rng)
    system = [{"role": "system", "content": "You are a concise math tutor."}] if rng.random() < 0.5 else []
    return system + first + second


def main():
    rng = random.Random(0)
    makers = [arithmetic, strings, code, sorting, multi_turn]
    records = [{"messages": makers[i % len(makers)](rng)} for i in range(320)]
    out = Path(__file__).with_name("chat_tiny.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} records to {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
