"""The corpus loader finds, fetches once and verifies tiny-shakespeare; never needs the real file here.

The tests use a small stand-in text and point the loader's expected sha256 at it.
"""
import hashlib
import io
import urllib.error

import pytest
import torch

from course_lib import corpus

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture(autouse=True)
def stand_in(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "SHA256", hashlib.sha256(TEXT.encode()).hexdigest())
    monkeypatch.setenv("LLM_LOSSES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(corpus.ENV_VAR, raising=False)
    monkeypatch.setattr(corpus.urllib.request, "urlopen", _no_network)


def _no_network(url, timeout):
    raise urllib.error.URLError("network is unreachable")


def _serving(data, calls):
    def urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(data)
    return urlopen


def test_an_explicit_path_or_the_environment_variable_is_read_and_verified(tmp_path, monkeypatch):
    copy = tmp_path / "input.txt"
    copy.write_text(TEXT)
    assert corpus.tiny_shakespeare(path=copy) == TEXT
    monkeypatch.setenv(corpus.ENV_VAR, str(copy))
    assert corpus.tiny_shakespeare() == TEXT


def test_a_different_file_is_refused_with_both_digests(tmp_path):
    copy = tmp_path / "input.txt"
    copy.write_text(TEXT[:-5])
    with pytest.raises(ValueError, match=f"expected {corpus.SHA256}"):
        corpus.tiny_shakespeare(path=copy)


def test_a_missing_path_says_which_setting_pointed_there(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="path = .*nowhere.txt is not a file"):
        corpus.tiny_shakespeare(path=tmp_path / "nowhere.txt")
    monkeypatch.setenv(corpus.ENV_VAR, str(tmp_path / "nowhere.txt"))
    with pytest.raises(FileNotFoundError, match=r"\$TINY_SHAKESPEARE = .*nowhere.txt"):
        corpus.tiny_shakespeare()


def test_the_download_happens_once_then_the_cache_is_used(monkeypatch):
    calls = []
    monkeypatch.setattr(corpus.urllib.request, "urlopen", _serving(TEXT.encode(), calls))
    assert corpus.tiny_shakespeare() == TEXT
    assert corpus.tiny_shakespeare() == TEXT
    assert calls == [corpus.URL]
    assert (corpus.cache_dir() / corpus.FILE_NAME).read_text() == TEXT


def test_a_corrupted_download_is_refused_and_not_cached(monkeypatch):
    monkeypatch.setattr(corpus.urllib.request, "urlopen", _serving(b"<html>rate limited</html>", []))
    with pytest.raises(ValueError, match="not the standard file"):
        corpus.tiny_shakespeare()
    assert not (corpus.cache_dir() / corpus.FILE_NAME).exists()


def test_offline_without_a_copy_gives_a_clear_error():
    with pytest.raises(FileNotFoundError, match="Offline\\? Pass path=... or set TINY_SHAKESPEARE"):
        corpus.tiny_shakespeare()
    with pytest.raises(FileNotFoundError, match="no copy found"):
        corpus.tiny_shakespeare(download=False)


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tokenizer = corpus.CharTokenizer(TEXT)
    ids = tokenizer.encode("hear me")
    assert ids.dtype == torch.long and tokenizer.decode(ids) == "hear me"
    assert tokenizer.vocab_size == len(set(TEXT)) and tokenizer.chars == sorted(set(TEXT))
    with pytest.raises(ValueError, match=r"\['Z'\]"):
        tokenizer.encode("Zed")
