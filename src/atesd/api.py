"""The Python API: `from atesd import TrainConfig, load_config, train, evaluate`.

What `atesd train` and `atesd eval` do, as functions: `toy:` names are resolved here (like the CLI,
`atesd.toy.paths`), so `train(load_config("configs/toy-opsd.yaml", ["steps=3"]))` and
`evaluate("toy:toy-1m", "toy:test", protocol="toy-avg8")` run as they read. An entry point, like
`atesd.cli`: it may import the toy world and the experiments (the toy protocols); the core does not.
"""

from __future__ import annotations

from dataclasses import replace

from atesd.config import TrainConfig


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False):
    """Train with `cfg` (`atesd.train.train` after resolving `toy:` names). `resume` continues the
    run in `cfg.output_dir`; `overwrite` moves a previous run there aside first. Returns a
    `TrainResult`: `output_dir`, `model`, `final_loss`, `summary()`."""
    from atesd.toy.paths import resolve_toy_paths
    from atesd.train import train as train_resolved

    return train_resolved(resolve_toy_paths(cfg), resume=resume, overwrite=overwrite)


def evaluate(model: str, data: str | None = None, *, protocol: str | None = None, progress: bool = True, **settings):
    """Average@k / pass@k / maj@k of `model` on `data`, as `atesd eval` (`atesd.eval_config.run_eval`):
    `settings` are EvalConfig fields (k, out_dir, limit, max_new_tokens, temperature, score_workers
    (default 0 here: scored in this process), ...).
    `protocol` names a toy protocol (e.g. "toy-avg8") that sets the sampling and the problems; `data`
    then defaults to its split. Writes eval.json / eval.md into `out_dir` and returns the EvalReport."""
    from atesd.eval_config import check_complete, load_eval_config, run_eval
    from atesd.toy.paths import resolve_model_and_data

    # scores in this process unless told: a worker pool would re-import a calling script that has
    # no `if __name__ == "__main__":` guard
    given = {"model": model, **({"data": data} if data is not None else {}), "score_workers": 0, **settings}
    if protocol is not None:
        from atesd.experiments.protocol import protocol_eval_settings

        given = protocol_eval_settings(protocol, given)
    cfg = load_eval_config(None, given)
    check_complete(cfg)
    model_dir, problems = resolve_model_and_data(cfg.model, cfg.data, "data")
    return run_eval(replace(cfg, model=model_dir, data=problems), progress=progress)
