"""Teacher backends: the OpenAI-compatible client against a local stub server, the local
transformers teacher with a tiny random model (and once with the real bundled SmolLM2)."""
import asyncio
import json
import shutil
import threading
import time
from dataclasses import replace

import pytest

from components.config import TeacherConfig
from components.distill.backends import TeacherBackend, make_backend
from components.distill.prompts import load_prompt, render
from components.distill.records import ClipCues, TeacherRequest
from tests.openai_stub import StubChatServer
from tests.tiny_models import save_tiny_lm

LABELS = ("neutral", "happy", "sad", "angry")


def plain_request(utt_id: str, content: str) -> TeacherRequest:
    cues = ClipCues(utt_id=utt_id, transcript=content, label="neutral", label_set=LABELS)
    return TeacherRequest(utt_id=utt_id, cues=cues,
                          messages=({"role": "system", "content": "Explain."},
                                    {"role": "user", "content": content}))


def prompt_request(utt_id: str, transcript: str, label: str, minority=()) -> TeacherRequest:
    """A request rendered from the real teacher prompt."""
    cues = ClipCues(
        utt_id=utt_id, transcript=transcript, label=label, label_set=LABELS, minority=minority,
        gender="female", caption="high pitch, wide pitch range, loud, fast speech",
        levels={"pitch_level": "high", "energy_level": "high", "rate_level": "fast"},
        measures={"f0_median_hz": 265.0, "f0_range_st": 11.2, "energy_dbfs": -18.5,
                  "rate_sps": 5.6, "pause_ratio": 0.08},
    )
    return TeacherRequest(utt_id=utt_id, cues=cues, messages=render(load_prompt("teacher_v1"), cues))


@pytest.fixture
def stub():
    before = set(threading.enumerate())
    server = StubChatServer()
    server.start()
    yield server
    server.stop()
    assert set(threading.enumerate()) <= before, "threads left running"


def openai_teacher(stub, monkeypatch, **overrides):
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    cfg = TeacherConfig(openai_base_url=stub.base_url, openai_model="stub-model",
                        openai_api_key_env="TEST_TEACHER_KEY", openai_concurrency=4,
                        openai_timeout_s=5.0, openai_max_retries=3)
    return make_backend("openai", replace(cfg, **overrides), seed=7)


def test_openai_replies_in_request_order_with_the_configured_body(stub, monkeypatch):
    # later requests answer first, so completion order is the reverse of request order
    stub.delays = {f"clip {i}": 0.05 * (5 - i) for i in range(6)}
    teacher = openai_teacher(stub, monkeypatch, openai_concurrency=6)
    assert isinstance(teacher, TeacherBackend)
    requests = [plain_request(f"u{i}", f"clip {i}") for i in range(6)]
    replies = teacher.generate(requests)
    assert [r.text.split(" seed=")[0] for r in replies] == [f"echo clip {i}" for i in range(6)]
    assert all(r.error is None for r in replies)
    body = stub.bodies[0]
    assert body["model"] == "stub-model" and body["max_tokens"] == TeacherConfig().max_new_tokens
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "Explain."}
    # the per-request seed is reproducible and differs between requests
    again = teacher.generate(requests)
    assert [r.text for r in again] == [r.text for r in replies]
    assert len({r.text.split(" seed=")[1] for r in replies}) == 6
    assert teacher.stats.n_requests == 12 and teacher.stats.n_failed == 0
    assert teacher.stats.latency_s > 0


def test_openai_holds_the_concurrency_limit(stub, monkeypatch):
    stub.delay_s = 0.2
    teacher = openai_teacher(stub, monkeypatch, openai_concurrency=3)
    replies = teacher.generate([plain_request(f"u{i}", f"c{i}") for i in range(9)])
    assert all(r.text for r in replies)
    assert stub.calls == 9 and stub.max_in_flight == 3


@pytest.mark.parametrize("status", [500, 503, 429])
def test_openai_retries_transient_failures(stub, monkeypatch, status):
    stub.fail_first, stub.fail_status = 2, status
    teacher = openai_teacher(stub, monkeypatch)
    teacher.backoff_s = 0.01
    [reply] = teacher.generate([plain_request("u0", "hello")])
    assert reply.text.startswith("echo hello") and reply.error is None
    assert stub.calls == 3 and teacher.stats.n_retries == 2 and teacher.stats.n_failed == 0


def test_openai_waits_as_long_as_retry_after_asks(stub, monkeypatch):
    stub.fail_first, stub.fail_status, stub.retry_after = 2, 429, "0.25"
    teacher = openai_teacher(stub, monkeypatch)
    teacher.backoff_s = 0.001
    start = time.perf_counter()
    [reply] = teacher.generate([plain_request("u0", "hello")])
    assert reply.text and time.perf_counter() - start >= 0.5


def test_openai_gives_up_after_the_retries(stub, monkeypatch):
    stub.fail_first = 100
    teacher = openai_teacher(stub, monkeypatch, openai_max_retries=2)
    teacher.backoff_s = 0.01
    [reply] = teacher.generate([plain_request("u0", "hello")])
    assert reply.text is None and "HTTP 500" in reply.error and "attempt 3 of 3" in reply.error
    assert stub.calls == 3 and teacher.stats.n_failed == 1


def test_openai_does_not_retry_a_bad_request(stub, monkeypatch):
    stub.reject = {"broken"}
    teacher = openai_teacher(stub, monkeypatch)
    replies = teacher.generate([plain_request("u0", "fine"), plain_request("u1", "broken"),
                                plain_request("u2", "also fine")])
    assert replies[0].text.startswith("echo fine") and replies[2].text.startswith("echo also")
    assert replies[1].text is None and "HTTP 400" in replies[1].error
    assert stub.calls == 3 and teacher.stats.n_retries == 0 and teacher.stats.n_failed == 1


def test_openai_timeouts_become_error_replies(stub, monkeypatch):
    stub.delay_s = 0.6
    teacher = openai_teacher(stub, monkeypatch, openai_timeout_s=0.15, openai_max_retries=1)
    teacher.backoff_s = 0.01
    start = time.perf_counter()
    [reply] = teacher.generate([plain_request("u0", "slow")])
    assert reply.text is None and "timed out" in reply.error
    assert time.perf_counter() - start < 0.6
    assert stub.calls == 2 and teacher.stats.n_retries == 1


def test_openai_connection_errors_become_error_replies(monkeypatch):
    server = StubChatServer()  # bound but never serving: take its port, then free it
    base_url = server.base_url
    server.server.server_close()
    cfg = TeacherConfig(openai_base_url=base_url, openai_api_key_env="TEST_TEACHER_KEY",
                        openai_max_retries=1)
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    teacher = make_backend("openai", cfg, seed=0)
    teacher.backoff_s = 0.01
    [reply] = teacher.generate([plain_request("u0", "hello")])
    assert reply.text is None and "ConnectError" in reply.error
    assert teacher.stats.n_retries == 1


def test_openai_sends_the_key_from_the_environment_and_never_stores_it(stub, monkeypatch):
    teacher = openai_teacher(stub, monkeypatch)
    teacher.generate([plain_request("u0", "no key")])
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-5ecret")
    keyed = make_backend("openai", replace(teacher.cfg), seed=7)
    keyed.generate([plain_request("u0", "with key")])
    assert stub.auth == [None, "Bearer sk-test-5ecret"]
    assert "5ecret" not in json.dumps(keyed.config())
    assert keyed.config() == teacher.config()
    assert keyed.config() != make_backend("openai", replace(teacher.cfg, temperature=0.0),
                                          seed=7).config()


def test_openai_needs_a_key_for_a_remote_host(monkeypatch):
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    cfg = TeacherConfig(openai_base_url="https://api.example.com/v1",
                        openai_api_key_env="TEST_TEACHER_KEY")
    with pytest.raises(ValueError, match="TEST_TEACHER_KEY"):
        make_backend("openai", cfg, seed=0)
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-x")
    assert make_backend("openai", cfg, seed=0).config()["base_url"] == "https://api.example.com/v1"
    with pytest.raises(ValueError, match="http"):
        make_backend("openai", replace(cfg, openai_base_url="api.example.com"), seed=0)


def test_openai_works_inside_a_running_event_loop_and_in_a_thread(stub, monkeypatch):
    teacher = openai_teacher(stub, monkeypatch)
    request = plain_request("u0", "loop")

    async def from_a_coroutine():
        return teacher.generate([request])

    assert asyncio.run(from_a_coroutine())[0].text.startswith("echo loop")
    result = []
    worker = threading.Thread(target=lambda: result.extend(teacher.generate([request])))
    worker.start()
    worker.join()
    assert result[0].text.startswith("echo loop")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown teacher backend 'gpt'.*openai, hf"):
        make_backend("gpt", TeacherConfig(), seed=0)


def test_template_backend_is_registered():
    teacher = make_backend("template", TeacherConfig(), seed=0)
    assert isinstance(teacher, TeacherBackend) and teacher.name == "template"
    [reply] = teacher.generate([prompt_request("u0", "Leave me alone.", "angry")])
    assert reply.error is None and len(reply.text.split()) >= 10


# ------------------------------------------------------------------ local transformers teacher

def save_tiny_model(folder, seed: int, layers: int = 2):
    return save_tiny_lm(folder, seed=seed, layers=layers, hidden=32, kv_heads=2, tie=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0))


def hf_teacher(model: str, seed: int = 0, **overrides):
    cfg = TeacherConfig(hf_model=model, temperature=0.0, max_new_tokens=12, hf_batch_size=3)
    return make_backend("hf", replace(cfg, **overrides), seed=seed)


CLIPS = [
    ("a0", "Hi.", "happy", ()),
    ("a1", "I can't believe you did that to me after all these years, honestly!", "angry",
     ("sad",)),
    ("a2", "The train leaves at nine tomorrow morning.", "neutral", ()),
    ("a3", "", "sad", ("neutral", "angry")),
    ("a4", "Well, that is just wonderful news for all of us, isn't it?", "happy", ("angry",)),
]


def test_hf_batched_greedy_equals_one_by_one_in_request_order(tiny_model):
    requests = [prompt_request(*clip) for clip in CLIPS]
    batched = hf_teacher(tiny_model).generate(requests)  # sorted by length, batches of 3
    single = hf_teacher(tiny_model, hf_batch_size=1)
    alone = [single.generate([r])[0] for r in requests]
    assert all(r.text for r in batched)
    assert [r.text for r in batched] == [r.text for r in alone]
    assert len({r.text for r in batched}) > 1  # the texts depend on the prompt


def test_hf_output_is_only_the_continuation_and_bounded(tiny_model):
    requests = [prompt_request(*clip) for clip in CLIPS[:3]]
    short_teacher = hf_teacher(tiny_model, max_new_tokens=4)
    short = short_teacher.generate(requests)
    long = hf_teacher(tiny_model, max_new_tokens=12).generate(requests)
    for request, s, l in zip(requests, short, long):
        assert l.text.startswith(s.text) and len(l.text) > len(s.text)
        for turn in request.messages:  # no piece of the prompt comes back
            assert turn["content"][:40] not in l.text
        assert "<|im" not in l.text
    assert short_teacher.stats.n_truncated == 3 and short_teacher.stats.n_requests == 3


def test_hf_sampling_is_seeded(tiny_model):
    requests = [prompt_request(*clip) for clip in CLIPS[:3]]
    import torch

    teacher = hf_teacher(tiny_model, temperature=1.0, top_p=0.95)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = [r.text for r in teacher.generate(requests)]
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is left alone
    assert first == [r.text for r in teacher.generate(requests)]
    assert first != [r.text for r in hf_teacher(tiny_model, seed=1, temperature=1.0,
                                                top_p=0.95).generate(requests)]
    config = teacher.config()
    assert config["seed"] == 0 and config["batch_size"] == 3 and config["temperature"] == 1.0
    assert "seed" not in hf_teacher(tiny_model).config()  # greedy: seed and batch are moot


def test_hf_config_follows_the_model(tiny_model, tmp_path):
    base = hf_teacher(tiny_model).config()
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    same = hf_teacher(str(copy)).config()
    assert {k: v for k, v in same.items() if k != "model"} == \
        {k: v for k, v in base.items() if k != "model"}
    reseeded = hf_teacher(str(save_tiny_model(tmp_path / "reseeded", seed=1))).config()
    assert reseeded["weights_sha"] != base["weights_sha"]
    assert reseeded["config_sha"] == base["config_sha"]
    deeper = hf_teacher(str(save_tiny_model(tmp_path / "deeper", seed=0, layers=3))).config()
    assert deeper["config_sha"] != base["config_sha"]
    assert hf_teacher(tiny_model, max_new_tokens=20).config() != base


def test_hf_too_long_prompt_is_an_error_reply_for_that_clip_only(tiny_model):
    requests = [plain_request("short", "Say something."),
                plain_request("long", " ".join(["word"] * 1200))]
    replies = hf_teacher(tiny_model, max_new_tokens=8).generate(requests)
    assert replies[0].text and replies[0].error is None
    assert replies[1].text is None and "exceeds the model's 1024 positions" in replies[1].error


def test_hf_missing_model_or_chat_template_is_refused(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf_teacher(str(tmp_path / "nowhere"))
    bare = shutil.copytree(tiny_model, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        hf_teacher(str(bare))


@pytest.mark.slow
def test_hf_bundled_smollm2_writes_an_english_rationale():
    teacher = make_backend("hf", TeacherConfig(temperature=0.0, max_new_tokens=60), seed=0)
    [reply] = teacher.generate([prompt_request(*CLIPS[1])])
    words = reply.text.split()
    assert reply.error is None and len(words) >= 10
    assert sum(w.strip(".,;:!?\"'()").isalpha() for w in words) >= 0.8 * len(words)
    assert {"the", "and", "a", "of", "is", "to"} & {w.lower() for w in words}
    config = teacher.config()
    assert config["model"] == "bundled:smollm2-135m-instruct"
    assert "/" not in json.dumps(config)  # no machine path in a cache key
