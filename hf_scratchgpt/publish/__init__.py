"""Everything that leaves the run: model cards, the run report, Hub pushes and exports.

* `cards`, `card_sections`, `markdown`: model cards rendered from what the stages wrote;
* `report`, `plots`: the main job's ``report.md`` and the loss curves it and the cards show;
* `hub`: pushing a model folder, its card and evaluation results to the Hub;
* `export`: the model as an in-tree ``transformers`` folder, GGUF or ONNX, and ``verify`` of their parity.
"""
