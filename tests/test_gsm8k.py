"""GSM8k answer extraction: what chat models write, the dataset's own gold answers (a sample here,
all 1,319 problems of the test split, shipped in tests/data/), and shifted answers scored wrong."""

import json
import os
from fractions import Fraction

import pytest

from sm_dream.evaluation.gsm8k_answers import extract_answer, gold_answer, is_correct

TEST_SPLIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gsm8k_test.jsonl")
GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("response,expected", [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", 18),
    ("Step 1: 16 - 3 - 4 = 9. Step 2: 9 * 2 = 18. The answer is 18.", 18),
    ("So she earns $18 per day. The answer is $18.", 18),
    ("Total: \\boxed{18}", 18),
    ("Total: $\\boxed{\\$1,080}$ dollars", 1080),
    ("The final answer is: 1,080.", 1080),
    ("Answer: -3", -3),
    ("First 5 apples, then 12 pears, so 17 fruits.", 17),
    ("The answer is 0.50", Fraction(1, 2)),
    ("The answer is 40%.", 40),
    ("\\boxed{18} and the answer is 20", 18),  # a boxed answer is preferred to "the answer is"
    ("The answer is 18. Check: 9 * 2 = 18, so the answer is 19", 19),  # the last one of a kind wins
    ("#### 7\nThe answer is 8", 7),  # `####` first: the dataset's own format
])
def test_extraction_accepts_what_chat_models_write(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize("response", ["I do not know.", "", "The answer is unclear."])
def test_no_number_is_no_answer(response):
    assert extract_answer(response) is None
    assert not is_correct(response, GOLD)


def test_gold_answer_and_its_errors():
    assert gold_answer(GOLD) == 18 and gold_answer("... #### 1,234") == 1234
    with pytest.raises(ValueError, match="must end with '#### <number>'"):
        gold_answer("eighteen")
    with pytest.raises(ValueError, match="No number after '####'"):
        gold_answer("#### eighteen")


def check_split(path):
    """Every gold solution and its rewrites in chat style score correct; the next problem's answer
    scores wrong unless the two numbers are equal. Returns (problems, shifted wrong, shifted equal)."""
    data = rows(path)
    wrong = equal = 0
    for i, row in enumerate(data):
        gold = gold_answer(row["answer"])
        number = row["answer"].rsplit("####", 1)[1].strip()
        reasoning = row["answer"].rsplit("####", 1)[0]
        for response in (row["answer"], f"{reasoning}The answer is {number}.",
                         f"{reasoning}So the total is $\\boxed{{{number}}}$."):
            assert is_correct(response, row["answer"]), (i, response[-80:])
        shifted = data[(i + 1) % len(data)]["answer"]
        if gold_answer(shifted) == gold:
            equal += 1
            assert is_correct(shifted, row["answer"])
        else:
            wrong += 1
            assert not is_correct(shifted, row["answer"]), i
    return len(data), wrong, equal


def test_whole_test_split():
    problems, wrong, equal = check_split(TEST_SPLIT)
    # every gold answer (as written, "The answer is N.", \boxed{N}) scores correct; the next problem's
    # answer scores wrong unless the two numbers are equal (15 neighbouring pairs are)
    assert (problems, wrong, equal) == (1319, 1304, 15)
