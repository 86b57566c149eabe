"""The embedded toy world: a small reasoning task, a tokenizer and a tiny Qwen3 warm-started on it.

It lets the whole method (student rollouts, teacher scoring, exposure control, evaluation) run end
to end on a CPU in minutes, through the same code paths as a real checkpoint.

- `task`: the problems (named arithmetic steps, any valid order), their reference solutions, the
  step checker used for diagnostics.
- `model`: byte-level BPE tokenizer with a Qwen3-style chat template, `Qwen3ForCausalLM` presets.
- `warmstart`: the supervised student/teacher mix that makes the base model.
- `build`: `build_toy_world(cfg) -> Path`, cached and atomic; `ToyWorldConfig`; the default world
  ships with the package (`worlds/toy-1m/`), and so does a second one with goal-first references
  (`worlds/toy-1m-top-down/`, `toy:toy-1m-top-down`; `named_worlds`).
- `paths`: `toy:` names in a config (`toy:toy-1m`, `toy:train`) resolved to paths by the entry points.

Its report (student / teacher / headroom tables) and the position analysis of the mismatch are
experiments: `atesd.experiments.world_report`, `atesd.experiments.positions`.
"""
