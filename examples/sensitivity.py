"""Which parameter tensors does the validation loss depend on most? Rank them for a trained CNN.

python examples/sensitivity.py
FASTCLS_EXAMPLE_TINY=1 python examples/sensitivity.py
"""

import os
import tempfile

import fastcls
from fastcls.studies.sensitivity import sensitivity

tiny = os.environ.get("FASTCLS_EXAMPLE_TINY") == "1"
folder = tempfile.mkdtemp(prefix="fastcls-sens-") if tiny else "runs/example-sensitivity"

clf = fastcls.ImageClassifier("cnn", blocks=2 if tiny else 3, filters=8 if tiny else 32, size=16)
clf.fit("builtin:digits", epochs=1 if tiny else 8, fraction="1/4" if tiny else 1, quiet=True)
run = clf.save(folder, exist_ok=True)

for method in ("grad-norm", "fisher"):
    result = sensitivity(run, method=method, batches=2 if tiny else None, top=5)
    print(f"{method}: " + ", ".join(f"{row.name} ({row.norm_score:.2f})" for row in result.rows[:3]))

# The CSV feeds fine-tuning: fastcls finetune DATA --weights RUN --freeze-sensitive RUN/sensitivity.csv:2
paths = result.save(run / "sensitivity.csv")
print(f"wrote {paths['csv']} and {paths['top'].name}")
