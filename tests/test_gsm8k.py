"""GSM8k answer extraction (the task's filter, on math-verify's parser): what chat models write, the
dataset's own gold answers (a sample here, all 1,319 problems of the test split, shipped in
tests/data/), and shifted answers scored wrong, through the filter and the task's process_results."""

import json
import os
from fractions import Fraction

import pytest
from lm_eval_testing import load_task, score_responses

from sm_dream.evaluation.math_answers import NO_ANSWER, gsm8k_answer, gsm8k_gold

TEST_SPLIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gsm8k_test.jsonl")
GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


@pytest.fixture(scope="module")
def task():
    return load_task("gsm8k_instruct_smd", gsm8k_file=TEST_SPLIT)


def correct(task, pairs) -> list:
    """Whether the task scores each (response, gold `answer` field) correct: its filter, then process_results."""
    return [scores["exact_match"] == 1.0 for _, scores in score_responses(task, [(r, {"answer": a}) for r, a in pairs])]


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
    ("The answer is 0.50", "1/2"),
    ("The answer is 18.00", 18),
    ("The answer is 40%.", 40),
    ("\\boxed{18} and the answer is 20", 18),  # a boxed answer is preferred to "the answer is"
    ("The answer is 18. Check: 9 * 2 = 18, so the answer is 19", 19),  # the last one of a kind wins
    ("#### 7\nThe answer is 8", 7),  # `####` first: the dataset's own format
    ("The answer from step 1: 4 + 2 = 6.\n**Final answer:** **41**", 41),  # markdown bold
    ("She answered 5 questions right and scored 41 points.", 41),  # "answered" is no anchor: the last number
    ("That is 2**3 = 8 boxes.", 8),
])
def test_extraction_accepts_what_chat_models_write(response, expected):
    assert gsm8k_answer(response) == str(expected)


@pytest.mark.parametrize("response", ["I do not know.", "", "The answer is unclear."])
def test_no_number_is_no_answer(task, response):
    assert gsm8k_answer(response) == NO_ANSWER
    assert correct(task, [(response, GOLD)]) == [False]


def test_gold_answer_and_its_errors():
    assert gsm8k_gold(GOLD) == "18" and gsm8k_gold("... #### 1,234") == "1234"
    with pytest.raises(ValueError, match="must end with '#### <number>'"):
        gsm8k_gold("eighteen")
    with pytest.raises(ValueError, match="No number after '####'"):
        gsm8k_gold("#### eighteen")


def check_split(task, path):
    """Every gold solution and its rewrites in chat style score correct; the next problem's answer
    scores wrong unless the two numbers are equal (compared here as the digits after `####`, commas
    dropped). Returns (problems, shifted wrong, shifted equal)."""
    data = rows(path)
    numbers = [row["answer"].rsplit("####", 1)[1].strip() for row in data]
    pairs, expected = [], []
    for i, row in enumerate(data):
        reasoning = row["answer"].rsplit("####", 1)[0]
        for response in (row["answer"], f"{reasoning}The answer is {numbers[i]}.",
                         f"{reasoning}So the total is $\\boxed{{{numbers[i]}}}$."):
            pairs.append((response, row["answer"]))
            expected.append(True)
        shifted = (i + 1) % len(data)
        pairs.append((data[shifted]["answer"], row["answer"]))
        expected.append(Fraction(numbers[shifted].replace(",", "")) == Fraction(numbers[i].replace(",", "")))
    got = correct(task, pairs)
    assert [p for p, g, e in zip(pairs, got, expected) if g != e] == []
    return len(data), expected.count(False), expected.count(True) - 3 * len(data)


def test_whole_test_split(task):
    problems, wrong, equal = check_split(task, TEST_SPLIT)
    # every gold answer (as written, "The answer is N.", \boxed{N}) scores correct; the next problem's
    # answer scores wrong unless the two numbers are equal (15 neighbouring pairs are)
    assert (problems, wrong, equal) == (1319, 1304, 15)
