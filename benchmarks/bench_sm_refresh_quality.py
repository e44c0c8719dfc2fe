"""Which masked positions need fresh SM feedback in block decoding? Quality of the feedback rules
against refreshing every mask at every step, on the models `make replicate` trains.

    make replicate                                      # trains and saves the models (seed 1)
    python benchmarks/bench_sm_refresh_quality.py [--models outputs/replicate_small/models]

Block decoding (no cache; the cached modes feed the same inputs) with the SM arm of seed 1 of each
corpus, under these rules (`sm_feedback_horizon`, `cache_refresh_interval`; docs/fast_decoding.md):
    every step       every mask gets fresh feedback at every step (`cache_refresh_interval=1`,
                     horizon = the whole suffix): the reference
    whole suffix     the block's first step (its refresh) feeds back every mask, the other steps the
                     block's masks (horizon = the whole suffix)
    next block       the refresh feeds back the masks of the block and of the next one (the default)
    block only       only the block's masks are ever fed back (horizon 0)
    SM off           binary decoding, for scale
    structured: token accuracy (the share of the 16 tokens equal to the only correct continuation;
                the whole 16 are rarely all right at this scale), greedy, `entropy` and `origin`
                unmasking, blocks of 4, NFE 1/4 (one step per block) and 1/2;
    stdlib:     NLL of a 32-token continuation under the binary arm of the same seed (nats per token,
                lower is better; `entropy`, temperature 0, so every difference comes from the rule),
                blocks of 8, NFE 1/4 and 1/2.
Per rule: the mean, the paired difference to `every step` per prompt with a 95% bootstrap interval,
and the share of prompts whose tokens differ from the reference.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

from replication.data import structured_documents, structured_prompts  # noqa: E402
from replication.evaluate import continuation_metrics  # noqa: E402
from replication.stats import bootstrap_ci, verdict  # noqa: E402
from replication.train import ReplicationArgs  # noqa: E402
from sm_dream import SoftMaskDreamForDiffusionLM  # noqa: E402

WHOLE = 10**6  # a horizon past any suffix
RULES = {
    "every step": dict(cache_refresh_interval=1, sm_feedback_horizon=WHOLE),
    "whole suffix": dict(sm_feedback_horizon=WHOLE),
    "next block": dict(sm_feedback_horizon=None),
    "block only": dict(sm_feedback_horizon=0),
    "SM off": dict(soft_masking=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="outputs/replicate_small/models")
    parser.add_argument("--structured_new_tokens", type=int, default=16)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--corpora", nargs="+", default=["structured", "stdlib"])
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    root = Path(ns.models)
    if not (root / "structured" / "sm").is_dir() and not (root / "stdlib" / "sm").is_dir():
        raise SystemExit(f"no trained models under {root}: run `make replicate` first (it saves seed 1's arms).")
    args = ReplicationArgs(**json.loads((root.parent / "results.json").read_text())["args"])
    results = {}
    if "structured" in ns.corpora and (root / "structured" / "sm").is_dir():
        results["structured"] = structured(root / "structured", args, ns)
    if "stdlib" in ns.corpora and (root / "stdlib" / "sm").is_dir():
        results["stdlib"] = stdlib(root / "stdlib", args, ns)
    if ns.json:
        Path(ns.json).write_text(json.dumps(results, indent=1))


def load(folder: Path):
    return SoftMaskDreamForDiffusionLM.from_pretrained(folder).eval()


def generate(model, prompts, new_tokens: int, budget: float, block_length: int, alg: str, rule: dict):
    settings = dict(max_new_tokens=new_tokens, nfe_budget=budget, alg=alg, temperature=0.0,
                    block_length=block_length, soft_masking=True, generator=torch.Generator().manual_seed(7))
    settings.update(rule)
    with torch.no_grad():
        return model.diffusion_generate(prompts, **settings)


def structured(folder: Path, args, ns) -> dict:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "sm" / "tokenizer.json"))
    n = ns.structured_new_tokens
    docs = structured_documents(args.structured_heldout_docs, args.structured_lines, seed=2)
    windows = structured_prompts(tokenizer, docs, args.seq_len, n, args.gen_prompts)["windows"]
    prompt_length = windows.shape[1] - n
    model = load(folder / "sm")
    print(f"structured: {windows.shape[0]} prompts, {n} new tokens, blocks of 4, SM {model.soft_mask.mapped()}")
    out = {}
    for alg in ("entropy", "origin"):
        for budget in ns.budgets:
            scores, tokens = {}, {}
            for name, rule in RULES.items():
                seqs = generate(model, windows[:, :prompt_length], n, budget, 4, alg, rule)
                tokens[name] = seqs[:, prompt_length:]
                scores[name] = (tokens[name] == windows[:, prompt_length:]).float().mean(-1).tolist()
            out[f"{alg} {budget}"] = report(f"{alg}, NFE {budget}, token accuracy", scores, tokens,
                                            lower_is_better=False)
    return out


def stdlib(folder: Path, args, ns) -> dict:
    windows = torch.load(folder / "sm" / "prompts.pt")
    n = args.gen_new_tokens
    prompt_length = windows.shape[1] - n
    model, scorer = load(folder / "sm"), load(folder / "binary")
    print(f"stdlib: {windows.shape[0]} prompts, {n} new tokens, blocks of 8, SM {model.soft_mask.mapped()}")
    out = {}
    for budget in ns.budgets:
        scores, tokens = {}, {}
        for name, rule in RULES.items():
            seqs = generate(model, windows[:, :prompt_length], n, budget, 8, "entropy", rule)
            tokens[name] = seqs[:, prompt_length:]
            scores[name] = continuation_metrics(scorer, seqs, prompt_length, args)["nll_rows"]
        out[f"entropy {budget}"] = report(f"entropy, NFE {budget}, NLL", scores, tokens, lower_is_better=True)
    return out


def report(title: str, scores: dict, tokens: dict, lower_is_better: bool) -> dict:
    reference = scores["every step"]
    rows = {}
    print(f"  {title}")
    for name, values in scores.items():
        diff = [a - b for a, b in zip(values, reference)]
        ci = bootstrap_ci([diff]) if name != "every step" else (0.0, 0.0, 0.0)
        differs = float((tokens[name] != tokens["every step"]).any(-1).float().mean())
        rows[name] = dict(mean=sum(values) / len(values), diff=ci, prompts_differ=differs)
        call = verdict(ci[1], ci[2], lower_is_better).replace("SM ", "") if name != "every step" else "reference"
        print(f"    {name:>13}: mean {rows[name]['mean']:.4f}  - every step {ci[0]:+.4f} "
              f"[{ci[1]:+.4f}, {ci[2]:+.4f}] ({call}); prompts with other tokens {differs:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
