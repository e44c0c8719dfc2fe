"""Recipe logging follows transformers' convention: progress once (main process), warnings elsewhere."""

import logging
from unittest import mock

import pytest
import transformers

from sm_dream.training.configs import SMTrainingArguments
from sm_dream.training.finetune import configure_logging


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger().level, logging.getLogger("sm_dream").level
    verbosity = transformers.utils.logging.get_verbosity()
    yield
    logging.getLogger().setLevel(root)
    logging.getLogger("sm_dream").setLevel(ours)
    transformers.utils.logging.set_verbosity(verbosity)


def _args(tmp_path, should_log, **kwargs):
    args = SMTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)
    patch = mock.patch.object(SMTrainingArguments, "should_log", new_callable=mock.PropertyMock,
                              return_value=should_log)
    return args, patch


def test_main_process_logs_progress_and_leaves_library_verbosity(tmp_path, restore_logging):
    transformers.utils.logging.set_verbosity(logging.ERROR)
    args, patch = _args(tmp_path, should_log=True)
    with patch:
        assert configure_logging(args) == logging.INFO
    assert logging.getLogger("sm_dream.training.finetune").isEnabledFor(logging.INFO)
    assert transformers.utils.logging.get_verbosity() == logging.ERROR


def test_other_processes_log_warnings_only(tmp_path, restore_logging):
    args, patch = _args(tmp_path, should_log=False)
    with patch:
        assert configure_logging(args) == logging.WARNING
    assert not logging.getLogger("sm_dream.training.finetune").isEnabledFor(logging.INFO)
    assert logging.getLogger("sm_dream.training.finetune").isEnabledFor(logging.WARNING)
    assert transformers.utils.logging.get_verbosity() == logging.WARNING


def test_explicit_log_level_sets_the_libraries_too(tmp_path, restore_logging):
    args, patch = _args(tmp_path, should_log=True, log_level="error")
    with patch:
        assert configure_logging(args) == logging.ERROR
    assert not logging.getLogger("sm_dream.training.finetune").isEnabledFor(logging.WARNING)
    assert transformers.utils.logging.get_verbosity() == logging.ERROR
