"""A teacher behind any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, a hosted API).

Requests go out concurrently (bounded by `openai_concurrency`) over one HTTP client; transient
failures (timeouts, dropped connections, 429, 5xx) are retried with exponential backoff and
jitter, honouring `Retry-After`; other 4xx answers are final. A failed clip comes back as an
error reply, so one bad request never loses the rest of the batch.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import random
import time
from urllib.parse import urlsplit

import httpx

from components.config import TeacherConfig
from components.distill.backends.base import TeacherStats, request_seed
from components.distill.records import TeacherReply, TeacherRequest

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
"""Hosts that may be reached without an API key, or with one over plain http (a local vLLM or
Ollama server: the traffic never leaves the machine)."""


def check_endpoint(url: str, has_key: bool, allow_insecure_http: bool, param: str) -> None:
    """Refuse to send an API key as a Bearer header in clear text: with a key set, a plain
    `http://` URL to a host other than this machine is an error naming `param`, the switch
    that allows it (e.g. on a trusted private network)."""
    parts = urlsplit(url)
    if has_key and parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS \
            and not allow_insecure_http:
        raise ValueError(
            f"refusing to send the API key unencrypted to {parts.hostname} over http://: use "
            f"https://, or set {param}: true if the network is trusted")


def retry_after_s(value: str | None) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIChatTeacher:
    """POST {base_url}/chat/completions for each request; replies in request order."""

    name = "openai"

    def __init__(self, cfg: TeacherConfig, seed: int = 0, backoff_s: float = 0.5,
                 max_backoff_s: float = 60.0, section: str = "distill.teacher"):
        """`section`: where `cfg` comes from in params.yaml, named in configuration errors."""
        parts = urlsplit(cfg.openai_base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"openai_base_url must be an http(s) URL, got {cfg.openai_base_url!r}")
        if cfg.openai_concurrency < 1 or cfg.openai_max_retries < 0 or cfg.openai_timeout_s <= 0:
            raise ValueError("openai_concurrency must be >= 1, openai_max_retries >= 0 and "
                             "openai_timeout_s > 0")
        self._key = os.environ.get(cfg.openai_api_key_env) or None
        if self._key is None and parts.hostname not in LOCAL_HOSTS:
            raise ValueError(
                f"no API key for {parts.hostname}: set the environment variable "
                f"{cfg.openai_api_key_env} (only a local endpoint may run without one)")
        check_endpoint(cfg.openai_base_url, self._key is not None, cfg.allow_insecure_http,
                       f"{section}.allow_insecure_http")
        self.cfg = cfg
        self.seed = seed
        self.url = cfg.openai_base_url.rstrip("/") + "/chat/completions"
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = TeacherStats()
        self._jitter = random.Random()

    def config(self) -> dict:
        return {
            "backend": self.name,
            "base_url": self.cfg.openai_base_url.rstrip("/"),
            "model": self.cfg.openai_model,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_new_tokens,
            "seed": self.seed,
        }

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            return asyncio.run(self._generate_all(requests))
        # Called from inside a running loop (a notebook, an async flow): asyncio.run would
        # refuse, so the batch runs on its own loop in a worker thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._generate_all(requests)).result()

    async def _generate_all(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        limits = httpx.Limits(max_connections=self.cfg.openai_concurrency)
        semaphore = asyncio.Semaphore(self.cfg.openai_concurrency)
        async with httpx.AsyncClient(headers=headers, limits=limits,
                                     timeout=self.cfg.openai_timeout_s) as client:
            return list(await asyncio.gather(*(self._generate_one(client, semaphore, r)
                                               for r in requests)))

    def _backoff(self, attempt: int, asked: float | None) -> float:
        """Exponential backoff with full jitter, or what the server asked for (capped)."""
        if asked is not None:
            return min(asked, self.max_backoff_s)
        return self._jitter.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    async def _generate_one(self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore,
                            request: TeacherRequest) -> TeacherReply:
        body = {
            "model": self.cfg.openai_model,
            "messages": list(request.messages),
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_new_tokens,
            "seed": request_seed(self.seed, [request]),
        }
        self.stats.n_requests += 1
        start = time.perf_counter()
        attempts = self.cfg.openai_max_retries + 1
        for attempt in range(attempts):
            asked = None
            async with semaphore:
                try:
                    async with asyncio.timeout(self.cfg.openai_timeout_s):
                        response = await client.post(self.url, json=body)
                except (TimeoutError, httpx.TimeoutException):
                    error = f"timed out after {self.cfg.openai_timeout_s:g} s"
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        self.stats.latency_s += time.perf_counter() - start
                        return self._parse(response)
                    error = f"HTTP {response.status_code}: {response.text[:300]}"
                    if response.status_code != 429 and response.status_code < 500:
                        break  # the request itself is wrong: retrying cannot help
                    asked = retry_after_s(response.headers.get("Retry-After"))
            if attempt + 1 < attempts:
                self.stats.n_retries += 1
                await asyncio.sleep(self._backoff(attempt, asked))
        self.stats.latency_s += time.perf_counter() - start
        self.stats.n_failed += 1
        return TeacherReply(text=None, error=f"{error} (attempt {attempt + 1} of {attempts})")

    def _parse(self, response: httpx.Response) -> TeacherReply:
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.stats.n_failed += 1
            return TeacherReply(text=None, error=f"malformed response: {response.text[:300]}")
        if not isinstance(text, str) or not text.strip():
            self.stats.n_failed += 1
            return TeacherReply(text=None, error="empty completion")
        if choice.get("finish_reason") == "length":
            self.stats.n_truncated += 1
        return TeacherReply(text=text.strip())
