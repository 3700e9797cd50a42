"""A deterministic stand-in text encoder for offline presets: no download, same text, same embedding.

`HashTokenizer` and `HashTextEncoder` follow the call conventions diffusers' pipelines use for
a tokenizer and a T5-style encoder, so a preset pipeline takes ``pipe(prompt="...")`` as usual.
Each word's embedding is drawn from a generator seeded by a stable hash of the word.
"""

from __future__ import annotations

import math
import re
import zlib
from types import SimpleNamespace

import torch


class HashTokenizer:
    """Lower-cased words to ids by CRC32; id 0 is padding."""

    def __init__(self, vocab_size: int = 8192, model_max_length: int = 512) -> None:
        self.vocab_size = vocab_size
        self.model_max_length = model_max_length

    def word_id(self, word: str) -> int:
        return 1 + zlib.crc32(word.encode()) % (self.vocab_size - 1)

    def __call__(
        self,
        text: str | list[str],
        padding: str | bool = "max_length",
        max_length: int | None = None,
        truncation: bool = True,
        return_tensors: str = "pt",
        **_: object,
    ) -> SimpleNamespace:
        texts = [text] if isinstance(text, str) else list(text)
        length = max_length or self.model_max_length
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        for row, item in enumerate(texts):
            words = [self.word_id(w) for w in re.findall(r"[a-z0-9]+", item.lower())][:length]
            ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
        return SimpleNamespace(input_ids=ids, attention_mask=(ids > 0).long())


class HashTextEncoder(torch.nn.Module):
    """Fixed random word table plus a sinusoidal position code; output ``last_hidden_state``."""

    def __init__(self, dim: int, vocab_size: int = 8192, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab_size, dim, generator=generator))
        position = torch.arange(1024, dtype=torch.float32)[:, None]
        freqs = torch.exp(-math.log(1e4) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        code = torch.zeros(1024, dim)
        code[:, 0::2] = torch.sin(position * freqs)
        code[:, 1::2] = torch.cos(position * freqs[: dim // 2])
        self.register_buffer("position_code", 0.1 * code)

    @property
    def dtype(self) -> torch.dtype:
        return self.table.dtype

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SimpleNamespace:
        hidden = self.table[input_ids] + self.position_code[: input_ids.shape[1]]
        if attention_mask is not None:
            hidden = hidden * attention_mask[..., None].to(hidden.dtype)
        return SimpleNamespace(last_hidden_state=hidden)
