"""The leaf below every layer: the settings (the one module that reads the environment) and words shown to people.

``models/``, ``db/``, ``affectlab/`` and ``webapp/`` may import it; it imports none of them.
"""
