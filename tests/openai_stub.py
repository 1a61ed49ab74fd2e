"""A stub OpenAI-compatible chat endpoint on 127.0.0.1 for tests (started and stopped by them)."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubChatServer:
    """A /v1/chat/completions endpoint on 127.0.0.1 that echoes the user turn and the seed.

    It can fail its first `fail_first` calls with `fail_status` (and a Retry-After header),
    answer 400 to given user turns, delay answers, and counts concurrent requests."""

    def __init__(self):
        self.fail_first, self.fail_status, self.retry_after = 0, 500, None
        self.delay_s, self.delays, self.reject = 0.0, {}, set()
        self.calls, self.in_flight, self.max_in_flight = 0, 0, 0
        self.auth, self.bodies = [], []
        self.responder = None  # user turn -> reply text, instead of the echo
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.calls += 1
                    call = stub.calls
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub.auth.append(self.headers.get("Authorization"))
                    stub.bodies.append(body)
                user = body["messages"][-1]["content"]
                try:
                    time.sleep(stub.delays.get(user, stub.delay_s))
                    if self.path != "/v1/chat/completions":
                        self.reply(404, {"error": "no such route"})
                    elif call <= stub.fail_first:
                        self.reply(stub.fail_status, {"error": "busy"},
                                   {"Retry-After": stub.retry_after} if stub.retry_after else {})
                    elif user in stub.reject:
                        self.reply(400, {"error": "bad request"})
                    else:
                        content = stub.responder(user) if stub.responder else \
                            f"echo {user} seed={body['seed']}"
                        self.reply(200, {"choices": [{"message": {"role": "assistant",
                                                                  "content": content},
                                                      "finish_reason": "stop"}]})
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def reply(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json",
                                       "Content-Length": str(len(data)), **(headers or {})}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        class Server(ThreadingHTTPServer):
            daemon_threads = False  # server_close() waits for every handler thread

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
