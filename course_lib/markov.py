"""A synthetic language whose entropy rate is known exactly: a random k-th order Markov chain.

Real text has an unknown entropy, so a model's loss on it says nothing about how far from perfect
the model is. Samples of a Markov chain over a small vocabulary do: the true next-token distribution
p(. | last k tokens) is known, so for any model q

    E[-log q(x_t | x_<t)] = H_t + E[KL(p_t || q_t)],   H_t = E[H(p(. | x_<t))]

and for positions t >= k, H_t is the chain's entropy rate. A model's cross-entropy can only approach
the entropy rate from above, and the gap is exactly the KL between the true and the model conditionals.
"""
import math

import torch


class MarkovSource:
    """A k-th order Markov chain over tokens 0..V-1 with Dirichlet(concentration) transition rows.

    transitions: (V**k, V) float64; row c is p(next | context c), where the context
        (x_1, ..., x_k), oldest first, has index c = sum_i x_i * V**(k - i).
    stationary: (V**k,) float64, the stationary distribution over contexts.
    Smaller concentrations give peakier rows, hence a lower entropy rate (log V is the maximum).
    """

    def __init__(self, vocab_size: int, order: int, concentration: float = 0.5, seed: int = 0):
        if vocab_size < 2 or order < 1 or concentration <= 0:
            raise ValueError(f"MarkovSource: expected vocab_size >= 2, order >= 1 and concentration > 0, "
                             f"got vocab_size={vocab_size}, order={order}, concentration={concentration}")
        if vocab_size ** (order + 1) > 2 ** 22:
            raise ValueError(f"MarkovSource: vocab_size ** (order + 1) = {vocab_size ** (order + 1)} transition "
                             f"probabilities is too many; expected at most {2 ** 22}")
        self.vocab_size, self.order = vocab_size, order
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
            torch.manual_seed(seed)
            alpha = torch.full((vocab_size ** order, vocab_size), float(concentration), dtype=torch.float64)
            rows = torch.distributions.Dirichlet(alpha).sample()
        # Tiny concentrations can underflow a whole row to zeros; keep every row a distribution.
        rows = rows.clamp_min(1e-300)
        self.transitions = rows / rows.sum(-1, keepdim=True)
        self.stationary = self._stationary()

    def _next_context(self) -> torch.Tensor:
        """(V**k, V) index of the context that follows context c when token y comes next."""
        contexts = torch.arange(self.vocab_size ** self.order)[:, None]
        return (contexts * self.vocab_size) % self.vocab_size ** self.order + torch.arange(self.vocab_size)

    def _stationary(self, tolerance=1e-14, max_steps=100_000) -> torch.Tensor:
        """Power iteration pi <- pi P on the chain over contexts (every row is positive: it converges)."""
        following = self._next_context().flatten()
        pi = torch.full((self.vocab_size ** self.order,), 1.0 / self.vocab_size ** self.order, dtype=torch.float64)
        for _ in range(max_steps):
            new = torch.zeros_like(pi).index_add_(0, following, (pi[:, None] * self.transitions).flatten())
            if (new - pi).abs().sum() < tolerance:
                return new
            pi = new
        raise RuntimeError("MarkovSource: the stationary distribution did not converge")

    def entropy_rate(self, base: float = math.e) -> float:
        """H = sum_c pi(c) H(p(. | c)): the loss per token of a perfect model, in nats (base 2: bits)."""
        p = self.transitions
        row_entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
        return (self.stationary @ row_entropy).item() / math.log(base)

    def sample(self, num_sequences: int, length: int, seed: int = 0) -> torch.Tensor:
        """(num_sequences, length) int64 token ids; the first k tokens come from the stationary distribution."""
        if length < self.order:
            raise ValueError(f"MarkovSource.sample: length must be at least the order {self.order}, got {length}")
        g = torch.Generator().manual_seed(seed)
        V, k = self.vocab_size, self.order
        context = torch.multinomial(self.stationary, num_sequences, replacement=True, generator=g)
        tokens = [(context // V ** (k - 1 - i)) % V for i in range(k)]
        for _ in range(length - k):
            nxt = torch.multinomial(self.transitions[context], 1, generator=g).squeeze(1)
            tokens.append(nxt)
            context = (context * V) % V ** k + nxt
        return torch.stack(tokens, dim=1)

    def next_token_distribution(self, tokens: torch.Tensor) -> torch.Tensor:
        """True p(x_{t+1} | x_1..x_t) at every position t of tokens (..., T): shape (..., T, V), float64.

        Positions with fewer than k tokens of history condition on the stationary distribution of the
        contexts, so every row is exact, not only those after the first k tokens.
        """
        V, k = self.vocab_size, self.order
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.numel() and (
                tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"next_token_distribution: tokens must be integer ids in [0, {V}), got {tokens.dtype}")
        T = tokens.shape[-1]
        # The joint probability of the k + 1 tokens (context, next) under stationarity, as a k+1-dim table.
        joint = (self.stationary[:, None] * self.transitions).reshape((V,) * (k + 1))
        out = []
        for t in range(T):
            history = tokens[..., max(0, t + 1 - k): t + 1]
            # Sum out the oldest context positions the history does not fix, then read off its row.
            table = joint.sum(dim=tuple(range(k - history.shape[-1]))) if history.shape[-1] < k else joint
            row = table[tuple(history[..., i] for i in range(history.shape[-1]))]
            out.append(row / row.sum(-1, keepdim=True))
        return torch.stack(out, dim=-2)
