"""Reconciliation plans: unchanged flows untouched, foreign cookies left alone; meters
added when missing, modified when different, and never deleted."""
from controller.flow import Apply, Flow, Output
from controller.pipeline import Purpose
from controller.reconcile import MeterConfig, plan, plan_meters

OURS = Purpose.MANAGEMENT.cookie


def flow(prio, port, cookie=OURS, **kw):
    return Flow.make(2, prio, {"metadata": prio},
                     [Apply((Output(port),))], cookie, **kw)


def test_identical_switch_needs_no_change():
    desired = [flow(1, 1), flow(2, 2)]
    p = plan(desired, list(desired))
    assert p.empty and p.unchanged == 2


def test_changed_actions_replace_the_entry_and_nothing_else():
    p = plan([flow(1, 1), flow(2, 3)], [flow(1, 1), flow(2, 2)])
    assert p.add == (flow(2, 3),) and p.delete == () and p.unchanged == 1


def test_unwanted_entry_of_ours_is_deleted():
    p = plan([flow(1, 1)], [flow(1, 1), flow(2, 2)])
    assert p.delete == (flow(2, 2),) and p.add == ()


def test_flows_under_other_cookies_are_never_touched():
    theirs = flow(5, 5, cookie=0x1234)
    p = plan([flow(1, 1)], [flow(1, 1), theirs])
    assert p.empty


def test_reactive_source_blocks_are_left_to_expire():
    cached = flow(7, 7, cookie=Purpose.BLOCKED.cookie, idle_timeout=30)
    p = plan([flow(1, 1)], [flow(1, 1), cached])
    assert p.empty


def test_cookie_change_alone_replaces_the_entry():
    p = plan([flow(1, 1, cookie=Purpose.PRIVACY.cookie)], [flow(1, 1)])
    assert p.add == (flow(1, 1, cookie=Purpose.PRIVACY.cookie),)


def test_unreadable_entry_of_ours_is_replaced_when_wanted_and_deleted_otherwise():
    wanted = flow(1, 1)
    stray = Flow.make(2, 9, {"metadata": 9}, (), OURS)
    p = plan([wanted], [], foreign=[Flow.make(2, 1, {"metadata": 1}, (), OURS), stray])
    assert p.add == (wanted,) and p.delete == (stray,)


def test_meters_held_as_desired_need_no_change():
    want = [MeterConfig(1, 1000, 200), MeterConfig(2, 1000, 200)]
    p = plan_meters(want, list(reversed(want)))
    assert p.empty and p.changes() == () and p.unchanged == 2


def test_a_missing_meter_is_added_and_a_different_one_modified_in_meter_order():
    p = plan_meters([MeterConfig(1, 1000, 200), MeterConfig(2, 1000, 200)],
                    [MeterConfig(1, 500, 200)])
    assert p.add == (MeterConfig(2, 1000, 200),) and p.modify == (MeterConfig(1, 1000, 200),)
    assert p.changes() == (("modify", MeterConfig(1, 1000, 200)),
                           ("add", MeterConfig(2, 1000, 200)))


def test_a_meter_with_other_flags_or_burst_is_modified():
    want = MeterConfig(1, 1000, 200)
    assert plan_meters([want], [MeterConfig(1, 1000, 200, flags=0x1)]).modify == (want,)
    assert plan_meters([want], [MeterConfig(1, 1000, 100)]).modify == (want,)


def test_a_meter_not_wanted_is_left_alone_and_reported():
    p = plan_meters([MeterConfig(1, 1000, 200)],
                    [MeterConfig(1, 1000, 200), MeterConfig(7, 10, 10)])
    assert p.empty and p.extra == (7,)
