# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""`SoftMaskTrainer`: `transformers.Trainer` with the two-pass SM loss (paper Algorithm 1).

The library keeps checkpointing, resume, gradient accumulation, distributed launch, logging
(`report_to`) and progress bars. This class changes four things:

- compute_loss: draws the noise (t, response-only mask, SM switch per sample; `sm_dream.training.noise`),
  decides pass 1 across ranks (it runs if any sample on any rank uses SM, so every rank runs the
  same graph: ZeRO-2 / ZeRO-3 need that) and returns `sm_two_pass_loss` (`sm_dream.training.losses`).
- Normalisation under gradient accumulation: N, the number of response tokens, is counted over all
  micro-batches of the optimizer step and all ranks before the step (`_get_num_items_in_batch`);
  each micro-batch returns its share sum(CE/t) / N (times the world size, which the gradient
  averaging of DDP / DeepSpeed divides out), so `loss_is_scaled_for_ga = True`.
- create_optimizer: the adapter / SM learning-rate groups (`sm_dream.training.adapters.optimizer_groups`).
- Logging: every logging step adds the mapped SM values (sm/w_s, sm/w_a, sm/w_b), the SM learning
  rate and lambda statistics since the last log. Evaluation reports a seeded, batch-size-independent
  eval_loss and, when SM is trained, eval_loss_binary and eval_loss_sm (all samples without / with SM).
"""

from collections import defaultdict

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import Trainer

from .adapters import optimizer_groups, sm_values
from .losses import sm_two_pass_loss
from .noise import sample_noise


class SoftMaskTrainer(Trainer):
    """Trainer for `SoftMaskDreamForDiffusionLM` (plain, PEFT-wrapped or under DDP / DeepSpeed).

    Needs `SMTrainingArguments` (p_sm, t_low, t_high, sm_learning_rate, eval_noise_seed) and batches
    from `DiffusionDataCollator` (input_ids, attention_mask, response_mask, example_id).
    """

    loss_is_scaled_for_ga = True  # see the module docstring: losses are divided by the step's N

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.p_sm > 0 and not extract_model_from_parallel(self.model).config.sm_enabled:
            raise ValueError(f"p_sm={self.args.p_sm} trains soft-masking but the model has sm_enabled=False; "
                             "set p_sm: 0 (binary baseline) or sm_enabled: true in model_config_overrides.")
        self._sm_log = defaultdict(float)
        self._eval_sums = defaultdict(float)
        # compute_loss divides by the response tokens of the whole optimizer step (num_items_in_batch), so
        # the Trainer must not divide by the accumulation steps again; said explicitly, since releases
        # infer it differently (4.57 from the PEFT wrapper's forward signature).
        self.model_accepts_loss_kwargs = True

    # ---- optimizer -----------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = optimizer_groups(opt_model, self.args.learning_rate, self.args.sm_learning_rate,
                                      self.args.weight_decay, self.get_decay_parameter_names(opt_model))
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ---- loss ----------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples, device):
        """N: response tokens over the micro-batches of this optimizer step, summed over ranks."""
        if not batch_samples or "response_mask" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        count = sum(batch["response_mask"].sum() for batch in batch_samples).to(device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def _any_rank(self, flag: bool) -> bool:
        if self.args.world_size <= 1:
            return flag
        device = self.args.device
        return bool(self.accelerator.gather(torch.tensor([float(flag)], device=device)).sum() > 0)

    def _loss(self, model, inputs, p_sm, num_items, seeds=None):
        noise = sample_noise(inputs["response_mask"], self.args.t_low, self.args.t_high, p_sm, seeds=seeds)
        first_pass = self._any_rank(bool(noise.sm_on.any())) if p_sm > 0 else False
        return sm_two_pass_loss(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["response_mask"],
                                noise.masked, noise.t, noise.sm_on, first_pass=first_pass, num_items=num_items)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self._loss(model, inputs, self.args.p_sm, num_items_in_batch)
        self._record(out)
        loss = out.loss * (self.args.world_size if num_items_in_batch is not None else 1)
        return (loss, {"loss": out.loss.detach()}) if return_outputs else loss

    def _record(self, out) -> None:
        log = self._sm_log
        log["micro_batches"] += 1
        log["first_pass"] += float(out.first_pass)
        if out.lam is not None and out.lam.numel():
            log["lam_sum"] += float(out.lam.sum())
            log["lam_count"] += out.lam.numel()
            log["lam_max"] = max(log["lam_max"], float(out.lam.max()))

    # ---- evaluation ----------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Seeded noise per example (eval_noise_seed, example_id): the same masks in every run.

        With SM trained (p_sm > 0) every batch goes through twice, all samples binary and all with
        SM; the training mix (sample i with SM iff its seeded draw < p_sm) is read off per sample.
        """
        inputs = self._prepare_inputs(inputs)
        seeds = inputs["example_id"] + self.args.eval_noise_seed * 1_000_003
        p_sm = self.args.p_sm
        with torch.no_grad():
            binary = self._loss(model, inputs, 0.0, num_items=None, seeds=seeds)
            per_sample = binary.nll_per_sample
            self._eval_sums["nll_binary"] += float(per_sample.sum())
            if p_sm > 0:
                soft = self._loss(model, inputs, 1.0, num_items=None, seeds=seeds)
                self._eval_sums["nll_sm"] += float(soft.nll_per_sample.sum())
                sm_on = sample_noise(inputs["response_mask"], self.args.t_low, self.args.t_high, p_sm,
                                     seeds=seeds).sm_on
                per_sample = torch.where(sm_on, soft.nll_per_sample, per_sample)
            self._eval_sums["nll"] += float(per_sample.sum())
            self._eval_sums["tokens"] += float(inputs["response_mask"].sum())
        return per_sample.sum() / inputs["response_mask"].sum().clamp_min(1), None, None

    def evaluation_loop(self, *args, **kwargs):
        """Trainer's loop; eval_loss* are then sum(CE/t) / N over the whole validation set (all ranks)."""
        self._eval_sums.clear()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        keys = sorted(self._eval_sums)
        sums = torch.tensor([self._eval_sums[k] for k in keys], dtype=torch.float64, device=self.args.device)
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums, "sum")
        totals = dict(zip(keys, sums.tolist()))
        for key in keys:
            if key.startswith("nll") and (key != "nll_binary" or self.args.p_sm > 0):
                output.metrics[f"{prefix}_loss{key[3:]}"] = totals[key] / max(totals["tokens"], 1.0)
        return output

    # ---- logging -------------------------------------------------------------------------------

    def log(self, logs, start_time=None):
        """Adds sm/* entries to training logs: mapped w, SM learning rate, lambda and pass-1 rates."""
        if "loss" in logs and self.model is not None:
            logs.update({f"sm/{k}": v for k, v in sm_values(self.model).items()})
            groups = self.optimizer.param_groups if self.optimizer is not None else []
            if "learning_rate" in logs and groups and "initial_lr" in groups[0]:
                # the lr used in this step: one schedule scales every group from its initial lr
                logs["sm/learning_rate"] = logs["learning_rate"] * groups[-1]["initial_lr"] / groups[0]["initial_lr"]
            log = self._sm_log
            if log["micro_batches"]:
                logs["sm/first_pass_rate"] = log["first_pass"] / log["micro_batches"]
            if log["lam_count"]:
                logs["sm/lambda_mean"] = log["lam_sum"] / log["lam_count"]
                logs["sm/lambda_max"] = log["lam_max"]
            log.clear()
        super().log(logs, start_time)
