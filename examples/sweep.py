"""Search the scratch CNN's LR, depth and width with Optuna; every trial is a run folder.

python examples/sweep.py
FASTCLS_EXAMPLE_TINY=1 python examples/sweep.py
"""

import os
import tempfile

from fastcls.studies.sweep import sweep

tiny = os.environ.get("FASTCLS_EXAMPLE_TINY") == "1"
out = tempfile.mkdtemp(prefix="fastcls-sweep-") if tiny else "runs/sweeps/example"

space = {  # the same table as a space.toml's [params]
    "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    "blocks": {"type": "int", "low": 2, "high": 3},
    "filters": {"type": "choice", "values": [8, 16]},
}
fixed = {"arch": "cnn", "size": 16, "epochs": 1 if tiny else 3, "fraction": "1/4" if tiny else 1}

result = sweep("builtin:digits", space, trials=2 if tiny else 12, out=out, settings=fixed, sampler_seed=0)
for trial in result.ranked()[:3]:
    print(f"trial {trial.number}: accuracy {trial.value:.3f} with {trial.params}")
print(f"importance: {result.importance or result.importance_note}")
print(f"train the best with: fastcls run {result.best_config}")
