"""The menu as a user of the original drives it, and as a newcomer reads it.

Real peer processes on loopback (discovery on 127.255.255.255 with a port per
test, or off), driven through a pseudo-terminal or a piped standard input.
A script written for the original must reach its own `0`: `run_script` keeps
standard input open, so a script whose lines were read by the wrong prompts
hangs and fails instead of ending on end of input.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support import (
    LOOPBACK_BROADCAST,
    ROOT,
    SCRIPT,
    Peer,
    child_env,
    free_tcp_port,
    free_udp_port,
    in_namespace,
    loopback_only_namespace,
    own_fingerprint,
    peer_rows,
    run_cli,
    run_script,
    shown_as,
    strip_ansi,
)

pytestmark = pytest.mark.slow

BEACON_INTERVAL = "0.5"


@pytest.fixture
def discovery_port() -> int:
    return free_udp_port()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def start(peers: list[Peer], name: str, tmp: Path, dport: int | None, **kw: object) -> Peer:
    peer = Peer(name, tmp, dport, **kw)  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def alone(name: str, tmp: Path) -> list[str]:
    """Flags of a scripted peer reached by address only."""
    port = str(free_tcp_port())
    return ["--name", name, "--port", port, "--data-dir", str(tmp / name), "--no-discovery"]


def on_loopback(dport: int) -> list[str]:
    """Flags that keep a scripted peer's discovery on loopback."""
    return [
        "--broadcast",
        LOOPBACK_BROADCAST,
        "--discovery-port",
        str(dport),
        "--beacon-interval",
        BEACON_INTERVAL,
    ]


def after_choices(output: str) -> list[str]:
    """What the peer printed after each `Enter choice:` (the first item: before any)."""
    return strip_ansi(output).split("Enter choice: ")


# -- option 3 ------------------------------------------------------------------


def test_option_3_shows_history_at_once_and_the_script_goes_on(
    tmp_path: Path, peers: list[Peer]
) -> None:
    bob = start(peers, "Bob", tmp_path, None)
    script = f"1\n127.0.0.1\n{bob.port}\nhello Bob\n3\n0\n"  # as written for the original
    result = run_script(alone("Alice", tmp_path), script)
    assert result.returncode == 0, result.stderr
    shown = after_choices(result.stdout)
    assert len(shown) == 4  # the banner, then 1, 3 and 0
    assert f"Message sent to {bob.addr}" in shown[1]
    history = shown[2]
    assert "oldest first" in history
    assert f"You -> Bob ({bob.addr}) [delivered]: hello Bob" in history
    assert "Show history" not in result.stdout
    assert shown[3].strip() == "Goodbye."


def test_option_3_takes_one_peer_on_the_same_line(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    carol = start(peers, "Carol", tmp_path, None)
    for other in (bob, carol):
        alice.send_to("127.0.0.1", f"to {other.name}", port=other.port)
        alice.expect_text(f"Message sent to {other.addr}")
        alice.expect_menu()

    everyone = alice.history()
    assert "to Bob" in everyone and "to Carol" in everyone
    by_name = alice.history("Bob")
    assert "to Bob" in by_name and "to Carol" not in by_name
    carol_row = next(r for r in peer_rows(alice.peers_table()) if r.name == "Carol")
    by_number = alice.history(str(carol_row.number))
    assert "to Carol" in by_number and "to Bob" not in by_number

    alice.choose("3 Nobody_here")
    alice.expect_text("Unknown peer: Nobody_here")
    alice.expect_menu()


# -- options 1 and 4 take the same answers ------------------------------------


def test_option_4_takes_a_name_or_number_and_refuses_what_is_no_host(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, discovery_port)
    bob = start(peers, "Bob", tmp_path, discovery_port)
    alice.expect_text(f"Discovered peer Bob at {bob.addr}")

    alice.connect("Bob", None)  # no port question for a name
    alice.expect_text(f"Connected to {bob.addr} (Bob)")
    alice.expect_menu()
    assert [row.name for row in peer_rows(alice.peers_table())] == ["Bob"]
    alice.connect("1", None)
    alice.expect_text(f"Connected to {bob.addr} (Bob)")
    alice.expect_menu()
    alice.connect("2", None)  # not 0.0.0.2
    alice.expect_text("No peer number 2: see option 2.")
    alice.expect_menu()

    # An address asks for its port, as in the original, and then is refused.
    for address, why in [
        ("0.0.0.2", "0.0.0.0/8"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
    ]:
        alice.connect(address, bob.port)
        alice.expect_text(f"Not dialling {address}: ")
        alice.expect_text(why)
        alice.expect_menu()
    alice.connect("1.2", bob.port)  # the C resolver would read it as 1.0.0.2
    alice.expect_text("Not an address: 1.2")
    alice.expect_menu()
    alice.send_to("0.0.0.3", "never sent", port=bob.port)  # option 1 refuses the same
    alice.expect_text("Not dialling 0.0.0.3: ")
    alice.expect_text("Message not sent.")
    alice.expect_menu()

    screen = strip_ansi(alice.screen())
    assert "Failed to connect" not in screen
    assert "Unknown address" not in screen
    assert "never sent" not in alice.history()


# -- scripts: the README's example, and wrong answers ----------------------------


def readme_example() -> tuple[str, list[str]]:
    """The README's scripted example: the lines it pipes in and the flags it gives."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^printf '([^']*)' \| \.venv/bin/python peer_chat\.py (.+)$", readme, re.M)
    assert found, "the README shows a scripted example"
    return found.group(1).replace("\\n", "\n"), shlex.split(found.group(2))


def test_readme_scripted_example_works_on_a_first_run(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    script, flags = readme_example()
    assert script == "1\nBob\nhello\n"
    assert "--port" in flags
    flags[flags.index("--port") + 1] = str(free_tcp_port())
    flags += ["--data-dir", str(tmp_path / "scripted"), *on_loopback(discovery_port)]
    # Bob's keys exist already (so that he starts in a fraction of a second), but
    # the two have never met: the scripted peer starts first and has to wait for him.
    made = run_cli(alone("Bob", tmp_path), stdin="0\n")
    assert made.returncode == 0, made.stderr
    pipeline = f"printf {shlex.quote(script)} | {shlex.join([sys.executable, str(SCRIPT), *flags])}"
    # Should Bob not be found, "Bob" goes to the resolver: in a namespace of the
    # test's own that lookup cannot leave the machine.
    with loopback_only_namespace() as namespace:
        launch = in_namespace(namespace)
        command = ["/bin/sh", "-c", pipeline]
        sender = subprocess.Popen(
            launch(command) if launch else command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env=child_env(),
        )
        try:
            assert sender.stdout is not None
            before = ""
            while "Bob is not known yet: waiting up to 5 s" not in before:
                line = sender.stdout.readline()
                assert line, f"the scripted peer did not wait for Bob: {before[-600:]}"
                before += line
            # Bob starts only now, during the wait that the scripted peer announced.
            bob = start(
                peers, "Bob", tmp_path, discovery_port, data_dir=tmp_path / "Bob", launch=launch
            )
            rest, err = sender.communicate(timeout=30)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        out = before + rest
        assert sender.returncode == 0, err
        assert f"Message sent to {bob.addr}" in out
        assert "Unknown peer" not in out and "Invalid choice" not in out
        bob.expect_text(": hello")
        bob.close()


def test_a_wrong_recipient_does_not_shift_the_script(
    tmp_path: Path, discovery_port: int, peers: list[Peer]
) -> None:
    script = "1\nNo_such_peer\nhello\n1\n7\nhi\n0\n"
    flags = ["--name", "Alice", "--port", str(free_tcp_port())]
    flags += ["--data-dir", str(tmp_path / "Alice"), *on_loopback(discovery_port)]
    result = run_script(flags, script)
    assert result.returncode == 0, result.stderr
    shown = after_choices(result.stdout)
    assert len(shown) == 4  # the banner, then 1, 1 and 0: "hello" and "hi" were messages
    assert "No_such_peer is not known yet: waiting up to" in shown[1]  # said, and bounded
    assert "Unknown peer or address: No_such_peer" in shown[1]
    assert "No peer number 7: see option 2." in shown[2]
    assert "Invalid choice" not in result.stdout


# -- one profile, one process -----------------------------------------------------


def test_a_profile_runs_once_and_a_killed_run_does_not_block_it(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    flags = ["--name", "Alice", "--port", str(free_tcp_port())]
    flags += ["--data-dir", str(alice.data_dir), "--no-discovery"]
    second = run_cli(flags, stdin="0\n")
    assert second.returncode == 1
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, second.stderr
    assert str(alice.data_dir) in lines[0]
    assert f"process {alice.child.pid}" in lines[0]
    assert "Server listening" not in second.stdout

    alice.kill()  # SIGKILL: no chance to clean anything up
    again = run_cli(flags, stdin="0\n")
    assert again.returncode == 0, again.stderr
    assert "Server listening" in again.stdout


# -- what is said: key changes, queued messages, wording ------------------------------


def test_a_changed_key_is_one_short_warning_said_once(tmp_path: Path, peers: list[Peer]) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    bob_id, bob_full = own_fingerprint(bob)
    bob.send_to("127.0.0.1", "first contact", port=alice.port)
    alice.expect_text(f"Received from {bob.addr} ({shown_as(bob)}): first contact")
    assert bob.quit() == 0

    impostor = start(peers, "Bob", tmp_path, None, port=bob.port, data_dir=tmp_path / "Bob-new")
    new_id, new_full = own_fingerprint(impostor)
    for text in ("one", "two", "three"):
        alice.send_to("127.0.0.1", text, port=bob.port)
        alice.expect_text(f"Message to Bob ({bob.addr}) not sent: its key has changed")
        alice.expect_menu()

    screen = strip_ansi(alice.screen())
    # News that comes while a prompt is drawn goes above it: the prompt is moved back
    # over and erased first (escape codes, stripped here), which leaves the erased
    # "Enter choice:" in front of the warning on one line of this text.
    warnings = [line[line.index("WARNING") :] for line in screen.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    warning = warnings[0].strip()
    assert warning.startswith("WARNING: the key of peer Bob at")
    for part in (bob.addr, bob_id, new_id, "option 6"):
        assert part in warning
    assert bob_full not in screen and new_full not in screen
    assert len(warning) <= 200


def test_queued_messages_are_explained_and_counted_on_quit(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    alice.connect("127.0.0.1", bob.port)
    alice.expect_text(f"Connected to {bob.addr}")
    assert bob.quit() == 0
    alice.expect_text("is offline (left)")
    for text in ("first", "second"):
        alice.send_to("Bob", text)
        alice.expect_text(": message queued for delivery. It goes out when both of you are online.")
        alice.expect_menu()
    alice.choose("0")
    alice.child.expect(pexpect.EOF, timeout=10)
    tail = strip_ansi(str(alice.child.before))
    assert (
        "Still queued: 2 messages to Bob. They will be sent when you next run "
        "peer_chat with this profile and the recipient is online."
    ) in " ".join(tail.split())


def test_search_results_and_an_empty_verify_answer_say_what_they_mean(
    tmp_path: Path, peers: list[Peer]
) -> None:
    alice = start(peers, "Alice", tmp_path, None)
    bob = start(peers, "Bob", tmp_path, None)
    alice.send_to("127.0.0.1", "hello there", port=bob.port)
    alice.expect_text(f"Message sent to {bob.addr}")
    alice.send_to("Bob", "hello again")
    alice.expect_text(f"Message sent to {bob.addr}")
    for needle, header in [
        ("hello", '2 messages containing "hello":'),
        ("AGAIN", '1 message containing "AGAIN":'),
        ("nothing like it", 'No messages containing "nothing like it".'),
    ]:
        alice.expect_menu()
        alice.choose("7")
        alice.answer("Search for:", needle)
        alice.expect_text(header)
    alice.expect_menu()

    alice.choose("6")
    alice.answer("Peer to verify (number, name, or c<number> to re-trust):", "")
    alice.expect_text("No peer chosen: type a peer's name or its number from option 2")
    alice.expect_menu()
    screen = strip_ansi(alice.screen())
    assert "Unknown peer." not in screen
    assert "oldest first" not in screen
