"""Reference implementations for the course "Loss Functions for LLMs".

One module per concept, each one hop from its notebook and its tests:

- ``mle``            notebook 01: likelihoods and their negative logs (BCE, NLL, Gaussian NLL, MSE)
- ``softmax``        notebook 02: softmax, log-sum-exp, log-softmax, stable and naive
- ``cross_entropy``  notebook 02: cross-entropy from logits, its gradient, focal loss
- ``grading``        the helpers every notebook test cell uses
"""
