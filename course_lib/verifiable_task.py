"""A task with a verifiable reward, a tiny policy that samples answers, and a flawed learned reward (notebook 08).

A prompt is a target s; a response is LENGTH = 6 digits y_1..y_6 in 0..VOCAB - 1 = 0..4, sampled left to right.
The reward is verifiable, a rule checked exactly rather than a model's opinion:
    R(s, y) = 1 if y_1 + ... + y_6 = s, else 0.
The policy starts uniform, which hits a target of 12 with probability 0.112 and one of 8 or 16 with 0.061, so a
group of k = 8 samples often holds a success and its rewards differ: GRPO has a signal. A policy that has learnt the
task answers, say, 2 2 2 2 2 3 for s = 13.

``fit_learned_reward`` is a reward model gone wrong on purpose: a linear score of the digit counts, fitted by least
squares to the true reward of random answers to large targets only (16..20). There success means large digits, so
it learns "more 4s is better" instead of the rule, and ranks 4 4 4 4 4 4 (sum 24) above every right answer to a
target below 24. A policy trained on it raises the learned reward while the true reward falls (Goodhart).

None of this is an exercise, and there is no loss here: the notebook's losses are the exercises; these make what
they train.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 5                            # digits 0..4
LENGTH = 6                           # digits per response
MAX_TARGET = (VOCAB - 1) * LENGTH    # 24: the largest reachable sum
BOS = VOCAB                          # the "previous token" of the first position


def _check(prompts, tokens, fn):
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 1 or prompts.is_floating_point():
        raise ValueError(f"{fn}: expected prompts, an integer tensor of shape (n,) of target sums, got "
                         f"{getattr(prompts, 'shape', type(prompts).__name__)}")
    if tokens is not None and (not isinstance(tokens, torch.Tensor) or tokens.is_floating_point()
                               or tokens.shape != (len(prompts), LENGTH)):
        raise ValueError(f"{fn}: expected tokens, an integer tensor of shape (n, {LENGTH}) = ({len(prompts)}, "
                         f"{LENGTH}), got {getattr(tokens, 'shape', type(tokens).__name__)}")


def sample_prompts(n, generator=None, low=8, high=16):
    """(n,) int64 targets drawn uniformly from low..high (inclusive, within 0..MAX_TARGET)."""
    if not 0 <= low <= high <= MAX_TARGET:
        raise ValueError(f"sample_prompts: expected 0 <= low <= high <= {MAX_TARGET}, got low={low}, high={high}")
    return torch.randint(low, high + 1, (n,), generator=generator)


def reward(prompts, tokens):
    """The verifiable reward: 1.0 where the digits of tokens[i] sum to prompts[i], else 0.0.

    prompts: (n,) int targets; tokens: (n, LENGTH) int digits. Returns (n,) float32.
    """
    _check(prompts, tokens, "reward")
    return (tokens.sum(-1) == prompts).float()


class TinyPolicy(nn.Module):
    """pi(y_t | s, y_{t-1}): an MLP on embeddings of the target s, the position t and the previous digit.

    forward(prompts (n,), tokens (n, LENGTH)) -> logits (n, LENGTH, VOCAB): row t scores y_t and reads only
    prompts and tokens[:, t - 1] (BOS for t = 0), never tokens[:, t:], so one pass gives every position's logits
    under teacher forcing. The output layer starts at 0: the initial policy is exactly uniform. About 3.6k
    parameters; seeded without touching the global RNG.
    """

    def __init__(self, dim=32, hidden=64, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.target = nn.Embedding(MAX_TARGET + 1, dim)
            self.position = nn.Embedding(LENGTH, dim)
            self.previous = nn.Embedding(VOCAB + 1, dim)      # + 1: BOS
            self.hidden = nn.Linear(dim, hidden)
            self.out = nn.Linear(hidden, VOCAB)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, prompts, tokens):
        _check(prompts, tokens, "TinyPolicy")
        previous = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], dim=1)
        return self._logits(prompts, previous, torch.arange(LENGTH))

    def next_logits(self, prompts, previous, t):
        """(n, VOCAB) logits of position t given the previous digits (n,) (BOS for t = 0): one step of sampling."""
        return self._logits(prompts, previous[:, None], torch.tensor([t]))[:, 0]

    def _logits(self, prompts, previous, positions):
        x = self.target(prompts)[:, None] + self.position(positions)[None] + self.previous(previous)
        return self.out(torch.tanh(self.hidden(x)))


def sample(policy, prompts, k, generator=None):
    """k responses per prompt, sampled from ``policy`` (a TinyPolicy) digit by digit.

    prompts: (P,) int targets. Returns (tokens, logprobs, mask), each (P * k, LENGTH), rows grouped by prompt: row
    i * k + j is sample j of prompts[i] (so ``rewards.view(P, k)`` are the groups, and ``prompts.repeat_interleave(k)``
    the rows' prompts). tokens: int64 digits; logprobs: log pi(y_t | s, y_{t-1}) of each sampled digit, differentiable
    in the policy's parameters (log_softmax of ``policy(prompts.repeat_interleave(k), tokens)`` at the tokens);
    mask: bool, all True (every response has LENGTH tokens; returned so a loss call reads as with real padding).
    The same generator state gives the same tokens.
    """
    _check(prompts, None, "sample")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"sample: k must be an int >= 1 (samples per prompt), got {k!r}")
    rows = prompts.repeat_interleave(k)
    tokens = torch.zeros(len(rows), LENGTH, dtype=torch.long)
    with torch.no_grad():
        previous = torch.full_like(rows, BOS)
        for t in range(LENGTH):
            probs = policy.next_logits(rows, previous, t).softmax(-1)
            tokens[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            previous = tokens[:, t]
    logprobs = F.log_softmax(policy(rows, tokens), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return tokens, logprobs, torch.ones_like(tokens, dtype=torch.bool)


def digit_counts(tokens):
    """(n, VOCAB) float32: how many times each digit occurs in each response of tokens (n, LENGTH)."""
    return F.one_hot(tokens, VOCAB).sum(-2).float()


class LinearReward:
    """A learned reward r_hat(s, y) = digit_counts(y) @ weights. It never reads the prompt s: that is its flaw."""

    def __init__(self, weights):
        self.weights = weights

    def __call__(self, prompts, tokens):
        """(n,) float32 learned rewards of tokens (n, LENGTH); prompts (n,) are checked and ignored."""
        _check(prompts, tokens, "LinearReward")
        return digit_counts(tokens) @ self.weights

    def __repr__(self):
        return f"LinearReward(weights={[round(w, 3) for w in self.weights.tolist()]})"


def fit_learned_reward(num_samples=2048, low=16, high=20, generator=None):
    """A LinearReward fitted by least squares to the true reward of ``num_samples`` uniformly random responses to
    targets drawn from low..high: large targets, where success goes with large digits, so the weight of digit 4
    comes out the largest. Returns the LinearReward (weights (VOCAB,) float32)."""
    prompts = sample_prompts(num_samples, generator, low, high)
    tokens = torch.randint(0, VOCAB, (num_samples, LENGTH), generator=generator)
    x, y = digit_counts(tokens).double(), reward(prompts, tokens).double()
    return LinearReward(torch.linalg.lstsq(x, y[:, None]).solution.squeeze(-1).float())
