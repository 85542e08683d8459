"""apps/pipeline.py's sync requests: one sync at a time per switch, one more after
it when asked meanwhile, on the newest connection asked for."""
from apps import pipeline as app_module
from apps.pipeline import PipelineApp


def _app(monkeypatch):
    app = PipelineApp.__new__(PipelineApp)  # only the requests: no os-ken, no runtime
    app._wanted, app._syncing, app.synced = {}, set(), []
    monkeypatch.setattr(app_module.hub, "spawn", lambda f, *args: f(*args))  # at once
    return app


def test_a_switch_that_reconnects_during_a_sync_is_synced_on_its_new_connection(
        monkeypatch, connect):
    app = _app(monkeypatch)
    old, new = connect(1, port=40000), connect(1, port=40001)

    def sync(dp):
        app.synced.append(dp)
        if dp is old:
            app._request_sync(new)  # the switch came back while this one ran
    app._sync = sync
    app._request_sync(old)
    assert app.synced == [old, new]
    assert app._syncing == set() and app._wanted == {}


def test_requests_during_a_sync_make_one_more_and_other_switches_run_their_own(
        monkeypatch, connect):
    app = _app(monkeypatch)
    one, two = connect(1), connect(2)

    def sync(dp):
        app.synced.append(dp)
        if len(app.synced) == 1:
            app._request_sync(one)
            app._request_sync(one)  # asked twice meanwhile: one more sync
            app._request_sync(two)  # another switch: its own, at once
    app._sync = sync
    app._request_sync(one)
    assert app.synced == [one, two, one]
