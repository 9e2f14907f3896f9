"""The Bun runner's specifics: the plugin maps every spelling of windmill-client to the client shared with
the Deno runner (one module, so state set through one spelling is the envelope's), without moving lines."""

from __future__ import annotations

from pathlib import Path

from kubemill.local.scripts import run_script

SCRIPT = """import * as wmill from "windmill-client";
import { getWorkspace } from 'npm:windmill-client@1';

export async function main(fail: boolean) {
  const again = await import("npm:windmill-client");
  await again.setState({ seen: getWorkspace() });
  if (fail) throw new RangeError("line seven");
  return (await wmill.getState()).seen;
}
"""


def test_every_spelling_of_the_client_is_one_module(tmp_path: Path) -> None:
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script("bun", SCRIPT, {"fail": False}, state_file=tmp_path / "state.json", log=log)
    assert envelope.ok, envelope.error
    assert envelope.result == "local"
    assert envelope.state == {"seen": "local"}


def test_errors_keep_the_script_line_numbers(tmp_path: Path) -> None:
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script("bun", SCRIPT, {"fail": True}, state_file=tmp_path / "state.json", log=log)
    assert envelope.error is not None
    assert (envelope.error.name, envelope.error.message) == ("RangeError", "line seven")
    assert "main.ts:7" in (envelope.error.stack or "")
    assert envelope.state == {"seen": "local"}
