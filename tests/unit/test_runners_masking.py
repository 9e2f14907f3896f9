"""Every runner masks the run's secret values (in every form the operator lists) in what viewers read: the
result envelope (termination message, result log line) and, for what the script prints, the container log."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kubemill.local.scripts import run_script
from kubemill.secrets import mask_forms

SECRET = "hunter2-masked-value"
B64 = base64.b64encode(SECRET.encode()).decode()
SCRIPTS = {
    "python3": f"""
import base64, sys
def main():
    print("out {SECRET}")
    print("err", base64.b64encode(b"{SECRET}").decode(), file=sys.stderr)
    return {{"v": "{SECRET}", "{SECRET}": 1}}
""",
    "bash": f"""
echo "out {SECRET}"
echo "err {B64}" >&2
echo '{{"v": "{SECRET}"}}'
""",
    "deno": f"""
export async function main() {{
  console.log("out", "{SECRET}");
  console.error("err", btoa("{SECRET}"));
  return {{ v: "{SECRET}", "{SECRET}": 1 }};
}}
""",
    "go": f"""
package inner

import (
	"encoding/base64"
	"fmt"
	"os"
)

func main() (interface{{}}, error) {{
	fmt.Println("out {SECRET}")
	fmt.Fprintln(os.Stderr, "err", base64.StdEncoding.EncodeToString([]byte("{SECRET}")))
	return map[string]string{{"v": "{SECRET}"}}, nil
}}
""",
}
SCRIPTS["bun"] = SCRIPTS["deno"]


@pytest.mark.parametrize("language", sorted(SCRIPTS))
def test_the_runner_masks_what_it_writes_and_what_the_script_prints(language: str, tmp_path: Path) -> None:
    forms = tmp_path / "mask-forms.json"
    forms.write_text(json.dumps(mask_forms([SECRET])))
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script(
            language, SCRIPTS[language], {}, log=log, timeout=300, env={"KUBEMILL_MASKS_FILE": str(forms)}
        )
    printed = (tmp_path / "log").read_text(errors="replace")
    assert envelope.ok, envelope.error
    assert envelope.result["v"] == "***", envelope.result
    assert "out ***" in printed, printed
    assert SECRET not in printed and B64 not in printed, printed


@pytest.mark.parametrize("language", ["python3", "bash"])
def test_without_secrets_nothing_is_masked(language: str, tmp_path: Path) -> None:
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script(language, SCRIPTS[language], {}, log=log, timeout=300)
    assert envelope.result["v"] == SECRET
    assert f"out {SECRET}" in (tmp_path / "log").read_text()
