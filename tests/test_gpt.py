"""The tiny causal transformer: causal, teacher forcing equals step by step, and it learns."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.gpt import GPT, GPTConfig
from course_lib.language_model import causal_mask
from course_lib.markov import MarkovSource


def _model(mask_fn=None, **overrides):
    torch.manual_seed(0)
    config = GPTConfig(**{**dict(vocab_size=11, context=16, n_layer=2, n_head=2, d_model=32), **overrides})
    return GPT(config, mask_fn=mask_fn).double().eval()


def test_teacher_forcing_in_one_pass_equals_predicting_step_by_step():
    model = _model()
    tokens = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(1))
    parallel = model(tokens)
    for t in range(16):
        assert torch.allclose(parallel[:, t], model(tokens[:, : t + 1])[:, -1], atol=1e-12), t


@pytest.mark.parametrize("mask_fn, causal", [
    (None, True),
    (causal_mask, True),
    (lambda n, device=None: torch.ones(n, n, dtype=torch.bool), False),
    (lambda n, device=None: torch.ones(n, n, dtype=torch.bool).triu(), False),
])
def test_a_future_token_changes_no_earlier_prediction_only_under_a_causal_mask(mask_fn, causal):
    model = _model(mask_fn)
    tokens = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 11
    same_past = torch.allclose(model(tokens)[:, :7], model(changed)[:, :7], atol=1e-12)
    assert same_past == causal


def test_outputs_reuse_the_input_embedding_and_features_feed_the_head():
    model = _model()
    tokens = torch.randint(0, 11, (2, 5))
    assert model.lm_head.weight is model.token_embedding.weight
    assert torch.allclose(model(tokens), model.features(tokens) @ model.lm_head.weight.T)
    assert model(tokens).shape == (2, 5, 11)


def test_bad_shapes_are_explained():
    model = _model()
    with pytest.raises(ValueError, match=r"1 <= length <= 16, got \(2, 17\)"):
        model(torch.zeros(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPT(GPTConfig(d_model=30, n_head=4))


def test_the_default_mask_is_the_causal_mask():
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(_model()(tokens), _model(causal_mask)(tokens), atol=1e-12)


def test_generation_is_seeded_and_an_argmax_sampler_is_greedy():
    model = _model()
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1, 23) and torch.equal(a[:, :3], prompt)
    greedy = prompt
    for _ in range(5):
        greedy = torch.cat([greedy, model(greedy)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(model.generate(prompt, 5, sample=lambda logits, generator: logits.argmax(-1)), greedy)


def test_training_on_a_known_entropy_source_approaches_its_entropy_from_above():
    source = MarkovSource(vocab_size=6, order=1, concentration=0.3, seed=0)
    data = source.sample(512, 17, seed=0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=6, context=16, n_layer=1, n_head=2, d_model=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = data[torch.randint(0, 512, (32,))]
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = source.sample(256, 17, seed=1)
    with torch.no_grad():
        ce = F.cross_entropy(model(held_out[:, :-1]).flatten(0, 1), held_out[:, 1:].flatten()).item()
    assert ce < 0.5 * (math.log(6) + source.entropy_rate())  # much better than uniform guessing
    assert ce - source.entropy_rate() < 0.1  # and close to perfect
