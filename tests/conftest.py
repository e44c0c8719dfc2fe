import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test uses tiny models: one thread avoids OpenMP spin-waits on a shared 2-core machine
    (about 20x faster here than two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    """On a machine that cannot contain generated programs (no util-linux `unshare`, user
    namespaces disabled), the evaluator refuses to run them; the suite's own test programs then run
    uncontained with the explicit opt-in, and the tests that check containment itself skip."""
    from sm_dream.evaluation import code_execution

    if not code_execution._probe().contained:
        os.environ[code_execution.OPT_IN] = "1"
