"""The model zoo (issue 16, item 7): eight architectures of the kinds shipped to edge devices, in plain
PyTorch (``benchmarks/zoo/models.py``), each trained in float as a user would, quantised by onnxruntime's own
PTQ, and put through the installed ``sgsc`` CLI at its defaults (compress, export in every profile,
validate).

    python -m benchmarks.zoo                                   # every model on digits and MNIST-10k
    python -m benchmarks.zoo --models resnet_small --datasets digits --jobs 2
    python -m benchmarks.zoo --toy --models gru_rows --datasets digits --results /tmp/zoo.jsonl

One JSON row per (model, data set) goes to ``benchmarks/results/zoo.jsonl`` (``--results``) and a table to the
``.md`` beside it; see ``benchmarks/zoo/run.py``.
"""
