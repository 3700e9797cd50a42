"""`TokenLayout`: where video and text tokens sit in one attention sequence."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """Shape of the token sequence one self-attention call sees.

    Video tokens are frame-major (frame, row, column) after patching. Joint-attention models
    also put ``text_len`` text tokens in the same sequence, before (``text_first``) or after
    the video tokens.
    """

    frames: int
    height: int
    width: int
    text_len: int = 0
    text_first: bool = False

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TokenLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_len < 0:
            raise ValueError(f"TokenLayout.text_len must be >= 0, got {self.text_len}")

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @property
    def video_tokens(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def seq_len(self) -> int:
        return self.video_tokens + self.text_len

    @property
    def video_start(self) -> int:
        return self.text_len if self.text_first else 0

    @property
    def video_slice(self) -> slice:
        return slice(self.video_start, self.video_start + self.video_tokens)

    @property
    def text_slice(self) -> slice:
        start = 0 if self.text_first else self.video_tokens
        return slice(start, start + self.text_len)

    def describe(self) -> str:
        text = (
            f" + {self.text_len} text ({'first' if self.text_first else 'last'})"
            if self.text_len
            else ""
        )
        return f"{self.frames}x{self.height}x{self.width} = {self.video_tokens} video tokens{text}"
