"""Evaluation harnesses shared by the scripts in ``eval/``: each module reads a model and returns numbers.

* `harness`: zero/few-shot tasks through lm-evaluation-harness (bundled local-file tasks, any file in a
  generic schema, lm-eval's own tasks), with the random-guess baseline beside every accuracy;
* `perplexity`: perplexity and bits per byte of any text, sliding window with a stride;
* `classification`: a fine-tuned classifier and zero/few-shot prompting of a causal LM, side by side;
* `instruction`: answers to held-out instructions, ROUGE-L and exact match;
* `judge`: an LLM judge scoring answers 0-100, local or behind an OpenAI-compatible endpoint.
"""
