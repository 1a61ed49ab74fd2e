"""The synthetic demo corpus (eSpeak NG, offline): the pipeline's default data."""
from components.prepare.demo.corpus import generate_demo_corpus

__all__ = ["generate_demo_corpus"]
