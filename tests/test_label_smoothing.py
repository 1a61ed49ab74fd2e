"""Label smoothing over the label set (`sft.label_smoothing`): the label token's loss against
(1 - eps) on the gold label and eps spread over the label set's tokens, nowhere else."""
import pytest
import torch
import torch.nn.functional as F

from components.speechlm.formats import (FORMATS, TRANSCRIPT_SOURCES, label_continuations,
                                         split_label_tokens)
from components.speechlm.train import smooth_labels

VOCAB, CHOICES = 50, [3, 7, 11, 20]


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def test_the_label_tokens_loss_is_the_hand_computed_mixture():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, VOCAB)
    targets = torch.randint(0, VOCAB, (3, 5))
    targets[0, 2], targets[2, 1] = 7, 20  # the gold labels, at row positions 3 and 2
    epsilon = torch.tensor([0.2, 0.0, 0.5])
    position = torch.tensor([3, -1, 2])
    choices = torch.tensor([CHOICES, [0] * 4, CHOICES])
    per_token = token_losses(logits, targets)
    out = smooth_labels(per_token, logits, epsilon, position, choices)
    for row, at, eps in ((0, 2, 0.2), (2, 1, 0.5)):
        logp = logits[row, at].log_softmax(-1)
        expected = -(1 - eps) * logp[targets[row, at]] - eps * sum(logp[c] for c in CHOICES) / 4
        assert out[row, at].item() == pytest.approx(expected.item(), rel=1e-6)
    changed = torch.zeros_like(out, dtype=torch.bool)
    changed[0, 2] = changed[2, 1] = True
    assert torch.equal(out[~changed], per_token[~changed])  # every other token as it was
    assert out[0, 2] != per_token[0, 2]


def test_rows_without_a_label_leave_the_losses_alone():
    logits = torch.randn(2, 4, VOCAB)
    per_token = token_losses(logits, torch.zeros(2, 4, dtype=torch.long))
    out = smooth_labels(per_token, logits, torch.zeros(2), torch.tensor([-1, -1]),
                        torch.zeros(2, 4, dtype=torch.long))
    assert torch.equal(out, per_token)


def test_its_minimum_puts_one_minus_eps_on_the_gold_label_and_the_rest_on_the_label_set():
    """Fitted freely, the label-set probabilities go to (1 - eps + eps/K, eps/K, ...), and the
    tokens outside the label set to ~0; with eps = 0, the gold label's towards 1."""
    for eps, gold_p in ((0.2, 0.85), (0.0, 1.0)):
        logits = torch.zeros(1, 1, VOCAB, requires_grad=True)
        optimiser = torch.optim.Adam([logits], lr=0.1)
        targets = torch.tensor([[7]])
        for _ in range(600):
            optimiser.zero_grad()
            loss = smooth_labels(token_losses(logits, targets), logits, torch.tensor([eps]),
                                 torch.tensor([1]), torch.tensor([CHOICES])).sum()
            loss.backward()
            optimiser.step()
        p = logits[0, 0].softmax(-1).detach()
        assert p[7].item() == pytest.approx(gold_p, abs=0.02)
        if eps:
            assert p[[3, 11, 20]].tolist() == pytest.approx([eps / 4] * 3, abs=0.01)
        assert p[CHOICES].sum().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("source", TRANSCRIPT_SOURCES)
def test_every_corpus_label_set_parts_at_one_token_with_the_bundled_tokenizer(fmt, source):
    """Smoothing is on by default, and the collator refuses a label set whose labels do not
    part at one token: every corpus's canonical labels must, in every target format."""
    from transformers import AutoTokenizer

    from components.labels import CORPUS_CODE_MAPS
    from components.models.bundled import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    for corpus, codes in CORPUS_CODE_MAPS.items():
        labels = sorted({label for label in codes.values() if label})
        texts = label_continuations(fmt, source, labels, transcript="kids are talking",
                                    rationale="The pitch is high.")
        shared, rests = split_label_tokens(tokenizer, [texts[x] for x in labels])
        firsts = [rest[0] for rest in rests]
        assert len(set(firsts)) == len(labels), (corpus, fmt, source)
        assert tokenizer.decode(shared).endswith(("Emotion:", "<answer>"))
