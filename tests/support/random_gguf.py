"""Writes a tiny Llama-architecture GGUF with seeded random weights.

The interop tier (tests/suite/interop.rs) serves it with a real llama-server:
random weights cannot judge anything, so the tier proves the wire (requests,
grammars, tool turns, errors), never the wisdom.

Usage: random_gguf.py OUT.gguf [SEED]

The vocabulary is SentencePiece-style with byte fallback (3 control tokens,
256 byte tokens, and one "piece" per printable ASCII character with and
without the word-start mark), so any text tokenizes. add_space_prefix is
false: with it, llama.cpp cannot build the sampler for grammar-constrained
requests ("Failed to initialize samplers").
"""

import sys

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD = 64
N_FF = 128
N_LAYER = 2
N_HEAD = 4
N_CTX = 32768

# ChatML with tools in the system turn and calls in <tool_call> tags (the
# Hermes / Qwen2.5 shape), which llama-server's template analysis knows: a
# tool call starts at `<tool_call>`, anything else is content.
CHAT_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}# Tools
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'system' and loop.first %}
{%- elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{% if m.content %}{{ m.content }}{% endif %}
{%- if m.tool_calls %}{% for tc in m.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}{% endif %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def vocabulary():
    tokens, scores, types = [b"<unk>", b"<s>", b"</s>"], [0.0, 0.0, 0.0], [
        TokenType.UNKNOWN,
        TokenType.CONTROL,
        TokenType.CONTROL,
    ]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        scores.append(0.0)
        types.append(TokenType.BYTE)
    for c in range(0x20, 0x7F):
        for piece in (chr(c), "\u2581" + chr(c)):
            if piece == " ":
                piece = "\u2581"
            if piece.encode() in tokens:
                continue
            tokens.append(piece.encode())
            scores.append(-float(len(tokens)))
            types.append(TokenType.NORMAL)
    return tokens, scores, types


def main():
    out = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)

    w = GGUFWriter(out, "llama")
    w.add_name("backstop-random-interop")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def t(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def ones(name):
        w.add_tensor(name, np.ones(N_EMBD, dtype=np.float32))

    t("token_embd.weight", n_vocab, N_EMBD)
    ones("output_norm.weight")
    # Output rows: zero for the byte tokens, large for the printable pieces, so
    # sampling (under a grammar or not) emits printable ASCII and never an
    # invalid UTF-8 sequence, which llama-server would fail to parse (500).
    out = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    for i, kind in enumerate(types):
        if kind == TokenType.BYTE:
            out[i] = 0.0
    w.add_tensor("output.weight", out)
    for i in range(N_LAYER):
        ones(f"blk.{i}.attn_norm.weight")
        for m in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{m}.weight", N_EMBD, N_EMBD)
        ones(f"blk.{i}.ffn_norm.weight")
        t(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
