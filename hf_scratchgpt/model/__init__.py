"""The model: a GPT written from scratch as a native ``transformers`` model, and its tokenizer.

* `configuration_scratchgpt`, `modeling_scratchgpt`, `tokenization_scratchgpt`: the remote-code trio,
  copied next to the weights by ``save_pretrained``; they import only each other and ``transformers``;
* `conversion`: OpenAI's GPT-2 weights <-> the GPT-2 recipe, exactly;
* `bpe`: a short byte-level BPE trainer to read (the fast ``tokenizers`` trainer is the default);
* `tokenizer_sync`: the context length, stop tokens and special ids a model and its tokenizer must share;
* `fast_generation`: ``generate()`` options for a static cache and compiled decoding steps.
"""
