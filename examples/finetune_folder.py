"""Fine-tune a pretrained EfficientNet-Lite0 on a folder of images (or builtin:digits), then predict.

python examples/finetune_folder.py data/plants      # class folders, or train/ valid/ [test/]
FASTCLS_EXAMPLE_TINY=1 python examples/finetune_folder.py   # a few seconds, for the tests
"""

import os
import sys
import tempfile

import fastcls

data = sys.argv[1] if len(sys.argv) > 1 else "builtin:digits"
tiny = os.environ.get("FASTCLS_EXAMPLE_TINY") == "1"
out = tempfile.mkdtemp(prefix="fastcls-finetune-") if tiny else "runs/example-finetune"

# freeze-unfreeze (fastai's fine_tune): 1 epoch training only the head, then all layers with per-group LRs.
clf = fastcls.ImageClassifier("efficientnet_lite0", pretrained=True, size=16 if tiny else 64, freeze_epochs=1)
clf.fit(data, epochs=1 if tiny else 3, fraction="1/16" if tiny else 1, quiet=tiny)
print(f"valid accuracy {clf.evaluate(split='valid').accuracy:.3f}")

clf.save(out, exist_ok=True)
model = fastcls.load(out)  # safetensors + model.json, no pickle
image = fastcls.resolve_source(data).split("valid")[0]
prediction = model.predict(image.path)[0]
print(f"{image.path.name}: predicted {prediction.label} ({prediction.probability:.2f}), true {image.label}")
