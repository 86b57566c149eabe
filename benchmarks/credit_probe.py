"""How the counterfactual credit ranks the reveal ratio per difficulty level, by probe size and
preconditioner, on one training checkpoint.

`atesd.exposure.credit` scores a ratio α for a rollout by the first-order decrease of a held-out
probe NLL that one step on the rollout's loss at α would give, along the unit direction
û = P∇NLL_probe / ‖P∇NLL_probe‖. Two choices shape û: how many probe problems estimate the gradient
(exposure.probe_size) and P (Adam's 1/(√v̂ + ε) in training; the identity in `atesd diagnose
credit`). This script measures both on the same 256 rollouts of one checkpoint of a bench run:
probe sizes 16 and 64 (the 16 are the first of the 64), P = identity and P = the checkpoint's Adam
state. For each difficulty level (and for right / wrong rollouts) it prints z = mean(c(α) − c(1)) /
its standard error for α = 0.25, 0.5, 0.75: z > 0 says the credit prefers that partial exposure to
full exposure. Compare with the fixed-α sweep per level (BENCHMARKS.md, "by difficulty").

    python benchmarks/credit_probe.py --run runs/bench-toy/0/opsd --step 250 \
        --world src/atesd/toy/worlds/toy-1m --out docs/figures/controller/credit_probe_step250.json

About 2 minutes per checkpoint on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from atesd.answers import score_batch
from atesd.config import LossConfig
from atesd.data import load_problems
from atesd.exposure import ProbeCredit
from atesd.models import load_pretrained
from atesd.prompts import PromptConfig, student_prompt, teacher_view
from atesd.rollout import SamplingParams, make_rollout_engine
from atesd.scoring import build_sequences
from atesd.teacher import Teacher

RATIOS = (0.25, 0.5, 0.75, 1.0)


def checkpoint_model(world: Path, checkpoint: Path, folder: Path) -> Path:
    """A model folder: the world's config and tokenizer with the checkpoint's weights."""
    for item in world.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, folder / item.name)
    shutil.copy(checkpoint / "model.safetensors", folder / "model.safetensors")
    return folder


def z_scores(table: torch.Tensor, members: list[int]) -> list[float]:
    """mean(c(α) − c(1)) / SE over `members`, for each α but the last (α = 1)."""
    diff = table[:, members] - table[-1, members]
    return [float(d.mean() / (d.std() / math.sqrt(len(members)) + 1e-30)) for d in diff[:-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a bench run folder (with checkpoints/step-NNNNNN)")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--world", required=True, help="the world folder the run trained from")
    parser.add_argument("--n", type=int, default=256, help="rollouts scored")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    world, checkpoint = Path(args.world), Path(args.run) / "checkpoints" / f"step-{args.step:06d}"
    problems = load_problems(world / "data" / "train.jsonl")
    order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(0)).tolist()
    probe = [problems[i] for i in order[:64]]
    sample = [problems[i] for i in order[64:64 + args.n]]
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer = load_pretrained(str(checkpoint_model(world, checkpoint, Path(folder))), device="cpu")
    prompts, loss = PromptConfig(), LossConfig(divergence="reverse_kl", chunk_size=1024)
    student_prompts = [student_prompt(tokenizer, p.problem, prompts) for p in sample]
    engine = make_rollout_engine("hf", model, tokenizer, batch_size=64)
    rollouts = engine.generate(student_prompts, SamplingParams(128, 1.0, 1.0, 0, seed=0))
    correct = score_batch([r.text for r in rollouts], [p.answer for p in sample], workers=0)
    model.requires_grad_(True)
    adam = torch.optim.AdamW(list(model.parameters()), lr=3e-5)
    adam.load_state_dict(torch.load(checkpoint / "optimizer.bin", weights_only=True))
    identity = torch.optim.AdamW(list(model.parameters()))  # no state: P = identity
    teacher = Teacher("frozen", model)
    groups = {str(level): [i for i, p in enumerate(sample) if p.difficulty == level] for level in range(1, 6)}
    groups["right"] = [i for i, ok in enumerate(correct) if ok]
    groups["wrong"] = [i for i, ok in enumerate(correct) if not ok]
    result = {"run": args.run, "step": args.step, "ratios": list(RATIOS), "n": {g: len(m) for g, m in groups.items()},
              "difficulty": [p.difficulty for p in sample], "correct": correct, "credit": {}, "z": {}}
    print(f"z = mean(c(α) − c(1)) / SE for α = 0.25 / 0.5 / 0.75 (> 0: partial exposure preferred); "
          f"{args.run} step {args.step}, {args.n} rollouts\n")
    print("| probe | P | " + " | ".join(f"{g} (n={len(m)})" for g, m in groups.items()) + " |")
    print("|" + "---|" * (len(groups) + 2))
    for size in (16, 64):
        for name, optimizer in (("identity", identity), ("adam", adam)):
            credit = ProbeCredit(probe[:size], tokenizer, prompts, loss, 1e-2)
            direction = credit.direction(model, optimizer)
            values = []
            for start in range(0, len(sample), 16):
                rows = slice(start, start + 16)
                completions = [list(r.completion_ids) for r in rollouts[rows]]
                student = build_sequences(student_prompts[rows], completions, tokenizer.pad_token_id)
                views = [build_sequences([teacher_view(tokenizer, p, a, prompts) for p in sample[rows]], completions,
                                         tokenizer.pad_token_id) for a in RATIOS]
                values.append(credit.measure(model, teacher, student, views, direction))
            table = torch.cat(values, dim=1).double()
            key = f"probe{size}-{name}"
            result["credit"][key] = table.tolist()
            result["z"][key] = {g: z_scores(table, m) for g, m in groups.items()}
            print(f"| {size} | {name} | " + " | ".join(
                " / ".join(f"{z:+.1f}" for z in result["z"][key][g]) for g in groups) + " |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
