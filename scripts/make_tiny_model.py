#!/usr/bin/env python3
"""Write a tiny random-weight Llama chat model that vLLM can serve, with no model hub and no torch.

2 layers, hidden 128, 4 heads / 2 KV heads (head_dim 32: vLLM's CPU attention needs >= 32), a
byte-level BPE tokenizer trained on tiny_model_corpus.txt (beside this script, and nothing else), a
chat template, safetensors weights: about 2.3 MB. Replies are gibberish; shape and protocol are real.
The output is the same bytes on every run and every machine with the same script, corpus and
library versions; OUTPUT_DIR/make_tiny_model.sha256 records a digest of those inputs.

Usage: make_tiny_model.py OUTPUT_DIR   (does nothing when OUTPUT_DIR/config.json exists and was made
from the same inputs; a model made from other inputs, or left half-written, is written over)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import safetensors
import tokenizers
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, VOCAB, MAX_POS = 128, 2, 4, 2, 256, 1024, 2048
HEAD_DIM = HIDDEN // HEADS
SPECIAL = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


HERE = Path(__file__).resolve().parent
CORPUS = HERE / "tiny_model_corpus.txt"
STAMP = "make_tiny_model.sha256"  # written last: a model without it, or with another digest, is remade
FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "model.safetensors", STAMP]


def inputs_digest() -> str:
    """Digest of everything the output depends on: this script, the corpus and the libraries' versions."""
    h = hashlib.sha256()
    for part in (Path(__file__).resolve().read_bytes(), CORPUS.read_bytes(),
                 f"numpy {np.__version__} tokenizers {tokenizers.__version__} "
                 f"safetensors {safetensors.__version__}".encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def corpus() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def weights(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"model.embed_tokens.weight": w(vocab, HIDDEN), "model.norm.weight": np.ones(HIDDEN, np.float32),
         "lm_head.weight": w(vocab, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t |= {
            p + "self_attn.q_proj.weight": w(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": w(HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": w(INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": w(INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, INTERMEDIATE),
            p + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
            p + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
        }
    return t


def main(out: Path) -> None:
    digest = inputs_digest()
    stamp = out / STAMP
    if (out / "config.json").is_file():
        if stamp.is_file() and stamp.read_text().strip() == digest:
            print(f"tiny model: {out} exists")
            return
        print(f"tiny model: {out} was made from other inputs: writing it again")
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    tok = tokenizer()
    tok.save(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    ids = {s: tok.token_to_id(s) for s in SPECIAL}
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "hidden_act": "silu",
        "max_position_embeddings": MAX_POS, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float32", "vocab_size": vocab,
        "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["</s>"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "</s>", "model_max_length": MAX_POS,
        "chat_template": CHAT_TEMPLATE, "add_bos_token": False, "add_eos_token": False,
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}, indent=2))
    save_file(weights(vocab), str(out / "model.safetensors"), metadata={"format": "pt"})
    stamp.write_text(digest + "\n")
    for name in FILES:
        (out / name).chmod(0o644)
    print(f"tiny model: wrote {out} (vocab {vocab})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
