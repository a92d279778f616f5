"""The pwmpr command line (installed as ``pwmpr.cli``)."""
