"""tracegrad's version, which the compile cache's keys include."""
__version__ = "0.1.0"
