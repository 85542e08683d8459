"""The role policy: the primary is master always; a standby is slave until its peer
misses two probes in a row, master until the peer answers again; generation ids
only rise, and are no older than the clock."""
from __future__ import annotations

from controller.role import MISSES, Claim, RolePolicy

PEER = ("127.0.0.1", 6653)


class Clock:
    def __init__(self, ms: int):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_the_primary_claims_master_with_the_time_as_generation():
    clock = Clock(1_700_000_000_000)
    roles = RolePolicy("primary", now_ms=clock)
    assert roles.claim() == Claim(master=True, generation=1_700_000_000_000)


def test_generations_rise_even_when_the_clock_stands_still_or_goes_back():
    clock = Clock(5_000)
    roles = RolePolicy("primary", now_ms=clock)
    first = roles.claim().generation
    second = roles.claim().generation
    clock.ms = 10
    third = roles.claim().generation
    clock.ms = 9_000
    fourth = roles.claim().generation
    assert (first, second, third, fourth) == (5_000, 5_001, 5_002, 9_000)


def test_the_primary_stays_master_whatever_the_probes_say():
    roles = RolePolicy("primary", PEER, now_ms=Clock(1))
    assert not any(roles.probed(alive) for alive in (False, False, False, True))
    assert roles.active and roles.claim().master


def test_a_standby_claims_slave_while_its_peer_answers():
    roles = RolePolicy("standby", PEER, now_ms=Clock(1))
    assert not roles.probed(True) and not roles.probed(True)
    assert roles.claim() == Claim(master=False, generation=1)


def test_a_standby_takes_over_after_two_missed_probes_with_a_newer_generation(caplog):
    clock = Clock(1_000)
    roles = RolePolicy("standby", PEER, now_ms=clock)
    before = roles.claim().generation
    assert MISSES == 2
    assert roles.probed(False) is False and not roles.active
    clock.ms = 1_000  # the clock has not moved: the generation still rises
    assert roles.probed(False) is True and roles.active
    after = roles.claim()
    assert after.master and after.generation > before
    assert "primary 127.0.0.1:6653 does not answer: taking over as master" in caplog.text


def test_one_answer_between_misses_starts_the_count_again():
    roles = RolePolicy("standby", PEER, now_ms=Clock(1))
    assert [roles.probed(a) for a in (False, True, False)] == [False, False, False]
    assert not roles.active
    assert roles.probed(False) and roles.active


def test_a_standby_master_stays_while_the_peer_is_down_and_steps_back_when_it_answers(caplog):
    roles = RolePolicy("standby", PEER, now_ms=Clock(1))
    roles.probed(False)
    roles.probed(False)
    assert [roles.probed(False) for _ in range(3)] == [False, False, False]  # no re-claims
    assert roles.active
    assert roles.probed(True) is True and not roles.active
    assert not roles.claim().master
    assert "primary 127.0.0.1:6653 answers again: back to standby" in caplog.text
    # and it takes over again only after two new misses
    assert roles.probed(False) is False and roles.probed(False) is True
