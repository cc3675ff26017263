"""Train the configurable scratch CNN on builtin:digits and score it on the test split.

python examples/train_cnn.py
FASTCLS_EXAMPLE_TINY=1 python examples/train_cnn.py
"""

import os

import fastcls

tiny = os.environ.get("FASTCLS_EXAMPLE_TINY") == "1"

clf = fastcls.ImageClassifier(
    "cnn",
    blocks=2 if tiny else 3,  # conv -> activation -> BN -> max-pool, per block
    filters=8 if tiny else 64,
    organisation="same",  # or "double" / "half": filters per block
    activation="relu",
    size=16,
    epochs=1 if tiny else 15,
)
clf.fit("builtin:digits", fraction="1/4" if tiny else 1, quiet=tiny)

result = clf.evaluate(split="test")
print(f"test accuracy {result.accuracy:.3f} on {result.n} images")
worst = min(result.per_class.items(), key=lambda item: item[1]["f1"])
print(f"hardest class: {worst[0]} (F1 {worst[1]['f1']:.2f})")
