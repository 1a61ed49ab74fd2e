"""Serving's torch work runs on one thread per process (`components.serve.torch_thread`):
the same thread for every call and for the pyfunc's answers, never the caller's, and a call
made from that thread neither deadlocks nor hops."""
import threading

import pandas as pd
import pytest

from components.serve.torch_thread import on_torch_thread


def test_every_call_runs_on_one_thread_that_is_not_the_callers():
    first = on_torch_thread(threading.get_ident)
    assert first != threading.get_ident()
    from_elsewhere = []
    worker = threading.Thread(target=lambda: from_elsewhere.append(
        on_torch_thread(threading.get_ident)))
    worker.start()
    worker.join()
    assert from_elsewhere == [first] == [on_torch_thread(threading.get_ident)]


def test_a_call_from_the_torch_thread_runs_directly_and_errors_reach_the_caller():
    nested = on_torch_thread(lambda: (threading.get_ident(),
                                      on_torch_thread(threading.get_ident)))
    assert nested[0] == nested[1]
    with pytest.raises(ZeroDivisionError):
        on_torch_thread(lambda: 1 / 0)
    assert on_torch_thread(lambda a, b=0: a + b, 2, b=3) == 5   # the thread survives errors


def test_the_served_model_answers_on_the_torch_thread(monkeypatch):
    import components.serve.pyfunc as pyfunc

    seen = []

    def answer_rows(predictor, values, *rest):
        seen.append(threading.get_ident())
        return [{"transcript": "", "label": "sad", "probabilities": {"sad": 1.0},
                 "rationale": None, "cues": {}, "well_formed": None, "flags": [],
                 "error": None} for _ in values]

    monkeypatch.setattr(pyfunc, "answer_rows", answer_rows)
    model = pyfunc.EmoReasonModel()
    model.predictor, model.max_duration_s, model.batch_size, model.allow_paths = \
        None, 60.0, 8, False
    out = model.predict(None, pd.DataFrame({"audio": ["x", "y"]}))
    assert list(out["label"]) == ["sad", "sad"]
    assert seen == [on_torch_thread(threading.get_ident)] != [threading.get_ident()]
