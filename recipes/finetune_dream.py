"""Soft-masking finetuning of Dream-7B (paper Appendix A.2): DoRA + SM on Tulu 3 SFT + SmolTalk.

Usage:
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml recipes/finetune_dream.py \
        --config recipes/dream/sft_sm_dora.yaml
    # the binary baseline: the same recipe with SM off
    accelerate launch recipes/finetune_dream.py --config recipes/dream/sft_binary_dora.yaml

--config is required (run without arguments for the list of shipped recipes); any key of the YAML
can be overridden on the command line (`--p_sm 0.8 --max_steps 100`); `--help` lists the options.
"""

from pathlib import Path

from sm_dream.training.finetune import run_recipe

if __name__ == "__main__":
    run_recipe(Path(__file__).parent)
