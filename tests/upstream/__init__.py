"""transformers' own common model tests, run on ScratchGPT against a transformers source tree (see README.md)."""
