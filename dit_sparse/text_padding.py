"""Attention masks that hide only padded text tokens: recognise them, and attend without the
padding.

HunyuanVideo pads its prompt to a fixed length, valid tokens first, and passes a boolean mask
that hides the padding from every query (``[B, 1, 1, S]``); HunyuanVideo 1.5 hides it from
queries and keys (``[B, 1, S, S]``). A `BlockPlan` knows nothing of masks, so instead of
teaching every method and kernel about them the runtime takes the padding out: the method runs
on each batch element's valid tokens, with the layout's ``text_len`` cut to the valid count,
and the padded query rows (a few hundred at most) are computed by the model's own attention
call with their own mask rows, so they come out exactly as they would without dit_sparse.
Tensors are ``[B, H, S, D]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from .layout import TokenLayout
from .methods.base import AttentionCall

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionCall], torch.Tensor]
# (query rows, keys, values, their mask rows) -> those rows' output, as the model computes it.
AttendRows = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TextPadding:
    """A mask that hides nothing but padding at the end of the text segment.

    ``valid[b]``: how many text tokens batch element ``b`` has before its padding. ``mask``:
    the attention mask, made 4-D (``[B|1, 1, 1|S, S]``).
    """

    valid: tuple[int, ...]
    mask: torch.Tensor


def text_padding(mask: torch.Tensor, layout: TokenLayout, batch: int) -> TextPadding | None:
    """Read ``mask`` as text padding, or None when it hides anything else.

    ``mask`` is an SDPA ``attn_mask``: bool (True = attend), or float with 0 (attend) and
    ``-inf`` or the dtype's minimum (hidden); one for every head, broadcastable to
    ``[batch, H, S, S]``. Every query that is not padding must see exactly the video and its
    batch element's valid text; padded queries may see anything. One device sync (two for a
    ``[B, 1, S, S]`` mask, whose rows are checked as well).
    """
    if layout.text_len == 0 or mask.dim() > 4:
        return None
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    rows = mask.shape[2]
    if (
        mask.shape[0] not in (1, batch)
        or mask.shape[1] != 1
        or mask.shape[3] != layout.seq_len
        or rows not in (1, layout.seq_len)
    ):
        return None
    visible = _visible(mask)
    if visible is None:
        return None
    seen, well_formed = visible
    keys = seen[:, 0, layout.video_start if rows > 1 else 0]  # what a video query sees
    valid = keys[:, layout.text_slice].sum(-1)
    expected = _visible_keys(layout, valid)
    ok = well_formed & (keys == expected).all()
    ok, *counts = torch.cat([ok.long()[None], valid]).tolist()
    if not ok or (rows > 1 and not _rows_see_only(seen, expected, layout, counts)):
        return None
    return TextPadding(tuple(counts * batch if len(counts) == 1 else counts), mask)


def attend_without_padding(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding: TextPadding,
    call: AttentionCall,
    attend: Attend,
    attend_rows: AttendRows,
) -> torch.Tensor:
    """Attention under a text-padding mask: ``attend`` (the method) on the valid tokens of each
    group of batch elements with the same valid count, ``attend_rows`` for padded query rows.

    Each group gets its own ``call.cache`` entry, so methods that keep plans across steps keep
    one per group. ``call.info`` gets the method's entries; where groups differ, numbers and
    tensors are averaged over the batch and other entries are the first group's.
    """
    groups: dict[int, list[int]] = {}
    for element, valid in enumerate(padding.valid):
        groups.setdefault(valid, []).append(element)
    if len(groups) == 1:  # the usual case: one prompt, or prompts of one length
        ((valid, members),) = groups.items()
        out, info = _attend_group(q, k, v, padding.mask, valid, members, call, attend, attend_rows)
        call.info.update(info)
        return out
    out = torch.empty_like(q)
    infos: list[tuple[int, dict[str, Any]]] = []
    for valid, members in groups.items():
        index = torch.tensor(members, device=q.device)
        tensors = (
            x if x.shape[0] == 1 else x.index_select(0, index) for x in (q, k, v, padding.mask)
        )
        group_out, info = _attend_group(*tensors, valid, members, call, attend, attend_rows)
        out.index_copy_(0, index, group_out)
        infos.append((len(members), info))
    call.info.update(_merge_info(infos, q.shape[0]))
    return out


def _attend_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    valid: int,
    members: list[int],
    call: AttentionCall,
    attend: Attend,
    attend_rows: AttendRows,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One group's output and the method's ``info``; every element has ``valid`` text tokens."""
    keep, pad = _segments(call.layout, valid)
    group_call = replace(
        call,
        layout=replace(call.layout, text_len=valid),
        cache=call.cache.setdefault(("text-padding", tuple(members)), {}),
        info={},
    )
    result = attend(*(_gather(x, keep) for x in (q, k, v)), group_call)
    if pad.stop == pad.start:  # no padding after all: the method saw every token
        return result, group_call.info
    out = torch.empty_like(q)
    start = 0
    for segment in keep:
        stop = start + segment.stop - segment.start
        out[:, :, segment] = result[:, :, start:stop]
        start = stop
    rows_mask = mask if mask.shape[2] == 1 else mask[:, :, pad]
    out[:, :, pad] = attend_rows(q[:, :, pad], k, v, rows_mask)
    return out, group_call.info


def _visible_keys(layout: TokenLayout, valid: torch.Tensor) -> torch.Tensor:
    """bool ``[B, S]``: the video and the first ``valid[b]`` text tokens of each element."""
    keys = torch.ones(len(valid), layout.seq_len, dtype=torch.bool, device=valid.device)
    position = torch.arange(layout.text_len, device=valid.device)
    keys[:, layout.text_slice] = position < valid[:, None]
    return keys


def _visible(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(bool mask, True = attend; 0-d bool: every entry is attend or hidden), None if neither."""
    if mask.dtype == torch.bool:
        return mask, torch.tensor(True, device=mask.device)
    if not mask.is_floating_point():
        return None
    seen = mask == 0
    hidden = (mask == float("-inf")) | (mask == torch.finfo(mask.dtype).min)
    return seen, (seen | hidden).all()


def _rows_see_only(
    seen: torch.Tensor, expected: torch.Tensor, layout: TokenLayout, valid: list[int]
) -> bool:
    """Whether every non-padded query row of a ``[B, 1, S, S]`` mask sees exactly its
    element's visible keys: as many keys, none of them padding."""
    checks = []
    for element, count in enumerate(valid):
        rows = seen[element, 0]
        _, pad = _segments(layout, count)
        exact = (rows.sum(-1) == layout.video_tokens + count) & ~rows[:, pad].any(-1)
        checks.append((exact | ~expected[element]).all())
    return bool(torch.stack(checks).all())


def _segments(layout: TokenLayout, valid: int) -> tuple[list[slice], slice]:
    """The token ranges kept, in order, and the padded range, for ``valid`` text tokens."""
    text = layout.text_slice
    pad = slice(text.start + valid, text.stop)
    keep = (slice(0, pad.start), slice(pad.stop, layout.seq_len))
    return [segment for segment in keep if segment.stop > segment.start], pad


def _gather(x: torch.Tensor, keep: list[slice]) -> torch.Tensor:
    # Text last (every model that pads), the valid tokens are a prefix: a view, no copy.
    if len(keep) == 1:
        return x[:, :, keep[0]]
    return torch.cat([x[:, :, segment] for segment in keep], dim=2)


def _merge_info(infos: list[tuple[int, dict[str, Any]]], batch: int) -> dict[str, Any]:
    """Groups' ``info`` as one: numbers and tensors averaged by group size, the rest first's."""
    merged = dict(infos[0][1])
    for key, value in merged.items():
        if isinstance(value, float | torch.Tensor) and all(key in info for _, info in infos):
            merged[key] = sum(count * info[key] for count, info in infos) / batch
    return merged
