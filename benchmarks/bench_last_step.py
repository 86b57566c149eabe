"""Add the last step's test evaluation (`test_last_step`) and the learned Beta's final means
(`final_beta_mean`) to every result.json of a bench folder that lacks them (results written before
`atesd bench` recorded them), then rewrite the bench report.

    python benchmarks/bench_last_step.py runs/bench-toy

The bench's figures stay those of the checkpoint chosen on validation; the last step's are the
second column of the report (`atesd.experiments.bench_report`), to tell a method's effect apart
from the noise of choosing among 4 validation points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atesd import atomic
from atesd.experiments.bench import METHODS, PLAN_FILE, RESULT_FILE, BenchBudget, Method, last_step_test, machine_info
from atesd.experiments.bench_report import write_report
from atesd.experiments.report import final_beta_mean
from atesd.experiments.protocol import EvalProtocol
from atesd.prompts import PromptConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_dir")
    args = parser.parse_args()
    out = Path(args.bench_dir)
    plan_file = out / PLAN_FILE if (out / PLAN_FILE).is_file() else out / "bench.json"  # merged benches have no plan
    plan = {k: v for k, v in json.loads(plan_file.read_text()).items() if k != "results"}
    budget = BenchBudget(**{**plan["budget"], "test": EvalProtocol(**plan["budget"]["test"])})
    test = None  # loaded when a result lacks its last step's test
    results = []
    for path in sorted(out.glob(f"*/*/{RESULT_FILE}")):
        result = json.loads(path.read_text())
        missing = {"test_last_step", "final_beta_mean"} - result.keys()
        if "test_last_step" in missing:
            method = Method(result["method"], result["config"], tuple(result["overrides"]),
                            trains=result["method"] != "base")
            test = test if test is not None else budget.test.problems(plan["data_dir"])
            result["test_last_step"] = last_step_test(method, budget, path.parent, result["chosen_step"],
                                                      result["test"], test, PromptConfig())
            print(f"{path.parent}: last step {result['test_last_step'] and result['test_last_step']['average_at_k']}")
        if "final_beta_mean" in missing:
            result["final_beta_mean"] = final_beta_mean(path.parent)
        if missing:
            atomic.write_json(path, result)
        results.append(result)
    order = {m.name: i for i, m in enumerate(METHODS)}
    results.sort(key=lambda r: (order.get(r["method"], len(order)), r["seed"]))
    meta = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    meta = {**{k: v for k, v in meta.items() if k != "results"}, **plan, "machine": meta.get("machine", machine_info()),
            "methods": list(dict.fromkeys(r["method"] for r in results)),
            "seeds": sorted({r["seed"] for r in results})}
    for path in write_report(out, results, meta):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
