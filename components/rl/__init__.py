"""The rl stage: GRPO-PTR from the SFT model (rewards, trust-aware combination, training)."""
