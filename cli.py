"""Thin shim: ``python cli.py ...`` == ``mmea ...``."""

from mmea.cli import main

if __name__ == "__main__":
    main()
