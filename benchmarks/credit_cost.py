"""Cost of the paired counterfactual credit: forward mode against the central difference, side by side.

`atesd.exposure.credit.ProbeCredit.measure` on the shipped toy world's model (toy-1m, float32, train
mode, as in a run): `rollouts` rollouts (validation problems' reference solutions, cut to 64 tokens, as
the rollouts), two teacher views (α = 0.5 and 1, the chosen and the counterfactual arm), the probe
direction computed once beforehand (as between refreshes). The two derivatives are timed in alternation
(central, forward, central, ...) so that load from other users of the machine hits both alike; reported:
the median seconds of each and their ratio, and the largest difference between their paired credits
c_i(α) − c_i(α′) relative to the pairs' spread (they compute the same derivative: forward mode exactly,
the central difference to O(ε²)).

    python benchmarks/credit_cost.py            # 32 rollouts, 5 rounds
    python benchmarks/credit_cost.py --quick    # 4 rollouts, 2 rounds (CI smoke)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import progress, publish, table  # noqa: E402

FULL = {"rollouts": 32, "rounds": 5, "completion_tokens": 64}
QUICK = {"rollouts": 4, "rounds": 2, "completion_tokens": 16}


def measure(sizes: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from atesd.config import LossConfig
    from atesd.data import load_problems
    from atesd.exposure.credit import ProbeCredit
    from atesd.prompts import PromptConfig, student_prompt, teacher_view
    from atesd.scoring import build_sequences
    from atesd.teacher import Teacher
    from atesd.toy.paths import resolve_toy_model

    world = Path(resolve_toy_model("toy:toy-1m"))
    tokenizer = AutoTokenizer.from_pretrained(world)
    model = AutoModelForCausalLM.from_pretrained(world).train()
    problems = load_problems(world / "data" / "val.jsonl")
    rollouts, probe = problems[: sizes["rollouts"]], problems[100:116]
    prompts = PromptConfig(reveal_rounding="nearest")
    completions = [tokenizer(p.solution)["input_ids"][: sizes["completion_tokens"]] for p in rollouts]
    student = build_sequences([student_prompt(tokenizer, p.problem, prompts) for p in rollouts], completions,
                              tokenizer.pad_token_id)
    views = [build_sequences([teacher_view(tokenizer, p, ratio, prompts) for p in rollouts], completions,
                             tokenizer.pad_token_id) for ratio in (0.5, 1.0)]
    loss = LossConfig(divergence="reverse_kl", chunk_size=1024)
    teacher = Teacher("frozen", model)
    credits = {name: ProbeCredit(probe, tokenizer, prompts, loss, 1e-2, derivative=name)
               for name in ("central_difference", "forward_mode")}
    direction = credits["forward_mode"].direction(model, torch.optim.AdamW(model.parameters()))
    seconds = {name: [] for name in credits}
    values = {}
    for round_ in range(sizes["rounds"]):
        progress(f"round {round_ + 1}/{sizes['rounds']}")
        for name, credit in credits.items():
            started = time.perf_counter()
            values[name] = credit.measure(model, teacher, student, views, direction).double()
            seconds[name].append(time.perf_counter() - started)
    paired = {name: v[0] - v[1] for name, v in values.items()}
    spread = float(paired["forward_mode"].abs().max())
    median = {name: statistics.median(s) for name, s in seconds.items()}
    return {"sizes": sizes, "seconds": seconds, "median_s": median,
            "forward_over_central": median["forward_mode"] / median["central_difference"],
            "max_paired_difference_over_spread": float((paired["forward_mode"] - paired["central_difference"])
                                                       .abs().max()) / max(spread, 1e-30)}


def to_markdown(result: dict) -> str:
    rows = [[name, f"{result['median_s'][name]:.3f}", ", ".join(f"{s:.3f}" for s in result["seconds"][name])]
            for name in ("central_difference", "forward_mode")]
    return "\n".join([
        f"### Paired credit: forward mode vs central difference ({result['sizes']['rollouts']} rollouts, toy-1m)", "",
        table(["credit_derivative", "median s", "each round (s)"], rows), "",
        f"forward mode / central difference: **{result['forward_over_central']:.2f}×**; largest difference of the "
        f"paired credits, relative to their spread: {result['max_paired_difference_over_spread']:.1e}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    publish(measure(QUICK if args.quick else FULL), to_markdown, args.json)


if __name__ == "__main__":
    main()
