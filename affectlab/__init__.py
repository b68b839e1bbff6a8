"""AffectLab: face emotion and engagement analysis with people in the loop."""

__version__ = "0.1.0"
