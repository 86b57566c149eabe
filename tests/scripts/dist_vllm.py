"""Worker for the two-process vLLM test: one engine per process (vLLM's external launcher, in the
process group accelerate set up from torchrun's environment), greedy ids before and after a weight
sync, next to the HF backend's on the same weights.

    torchrun --nproc_per_node 2 dist_vllm.py MODEL_DIR PROBLEMS OUT
"""

import json
import sys

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.data import load_problems
from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout import SamplingParams, make_rollout_engine

model_dir, problems_file, out = sys.argv[1:4]
accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
problems = load_problems(problems_file)[rank * 4:(rank + 1) * 4]  # each process its own prompts
prompts = [student_prompt(tokenizer, p.problem, PromptConfig()) for p in problems]
greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
vllm = make_rollout_engine("vllm", model, tokenizer, distributed_executor_backend="external_launcher",
                           max_model_len=512, enforce_eager=True)
hf = make_rollout_engine("hf", model, tokenizer)


def ids(engine):
    return [list(r.completion_ids) for r in engine.generate(prompts, greedy)]


record = {"prompts": prompts, "before": ids(vllm), "before_hf": ids(hf)}
generator = torch.Generator().manual_seed(1)  # the same new weights on both processes
with torch.no_grad():
    for parameter in model.parameters():
        if parameter.ndim == 2:
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
vllm.sync_weights(model)
record.update(after=ids(vllm), after_hf=ids(hf), in_process=vllm.in_process,
              executor=type(vllm.llm.llm_engine.engine_core.engine_core.model_executor).__name__)
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(record, fh)
accelerator.wait_for_everyone()
vllm.close()  # tears down the process groups (see VLLMRolloutEngine.close)
