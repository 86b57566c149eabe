"""Worker for the sharded-probe test: the probe NLL and grounding score measured by each process.

    torchrun --nproc_per_node 2 dist_probe.py MODEL_DIR OUT

Each rank builds the same probe (6 probe and 5 grounding toy problems) over the same model and a
frozen teacher copy, counts the sequences its own forwards score, and measures at α = 0.5 twice
(the second hits the grounding cache) and at α = 1. Writes OUT/rank<R>.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.probe import ExposureProbe
from atesd.prompts import PromptConfig
from atesd.teacher import Teacher
from atesd.toy.task import toy_problems


def main(model_dir: str, out: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    problems = toy_problems(11, seed=5, split="test")
    probe = ExposureProbe(problems[:6], problems[6:], tokenizer, PromptConfig(), 64, True, True,
                          cache_grounding=True)
    teacher = Teacher("frozen", model)
    rows = []
    for module in (model, teacher.copy):
        module.register_forward_pre_hook(lambda m, args, kwargs: rows.append(len(kwargs["input_ids"])),
                                         with_kwargs=True)
    measured = [probe.measure(model, teacher, ratio, step=0) for ratio in (0.5, 0.5, 1.0)]
    record = {"measured": measured, "rows_scored": sum(rows)}
    Path(out, f"rank{dist.get_rank()}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
