"""Real packet loss in a namespace of our own: TCP recovers it, nothing is lost, nothing is left behind."""

from __future__ import annotations

import subprocess

import pytest

from bench import listen, netns


@pytest.mark.skipif(netns.available() is not None, reason=f"no lossy namespace here: {netns.available()}")
def test_five_percent_real_loss_costs_no_frame_and_the_namespace_is_removed() -> None:
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    row = listen.run_one("netloss5", "block", 4)
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert row["server_exit"] == 0 and row["client_error"] is None
    assert row["expected"] and row["delivered"] == row["expected"] and row["lost"] == 0 and row["gaps"] == 0
    assert after == before  # the namespace, its veth pair and its nftables table are gone


def test_the_ruleset_drops_what_it_says() -> None:
    assert "numgen random mod 10000 < 500 drop" in netns._ruleset(5)
    assert "drop" not in netns._ruleset(0)
    with pytest.raises(ValueError), netns.lossy(101):
        pass
