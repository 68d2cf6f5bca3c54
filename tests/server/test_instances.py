"""The pure parts of several servers behind one address: names, socket names, the merged /metrics."""

from __future__ import annotations

import pytest

from ringaudio.errors import ConfigError
from ringaudio.server.instances import (
    check_instance,
    instance_of,
    label,
    merge_expositions,
    private_address,
    process_names,
)


def test_instance_names_and_the_ids_that_carry_them() -> None:
    assert process_names(3, "a") == ["ap0", "ap1", "ap2"]
    assert instance_of("ap1-3f9c") == "ap1" and instance_of("3f9c") is None and instance_of("A-1") is None
    for bad in ("", "A", "a-b", "x" * 17, "p 0"):
        with pytest.raises(ConfigError):
            check_instance(bad)


def test_a_private_socket_name_carries_the_supervisors_token() -> None:
    assert private_address(8080, "p1", "00ff") == "\0ringaudio-8080-00ff-p1"


def test_labels_are_added_whatever_the_values_hold() -> None:
    assert label("x_total 3", "p0") == 'x_total{process="p0"} 3'
    assert label("x_total{} 3", "p0") == 'x_total{process="p0"} 3'
    assert label('x{a="b"} 1.5 1700000000', "p1") == 'x{a="b",process="p1"} 1.5 1700000000'
    # a value with a closing brace, an escaped quote and a backslash in it stays one label set
    line = r'x{model_id="v}1",note="say \"hi\" \\ ok"} 2'
    assert label(line, "p0") == r'x{model_id="v}1",note="say \"hi\" \\ ok",process="p0"} 2'


def test_one_family_header_then_every_processs_samples_and_who_answered() -> None:
    a = '# HELP x_total Frames.\n# TYPE x_total counter\nx_total 1\n# HELP y Depth.\n# TYPE y gauge\ny{s="1"} 4\n'
    b = "# HELP x_total Frames.\n# TYPE x_total counter\nx_total 2\n"
    merged = merge_expositions({"p0": a, "p1": b}, missing=("p2",)).splitlines()
    assert merged[:4] == [
        "# HELP x_total Frames.",
        "# TYPE x_total counter",
        'x_total{process="p0"} 1',
        'x_total{process="p1"} 2',
    ]
    assert 'y{s="1",process="p0"} 4' in merged
    assert merged[-3:] == [
        'tts_process_up{process="p0"} 1',
        'tts_process_up{process="p1"} 1',
        'tts_process_up{process="p2"} 0',
    ]
    assert sum(line.startswith("# TYPE ") for line in merged) == 3
