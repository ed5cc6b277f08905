"""The model's forward semantics: audio prefix, positions, text-only logits and loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fusionaudio.gama import GamaConfig, GamaForCausalLM


def _fbank(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1024, 128, generator=torch.Generator().manual_seed(seed))


def test_presets_have_reference_sizes():
    cfg = GamaConfig.from_name("gama-llama2-7b")
    assert cfg.num_audio_tokens == 96
    assert (cfg.audio.tap_j, cfg.audio.tap_k) == (8, 4)
    assert cfg.audio.grid == (8, 64)
    assert cfg.qformer.layer_norm_eps == 1e-12 and cfg.audio.layer_norm_eps == 1e-5
    assert GamaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model preset"):
        GamaConfig.from_name("nope")
    with pytest.raises(ValueError, match="fusion"):
        GamaConfig.from_name("tiny", aggregator={"fusion": "sum"})


def test_qformer_cross_attention_on_even_layers():
    with torch.device("meta"):
        model = GamaForCausalLM(GamaConfig.from_name("gama-llama2-7b"))
    with_cross = [i for i, layer in enumerate(model.qformer.encoder.layer) if hasattr(layer, "crossattention")]
    assert with_cross == [0, 2, 4, 6, 8, 10]


def test_encode_audio_shape_and_batch_independence(tiny_model):
    model, _ = tiny_model
    fb = _fbank(3)
    with torch.no_grad():
        batched = model.encode_audio(fb)
        single = torch.cat([model.encode_audio(fb[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 96, model.config.hidden_size)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_pool_averages_over_mel_rows():
    model = GamaForCausalLM(GamaConfig.from_name("tiny"))
    rows, cols = model.config.audio.grid
    feats = torch.arange(rows * cols, dtype=torch.float32).reshape(1, rows * cols, 1).repeat(1, 1, 4)
    pooled = model.audio_encoder.pool(feats)
    # patch (r, c) holds r*cols + c; the mean over r is mean(r)*cols + c.
    expected = (torch.arange(cols) + (rows - 1) / 2 * cols) / 50.0
    torch.testing.assert_close(pooled[0, :, 0], expected)


def test_audio_prefix_positions_and_text_only_logits(tiny_model):
    """Text logits with audio = Llama run on [audio tokens, text] with positions 0..95+T."""
    model, tok = tiny_model
    ids = tok(["### Instruction:\nWhat do you hear?\n\n### Response:\n"], return_tensors="pt").input_ids
    fb = _fbank(1, seed=3)
    with torch.no_grad():
        ours = model(ids, fb).logits
        prefix = model.encode_audio(fb)
        embeds = torch.cat([prefix, model.llm.get_input_embeddings()(ids)], dim=1)
        manual = model.llm(inputs_embeds=embeds).logits[:, prefix.shape[1]:]
    assert ours.shape == (1, ids.shape[1], model.config.llm["vocab_size"])
    torch.testing.assert_close(ours, manual.float(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        no_audio = model(ids).logits
    assert (no_audio - ours).abs().max() > 1e-3  # the audio must matter


def test_no_audio_equals_stock_llama_with_lora(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model, tok = tiny_model
    stock = LlamaForCausalLM(model.config.llama_config())
    stock = get_peft_model(stock, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                             bias="none", task_type="CAUSAL_LM"))
    ours_sd = model.llm.state_dict()
    missing = stock.load_state_dict({"base_model.model." + k: v for k, v in ours_sd.items()}, strict=True)
    assert not missing.missing_keys
    stock.eval()
    ids = tok(["### Instruction:\nHello there\n\n### Response:\n"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, stock(input_ids=ids).logits.float(), atol=0, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single(tiny_model, side):
    model, tok = tiny_model
    texts = ["### Instruction:\nDescribe.\n\n### Response:\nA tone.",
             "### Instruction:\nHow many sounds are there in this clip?\n\n### Response:\nThree."]
    fb = _fbank(2, seed=5)
    tok = copy.copy(tok)
    tok.padding_side = side
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        batched = model(enc.input_ids, fb, enc.attention_mask).logits
        for i, text in enumerate(texts):
            single = model(tok([text], return_tensors="pt").input_ids, fb[i:i + 1]).logits[0]
            real = enc.attention_mask[i].bool()
            torch.testing.assert_close(batched[i][real], single, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_shared_audio_prefix_equals_repeated_clips(tiny_model, checkpointing):
    """``audio_index`` (several questions per clip, as training batches them): the same loss,
    logits and gradients as giving every row its own copy of its clip."""
    model, tok = tiny_model
    model = copy.deepcopy(model)
    if checkpointing:  # the Llama's cache is off: the repeated path is taken
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    texts = ["### Instruction:\nDescribe.\n\n### Response:\nA loud tone.",
             "### Instruction:\nHow many sounds are there?\n\n### Response:\nThree.",
             "### Instruction:\nIs it loud?\n\n### Response:\nYes.",
             "### Instruction:\nDescribe the audio in detail.\n\n### Response:\nA chirp, then clicks."]
    tok = copy.copy(tok)
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    fb, index = _fbank(2, seed=11), torch.tensor([1, 0, 1, 1])
    for m in model.modules():  # training mode (checkpointing acts only then), without randomness
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    model.train()
    results = []
    for kwargs in ({"audio_input": fb, "audio_index": index}, {"audio_input": fb[index]}):
        model.zero_grad()
        out = model(enc.input_ids, attention_mask=enc.attention_mask, labels=labels, **kwargs)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), out.logits.detach(), grads))
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    real = enc.attention_mask.bool()
    torch.testing.assert_close(logits_a[real], logits_b[real], atol=5e-5, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys() and any("query_tokens" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-3, msg=name)


def test_loss_is_text_only_next_token_loss(tiny_model):
    model, tok = tiny_model
    enc = tok(["### Instruction:\nDescribe.\n\n### Response:\nA loud tone."], return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[:, :5] = -100
    fb = _fbank(1, seed=7)
    with torch.no_grad():
        out = model(enc.input_ids, fb, enc.attention_mask, labels=labels)
    expected = F.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape[1] == enc.input_ids.shape[1]


def test_aggregator_reference_mode_ignores_taps_and_switch_uses_them():
    torch.manual_seed(0)
    ref = GamaForCausalLM(GamaConfig.from_name("tiny")).eval()
    fused = GamaForCausalLM(GamaConfig.from_name("tiny", aggregator={"fusion": "cross_attention"})).eval()
    fused.load_state_dict(ref.state_dict())
    fb = _fbank(1, seed=9)

    def run(m):
        with torch.no_grad():
            return m.encode_audio(fb)

    before_ref, before_fused = run(ref), run(fused)
    with torch.no_grad():
        for m in (ref, fused):
            m.audio_encoder.norm_j.weight.mul_(3.0)
            m.audio_encoder.norm_k.bias.add_(1.0)
    torch.testing.assert_close(run(ref), before_ref, atol=0, rtol=0)
    assert (run(fused) - before_fused).abs().max() > 1e-4
