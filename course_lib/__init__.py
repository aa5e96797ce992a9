"""Reference implementations for the course "Loss Functions for LLMs".

One module per concept, each one hop from its notebook and its tests:

- ``mle``             notebook 01: likelihoods and their negative logs (BCE, NLL, Gaussian NLL, MSE)
- ``softmax``         notebook 02: softmax, log-sum-exp, log-softmax, stable and naive
- ``cross_entropy``   notebook 02: cross-entropy from logits, its gradient, focal loss
- ``information``     notebook 03: entropy, cross-entropy and KL of distributions, perplexity, bits per character
- ``regularization``  notebook 04: L2 and L1 (proximal), Adam + L2 vs AdamW, inverted dropout, label smoothing
- ``calibration``     notebook 04: reliability bins and expected calibration error
- ``normalization``   notebook 05: BatchNorm, LayerNorm (and its backward), RMSNorm, pre-/post-norm blocks
- ``language_model``  notebook 06: shifted and padded LM loss, causal mask, sequence likelihood, sampling
- ``markov``          notebook 06: a Markov source whose entropy rate is known exactly
- ``gpt``             notebooks 06, 09, 10: a tiny causal transformer
- ``distillation``    notebook 07: KD loss T²·KL (forward and reverse), its gradient, the KD + CE objective
- ``contrastive``     notebooks 07-09: NT-Xent, InfoNCE, a stable log-sigmoid, Bradley–Terry
- ``preference``      notebook 08: synthetic preferences from a known reward, the RLHF optimum pi_ref e^{r/beta} / Z
- ``policy_gradient`` notebook 08: REINFORCE, RLOO, GRPO advantages and loss, PPO's clipped losses, GAE, KL estimators
- ``verifiable_task`` notebook 08: a task with a checkable reward, a tiny policy that samples, a flawed learned reward
- ``dpo``             notebook 09: response log-probs, DPO (conservative, reference-free), IPO, SimPO, KTO, ORPO
- ``triton_cross_entropy``  notebook 10: a Triton cross-entropy kernel (online log-sum-exp, gradient in place)
- ``fused_linear_cross_entropy``  notebook 10: loss(h @ W.T, y) in token chunks, never building the logits
- ``logit_stabilizers``  notebook 10: PaLM's z-loss and Gemma 2's logit soft-capping, each with its gradient by hand
- ``vocab_parallel``  notebook 10: cross-entropy over vocabulary shards, merged from per-shard (max, sum) pairs
- ``memory_budget``   notebook 10: PeakMemory (bytes a block keeps alive, counted exactly), chunk size for a budget
- ``corpus``          notebook 10: the tiny-shakespeare loader (path, env var or a verified download)
- ``grading``         the helpers every notebook test cell uses
"""
