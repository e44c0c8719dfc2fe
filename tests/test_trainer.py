import json

import pytest
import torch
from transformers import TrainerCallback

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.training.adapters import optimizer_groups, prepare_for_finetuning, sm_values
from sm_dream.training.configs import SMTrainingArguments
from sm_dream.training.data import DiffusionDataCollator
from sm_dream.tiny import small_vocab_config
from sm_dream.training.trainer import SoftMaskTrainer

datasets = pytest.importorskip("datasets")
pytest.importorskip("peft")


SM_INIT = dict(sm_init_scale=0.3, sm_init_offset=-4.5, sm_init_steepness=1.0)  # lambda ~ 0.15 at init


def synthetic_dataset(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "response_start": [], "example_id": []}
    for i in range(n):
        length = int(torch.randint(10, 18, (1,), generator=g))
        rows["input_ids"].append(torch.randint(1, 120, (length,), generator=g).tolist())
        rows["response_start"].append(int(torch.randint(3, 7, (1,), generator=g)))
        rows["example_id"].append(i)
    return datasets.Dataset.from_dict(rows)


def make_trainer(tmp_path, mode="dora", callbacks=None, train=None, eval_dataset=None, cls=SoftMaskTrainer, **kwargs):
    torch.manual_seed(0)
    model = prepare_for_finetuning(SoftMaskDreamForDiffusionLM(small_vocab_config(**SM_INIT)), mode, r=4, alpha=4)
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                    p_sm=0.5, warmup_ratio=0.03)
    defaults.update(kwargs)
    args = SMTrainingArguments(**defaults)
    return cls(model=model, args=args, train_dataset=train if train is not None else synthetic_dataset(),
               eval_dataset=eval_dataset, data_collator=DiffusionDataCollator(pad_token_id=0), callbacks=callbacks)


class SeededNoiseTrainer(SoftMaskTrainer):
    """Noise drawn per example id, so different micro-batch splits see identical masks."""

    def _loss(self, model, inputs, p_sm, num_items, seeds=None):
        return super()._loss(model, inputs, p_sm, num_items, seeds=inputs["example_id"] if seeds is None else seeds)


class GradCapture(TrainerCallback):
    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    runs = {}
    for batch, ga in ((8, 1), (4, 2), (2, 4)):
        capture = GradCapture()
        trainer = make_trainer(tmp_path / f"{batch}", callbacks=[capture], cls=SeededNoiseTrainer, max_steps=1,
                               per_device_train_batch_size=batch, gradient_accumulation_steps=ga)
        trainer.train()
        runs[batch] = (capture.grads[0], trainer.state.log_history[0]["loss"])
    ref_grads, ref_loss = runs[8]
    assert any("soft_mask" in n for n in ref_grads) and any("lora_B" in n for n in ref_grads)
    for batch in (4, 2):
        grads, loss = runs[batch]
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-4)  # transformers 4.x logs 4 decimals
        for name, g in ref_grads.items():
            # float32 summation order differs with the micro-batch shapes (and by release); a scaling or a
            # lost sample would be off by a large fraction of the gradient, far above this tolerance
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-7 + 1e-2 * float(g.abs().max()), msg=name)


def test_two_learning_rate_groups_and_sm_logging(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, warmup_ratio=0.0, sm_learning_rate=1e-2, learning_rate=1e-3)
    trainer.train()
    groups = trainer.optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [24, 3]  # 8 x (lora A, B, magnitude) without decay, then SM
    assert groups[0]["initial_lr"] == 1e-3 and groups[1]["initial_lr"] == 1e-2 and groups[1]["weight_decay"] == 0.0
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert {"sm/w_s", "sm/w_a", "sm/w_b", "sm/learning_rate", "sm/lambda_mean", "sm/lambda_max"} <= set(entry)
        assert entry["sm/learning_rate"] / entry["learning_rate"] == pytest.approx(10.0)
    assert logs[-1]["sm/w_s"] == pytest.approx(sm_values(trainer.model)["w_s"])
    assert logs[-1]["sm/w_s"] != pytest.approx(0.3, abs=1e-6)  # w moved
    assert 0.0 < logs[0]["sm/lambda_mean"] <= logs[0]["sm/lambda_max"] <= 0.3


def test_full_finetuning_is_one_flag_away(tmp_path):
    trainer = make_trainer(tmp_path, mode="full", max_steps=1)
    trainer.train()
    model = trainer.model
    assert all(p.requires_grad for p in model.parameters())
    groups = optimizer_groups(model, 1e-5, 1e-2, 0.0, [])
    assert [len(g["params"]) for g in groups] == [len(list(model.parameters())) - 3, 3]
    with pytest.raises(ValueError, match=r"finetuning='qlora' is unknown \(did you mean 'lora'\?\); "
                                         r"choose one of \['dora', 'lora', 'full'\]"):
        prepare_for_finetuning(model, "qlora")


def test_binary_baseline_never_runs_pass_one(tmp_path):
    calls = []

    class Counting(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(lambda *a: calls.append(1))

    trainer = make_trainer(tmp_path, p_sm=0.0, max_steps=2, callbacks=[Counting()])
    trainer.train()
    assert len(calls) == 2  # one forward per step
    assert all(entry["sm/first_pass_rate"] == 0.0 for entry in trainer.state.log_history if "loss" in entry)
    assert sm_values(trainer.model)["w_s"] == pytest.approx(0.3, rel=1e-6)  # no gradient, no change


def test_eval_loss_is_seeded_and_independent_of_batch_size(tmp_path):
    valid = synthetic_dataset(10, seed=5)
    results = []
    for eval_batch in (2, 3, 10):
        trainer = make_trainer(tmp_path, eval_dataset=valid, per_device_eval_batch_size=eval_batch)
        results.append(trainer.evaluate())
    for metrics in results[1:]:
        for key in ("eval_loss", "eval_loss_binary", "eval_loss_sm"):
            assert metrics[key] == pytest.approx(results[0][key], rel=1e-5), key
    first = results[0]
    lo, hi = sorted((first["eval_loss_binary"], first["eval_loss_sm"]))
    # the combined loss lies between its parts (up to float32 summation order, which differs by release)
    assert first["eval_loss_binary"] != first["eval_loss_sm"]
    assert lo * (1 - 1e-5) <= first["eval_loss"] <= hi * (1 + 1e-5)


def test_sm_training_needs_sm_enabled(tmp_path):
    torch.manual_seed(0)
    model = SoftMaskDreamForDiffusionLM(small_vocab_config(sm_enabled=False))
    args = SMTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", p_sm=0.5)
    with pytest.raises(ValueError, match=r"p_sm=0.5 trains soft-masking but the model has sm_enabled=False"):
        SoftMaskTrainer(model=model, args=args, train_dataset=synthetic_dataset(4),
                        data_collator=DiffusionDataCollator(pad_token_id=0))


class Kill(TrainerCallback):
    """Stops the process's training abruptly once `at` steps are done (after the checkpoint)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed")


def test_resume_after_kill_gives_the_same_sm_parameters_and_losses(tmp_path):
    common = dict(max_steps=5, save_strategy="steps", save_steps=2, p_sm=0.5)
    straight = make_trainer(tmp_path / "straight", **common)
    straight.train()
    killed = make_trainer(tmp_path / "killed", callbacks=[Kill(3)], **common)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = make_trainer(tmp_path / "killed", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "killed" / "checkpoint-2"))
    losses = lambda t: {e["step"]: e["loss"] for e in t.state.log_history if "loss" in e}  # noqa: E731
    assert set(losses(resumed)) == {1, 2, 3, 4, 5}  # 1-2 restored from checkpoint-2, 3-5 trained again
    for step in (1, 2, 3, 4, 5):
        assert losses(resumed)[step] == pytest.approx(losses(straight)[step], rel=1e-6), step
    for key, value in sm_values(straight.model).items():
        assert sm_values(resumed.model)[key] == pytest.approx(value, rel=1e-6), key
    saved = json.loads((tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert saved["global_step"] == 4


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    """The 7B recipes turn on non-reentrant activation checkpointing (DoRA, two passes)."""
    grads = []
    for checkpointing in (False, True):
        capture = GradCapture()
        extra = (dict(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
                 if checkpointing else {})
        trainer = make_trainer(tmp_path / str(checkpointing), callbacks=[capture], cls=SeededNoiseTrainer,
                               max_steps=1, **extra)
        trainer.train()
        assert trainer.model.base_model.model.model.gradient_checkpointing == checkpointing
        grads.append(capture.grads[0])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 27
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_bf16_model_keeps_float32_sm_parameters(tmp_path):
    """lr 1e-2 steps on w would round away in bf16 (spacing 0.03 near s_raw = -5)."""
    from sm_dream.training.configs import ModelArguments
    from sm_dream.training.finetune import load_model
    from sm_dream.training.validation import load_model_config
    from sm_dream.training.losses import sm_two_pass_loss
    from sm_dream.training.noise import sample_noise
    from sm_dream.resources import DREAM_FIXTURE

    torch.manual_seed(0)
    SoftMaskDreamForDiffusionLM(small_vocab_config()).save_pretrained(tmp_path / "base")
    args = ModelArguments(model_name_or_path=str(tmp_path / "base"), torch_dtype="bfloat16",
                          tokenizer_name_or_path=str(DREAM_FIXTURE))
    model = load_model(args, load_model_config(args), seed=0)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.soft_mask.parameters()} == {torch.float32}
    wrapped = prepare_for_finetuning(model, "dora", r=4, alpha=4)
    trainable = {n: p.dtype for n, p in wrapped.named_parameters() if p.requires_grad}
    assert {d for n, d in trainable.items() if "soft_mask" in n} == {torch.float32}
    ids = torch.randint(1, 120, (2, 10))
    resp = torch.zeros(2, 10, dtype=torch.bool)
    resp[:, 4:] = True
    noise = sample_noise(resp, p_sm=1.0)
    out = sm_two_pass_loss(wrapped, ids, None, resp, noise.masked, noise.t, noise.sm_on)
    out.loss.backward()
    assert all(p.grad is not None for n, p in wrapped.named_parameters() if "soft_mask" in n and p.requires_grad)
