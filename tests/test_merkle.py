"""Tests for ledger.trust.merkle: RFC 9162 known answers, exhaustive small trees, tampering.

The known answers come from /work/shared/merkle/vectors.json (transparency-dev/merkle, Apache-2.0).
Everything else is checked against a deliberately naive reference written straight from the
recursive definitions in RFC 9162 §2.1, which works from the leaves and shares no code with the
module under test.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import pytest

from ledger.trust import merkle
from tests.conftest import SHARED, missing

VECTORS_PATH = SHARED / "merkle" / "vectors.json"
VECTORS: dict[str, Any] | None = json.loads(VECTORS_PATH.read_text()) if VECTORS_PATH.is_file() else None
SKIP_REASON = f"Merkle test vectors not found at {VECTORS_PATH} (the shared folder is not checked out)"

Node = tuple[int, int]


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    if VECTORS is None:
        missing(SKIP_REASON)
    return VECTORS


def probe_params(key: str) -> list[Any]:
    """Parameters for the probe tests, or one clearly skipped parameter when vectors are absent."""
    if VECTORS is None:
        return [pytest.param(None, id="no-vectors")]  # the test then asks for the vectors
    return [pytest.param(p, id=p["file"].split("/", 1)[1]) for p in VECTORS[key]]


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def hs(hex_strings: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hex_strings]


def accepts(verify: Callable[..., None], *args: Any) -> bool:
    try:
        verify(*args)
    except merkle.ProofError as error:
        assert str(error), "a ProofError must explain itself"
        return False
    return True


def replaced(proof: Sequence[bytes], k: int, element: bytes) -> list[bytes]:
    return [*proof[:k], element, *proof[k + 1 :]]


def flips(value: bytes) -> list[bytes]:
    """Every single-bit variant of value."""
    out = []
    for i in range(len(value) * 8):
        changed = bytearray(value)
        changed[i // 8] ^= 1 << (i % 8)
        out.append(bytes(changed))
    return out


# --- naive reference, straight from RFC 9162 §2.1 ------------------------------------------------

DATA = [f"entry {i}".encode() for i in range(64)]
LEAVES = [merkle.leaf_hash(d) for d in DATA]


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(lo: int, hi: int) -> bytes:
    """MTH(LEAVES[lo:hi])."""
    if hi - lo == 0:
        return merkle.EMPTY_ROOT
    if hi - lo == 1:
        return LEAVES[lo]
    k = split(hi - lo)
    return merkle.node_hash(ref_mth(lo, lo + k), ref_mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, LEAVES[lo:hi]), m relative to lo."""
    if hi - lo == 1:
        return []
    k = split(hi - lo)
    if m < k:
        return [*ref_path(m, lo, lo + k), ref_mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, LEAVES[lo:hi], b), m relative to lo."""
    if m == hi - lo:
        return [] if b else [ref_mth(lo, hi)]
    k = split(hi - lo)
    if m <= k:
        return [*ref_subproof(m, lo, lo + k, b), ref_mth(lo + k, hi)]
    return [*ref_subproof(m - k, lo + k, hi, False), ref_mth(lo, lo + k)]


def ref_verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Walk the PATH recursion top down, taking proof elements from the end; then hash back up."""
    if not 0 <= index < size or len(leaf) != merkle.HASH_SIZE:
        return False
    rest, steps = list(proof), []
    lo, hi = 0, size
    while hi - lo > 1:
        if not rest:
            return False
        mid = lo + split(hi - lo)
        sibling_on_left = index >= mid
        steps.append((sibling_on_left, rest.pop()))
        lo, hi = (mid, hi) if sibling_on_left else (lo, mid)
    if rest:
        return False
    r = leaf
    for sibling_on_left, sibling in reversed(steps):
        r = merkle.node_hash(sibling, r) if sibling_on_left else merkle.node_hash(r, sibling)
    return r == root


def ref_verify_consistency(m: int, n: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """Walk the SUBPROOF recursion top down, taking elements from the end; then hash back up."""
    if m <= 0 or m > n:
        return False
    if m == n:
        return not proof and root1 == root2
    rest, steps = list(proof), []
    lo, hi, went_right = 0, n, False
    while m != hi:
        if not rest:
            return False
        mid = lo + split(hi - lo)
        sibling_on_left = m > mid
        steps.append((sibling_on_left, rest.pop()))
        lo, hi = (mid, hi) if sibling_on_left else (lo, mid)
        went_right |= sibling_on_left
    if went_right:
        if len(rest) != 1:
            return False
        base = rest.pop()
    else:
        if rest:
            return False
        base = root1  # [lo, hi) is then the whole old tree, which the verifier already knows
    fr = sr = base
    for sibling_on_left, sibling in reversed(steps):
        if sibling_on_left:  # that sibling lies inside the old tree as well
            fr, sr = merkle.node_hash(sibling, fr), merkle.node_hash(sibling, sr)
        else:
            sr = merkle.node_hash(sr, sibling)
    return fr == root1 and sr == root2


# --- helpers over the module's storage model -----------------------------------------------------


class RecordingReader:
    """Reads from a MemoryTree, recording each read and failing on any node the given size lacks."""

    def __init__(self, tree: merkle.MemoryTree, size: int) -> None:
        self.tree, self.size, self.reads = tree, size, []

    def __call__(self, level: int, index: int) -> bytes:
        assert level >= 0 and index >= 0 and (index + 1) << level <= self.size, (
            f"read of node ({level}, {index}), which a tree of {self.size} leaves does not store"
        )
        self.reads.append((level, index))
        return self.tree.read(level, index)


def perfect_nodes(size: int) -> set[Node]:
    return {(lv, i) for lv in range(size.bit_length()) for i in range(size >> lv)}


def compact_positions(size: int) -> list[Node]:
    out, pos = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


@pytest.fixture(scope="module")
def tree64() -> merkle.MemoryTree:
    return merkle.MemoryTree(DATA)


# --- known answers -------------------------------------------------------------------------------


def test_constants() -> None:
    assert merkle.HASH_SIZE == 32
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert issubclass(merkle.ProofError, ValueError)


def test_hasher(vectors: dict[str, Any]) -> None:
    checks = vectors["hasher"]
    assert len(checks) == 4
    for check in checks:
        if check["kind"] == "empty_tree":
            got = merkle.EMPTY_ROOT
        elif check["kind"] == "leaf":
            got = merkle.leaf_hash(h(check["data"]))
        else:
            got = merkle.node_hash(h(check["left"]), h(check["right"]))
        assert got == h(check["hash"]), check["note"]


def test_leaf_hashes(vectors: dict[str, Any]) -> None:
    leaves = hs(vectors["leaves"])
    assert [merkle.leaf_hash(d) for d in leaves] == hs(vectors["leaf_hashes"])


def test_node_hashes_are_exactly_the_stored_nodes(vectors: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(hs(vectors["leaves"]))
    want = {
        (int(level), index, value)
        for level, values in vectors["node_hashes"].items()
        for index, value in enumerate(hs(values))
    }
    assert len(want) == 15
    assert set(tree.nodes()) == want
    for level, index, value in want:
        assert tree.read(level, index) == value


def test_roots(vectors: dict[str, Any]) -> None:
    leaves = hs(vectors["leaves"])
    full = merkle.MemoryTree(leaves)
    assert sorted(vectors["roots"], key=int) == [str(n) for n in range(9)]
    for n, root in vectors["roots"].items():
        size = int(n)
        assert full.root(size) == h(root)
        assert merkle.root_hash(size, full.read) == h(root)
        assert merkle.MemoryTree(leaves[:size]).root() == h(root)


def test_compact_ranges(vectors: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(hs(vectors["leaves"]))
    assert len(vectors["compact_ranges"]) == 9
    for n, want in vectors["compact_ranges"].items():
        assert merkle.compact_range(int(n), tree.read) == hs(want)


def test_inclusion_vectors(vectors: dict[str, Any]) -> None:
    leaves = hs(vectors["leaves"])
    assert len(vectors["inclusion"]) == 6
    for case in vectors["inclusion"]:
        index, size, data = case["leaf_index"], case["tree_size"], h(case["leaf_data"])
        if data != leaves[index]:  # the single-entry tree whose leaf is ASCII "data"
            assert size == 1
            tree = merkle.MemoryTree([data])
        else:
            tree = merkle.MemoryTree(leaves[:size])
        leaf, root, path = h(case["leaf_hash"]), h(case["root"]), hs(case["path"])
        assert merkle.leaf_hash(data) == leaf
        assert tree.root() == root
        assert tree.inclusion_proof(index) == path, case["source"]
        merkle.verify_inclusion(leaf, index, size, path, root)


def test_consistency_vectors(vectors: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(hs(vectors["leaves"]))
    assert len(vectors["consistency"]) == 5
    for case in vectors["consistency"]:
        m, n, path = case["size1"], case["size2"], hs(case["path"])
        root1, root2 = h(case["root1"]), h(case["root2"])
        assert (tree.root(m), tree.root(n)) == (root1, root2)
        assert tree.consistency_proof(m, n) == path, case["source"]
        merkle.verify_consistency(m, n, root1, root2, path)


@pytest.fixture(scope="module")
def large_tree(vectors: dict[str, Any]) -> merkle.MemoryTree:
    size = max(t["tree_size"] for t in vectors["large_trees"]["trees"])
    tree = merkle.MemoryTree()
    rng = random.Random(9162)
    while tree.size < size:
        count = min(rng.randint(1, 3000), size - tree.size)
        tree.append([bytes([i & 0xFF, (i >> 8) & 0xFF]) for i in range(tree.size, tree.size + count)])
    return tree


def test_large_tree_roots(vectors: dict[str, Any], large_tree: merkle.MemoryTree) -> None:
    trees = vectors["large_trees"]["trees"]
    assert [t["tree_size"] for t in trees] == [10, 15, 16, 100, 255, 256, 1000, 4095, 4096, 10000, 65535]
    visited = 0
    for t in trees:
        size = t["tree_size"]
        assert large_tree.root(size) == h(t["root"]), size
        for node in t.get("visited_nodes", []):
            lo, hi = node["leaves"]
            assert (lo, hi) == (
                node["index"] << node["level"],
                min((node["index"] + 1) << node["level"], size),
            )
            assert merkle.subtree_hash(lo, hi, RecordingReader(large_tree, size)) == h(node["hash"])
            visited += 1
    assert visited == 15


def test_large_tree_proofs_read_few_nodes(large_tree: merkle.MemoryTree) -> None:
    rng = random.Random(6962)
    for size in (1000, 4095, 10000, 65535):
        root = large_tree.root(size)
        limit = 2 * size.bit_length()
        for _ in range(40):
            index = rng.randrange(size)
            reader = RecordingReader(large_tree, size)
            proof = merkle.inclusion_proof(index, size, reader)
            assert len(reader.reads) <= limit
            merkle.verify_inclusion(large_tree.leaf_hash(index), index, size, proof, root)
            old = rng.randint(1, size)
            reader = RecordingReader(large_tree, size)
            proof = merkle.consistency_proof(old, size, reader)
            assert len(reader.reads) <= limit
            merkle.verify_consistency(old, size, large_tree.root(old), root, proof)


@pytest.mark.parametrize("probe", probe_params("inclusion_probes"))
def test_inclusion_probe(probe: dict[str, Any] | None) -> None:
    if probe is None:
        missing(SKIP_REASON)
    args = (
        h(probe["leaf_hash"]),
        int(probe["leaf_index"]),
        int(probe["tree_size"]),
        hs(probe["path"]),
        h(probe["root"]),
    )
    assert accepts(merkle.verify_inclusion, *args) is not probe["want_error"]
    assert ref_verify_inclusion(*args) is not probe["want_error"]


@pytest.mark.parametrize("probe", probe_params("consistency_probes"))
def test_consistency_probe(probe: dict[str, Any] | None) -> None:
    if probe is None:
        missing(SKIP_REASON)
    args = (
        int(probe["size1"]),
        int(probe["size2"]),
        h(probe["root1"]),
        h(probe["root2"]),
        hs(probe["path"]),
    )
    assert accepts(merkle.verify_consistency, *args) is not probe["want_error"]
    assert ref_verify_consistency(*args) is not probe["want_error"]


def test_probe_counts(vectors: dict[str, Any]) -> None:
    for key in ("inclusion_probes", "consistency_probes"):
        probes = vectors[key]
        assert len(probes) == 98
        assert sum(not p["want_error"] for p in probes) == 6
    assert max(p["leaf_index"] for p in vectors["inclusion_probes"]) == 2**64 - 1


# --- exhaustive small trees ----------------------------------------------------------------------


def test_all_proofs_up_to_64(tree64: merkle.MemoryTree) -> None:
    for n in range(1, 65):
        root = tree64.root(n)
        assert root == ref_mth(0, n)
        assert merkle.compact_range(n, RecordingReader(tree64, n)) == [
            ref_mth(i << lv, (i + 1) << lv) for lv, i in compact_positions(n)
        ]
        for index in range(n):
            proof = merkle.inclusion_proof(index, n, RecordingReader(tree64, n))
            assert proof == ref_path(index, 0, n)
            merkle.verify_inclusion(LEAVES[index], index, n, proof, root)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, RecordingReader(tree64, n))
            assert proof == ref_subproof(m, 0, n, True)
            merkle.verify_consistency(m, n, tree64.root(m), root, proof)


def test_incremental_appends_match_one_go() -> None:
    rng = random.Random(1)
    for n in range(1, 65):
        whole = merkle.MemoryTree(LEAVES[:n], hashed=True)
        assert set((lv, i) for lv, i, _ in whole.nodes()) == perfect_nodes(n)
        grown = merkle.MemoryTree()
        while grown.size < n:
            old = grown.size
            batch = LEAVES[old : min(n, old + rng.randint(0, 9))]
            reader = RecordingReader(grown, old)
            created = merkle.new_nodes(old, batch, reader)
            assert set(reader.reads) <= set(compact_positions(old)), "read outside the old compact range"
            new = old + len(batch)
            assert {(lv, i) for lv, i, _ in created} == perfect_nodes(new) - perfect_nodes(old)
            seen: set[Node] = set(perfect_nodes(old))
            for level, index, _ in created:  # a database can insert in this order
                if level:
                    assert {(level - 1, 2 * index), (level - 1, 2 * index + 1)} <= seen
                seen.add((level, index))
            assert grown.append(batch, hashed=True) == created
            assert grown.size == new
            assert grown.root() == ref_mth(0, new)
        assert list(grown.nodes()) == list(whole.nodes())
        assert [grown.root(s) for s in range(n + 1)] == [whole.root(s) for s in range(n + 1)]


def test_append_reads_only_what_it_merges(tree64: merkle.MemoryTree) -> None:
    reader = RecordingReader(tree64, 6)
    assert merkle.new_nodes(6, [LEAVES[6]], reader) == [(0, 6, LEAVES[6])]
    assert reader.reads == []
    reader = RecordingReader(tree64, 7)
    created = merkle.new_nodes(7, [LEAVES[7]], reader)
    assert reader.reads == [(0, 6), (1, 2), (2, 0)]
    assert created == [(lv, 7 >> lv, tree64.read(lv, 7 >> lv)) for lv in range(4)]


# --- tampering -----------------------------------------------------------------------------------

TAMPER_SIZES = (1, 2, 7, 8, 33, 64)


def sample_indices(n: int) -> list[int]:
    return sorted({i for i in (0, 1, n // 2, n - 2, n - 1) if 0 <= i < n})


@pytest.mark.parametrize("n", TAMPER_SIZES)
def test_inclusion_tampering(tree64: merkle.MemoryTree, n: int) -> None:
    def ok(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
        return accepts(merkle.verify_inclusion, leaf, index, size, proof, root)

    root = tree64.root(n)
    for index in sample_indices(n):
        leaf, proof = LEAVES[index], tree64.inclusion_proof(index, n)
        assert ok(leaf, index, n, proof, root)
        for k, element in enumerate(proof):
            assert not any(ok(leaf, index, n, replaced(proof, k, bad), root) for bad in flips(element))
        assert not any(ok(leaf, index, n, proof, bad) for bad in flips(root))
        assert not any(ok(bad, index, n, proof, root) for bad in flips(leaf))
        assert not ok(leaf[:-1], index, n, proof, root)
        assert not ok(leaf, index, n, [*proof, root], root)
        assert not ok(leaf, index, n, [root, *proof], root)
        if proof:
            assert not ok(leaf, index, n, proof[:-1], root)
        for d in (-1, 1):
            assert not ok(leaf, index + d, n, proof, root)
            # RFC 9162 inclusion proofs do not pin the tree size by themselves (see
            # test_shifted_sizes), so size +-1 must be rejected exactly when the reference says so.
            assert ok(leaf, index, n + d, proof, root) is ref_verify_inclusion(
                leaf, index, n + d, proof, root
            )


@pytest.mark.parametrize("n", TAMPER_SIZES)
def test_consistency_tampering(tree64: merkle.MemoryTree, n: int) -> None:
    def ok(m: int, n: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
        return accepts(merkle.verify_consistency, m, n, root1, root2, proof)

    root2 = tree64.root(n)
    for m in sorted({1, 2, n // 2, n - 1, n} & set(range(1, n + 1))):
        root1, proof = tree64.root(m), tree64.consistency_proof(m, n)
        assert ok(m, n, root1, root2, proof)
        for k, element in enumerate(proof):
            assert not any(ok(m, n, root1, root2, replaced(proof, k, bad)) for bad in flips(element))
        assert not any(ok(m, n, bad, root2, proof) for bad in flips(root1))
        assert not any(ok(m, n, root1, bad, proof) for bad in flips(root2))
        assert not ok(m, n, root1, root2, [*proof, root2])
        assert not ok(m, n, root1, root2, [root1, *proof])
        if proof:
            assert not ok(m, n, root1, root2, proof[:-1])
            assert not ok(m, n, root2, root1, proof)
        for d in (-1, 1):
            for claim in ((m + d, n), (m, n + d)):
                got = ok(*claim, root1, root2, proof)
                assert got is ref_verify_consistency(*claim, root1, root2, proof), claim


def test_shifted_sizes(tree64: merkle.MemoryTree) -> None:
    """Off-by-one claims against every proof in trees of up to 32 leaves.

    A verifier sees only hashes and cannot tell a leaf hash from a node hash, so a proof fits every
    tree size for which the RFC recursion gives the same shape: the proof for leaf 0 of 3 leaves,
    [h1, h2], also fits leaf 0 of a 4-leaf tree whose right half hashes to h2. Most size +-1 claims
    are of this kind, so a (size, root) pair must come from one signed checkpoint. Index shifts, by
    contrast, always change the shape, and every claim must get the reference's verdict.
    """
    shifted = 0
    for n in range(1, 33):
        root = tree64.root(n)
        for index in range(n):
            proof = tree64.inclusion_proof(index, n)
            for d in (-1, 1):
                assert not accepts(merkle.verify_inclusion, LEAVES[index], index + d, n, proof, root)
                got = accepts(merkle.verify_inclusion, LEAVES[index], index, n + d, proof, root)
                assert got is ref_verify_inclusion(LEAVES[index], index, n + d, proof, root)
                shifted += got
        for m in range(1, n + 1):
            root1, proof = tree64.root(m), tree64.consistency_proof(m, n)
            for claim in ((m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1)):
                got = accepts(merkle.verify_consistency, *claim, root1, root, proof)
                assert got is ref_verify_consistency(*claim, root1, root, proof)
    assert accepts(merkle.verify_inclusion, LEAVES[0], 0, 4, [LEAVES[1], LEAVES[2]], ref_mth(0, 3))
    assert shifted


# --- argument checking ---------------------------------------------------------------------------


def test_bad_arguments(tree64: merkle.MemoryTree) -> None:
    read = tree64.read
    for start, end in ((0, 0), (3, 2), (-1, 1), (1, 3), (2, 5), (4, 9)):
        with pytest.raises(ValueError):
            merkle.subtree_hash(start, end, read)
    assert merkle.subtree_hash(4, 7, read) == ref_mth(4, 7)
    assert merkle.root_hash(0, read) == merkle.EMPTY_ROOT
    for index, size in ((0, 0), (5, 5), (-1, 5)):
        with pytest.raises(ValueError):
            merkle.inclusion_proof(index, size, read)
    for old, new in ((0, 0), (0, 5), (6, 5)):
        with pytest.raises(ValueError):
            merkle.consistency_proof(old, new, read)
    assert merkle.consistency_proof(5, 5, read) == []
    with pytest.raises(ValueError):
        merkle.new_nodes(0, [b"short"], read)
    with pytest.raises(ValueError):
        merkle.compact_range(-1, read)
    with pytest.raises(KeyError):
        tree64.read(0, 64)
    with pytest.raises(KeyError):
        tree64.read(0, -1)
    with pytest.raises(ValueError):
        tree64.root(65)


def test_verifiers_reject_nonsense() -> None:
    leaf, root = LEAVES[0], LEAVES[0]
    assert accepts(merkle.verify_inclusion, leaf, 0, 1, [], root)
    assert not accepts(merkle.verify_inclusion, leaf, -1, 1, [], root)
    assert not accepts(merkle.verify_inclusion, leaf, 2**64 - 1, 1, [], root)
    assert not accepts(merkle.verify_inclusion, b"", 0, 1, [], b"")
    assert not accepts(merkle.verify_consistency, 0, 0, root, root, [])
    assert not accepts(merkle.verify_consistency, -1, 1, root, root, [])
    assert accepts(merkle.verify_consistency, 3, 3, b"any", b"any", [])
    with pytest.raises(merkle.ProofError, match="too long"):
        merkle.verify_inclusion(leaf, 0, 1, [root], root)
    with pytest.raises(merkle.ProofError, match="outside"):
        merkle.verify_inclusion(leaf, 1, 1, [], root)
    with pytest.raises(merkle.ProofError, match="element 0 is 31 bytes"):
        merkle.verify_inclusion(leaf, 0, 2, [LEAVES[1][:-1]], ref_mth(0, 2))
    with pytest.raises(merkle.ProofError, match="element 1 is 0 bytes"):
        merkle.verify_consistency(1, 3, leaf, ref_mth(0, 3), [LEAVES[1], b""])


def test_memory_tree_append_forms() -> None:
    one_by_one = merkle.MemoryTree()
    for d in DATA[:5]:
        one_by_one.append(d)  # a bytes object is a single entry
    assert one_by_one.size == 5
    assert one_by_one.root() == merkle.MemoryTree(DATA[:5]).root() == ref_mth(0, 5)
    assert merkle.MemoryTree(LEAVES[:5], hashed=True).root() == ref_mth(0, 5)
    assert merkle.MemoryTree().root() == merkle.EMPTY_ROOT
    assert one_by_one.consistency_proof(3) == ref_subproof(3, 0, 5, True)
    assert one_by_one.inclusion_proof(4) == ref_path(4, 0, 5)
