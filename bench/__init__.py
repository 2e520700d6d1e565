"""peer_chat benchmarks: `python -m bench [--quick] [--json PATH] [--only NAME ...]`.

Not timed tests: each figure is measured beside a baseline from the same run
and printed as a table (see bench/__main__.py for the registry of figures).
"""
