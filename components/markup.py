"""The markup a model's text can carry: reasoning and answer tags, and chat special tokens.

One definition, read by the SpeechLM's target formats (which write and parse the tags and keep
them out of free text) and by the distill stage (which strips them from teacher rationales).
Tags are matched in any case and with spaces inside the brackets ("< /Think >"), as models
write them.
"""
from __future__ import annotations

import re

THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
FORMAT_TAG = re.compile(r"<\s*/?\s*(think|answer)\s*>", re.IGNORECASE)
"""Any of the four tags; group 1 is the tag's name."""
SPECIAL_TOKEN = re.compile(r"<\|([^|<>]*)\|>")
"""A chat template's special token (`<|im_end|>`, the `<|audio|>` placeholder); group 1 is its
name. A tokenizer reads one inside plain text as the token itself, not as characters."""
