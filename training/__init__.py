"""The training stages, one script each (``python training/pretrain.py ...``); importable as ``training.<stage>``
so tests and tools call ``main(argv)`` in process."""
