"""
Benchmarks of kernel-relay against its floor (direct ZMQ) and its peer (Jupyter Server).

Run ``python -m bench`` (or ``tox -e bench``); ``python -m bench --help`` lists the options. Every
scenario runs the three targets side by side in one process run, against the same ``python3``
kernelspec, with the same minimal client work, and writes ``results.json``, ``results.md`` (ratios)
and PNG plots to ``bench/results/``. Benchmarks are not tests: nothing here asserts a timing.
"""
