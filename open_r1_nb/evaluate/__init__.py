"""Step 6: evaluation — generation backends, answer scoring and the benchmarks.

Where things are: ``runner`` over ``benchmarks``, ``generate`` (+ ``generate_common``, ``generate_transformers``,
``generate_ctranslate2``, ``generate_vllm``), ``scoring``, ``sandbox`` (code tests), ``report``, ``rescore``.
"""
