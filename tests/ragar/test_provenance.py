"""A results JSON credits the code that ran: the commit when the run started, not when it ended."""

import ragar.provenance as prov


def test_the_record_keeps_the_commit_of_the_start(monkeypatch):
    head = {"rev-parse": "aaa", "status": ""}
    monkeypatch.setattr(prov, "_git", lambda *a: head[a[0]])
    monkeypatch.setattr(prov, "_AT_START", None)
    prov.record_start()
    head.update({"rev-parse": "bbb", "status": " M x.py"})  # committed and edited while the run went on
    r = prov.run_record("ragar", ["eval", "generation"])
    assert (r["commit"], r["dirty"]) == ("aaa", False) and r["command"] == "ragar eval generation"


def test_without_a_recorded_start_the_record_reads_the_checkout_now(monkeypatch):
    monkeypatch.setattr(prov, "_git", lambda *a: {"rev-parse": "ccc", "status": " M y.py"}[a[0]])
    monkeypatch.setattr(prov, "_AT_START", None)
    r = prov.run_record("ragar", [])
    assert (r["commit"], r["dirty"]) == ("ccc", True)
