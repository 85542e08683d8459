"""ovs-vswitchd restarting loses every flow; socketnet restores the whole pipeline
when the switch reconnects."""
from tests.integration.test_controller import expected_lines, switch_lines


def test_the_pipeline_is_restored_after_ovs_vswitchd_restarts(attached):
    lab, ctl = attached
    mark = ctl.mark()
    lab.ovs.restart_vswitchd()
    counts = ctl.wait_synced(["mesh", "vmbr0"], timeout=30, after=mark)
    for bridge in ("mesh", "vmbr0"):
        assert counts[bridge]["add"] > 0 and counts[bridge]["unchanged"] == 0, counts
        assert switch_lines(lab, bridge) == expected_lines(lab, bridge), bridge
