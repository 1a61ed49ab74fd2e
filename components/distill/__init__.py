"""The distill stage: teacher rationales for the training clips, verified before they are kept."""
