"""With the package imported, trust_remote_code=True loads the installed classes: a tampered folder runs nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import tiny_model

pytestmark = pytest.mark.compat  # part of the compatibility lane (see tests/test_compat.py)

TAMPERED = 'raise RuntimeError("tampered remote code was executed")\n'

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import hf_scratchgpt  # the installed package
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    generator = pipeline("text-generation", model=folder, trust_remote_code=True)
    generated = generator("Once", max_new_tokens=3, do_sample=False)[0]["generated_text"]
    print(json.dumps({
        "modules": [type(x).__module__ for x in (config, tokenizer, model, generator.model, generator.tokenizer)],
        "generated": generated,
    }))
    """
)


def test_tampered_folder_code_is_not_run_when_the_package_is_installed(tmp_path, tokenizer):
    folder = tmp_path / "model"
    model = tiny_model("gpt2", vocab_size=len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("configuration_scratchgpt.py", "modeling_scratchgpt.py", "tokenization_scratchgpt.py"):
        assert (folder / name).is_file(), name
        (folder / name).write_text(TAMPERED)

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(module.startswith("hf_scratchgpt.") for module in result["modules"]), result["modules"]
    assert result["generated"].startswith("Once")
