"""What happened in each attention call: records, timing, and the human-readable report."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch


class CallTimer:
    """Times one call: CUDA events on the GPU (read later, no sync now), a clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        else:
            self.start = time.perf_counter()
            self.seconds = 0.0

    def stop(self) -> CallTimer:
        if self.cuda:
            self.end_event.record()
        else:
            self.seconds = time.perf_counter() - self.start
        return self

    def elapsed(self) -> float:
        if self.cuda:
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event) / 1000.0
        return self.seconds


@dataclass
class AttentionRecord:
    """One self-attention call. ``info`` values may be tensors until `resolve`."""

    transformer: str
    layer: int
    step: int
    branch: str
    heads: int
    seq_len: int
    info: dict[str, Any]
    timer: CallTimer | None = field(repr=False)

    def resolve(self) -> dict[str, Any]:
        info = {
            key: (value.tolist() if isinstance(value, torch.Tensor) else value)
            for key, value in self.info.items()
        }
        return {
            "transformer": self.transformer,
            "layer": self.layer,
            "step": self.step,
            "branch": self.branch,
            "heads": self.heads,
            "seq_len": self.seq_len,
            "seconds": self.timer.elapsed() if self.timer is not None else 0.0,
            **info,
        }


@dataclass(frozen=True)
class ForwardRecord:
    """One transformer forward, as the step tracking saw it: ``layers`` attention layers were
    due to run; a step cache may have skipped some (their calls leave no `AttentionRecord`)."""

    transformer: str
    step: int
    branch: str
    layers: int
    seq_len: int


class StatsRecorder:
    """Collects `AttentionRecord`s and `ForwardRecord`s; resolves the attention records (one
    device sync) only when read."""

    def __init__(self) -> None:
        self._records: list[AttentionRecord] = []
        self._resolved: list[dict[str, Any]] = []
        self._forwards: list[ForwardRecord] = []

    def add(self, record: AttentionRecord) -> None:
        self._records.append(record)

    def add_forward(self, record: ForwardRecord) -> None:
        self._forwards.append(record)

    def clear(self) -> None:
        self._records.clear()
        self._resolved.clear()
        self._forwards.clear()

    def forwards(self) -> list[dict[str, Any]]:
        """One dict per transformer forward: transformer, step, branch, ``layers`` (attention
        layers due) and ``layers_run`` (those that ran: fewer when a step cache skipped some;
        of several forwards with one (transformer, step, branch), the later ones count the
        layers run beyond the earlier ones' ``layers``)."""
        ran: dict[tuple, int] = defaultdict(int)
        for r in self.records():
            ran[(r["transformer"], r["step"], r["branch"])] += 1
        out = []
        for f in self._forwards:
            key = (f.transformer, f.step, f.branch)
            layers_run = min(ran[key], f.layers)
            ran[key] -= layers_run
            out.append({**f.__dict__, "layers_run": layers_run})
        return out

    def records(self) -> list[dict[str, Any]]:
        if self._records:
            self._resolved.extend(record.resolve() for record in self._records)
            self._records.clear()
        return list(self._resolved)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over records: calls, attention seconds, mean density (by call), and
    ``mass_passes``: the passes over the block mass that AdaSpa's searches made."""
    if not records:
        return {"calls": 0, "attention_seconds": 0.0, "mean_density": None, "mass_passes": 0}
    return {
        "calls": len(records),
        "attention_seconds": sum(r["seconds"] for r in records),
        "mean_density": sum(r["density"] for r in records) / len(records),
        "mass_passes": sum(r.get("mass_passes", 0) for r in records),
    }


def format_cache_skips(forwards: list[dict[str, Any]]) -> list[str]:
    """Report lines: the forwards whose attention layers did not all run (a step cache
    skipped them), per transformer and branch; none when every layer ran."""
    skipped = [f for f in forwards if f["layers_run"] < f["layers"]]
    if not skipped:
        return []
    due = sum(f["layers"] for f in forwards)
    ran = sum(f["layers_run"] for f in forwards)
    lines = [
        f"step cache: {len(skipped)} of {len(forwards)} forwards skipped attention layers "
        f"({due - ran} of {due} layer calls); steps as step(layers run/due):"
    ]
    by_branch: dict[tuple, list[str]] = defaultdict(list)
    for f in skipped:
        by_branch[(f["transformer"], f["branch"])].append(
            f"{f['step']}({f['layers_run']}/{f['layers']})"
        )
    for (name, branch), steps in sorted(by_branch.items()):
        lines.append(f"{name:<14} {branch:<11} {' '.join(steps)}")
    return lines


def format_report(method_name: str, records: list[dict[str, Any]], extra: list[str]) -> str:
    """Per step and branch, then per layer: kinds of plan, density, calls and time."""
    if not records:
        return f"dit-sparse [{method_name}]: no attention calls recorded yet"
    lines = [f"dit-sparse [{method_name}]: {len(records)} attention calls"]
    by_step: dict[tuple, list] = defaultdict(list)
    by_layer: dict[tuple, list] = defaultdict(list)
    for r in records:
        by_step[(r["transformer"], r["step"], r["branch"])].append(r)
        by_layer[(r["transformer"], r["layer"])].append(r)
    lines.append(
        f"{'transformer':<14} {'step':>4} {'branch':<11} {'plans':<24} {'density':>7} {'ms':>9} {'calls':>5}"
    )
    for (name, step, branch), rows in sorted(by_step.items()):
        kinds = ",".join(sorted({r["kind"] for r in rows}))
        s = summarize(rows)
        lines.append(
            f"{name:<14} {step:>4} {branch:<11} {kinds:<24} {s['mean_density']:>7.3f} "
            f"{1000 * s['attention_seconds']:>9.2f} {s['calls']:>5}"
        )
    lines.append(f"{'transformer':<14} {'layer':>5} {'density (all)':>13} {'density (sparse)':>16}")
    for (name, layer), rows in sorted(by_layer.items()):
        sparse = [r["density"] for r in rows if not r["kind"].startswith("dense")]
        sparse_text = f"{sum(sparse) / len(sparse):.3f}" if sparse else "-"
        lines.append(
            f"{name:<14} {layer:>5} {summarize(rows)['mean_density']:>13.3f} {sparse_text:>16}"
        )
    total = summarize(records)
    lines.append(
        f"total: {total['calls']} calls, {total['attention_seconds']:.3f} s in attention, "
        f"mean density {total['mean_density']:.3f}"
    )
    return "\n".join(lines + extra)
