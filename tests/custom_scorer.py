"""A scorer factory loaded through an entry point in test_scoring.py."""


def length_ratio():
    return lambda output, target: min(len(target), len(output)) / max(len(target), len(output))
