"""Train three small CNNs at two input sizes and let them vote (hard vote, ties to a preferred member).

python examples/vote_ensemble.py
FASTCLS_EXAMPLE_TINY=1 python examples/vote_ensemble.py
"""

import os
import tempfile

import fastcls

tiny = os.environ.get("FASTCLS_EXAMPLE_TINY") == "1"
runs = tempfile.mkdtemp(prefix="fastcls-vote-") if tiny else "runs/example-vote"
settings = {"epochs": 1, "fraction": "1/4", "blocks": 2, "filters": 8} if tiny else {"epochs": 6, "blocks": 3}

members = []
for name, size, seed in (("small", 8, 1), ("big", 16, 2), ("big-2", 16, 3)):
    clf = fastcls.ImageClassifier("cnn", size=size, seed=seed, **settings).fit("builtin:digits", quiet=True)
    members.append(clf.save(f"{runs}/{name}", exist_ok=True))

ensemble = fastcls.Ensemble(members)
result = ensemble.vote("builtin:digits", split="test", method="hard", prefer=members[1])
for member in result.members:
    print(f"{member.name:8s} {member.size:3d}px  accuracy {member.accuracy:.3f}")
print(f"hard vote          accuracy {result.ensemble.accuracy:.3f} (oracle {result.oracle:.3f})")

soft = ensemble.vote("builtin:digits", split="test", method="soft")  # cached: no model runs twice
print(f"soft vote          accuracy {soft.ensemble.accuracy:.3f}")
