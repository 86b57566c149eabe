"""Worker for the sharded-generation test: count FSDP2's all-gathers in one generation call.

    torchrun --nproc_per_node 2 dist_generate.py MODEL_DIR OUT {plain|peft}

Each rank loads the model, keeps an unsharded copy, shards the model as accelerate's FSDP2 plugin
does (`fully_shard` on every decoder layer, then on the root), and generates greedily with
`HFRolloutEngine` twice: the second call is counted (the first also initialises FSDP's root). The
all-gathers are FSDP2's own collective (`torch.distributed.all_gather_single`, FSDP2's default
all-gather in torch 2.13), counted by wrapping it. Writes OUT/rank<R>.json.
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.distributed import _reshards_after_forward
from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout.base import SamplingParams
from atesd.rollout.hf import HFRolloutEngine
from atesd.toy.task import toy_problems


def main(model_dir: str, out: str, wrap: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if wrap == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    whole = copy.deepcopy(model)
    layers = [m for m in model.modules() if type(m).__name__ == "Qwen3DecoderLayer"]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]

    problems = toy_problems(4, seed=rank, split="test")  # each rank its own prompts, as in training
    prompts = [student_prompt(tokenizer, p.problem, PromptConfig()) for p in problems]
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    calls = [0]
    real = dist.all_gather_single

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    dist.all_gather_single = counted
    engine = HFRolloutEngine(model, tokenizer, decoder="generate")
    engine.generate(prompts, params)
    first = calls[0]
    settings_before = [_reshards_after_forward(u) for u in units]  # after the root's lazy initialisation
    calls[0] = 0
    rollouts = engine.generate(prompts, params)
    counted_call = calls[0]
    dist.all_gather_single = real
    expected = HFRolloutEngine(whole, tokenizer, decoder="generate").generate(prompts, params)
    record = {
        "units": len(units),
        "first_call_all_gathers": first,
        "all_gathers": counted_call,
        "decoded_tokens": max(len(r.completion_ids) for r in rollouts),
        "same_as_unsharded": [r.completion_ids for r in rollouts] == [r.completion_ids for r in expected],
        "resharded": all(isinstance(p, DTensor) for p in model.parameters()),
        "settings_restored": [_reshards_after_forward(u) for u in units] == settings_before,
        "layers_reshard_after_forward": [_reshards_after_forward(u) for u in units if u in layers],
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
