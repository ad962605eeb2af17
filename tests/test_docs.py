"""The documentation shows real data: every example event line is in the bundled sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ledger.domain.events import decoder

ROOT = Path(__file__).resolve().parents[1]


def test_every_event_example_in_the_docs_is_a_line_of_the_sample_and_decodes() -> None:
    sample = {
        json.dumps(json.loads(line), sort_keys=True)
        for line in (ROOT / "ledger" / "samples" / "council-2030.jsonl").read_text().splitlines()
    }
    text = (ROOT / "docs" / "events.md").read_text()
    examples = [e for e in re.findall(r"^(\{\"type\".*\})$", text, flags=re.MULTILINE)
                if '"signature"' not in e and "ReporterRegistered" not in e]  # v2 examples
    assert len(examples) == 7
    assert {json.loads(e)["type"] for e in examples} == {
        "ElectionDefined", "StationRegistered", "ProtocolIssued", "ProtocolWithheld",
        "ResultAnnounced", "AppealFiled", "AppealDecided"}
    for example in examples:
        decoder.decode(example)
        assert json.dumps(json.loads(example), sort_keys=True) in sample
