"""scripts/make_tiny_model.py: the same bytes on every run, from its own corpus only, in a shape vLLM serves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCRIPT, CORPUS = SCRIPTS / "make_tiny_model.py", SCRIPTS / "tiny_model_corpus.txt"
SPECIAL = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]


def make(script: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    # a process of its own each time: Python's and the tokenizers library's hash seeds differ per process
    r = subprocess.run([sys.executable, str(script), str(out)], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """One model made from the checkout, one from a copy of just the script and its corpus elsewhere."""
    alone = tmp_path_factory.mktemp("alone")
    shutil.copy(SCRIPT, alone)
    shutil.copy(CORPUS, alone)
    first, second = tmp_path_factory.mktemp("first") / "m", tmp_path_factory.mktemp("second") / "m"
    make(SCRIPT, first, cwd=alone)
    make(alone / SCRIPT.name, second, cwd=alone)
    return first, second


def test_the_output_is_the_same_bytes_every_time_and_needs_only_the_script_and_its_corpus(models):
    first, second = models
    a, b = files(first), files(second)
    assert set(a) == {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "model.safetensors", "make_tiny_model.sha256"}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs"


def test_the_corpus_is_enough_for_the_whole_vocabulary(models):
    tok = Tokenizer.from_file(str(models[0] / "tokenizer.json"))
    assert tok.get_vocab_size() == 1024


def test_config_has_the_shape_vllm_needs(models):
    config = json.loads((models[0] / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    # vLLM's CPU attention backend needs head_dim >= 32
    assert config["head_dim"] == 32 == config["hidden_size"] // config["num_attention_heads"]
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    weights = load_file(str(models[0] / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])
    assert weights["lm_head.weight"].shape == (config["vocab_size"], config["hidden_size"])
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (
        config["num_key_value_heads"] * config["head_dim"], config["hidden_size"])
    assert {k.split(".")[2] for k in weights if k.startswith("model.layers.")} == {
        str(i) for i in range(config["num_hidden_layers"])}


def test_tokenizer_has_the_special_tokens_and_a_chat_template(models):
    d = models[0]
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    config = json.loads((d / "config.json").read_text())
    tok_config = json.loads((d / "tokenizer_config.json").read_text())
    added = {t["content"]: t for t in json.loads((d / "tokenizer.json").read_text())["added_tokens"]}
    for s in SPECIAL:
        assert s in added and added[s]["special"], s
    assert config["vocab_size"] == tok.get_vocab_size()
    assert config["bos_token_id"] == tok.token_to_id(tok_config["bos_token"])
    assert config["eos_token_id"] == tok.token_to_id(tok_config["eos_token"])
    assert json.loads((d / "generation_config.json").read_text())["eos_token_id"] == config["eos_token_id"]

    prompt = jinja2.Template(tok_config["chat_template"]).render(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Which company developed you as an AI agent?"}],
        add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    ids = tok.encode(prompt).ids
    for s in ("<|system|>", "<|user|>", "</s>", "<|assistant|>"):
        assert tok.token_to_id(s) in ids, f"{s} is not one token in the rendered prompt"
    assert tok.decode(ids, skip_special_tokens=False).replace(" ", "") == prompt.replace(" ", "")


def test_an_up_to_date_model_is_left_alone(tmp_path):
    out = tmp_path / "m"
    make(SCRIPT, out, cwd=tmp_path)
    before = files(out)
    r = make(SCRIPT, out, cwd=tmp_path)
    assert "exists" in r.stdout and files(out) == before


@pytest.mark.parametrize("stamp", [None, "0" * 64])
def test_a_model_made_from_other_inputs_is_replaced(tmp_path, models, stamp):
    """A model of an older script (no stamp) or of another corpus (another digest) is written over."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "tokenizer.json").write_text("{}")
    if stamp:
        (out / "make_tiny_model.sha256").write_text(stamp + "\n")
    r = make(SCRIPT, out, cwd=tmp_path)
    assert "other inputs" in r.stdout
    assert files(out) == files(models[0])


def test_usage_without_an_output_dir():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode != 0 and "Usage: make_tiny_model.py OUTPUT_DIR" in r.stderr
