"""A real text corpus for the language-modelling notebooks: tiny-shakespeare, found or fetched once.

Where the text comes from, first match wins:
1. ``tiny_shakespeare(path=...)``;
2. the environment variable ``TINY_SHAKESPEARE`` (a path to the file);
3. the cache, ``$LLM_LOSSES_CACHE`` or ``~/.cache/llm-losses-course``;
4. a download of the public file into the cache (skipped when ``download=False``).
Whatever the source, the bytes must have the published sha256, so every machine trains on the same text.
"""
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
ENV_VAR = "TINY_SHAKESPEARE"
FILE_NAME = "tinyshakespeare.txt"


def cache_dir() -> Path:
    return Path(os.environ.get("LLM_LOSSES_CACHE", Path.home() / ".cache" / "llm-losses-course"))


def _verified(data: bytes, origin: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"tiny-shakespeare from {origin} has sha256 {digest}, expected {SHA256}: "
                         f"it is not the standard file (truncated, edited or another corpus)")
    return data.decode("utf-8")


def tiny_shakespeare(path=None, download: bool = True, timeout: float = 30.0) -> str:
    """The tiny-shakespeare text (1,115,394 characters), verified against its published sha256."""
    given = path or os.environ.get(ENV_VAR)
    if given:
        if not Path(given).is_file():
            source = "path" if path else f"${ENV_VAR}"
            raise FileNotFoundError(f"tiny-shakespeare: {source} = {given!s} is not a file")
        return _verified(Path(given).read_bytes(), str(given))
    cached = cache_dir() / FILE_NAME
    if cached.is_file():
        return _verified(cached.read_bytes(), str(cached))
    if not download:
        raise FileNotFoundError(f"tiny-shakespeare: no copy found; pass path=..., set {ENV_VAR}=/path/to/file, "
                                f"or allow a download to {cached}")
    try:
        with urllib.request.urlopen(URL, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise FileNotFoundError(f"tiny-shakespeare: no copy found and the download from {URL} failed ({error}). "
                                f"Offline? Pass path=... or set {ENV_VAR}=/path/to/tinyshakespeare.txt") from error
    text = _verified(data, URL)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(cached)  # atomic: a crash never leaves a half-written file where the cache is read
    return text


class CharTokenizer:
    """Characters to ids and back, over the sorted set of characters in a text."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"CharTokenizer.encode: characters {unknown[:5]} are not in the vocabulary")
        return torch.tensor([self.ids[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in torch.as_tensor(ids).tolist())
