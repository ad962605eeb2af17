"""C2SP tlog-policy files: the specification's example, quorums worked out by hand, and one
clear error per bad line."""

from __future__ import annotations

import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.trust import cosignature
from ledger.trust.policy import BadPolicy, parse_policy, quorum_satisfied


def vkey(n: int, name: str | None = None) -> str:
    key = Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)
    return cosignature.vkey(name or f"witness.example/{n}", key.public_key())


LOG_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"

# The example of C2SP tlog-policy.md, with real keys in place of its elided ones.
SPEC_EXAMPLE = f"""log {LOG_VKEY}

witness X1 {vkey(1)}
witness X2 {vkey(2)}
witness X3 {vkey(3)}
group X-witnesses 2 X1 X2 X3

witness Y1 {vkey(4)}
witness Y2 {vkey(5)}
witness Y3 {vkey(6)}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_the_specifications_example() -> None:
    policy = parse_policy(SPEC_EXAMPLE)
    assert list(policy.witnesses) == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert policy.groups["X-witnesses"].threshold == 2 and policy.groups["X-and-Y"].threshold == 2
    assert policy.quorum == "X-and-Y"
    # Worked out by hand: at least two X's and at least one Y.
    assert quorum_satisfied(policy, ["X1", "X3", "Y2"])
    assert quorum_satisfied(policy, ["X1", "X2", "X3", "Y1", "Y2", "Y3"])
    assert not quorum_satisfied(policy, ["X1", "Y1", "Y2", "Y3"])
    assert not quorum_satisfied(policy, ["X1", "X2", "X3"])
    assert not quorum_satisfied(policy, [])
    # Names the policy does not define, and repeats, count for nothing.
    assert not quorum_satisfied(policy, ["X1", "X1", "Y1", "stranger"])


def test_every_subset_against_a_naive_reading() -> None:
    policy = parse_policy(SPEC_EXAMPLE)
    names = list(policy.witnesses)
    for size in range(len(names) + 1):
        for subset in itertools.combinations(names, size):
            xs = sum(n.startswith("X") for n in subset)
            ys = sum(n.startswith("Y") for n in subset)
            assert quorum_satisfied(policy, subset) == (xs >= 2 and ys >= 1), subset


def test_quorum_none_and_a_single_witness() -> None:
    assert quorum_satisfied(parse_policy("quorum none\n"), [])
    single = parse_policy(f"witness golos {vkey(1)} http://127.0.0.1:8081\nquorum golos\n")
    assert single.witnesses["golos"].url == "http://127.0.0.1:8081"
    assert quorum_satisfied(single, ["golos"]) and not quorum_satisfied(single, [])


def test_whitespace_comments_and_a_missing_final_newline() -> None:
    text = (f"  # observers\n\t\nwitness\ta\t {vkey(1)}   \n   # indented comment\n"
            f"witness b {vkey(2)}\ngroup g\tany a b\nquorum g")
    policy = parse_policy(text)
    assert quorum_satisfied(policy, ["b"]) and not quorum_satisfied(policy, [])


W1, W2 = vkey(1), vkey(2)


@pytest.mark.parametrize("text, problem", [
    ("witnes a KEY\nquorum none\n", "line 1: unknown keyword 'witnes'"),
    (f"witness a {W1}\nwitness a {W2}\nquorum a\n", "line 2: 'a' is already defined"),
    (f"witness none {W1}\nquorum none\n", "line 1: 'none' is predefined"),
    (f"witness a {W1}\nwitness b {W1.replace('witness.example/1', 'other')}\nquorum a\n",
     "line 2: witness 'b': vkey"),
    (f"witness a {W1}\nwitness b {vkey(1, 'other.example/1')}\nquorum a\n",
     "line 2: witness 'b' has the same public key as witness 'a'"),
    (f"witness a {LOG_VKEY}\nquorum a\n", "line 1: witness 'a': vkey 'example.com/foo+530d903a"),
    (f"witness a {W1} ftp://host\nquorum a\n", "line 1: witness 'a': URL 'ftp://host' is not"),
    (f"witness a {W1} http://h # the first\nquorum a\n", "line 1: witness takes a name, a vkey"),
    ("witness a\nquorum none\n", "line 1: witness takes a name, a vkey and an optional URL, got 1"),
    (f"witness a {W1}\ngroup g 0 a\nquorum g\n", "line 2: group 'g': '0' is not all, any or a number"),
    (f"witness a {W1}\ngroup g 2 a\nquorum g\n", "line 2: group 'g': '2' is not all, any"),
    (f"witness a {W1}\ngroup g 01 a\nquorum g\n", "line 2: group 'g': '01' is not"),
    (f"witness a {W1}\ngroup g one a\nquorum g\n", "line 2: group 'g': 'one' is not"),
    (f"witness a {W1}\ngroup g any\nquorum g\n", "line 2: group takes a name, all|any|K and at least"),
    (f"group g any a\nwitness a {W1}\nquorum g\n", "line 1: group 'g': member 'a' is not defined"),
    (f"witness a {W1}\ngroup g any a none\nquorum g\n", "line 2: group 'g': 'none' cannot be a member"),
    (f"witness a {W1}\ngroup g all a a\nquorum g\n", "line 2: group 'g': 'a' is listed twice"),
    (f"witness a {W1}\nwitness b {W2}\ngroup g any a b\ngroup h any a\nquorum g\n",
     "line 4: group 'h': 'a' is listed in group 'g' too"),
    ("quorum g\n", "line 1: quorum 'g' is not defined on an earlier line"),
    (f"quorum a\nwitness a {W1}\n", "line 1: quorum 'a' is not defined"),
    (f"witness a {W1}\nquorum a\nquorum none\n", "line 3: a second quorum line"),
    ("quorum none extra\n", "line 1: quorum takes one name (or none), got 2 fields"),
    ("log\nquorum none\n", "line 1: log takes a vkey and an optional URL, got 0"),
    (f"witness a {W1}\n", "no quorum line"),
    ("", "no quorum line"),
    ("quorum none\r\n", "line 1: control character 0x0d"),
    ("# a\x00b\nquorum none\n", "line 1: control character 0x00"),
])
def test_a_bad_line_is_named_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(BadPolicy) as raised:
        parse_policy(text, "trust.policy")
    assert str(raised.value).startswith("trust.policy: ")
    assert problem in str(raised.value), str(raised.value)
    assert len(raised.value.problems) == 1, raised.value.problems


def test_every_bad_line_is_reported_once_without_a_cascade() -> None:
    text = f"witness a NOTAKEY\nwitness b {W2}\nfrobnicate\ngroup g 3 a b\nquorum g\n"
    with pytest.raises(BadPolicy) as raised:
        parse_policy(text)
    assert [n for n, _ in raised.value.problems] == [1, 3, 4]
    assert "\n" not in str(raised.value)


def test_log_lines_are_allowed_and_ignored() -> None:
    policy = parse_policy(f"log {LOG_VKEY} https://log.example\nlog anything-at-all\nquorum none\n")
    assert policy.quorum == "none" and not policy.witnesses


def test_the_policy_in_the_runbook_parses() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "witnesses.md").read_text()
    block = text.split("```text\n# the two observer missions", 1)[1].split("```", 1)[0]
    policy = parse_policy("# the two observer missions" + block)
    assert list(policy.witnesses) == ["golos", "party-b"] and policy.quorum == "both"
    assert quorum_satisfied(policy, ["golos", "party-b"]) and not quorum_satisfied(policy, ["golos"])
