"""`model.json`, a run folder's card: what the weights are and how to rebuild and feed them.

`ModelCard` is the only reader and writer of the file. It reads every version fastcls wrote:

- `fastcls.model/1`: classifier runs before the card had a `classifier` key;
- `fastcls.model/2`: every card says `classifier` (true for a classifier, false for a backbone);
- `fastcls.backbone/1`: a `fastcls pretrain` run's backbone without a classifier.

Keys beyond the ones every command needs (training details, a pretraining's probe, ...) are kept
in `extra` as they were written, so reading and writing a card loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fastcls.atomic import atomic_write_text
from fastcls.errors import RunError

__all__ = ["BACKBONE_FORMAT", "CARD_FILE", "MODEL_FORMAT", "READABLE_FORMATS", "ModelCard"]

CARD_FILE = "model.json"
MODEL_FORMAT = "fastcls.model/2"
BACKBONE_FORMAT = "fastcls.backbone/1"
READABLE_FORMATS = ("fastcls.model/1", MODEL_FORMAT, BACKBONE_FORMAT)


@dataclass
class ModelCard:
    """The card's fields every reader uses; `extra` holds the rest, in the order written."""

    arch: str
    family: str
    preprocessing: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    model_settings: dict[str, Any] = field(default_factory=dict)
    classifier: bool = True
    format: str = MODEL_FORMAT
    data: str | None = None
    epochs: int = 0
    planned_epochs: int | None = None
    stopped: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoints: Any = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def get(self, key: str, default: Any = None) -> Any:
        """A field, or a key of `extra`, by its name in the file; `default` when the card has none."""
        try:
            return self[key]
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Any:
        """`card["epochs"]`: a key as the file has it (ImageClassifier.model_card() was a dict)."""
        if key == "num_classes":
            return self.num_classes
        if key in _FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _FIELDS}
        out["num_classes"] = self.num_classes
        return out | self.extra

    @classmethod
    def from_dict(cls, raw: Any, where: str = CARD_FILE) -> ModelCard:
        """A card from parsed JSON; anything else than a card fastcls wrote is a RunError naming `where`."""
        if not isinstance(raw, dict):
            raise RunError(f"{where} is damaged or from another tool (not a JSON object).")
        kind = raw.get("format")
        if kind not in READABLE_FORMATS:
            raise RunError(
                f"{where} has format {kind!r}, not one this fastcls reads ({', '.join(READABLE_FORMATS)}); "
                "it is from another tool or a newer fastcls."
            )
        try:
            values = {name: raw[name] for name in _FIELDS if name in raw}
            values["classifier"] = bool(raw.get("classifier", kind != BACKBONE_FORMAT))
            card = cls(**values, extra={k: v for k, v in raw.items() if k not in _FIELDS and k != "num_classes"})
            card.classes = [str(c) for c in card.classes]
            if not isinstance(card.arch, str) or not isinstance(card.family, str):
                raise TypeError("arch and family must be strings")
            if not isinstance(card.preprocessing, dict) or "size" not in card.preprocessing:
                raise TypeError("preprocessing needs a size")
            if card.classifier and not card.classes:
                raise ValueError("a classifier's card lists its classes")
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{where} is damaged or from another tool ({exc}).") from None
        return card

    @classmethod
    def read(cls, folder: str | Path) -> ModelCard:
        """The card of a run folder; a missing, damaged or foreign file is a RunError."""
        path = Path(folder).expanduser() / CARD_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{path.parent} has no {CARD_FILE}; it is not a fastcls run folder.") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path} is damaged or from another tool ({exc}).") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def find(cls, path: str | Path | None) -> ModelCard | None:
        """The card of `path` when it is a folder holding one (e.g. --weights RUN), else None."""
        if not path or not (Path(path).expanduser() / CARD_FILE).is_file():
            return None
        return cls.read(path)

    def write(self, folder: str | Path) -> Path:
        """Write `model.json` into `folder` atomically."""
        path = Path(folder) / CARD_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def require_classifier(self, folder: str | Path) -> None:
        """A pretraining run holds a backbone without a classifier: say what to do with it."""
        if not self.classifier:
            raise RunError(
                f"{folder} is a {self.extra.get('method', 'pretrained')} backbone without a classifier, so it "
                f"cannot predict or train on as a classifier; fine-tune it: fastcls finetune DATA --arch "
                f"{self.arch} --weights {folder} (a stopped pretraining continues with fastcls pretrain --resume "
                f"{folder})."
            )


_FIELDS = tuple(f.name for f in fields(ModelCard) if f.name != "extra")
