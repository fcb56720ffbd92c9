"""The evaluations, one script each (``python eval/perplexity.py ...``); importable as ``eval.<script>`` so tests
and tools call ``main(argv)`` in process."""
