"""Chapter 6: the monitor's json-file log and ``logs`` (real containers, real files)."""

import hashlib
import json
import os
import subprocess
import time

import pytest

from minidocker import logs

pytestmark = pytest.mark.ch6


def container_directory(engine, container_id):
    return os.path.join(engine.root, "containers", container_id)


def log_path(engine, container_id):
    return os.path.join(container_directory(engine, container_id), f"{container_id}-json.log")


def wait_exit(engine, container_id):
    return int(engine.ok("wait", container_id, timeout=60).strip())


# -- the format, without a container ----------------------------------------------

def test_entries_round_trip_any_bytes_exactly():
    samples = [b"plain\n", b"no newline", b"a\\nb\\\\n\n", "ünïcode ✓\n".encode(),
               bytes(range(256)), b"\n\n\n", b"\r\n\t\0"]
    for data in samples:
        encoded = logs.encode_entries(data, "stdout", logs.timestamp())
        for line in encoded.splitlines():
            json.loads(line)  # every line is valid JSON on its own
        entries = logs.parse_lines(encoded)
        assert "".join(text for _, text, _ in entries).encode("utf-8", "surrogateescape") == data


def test_entries_split_at_newlines_and_keep_partial_lines():
    encoded = logs.encode_entries(b"one\ntwo\nthr", "stderr", "T")
    assert [json.loads(line) for line in encoded.splitlines()] == [
        {"log": "one\n", "stream": "stderr", "time": "T"},
        {"log": "two\n", "stream": "stderr", "time": "T"},
        {"log": "thr", "stream": "stderr", "time": "T"}]


def test_timestamps_have_nanoseconds_and_parse_back():
    text = logs.timestamp(1_700_000_000_123_456_789)
    assert text == "2023-11-14T22:13:20.123456789Z"
    assert logs.parse_timestamp(text) == 1_700_000_000_123_456_789
    now = 1_700_000_000 * 10**9
    assert logs.parse_time_argument("10m", now=now) == now - 600 * 10**9
    assert logs.parse_time_argument("1700000000.5") == now + 5 * 10**8
    assert logs.parse_time_argument("2023-11-14T22:13:20Z") == now
    with pytest.raises(Exception):
        logs.parse_time_argument("yesterday")


def test_rotation_keeps_at_most_max_file_files(tmp_path):
    path = str(tmp_path / "c-json.log")
    writer = logs.JsonFileWriter(path, max_size=1000, max_files=3)
    for number in range(200):
        writer.write("stdout", f"line {number}\n".encode())
    writer.close()
    files = logs.log_files(path)
    assert files == [path + ".2", path + ".1", path]
    assert all(os.path.getsize(name) <= 1000 for name in files)
    lines = [text for batch in logs.read_entries(path) for _, text, _ in batch]
    assert lines[-1] == "line 199\n"
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 200))  # contiguous, newest kept


# -- through the engine -------------------------------------------------------------

def test_logs_keep_streams_apart_in_order(busybox):
    script = "echo out1; echo err1 >&2; sleep 0.1; echo out2; echo err2 >&2"
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    assert wait_exit(busybox, container_id) == 0
    result = busybox.run("logs", container_id)
    assert result.stdout == "out1\nout2\n"
    assert result.stderr == "err1\nerr2\n"
    with open(log_path(busybox, container_id)) as handle:
        entries = [json.loads(line) for line in handle]
    assert [(entry["log"], entry["stream"]) for entry in entries] == [
        ("out1\n", "stdout"), ("err1\n", "stderr"), ("out2\n", "stdout"), ("err2\n", "stderr")]
    assert all(len(entry["time"]) == len("2026-01-01T00:00:00.123456789Z") for entry in entries)


def test_tail_since_until_and_timestamps(busybox):
    script = "for i in 1 2 3 4 5; do echo line$i; done; sleep 1.2; echo late"
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    wait_exit(busybox, container_id)
    assert busybox.ok("logs", "--tail", "2", container_id) == "line5\nlate\n"
    assert busybox.ok("logs", "--tail", "0", container_id) == ""
    stamped = busybox.ok("logs", "-t", "--tail", "1", container_id)
    stamp, text = stamped.split(" ", 1)
    assert text == "late\n" and stamp.endswith("Z") and len(stamp.split(".")[1]) == 10
    late = logs.parse_timestamp(stamp)
    assert busybox.ok("logs", "--since", str(late / 1e9 - 0.5), container_id) == "late\n"
    assert busybox.ok("logs", "--until", str(late / 1e9 - 0.5), container_id) == \
        "".join(f"line{i}\n" for i in range(1, 6))


def test_follow_shows_lines_as_printed_and_ends_with_the_container(busybox):
    script = "echo first; sleep 1; echo second; sleep 1; echo third"
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    follower = subprocess.Popen(busybox.command("logs", "-f", container_id), stdout=subprocess.PIPE,
                                env=busybox.environment(), text=True)
    try:
        assert follower.stdout.readline() == "first\n"
        assert follower.stdout.readline() == "second\n"
        seen_second = time.monotonic()
        assert follower.stdout.readline() == "third\n"
        # "third" comes a second after "second": lines arrive as printed, not at the end.
        assert time.monotonic() - seen_second > 0.5
        assert follower.wait(timeout=10) == 0
    finally:
        follower.kill()
        follower.wait()


def test_follow_and_read_across_rotation(busybox):
    # Bursts of 100 lines, a rotation every few bursts: a follower polling
    # every 50 ms keeps up, so it must see every line, across the renames.
    script = ("i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); "
              "[ $((i % 100)) = 0 ] && sleep 0.1; done")
    container_id = busybox.ok("run", "-d", "--log-opt", "max-size=20k", "--log-opt", "max-file=3",
                              "busybox", "sh", "-c", "sleep 0.5; " + script).strip()
    follower = subprocess.Popen(busybox.command("logs", "-f", container_id), stdout=subprocess.PIPE,
                                env=busybox.environment(), text=True)
    try:
        followed = follower.communicate(timeout=60)[0].splitlines()
    finally:
        follower.kill()
    assert follower.returncode == 0
    path = log_path(busybox, container_id)
    files = logs.log_files(path)
    assert len(files) == 3 and not os.path.exists(path + ".3")
    assert all(os.path.getsize(name) <= 20 * 1024 for name in files)
    kept = busybox.ok("logs", container_id).splitlines()
    assert kept[-1] == "line-2999" and 200 < len(kept) < 3000
    assert kept == [f"line-{i}" for i in range(3000 - len(kept), 3000)]
    # The follower read each file before it was rotated away: all of it, in order.
    assert followed == [f"line-{i}" for i in range(3000)]


def test_a_container_printing_50_megabytes_loses_nothing(busybox):
    # 50 MB of base64 lines as fast as busybox can make them; the checksum of
    # what logs gives back must be the checksum of what was printed.
    script = ("head -c 37748736 /dev/urandom > /tmp/data; base64 /tmp/data | md5sum >&2; "
              "base64 /tmp/data")
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    assert wait_exit(busybox, container_id) == 0
    result = subprocess.run(busybox.command("logs", container_id), capture_output=True,
                            env=busybox.environment(), timeout=120)
    expected = result.stderr.split()[0].decode()
    assert len(result.stdout) > 50_000_000
    assert hashlib.md5(result.stdout).hexdigest() == expected


def test_binary_output_is_kept_byte_for_byte(busybox):
    script = "head -c 300000 /dev/urandom > /tmp/raw; md5sum /tmp/raw >&2; cat /tmp/raw"
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    assert wait_exit(busybox, container_id) == 0
    result = subprocess.run(busybox.command("logs", container_id), capture_output=True,
                            env=busybox.environment(), timeout=60)
    assert len(result.stdout) == 300000
    assert hashlib.md5(result.stdout).hexdigest() == result.stderr.split()[0].decode()


def test_bad_log_options_are_refused(busybox):
    for options in (["--log-opt", "max-size=lots"], ["--log-opt", "colour=blue"],
                    ["--log-opt", "max-file=3"], ["--log-opt", "max-file=0", "--log-opt", "max-size=1k"]):
        result = busybox.run("run", *options, "busybox", "true")
        assert result.returncode == 125, options
        assert result.stderr.count("\n") == 1
    assert busybox.ok("ps", "-aq") == ""


def test_follow_with_tail_goes_on_from_the_tail(busybox):
    script = "for i in 1 2 3; do echo early$i; done; sleep 1; echo late1; echo late2"
    container_id = busybox.ok("run", "-d", "busybox", "sh", "-c", script).strip()
    time.sleep(0.5)
    result = busybox.run("logs", "-f", "--tail", "1", container_id, timeout=30)
    assert (result.returncode, result.stdout) == (0, "early3\nlate1\nlate2\n")
    assert busybox.ok("logs", "-f", container_id) == "early1\nearly2\nearly3\nlate1\nlate2\n"
    invalid = busybox.run("logs", "--tail", "many", container_id)
    assert invalid.returncode == 125


def test_max_file_1_truncates_and_a_follower_starts_again_at_the_top(busybox):
    script = ("i=0; while [ $i -lt 600 ]; do echo line-$i; i=$((i+1)); "
              "[ $((i % 100)) = 0 ] && sleep 0.2; done")
    container_id = busybox.ok("run", "-d", "--log-opt", "max-size=4k", "busybox", "sh", "-c",
                              "sleep 0.5; " + script).strip()
    result = busybox.run("logs", "-f", container_id, timeout=60)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "line-599" and len(lines) > 100  # it went on after each truncation
    assert logs.log_files(log_path(busybox, container_id)) == [log_path(busybox, container_id)]
    assert os.path.getsize(log_path(busybox, container_id)) <= 4096


@pytest.mark.parametrize("alphabet", [
    b"printable ascii only\n",
    b"quotes \" backslashes \\ tabs \t DEL \x7f NUL \x00\n",
    "utf-8: h\u00e9llo \u20ac\n".encode(),
    bytes(range(256)),
], ids=["plain", "escapes", "utf-8", "all bytes"])
def test_json_file_entries_decode_back_to_the_output(alphabet):
    """Both ways of encoding (plain ASCII as it is, the rest escaped) give entries
    that read back as exactly the bytes written, one entry per line."""
    import random

    generator = random.Random(9)
    for _ in range(500):
        data = bytes(generator.choice(alphabet) for _ in range(generator.randint(0, 60)))
        encoded = logs.encode_entries(data, "stdout", "2026-11-28T00:00:00Z")
        entries = [json.loads(line) for line in encoded.decode("ascii").splitlines()]
        assert "".join(entry["log"] for entry in entries).encode("utf-8", "surrogateescape") == data
        assert all(entry["log"].count("\n") <= 1 and
                   (entry["log"].endswith("\n") or entry is entries[-1]) for entry in entries)
        assert {entry["stream"] for entry in entries} <= {"stdout"}
