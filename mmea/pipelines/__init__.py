"""Runnable jobs (align, bench) built from the library parts."""
