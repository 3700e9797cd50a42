"""``profile.json``: what a tune chose and everything it measured on the way, read back by
``dit_sparse.apply(pipe, "profile.json")``, ``generate --profile`` and ``bench --profile``.

A profile holds for the model and layout it was tuned on; applying it to another warns once,
naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..layout import TokenLayout
from ..methods import SparseMethod, resolve_method
from ..utils import warn_once

PROFILE_FORMAT = 1


def model_identity(target: Any) -> dict[str, str]:
    """The transformer class, its config's ``_name_or_path`` and a hash of the rest of its
    config: what tells two models apart without reading their weights."""
    from ..caches import transformers_of

    found = transformers_of(target)
    if not found:
        raise TypeError(f"no transformer in {type(target).__name__}")
    transformer = found[0]
    config = dict(getattr(transformer, "config", {}))
    public = {k: v for k, v in config.items() if not k.startswith("_")}
    text = json.dumps(public, sort_keys=True, default=str)
    return {
        "class": type(transformer).__name__,
        "name_or_path": str(config.get("_name_or_path", "")),
        "config_sha": hashlib.sha256(text.encode()).hexdigest()[:16],
    }


@dataclass
class Profile:
    """A tune's result. ``method``/``options``/``cache`` is the chosen setting; ``request``
    the generation it was tuned at (frames, height, width, steps, guidance, seed); ``layout``
    the token layout that gave; ``candidates`` one dict per setting tried; ``cost`` the
    generations spent; ``environment`` versions, device, date and command."""

    method: str
    options: dict[str, Any]
    cache: str | None
    label: str
    target: dict[str, Any]
    model: str
    identity: dict[str, str]
    layout: dict[str, Any]
    request: dict[str, Any]
    prompts: list[str]
    chosen: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)
    time_model: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    format: int = PROFILE_FORMAT

    def method_config(self) -> SparseMethod:
        """The chosen method with its options."""
        return resolve_method(self.method, **self.options)

    def setting(self):
        """The chosen setting for the bench harness, labelled ``tuned <label>`` (the Pareto
        plot draws those as stars)."""
        from ..quality.harness import Setting

        return Setting(f"tuned {self.label}", self.method_config(), self.cache)

    def save(self, path: str | Path) -> None:
        """Write as JSON, whole or not at all."""
        from ..quality.report import write_json

        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read ``path``; ``ValueError`` saying what is wrong with it otherwise."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"profile not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"profile {path} is not JSON: {err}") from None
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(data, dict) or not required <= set(data):
            missing = sorted(required - set(data)) if isinstance(data, dict) else ["everything"]
            raise ValueError(
                f"{path} is not a dit-sparse profile (missing {', '.join(missing)}); "
                "make one with `dit-sparse tune`"
            )
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"profile {path} has format {data.get('format')!r}; this dit_sparse reads "
                f"format {PROFILE_FORMAT}: tune again"
            )
        profile = cls(**{k: v for k, v in data.items() if k in names})
        profile.method_config()  # options this version does not take fail here, not later
        return profile

    def _warn(self, what: str, tuned: str, used: str) -> None:
        warn_once(
            f"profile-{what}:{tuned}:{used}",
            f"this profile ({self.label}) was tuned for {what} {tuned} and is applied to "
            f"{used}: its quality was measured there, not here; run `dit-sparse tune` for "
            "this one",
        )

    def check_model(self, target: Any) -> None:
        """Warn once if ``target``'s model is not the one this profile was tuned on."""
        identity = model_identity(target)
        if identity["class"] != self.identity["class"] or (
            identity["config_sha"] != self.identity["config_sha"]
        ):
            used = f"{identity['class']} {identity['name_or_path'] or identity['config_sha']}"
            self._warn("model", f"{self.model} ({self.identity['class']})", used)

    def check_layout(self, layout: TokenLayout) -> None:
        """Warn once if ``layout`` is not the token layout this profile was tuned at."""
        if asdict(layout) != self.layout:
            self._warn("layout", TokenLayout(**self.layout).describe(), layout.describe())

    def check_size(self, frames: int, height: int, width: int) -> None:
        """Warn once if a generation of this pixel size is not the one tuned at."""
        tuned = tuple(self.request[k] for k in ("frames", "height", "width"))
        if (frames, height, width) != tuned:
            self._warn("size", "{}x{}x{}".format(*tuned), f"{frames}x{height}x{width}")
