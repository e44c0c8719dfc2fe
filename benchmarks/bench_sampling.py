"""The paper's sampling settings (temperature 0.1, top-p 0.9) against greedy decoding, at the same NFE.

    python benchmarks/bench_sampling.py [--rounds 3 --cases 64/16 256/64 768/192 --baseline DIR]

Mid model of bench_generation.py (hidden 512, 6 layers, Dream's 152,064-token vocabulary, LM head x32),
64-token prompt, `entropy`, batch 1, one thread, CPU time; variants interleaved round by round, medians.
Each case runs SM on and off, with plain decoding and with a prefix cache (blocks of 32). Reported:
time(paper settings) / time(greedy), target <= 1.10, with the default draws (`torch.multinomial`'s,
one Exp(1) per vocabulary entry) and with `sampling_draws="inverse_cdf"` (one uniform per row).

`--baseline DIR` also times both settings with another copy of the decoding package (DIR: a
`sm_dream/model` directory, e.g. the previous release's, whose sampler sorted every row):

    mkdir -p /tmp/old && git archive <rev> src/sm_dream/model | tar -x -C /tmp/old
    python benchmarks/bench_sampling.py --baseline /tmp/old/src/sm_dream/model

and checks that both give the same tokens (the same generator seed). The baseline's 768/192 plain case
takes ~20 min a run; `--baseline_cases` limits it.
"""

import argparse
import contextlib

import torch

from bench_generation import _interleaved, _load_baseline, _mid_model, _using
from sm_dream.tiny import DREAM_VOCAB_SIZE

CASES = {"64/16": (64, 16), "256/64": (256, 64), "768/192": (768, 192)}
MODES = {"plain": {}, "prefix cache": dict(block_length=32, use_cache=True)}
SETTINGS = {"greedy": dict(temperature=0.0), "paper": dict(temperature=0.1, top_p=0.9),
            "paper, inverse_cdf": dict(temperature=0.1, top_p=0.9, sampling_draws="inverse_cdf")}
BASELINE_SETTINGS = ("greedy", "paper")  # the baseline's sampler has only multinomial draws


def measure(model, ids, case: str, mode: str, sm: str, baseline, rounds: int) -> list:
    """One table row: the settings timed in interleaved rounds (and the baseline's, if given)."""
    new, steps = CASES[case]

    def run(setting, loop=None):
        kwargs = dict(max_new_tokens=new, steps=steps, alg="entropy", stop_when_finished=False,
                      soft_masking=sm == "on", **MODES[mode], **SETTINGS[setting])

        def call():
            with _using(loop) if loop is not None else contextlib.nullcontext():
                return model.diffusion_generate(ids, generator=torch.Generator().manual_seed(0), **kwargs)
        return call

    variants = {name: run(name) for name in SETTINGS}
    if baseline is not None:
        variants.update({f"baseline {name}": run(name, baseline) for name in BASELINE_SETTINGS})
    outputs = {name: call() for name, call in variants.items()}  # warm-up and tokens
    result = {name: cpu for name, (_, cpu, _, _) in _interleaved(variants, rounds).items()}
    greedy = result["greedy"]
    row = [case, mode, sm, f"{result['paper'] / greedy:.3f}", f"{result['paper, inverse_cdf'] / greedy:.3f}"]
    if baseline is None:
        return row + ["", "", ""]
    same = all(torch.equal(outputs[name], outputs[f"baseline {name}"]) for name in BASELINE_SETTINGS)
    return row + [f"{result['baseline paper'] / result['baseline greedy']:.3f}",
                  f"{result['paper'] / result['baseline paper']:.3f}", str(same)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--sm", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--baseline", help="a sm_dream/model directory timed in the same rounds")
    parser.add_argument("--baseline_cases", nargs="+", choices=list(CASES), help="cases that time the baseline")
    parser.add_argument("--logit_scale", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _mid_model(args.logit_scale, k=3)
    ids = torch.randint(1, DREAM_VOCAB_SIZE - 1000, (1, 64))
    baseline = _load_baseline(args.baseline) if args.baseline else None
    print(f"mid model (hidden 512, 6 layers, vocab {DREAM_VOCAB_SIZE}), 64-token prompt, entropy, batch 1, "
          f"{torch.get_num_threads()} thread(s), CPU time, medians of {args.rounds} interleaved rounds")
    print("| case | mode | SM | paper / greedy | inverse_cdf / greedy | baseline: paper / greedy "
          "| paper: this / baseline | same tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        timed = baseline if not args.baseline_cases or case in args.baseline_cases else None
        for mode in args.modes:
            for sm in args.sm:
                print("| " + " | ".join(measure(model, ids, case, mode, sm, timed, args.rounds)) + " |", flush=True)


if __name__ == "__main__":
    main()
