"""The embedded toy world: a small reasoning task, a tokenizer and a tiny Qwen3 warm-started on it.

It lets the whole method (student rollouts, teacher scoring, exposure control, evaluation) run end
to end on a CPU in minutes, through the same code paths as a real checkpoint.

- `task`: the problems (named arithmetic steps, any valid order), their reference solutions, the
  step checker used for diagnostics.
- `model`: byte-level BPE tokenizer with a Qwen3-style chat template, `Qwen3ForCausalLM` presets.
- `warmstart`: the supervised student/teacher mix that makes the base model.
- `build`: `build_toy_world(cfg) -> Path`, cached and atomic; `ToyWorldConfig`.
- `report`: `toy_world_report(world)`, the student / teacher / headroom tables.
- `positions`: where the teacher–student KL sits in a rollout (before / at / after its first wrong
  step, answer line); `atesd mismatch --positions`. Diagnosis only.
"""
