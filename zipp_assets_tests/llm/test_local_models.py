"""`make models`' conversion on a tiny GGUF written here with the `gguf` package (no download):
a random two-layer Llama with a byte-level BPE vocabulary laid out as SmolLM2's is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zipp_assets.llm import local_models
from zipp_assets.llm.local_models import CHECKSUMS, convert_gguf, ensure_converted, read_gguf_tokenizer, verify_folder

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what byte-level BPE vocabularies are made of)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_gguf(path: Path, *, tokenizer_model: str = "gpt2", hidden: int = 32, layers: int = 2) -> Path:
    import gguf

    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    tokens = SPECIALS + byte_alphabet() + [m.replace(" ", "") for m in merges]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(hidden // 2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(1)  # as in SmolLM2's GGUF metadata a chat model's eos can be the wrong turn marker
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (2 * hidden, hidden)),
                            ("ffn_up", (2 * hidden, hidden)), ("ffn_down", (hidden, 2 * hidden))):
            tensor(f"blk.{i}.{name}.weight", *shape)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    tensor("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    gguf_path = write_tiny_gguf(folder / "tiny.gguf")
    record = convert_gguf(gguf_path, folder / "tiny-llama", source="test")
    return gguf_path, folder / "tiny-llama", record


def test_the_tokenizer_comes_from_the_ggufs_own_merges_and_keeps_spaces_and_newlines(converted):
    from transformers import AutoTokenizer

    _, folder, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    text = "hello world\nhello  world 42"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # spaces and newlines survive (transformers' own conversion drops them)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[:2] == ["hello", "Ġworld"]  # the merges were applied
    assert "4" in pieces and "2" in pieces  # digits one by one
    # The turn marker ends generation, not the GGUF's eos (here <|im_start|>, as SmolLM2's metadata can be).
    specials = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    assert specials == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hello world"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer(chat, add_special_tokens=False)["input_ids"])[0] == "<|im_start|>"
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["bos_token_id"] == 1


def test_the_converted_folder_loads_and_generates_with_transformers(converted):
    import torch
    from transformers import AutoModelForCausalLM

    _, folder, _ = converted
    assert (folder / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    out = model.generate(torch.tensor([[1, 100, 200]]), max_new_tokens=4, do_sample=False,
                         attention_mask=torch.ones(1, 3))
    assert out.shape[1] > 3


def test_checksums_are_recorded_and_a_changed_or_missing_file_is_refused(converted, tmp_path):
    gguf_path, folder, record = converted
    assert record["gguf_sha256"] == local_models.sha256_of(gguf_path)
    assert set(record["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert verify_folder(folder)["files"] == record["files"]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(folder, copy)
    tokenizer_json = copy / "tokenizer.json"
    tokenizer_json.write_text(tokenizer_json.read_text().replace("Ġworld", "Ġwurld"))
    with pytest.raises(ValueError, match="tokenizer.json"):
        verify_folder(copy)
    (copy / CHECKSUMS).unlink()
    with pytest.raises(ValueError, match="did not finish"):
        verify_folder(copy)


def test_an_already_converted_folder_is_verified_not_converted_again_and_a_broken_one_is_redone(converted, tmp_path):
    import shutil

    gguf_path, folder, _ = converted
    copy = tmp_path / "again"
    shutil.copytree(folder, copy)
    _, converted_now = ensure_converted(gguf_path, copy, "test")
    assert not converted_now
    (copy / "config.json").write_text("{}")  # a damaged folder
    record, converted_now = ensure_converted(gguf_path, copy, "test")
    assert converted_now and verify_folder(copy)["files"] == record["files"]
    assert not (tmp_path / "again.converting").exists()


def test_a_gguf_without_a_byte_level_bpe_tokenizer_is_refused(tmp_path):
    path = write_tiny_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    with pytest.raises(ValueError, match="only byte-level BPE"):
        read_gguf_tokenizer(path)
    with pytest.raises(ValueError, match="only byte-level BPE"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_names_the_missing_package_instead_of_importing_anything(tmp_path):
    with pytest.raises(FileNotFoundError, match="make models"):
        local_models.main(["--hub", str(tmp_path / "hub"), "--out", str(tmp_path / "models")])


def _zip(path, entries: dict[str, bytes], link: str | None = None):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (0o120777 << 16)  # a symbolic link entry
            archive.writestr(info, "/etc/passwd")
    return path


def test_a_zipped_model_is_extracted_with_checksums_and_not_again(tmp_path):
    archive = _zip(tmp_path / "model.zip", {"config.json": b"{}", "1_Pooling/config.json": b'{"mean": true}'})
    out = tmp_path / "models" / "enc"
    record, extracted = local_models.ensure_extracted(archive, out, "pkg==1:model.zip")
    assert extracted and (out / "1_Pooling" / "config.json").read_bytes() == b'{"mean": true}'
    assert record["archive_sha256"] == local_models.sha256_of(archive)
    assert verify_folder(out)["files"].keys() == {"config.json", "1_Pooling/config.json"}
    assert local_models.ensure_extracted(archive, out, "pkg==1:model.zip")[1] is False  # verified, kept
    (out / "config.json").write_bytes(b'{"changed": 1}')  # a damaged folder is extracted again
    assert local_models.ensure_extracted(archive, out, "pkg==1:model.zip")[1] is True
    assert (out / "config.json").read_bytes() == b"{}"


@pytest.mark.parametrize("entries, link", [({"../escape.txt": b"x"}, None), ({"/abs.txt": b"x"}, None),
                                           ({"ok.txt": b"x"}, "weights.bin")])
def test_a_zip_entry_that_would_land_outside_the_model_folder_is_refused(tmp_path, entries, link):
    archive = _zip(tmp_path / "model.zip", entries, link)
    with pytest.raises(ValueError, match="outside the model folder"):
        local_models.extract_model_zip(archive, tmp_path / "models" / "enc")
    assert not (tmp_path / "models" / "enc").exists() and not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "models" / "enc.extracting").exists()
