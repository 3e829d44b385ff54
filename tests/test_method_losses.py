"""Each method's loss on a tiny fixed batch equals the same quantity written out independently here.

The tiny BERT has dropout 0, so train mode is deterministic; expected values are computed from the
backbone's outputs and the heads' weights with plain formulas (cosines, log-sum-exp, BatchNorm,
GELU/LayerNorm), not through the methods' code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import SENTENCES, cls_states, cosine, cross_entropy, gelu, mlp_head, save_tiny_bert, tiny_config

from rankcse.build import build_method
from rankcse.losses import mixcse_logits
from rankcse.methods.esimcse import repeat_tokens, repeat_words
from rankcse.methods.promptbert import add_period

TAU = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


def _method(model_dir, corpus, method, **method_args):
    cfg = tiny_config(model_dir, corpus, method=method, method_args=method_args).resolved()
    torch.manual_seed(0)
    return build_method(cfg)


# -- ESimCSE ---------------------------------------------------------------------------------------


def test_esimcse_loss_with_queue_matches_formula(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "esimcse", queue_size=6)
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(3))
    n = len(SENTENCES)
    ids = batch["tokens"]["input_ids"]
    assert (batch["tokens"]["attention_mask"][n:].sum(1) > batch["tokens"]["attention_mask"][:n].sum(1)).any()  # something was repeated
    queue = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    method.queue = queue.clone()
    out = method(batch)
    with torch.no_grad():
        view1 = {k: v[:n] for k, v in batch["tokens"].items()}
        view2 = {k: v[n:] for k, v in batch["tokens"].items()}
        z1, z2 = mlp_head(method, cls_states(method, view1)), mlp_head(method, cls_states(method, view2))
        logits = torch.cat([cosine(z1, z2), cosine(z1, queue)], dim=1) / TAU
        expected = cross_entropy(logits, torch.arange(n))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.parts["cl"] is out.loss and ids.shape[0] == 2 * n
    # without a queue it is plain InfoNCE over the in-batch positives
    method.queue = queue[:0].clone()
    method.eval()
    assert method(batch).loss.item() == pytest.approx(cross_entropy(cosine(z1, z2) / TAU, torch.arange(n)).item(), rel=1e-5)


def test_esimcse_momentum_update_and_queue_push(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "esimcse", queue_size=12)
    n, m = len(SENTENCES), 0.995
    online = [p.detach().clone() for p in method.encoder.backbone.parameters()]
    for p_m, p in zip(method.momentum_encoder.parameters(), online):
        assert torch.equal(p_m, p)  # momentum_init=pretrained: starts from the loaded weights
    with torch.no_grad():  # move the online encoder away so the EMA is visible
        for p in method.encoder.backbone.parameters():
            p.add_(0.01)
    online = [p.detach().clone() for p in method.encoder.backbone.parameters()]
    before = [p.detach().clone() for p in method.momentum_encoder.parameters()]
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    method(batch)
    for p_m, old, p in zip(method.momentum_encoder.parameters(), before, online):
        torch.testing.assert_close(p_m, m * old + (1 - m) * p, rtol=1e-6, atol=1e-7)
    # the pushed keys: momentum encoder (eval mode, no dropout) on the ORIGINAL sentences, then the online head
    with torch.no_grad():
        view1 = {k: v[:n] for k, v in batch["tokens"].items()}
        keys = mlp_head(method, method.momentum_encoder(**view1).last_hidden_state[:, 0])
    torch.testing.assert_close(method.queue, keys)
    method(batch)
    assert method.queue.shape[0] == 10
    method(batch)
    assert method.queue.shape[0] == 12  # FIFO: the oldest entries drop out
    torch.testing.assert_close(method.queue[-n:], mlp_head(method, method.momentum_encoder(**view1).last_hidden_state[:, 0]).detach())
    method.on_epoch_start(1)
    assert method.queue.shape[0] == 0
    # eval-mode forwards have no side effects
    method.eval()
    snapshot = [p.detach().clone() for p in method.momentum_encoder.parameters()]
    method(batch)
    assert method.queue.shape[0] == 0 and all(torch.equal(a, b) for a, b in zip(snapshot, method.momentum_encoder.parameters()))


def test_esimcse_first_push_keeps_a_batch_larger_than_the_queue(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "esimcse", queue_size=3)
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    method(batch)
    assert method.queue.shape[0] == 5  # trainers.py: the first push is not truncated
    method(batch)
    assert method.queue.shape[0] == 3


def test_esimcse_random_momentum_init_reproduces_the_official_code(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "esimcse", momentum_init="random")
    weights = method.momentum_encoder.get_input_embeddings().weight
    assert not torch.equal(weights, method.encoder.backbone.get_input_embeddings().weight)
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)


def test_word_repetition_follows_the_official_sampling_rule() -> None:
    ids = list(range(100, 132))  # 32 tokens: [CLS] ... [SEP]
    counts = np.zeros(11, dtype=int)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        out = repeat_tokens(ids, 0.32, 10, rng)
        added = len(out) - len(ids)
        counts[added] += 1
        assert out[0] == ids[0] and out[-1] == ids[-1] and out[1] != ids[0] and out[-2] != ids[-1] or added == 0
        assert sorted(set(out)) == ids  # only duplicates, in order
        assert [t for i, t in enumerate(out) if i == 0 or out[i - 1] != t] == ids
    # n ~ U{0, ..., min(10, floor(0.32 * 32)) - 1} = U{0..9}: all values, never 10
    assert counts[10] == 0 and (counts[:10] > 200).all()
    short = list(range(7))  # floor(0.32 * 7) = 2: at most one duplicate
    assert {len(repeat_tokens(short, 0.32, 10, rng)) for _ in range(200)} == {7, 8}
    assert repeat_tokens([1, 2, 3], 0.32, 10, rng) == [1, 2, 3]  # floor(0.96) = 0: unchanged
    assert repeat_tokens(ids, 0.32, 10, np.random.default_rng(5)) == repeat_tokens(ids, 0.32, 10, np.random.default_rng(5))
    words = repeat_words("a b c d e f g h", 0.32, 10, np.random.default_rng(1)).split(" ")
    assert [w for i, w in enumerate(words) if i == 0 or words[i - 1] != w] == list("abcdefgh") and words[-1] == "h"


# -- MixCSE ----------------------------------------------------------------------------------------


def _mixcse_by_hand(u: torch.Tensor, v: torch.Tensor, lam: float, masked: float) -> torch.Tensor:
    """SPEC 9.3 row by row: [s(u_i, v_j)], [s(u_i, m_j), j≠i−1], [s(m'_i, v_j), j≠i+1]; m's detached."""
    n = u.shape[0]
    m = [(lam * v[j] + (1 - lam) * v[(j + 1) % n]).detach() for j in range(n)]
    mp = [(lam * u[j] + (1 - lam) * u[(j + 1) % n]).detach() for j in range(n)]

    def s(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm()) / TAU

    losses = []
    for i in range(n):
        row = [s(u[i], v[j]) for j in range(n)]
        row += [s(u[i], m[j]) if j != (i - 1) % n else torch.tensor(masked, dtype=u.dtype) for j in range(n)]
        row += [s(mp[i], v[j]) if j != (i + 1) % n else torch.tensor(masked, dtype=u.dtype) for j in range(n)]
        row = torch.stack(row)
        losses.append(torch.logsumexp(row, 0) - row[i])
    return torch.stack(losses).mean()


@pytest.mark.parametrize(("masked_logit", "fill"), [("zero", 0.0), ("exclude", float("-inf"))])
def test_mixcse_logits_match_the_row_by_row_definition_with_stop_gradient(masked_logit, fill) -> None:
    g = torch.Generator().manual_seed(0)
    u0, v0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    u1, v1 = u0.clone().requires_grad_(), v0.clone().requires_grad_()
    got = torch.nn.functional.cross_entropy(mixcse_logits(u1, v1, 0.2, TAU, masked_logit), torch.arange(5))
    got.backward()
    u2, v2 = u0.clone().requires_grad_(), v0.clone().requires_grad_()
    want = _mixcse_by_hand(u2, v2, 0.2, fill)
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(u1.grad, u2.grad)
    torch.testing.assert_close(v1.grad, v2.grad)


def test_mixcse_method_loss_matches_formula(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "mixcse")
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    out = method(batch)
    with torch.no_grad():
        z = mlp_head(method, cls_states(method, batch["tokens"])).double()
    assert out.loss.item() == pytest.approx(_mixcse_by_hand(z, z, 0.2, 0.0).item(), rel=1e-5)
    assert out.loss.item() > cross_entropy(cosine(z, z) / TAU, torch.arange(len(SENTENCES))).item()  # the mixes are harder negatives


# -- InfoCSE ---------------------------------------------------------------------------------------


def _batchnorm(x: torch.Tensor, bn: torch.nn.BatchNorm1d) -> torch.Tensor:
    y = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps)
    return y * bn.weight + bn.bias if bn.affine else y


def test_infocse_loss_matches_formula(nodrop_dir, tiny_corpus) -> None:
    from transformers import BertModel

    method = _method(nodrop_dir, tiny_corpus, "infocse", mlm_weight=0.5, skip_from=1)
    assert method.lm_head_source == "embeddings"  # the tiny checkpoint has no MLM head
    torch.testing.assert_close(method.lm_head.decoder.weight, method.encoder.backbone.get_input_embeddings().weight)
    with torch.no_grad():  # the main encoder moves away from the initial checkpoint; the frozen layers must not
        for p in method.encoder.backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
        method.lm_head.decoder.weight.mul_(50.0)  # a random tiny head predicts ~uniformly; sharpen it so the states matter
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    labels = batch["mlm_labels"]
    assert (labels != -100).sum() > 0
    out = method(batch)
    n = len(SENTENCES)
    tokens = batch["tokens"]
    with torch.no_grad():
        doubled = {k: torch.cat([v, v]) for k, v in tokens.items()}
        cls = cls_states(method, doubled)
        net = method.encoder.head.net
        h = torch.relu(_batchnorm(cls @ net[0].weight.T, net[1]))
        z = _batchnorm(h @ net[3].weight.T, net[4])
        cl = cross_entropy(cosine(z[:n], z[n:]) / TAU, torch.arange(n))
        initial = BertModel.from_pretrained(str(nodrop_dir), add_pooling_layer=False).eval()
        lower = initial(
            input_ids=batch["mlm_input_ids"],
            attention_mask=doubled["attention_mask"],
            token_type_ids=doubled["token_type_ids"],
            output_hidden_states=True,
        ).hidden_states[1]
        states = torch.cat([cls[:, None], lower[:, 1:]], dim=1)
        additive = (1.0 - doubled["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in method.c_head:
            result = layer(states, additive)
            states = result[0] if isinstance(result, tuple) else result
        picked = states[labels != -100]
        lm = method.lm_head
        t = torch.nn.functional.layer_norm(
            gelu(picked @ lm.dense.weight.T + lm.dense.bias), (32,), lm.layer_norm.weight, lm.layer_norm.bias, lm.layer_norm.eps
        )
        mlm = cross_entropy(t @ lm.decoder.weight.T + lm.decoder.bias, labels[labels != -100])
    assert out.parts["cl"].item() == pytest.approx(cl.item(), rel=1e-5)
    assert out.parts["mlm"].item() == pytest.approx(mlm.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(cl.item() + 0.5 * mlm.item(), rel=1e-5)
    # the MLM gradient reaches the main encoder, and only through its [CLS] state
    hidden = method.encoder.hidden_states({k: torch.cat([v, v]) for k, v in tokens.items()})
    hidden.retain_grad()
    method.mlm_loss(hidden[:, :1], batch["mlm_input_ids"], labels, {k: torch.cat([v, v]) for k, v in tokens.items()}).backward()
    assert hidden.grad[:, 0].abs().sum() > 0 and hidden.grad[:, 1:].abs().sum() == 0
    assert all(p.grad is None for p in method.frozen_encoder.parameters())


def test_infocse_masking_rule(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "infocse")
    tok = method.encoder.tokenizer
    batch = method.collate(SENTENCES * 40, np.random.default_rng(0))
    ids = torch.cat([batch["tokens"]["input_ids"]] * 2)
    inputs, labels = batch["mlm_input_ids"], batch["mlm_labels"]
    assert inputs.shape == labels.shape == ids.shape  # both views are masked, independently
    assert not torch.equal(labels[: len(ids) // 2], labels[len(ids) // 2 :])
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    selected = labels != -100
    assert not (selected & special).any() and torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    rate = selected.sum().item() / (~special).sum().item()
    assert rate == pytest.approx(0.4, abs=0.03)
    masked = (inputs == tok.mask_token_id) & selected
    kept = (inputs == ids) & selected
    assert masked.sum().item() / selected.sum().item() == pytest.approx(0.8, abs=0.04)
    assert kept.sum().item() / selected.sum().item() == pytest.approx(0.1, abs=0.03)
    again = method.collate(SENTENCES * 40, np.random.default_rng(0))
    assert torch.equal(again["mlm_input_ids"], inputs)


def test_infocse_loads_a_pretrained_mlm_head(tmp_path, tiny_corpus) -> None:
    from transformers import BertForMaskedLM

    folder = save_tiny_bert(tmp_path / "tiny_mlm", mlm_head=True)
    method = _method(folder, tiny_corpus, "infocse")
    assert method.lm_head_source == "pretrained" and method.skip_from == 1  # half of 2 layers
    ref = BertForMaskedLM.from_pretrained(str(folder)).cls.predictions
    torch.testing.assert_close(method.lm_head.dense.weight, ref.transform.dense.weight)
    torch.testing.assert_close(method.lm_head.layer_norm.bias, ref.transform.LayerNorm.bias)
    torch.testing.assert_close(method.lm_head.decoder.weight, ref.decoder.weight)
    # an independent copy: training the head must not move the word embeddings
    assert method.lm_head.decoder.weight.data_ptr() != method.encoder.backbone.get_input_embeddings().weight.data_ptr()


# -- PromptBERT ------------------------------------------------------------------------------------

T1 = 'This sentence of "{}" means [MASK] .'
T2 = 'This sentence : "{}" means [MASK] .'


def _prompt_states(method, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
    """[MASK] states of templated texts, tokenized as whole strings; and each sentence's word-piece count."""
    tok = method.encoder.tokenizer
    out, lengths = [], []
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        hidden = method.encoder.backbone(input_ids=ids).last_hidden_state[0]
        out.append(hidden[(ids[0] == tok.mask_token_id).nonzero()[0, 0]])
    return torch.stack(out), lengths


def _template_bias(method, template: str, k: int) -> torch.Tensor:
    """[MASK] state of the template without a sentence, positions after the slot shifted by k."""
    tok = method.encoder.tokenizer
    ids = torch.tensor([tok(template.format(""))["input_ids"]])
    prefix = len(tok(template.split("{}")[0].strip())["input_ids"]) - 1  # [CLS] + prefix words
    positions = torch.arange(ids.shape[1])
    positions[prefix:] += k
    hidden = method.encoder.backbone(input_ids=ids, position_ids=positions[None]).last_hidden_state[0]
    return hidden[(ids[0] == tok.mask_token_id).nonzero()[0, 0]]


def test_promptbert_loss_matches_formula(nodrop_dir, tiny_corpus) -> None:
    method = _method(nodrop_dir, tiny_corpus, "promptbert")
    method.train()
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    tok = method.encoder.tokenizer
    # the collated rows are the templated sentences, tokenized as whole strings
    for row, mask, s in zip(batch["tokens"]["input_ids"][: len(SENTENCES)], batch["tokens"]["attention_mask"], SENTENCES):
        assert row[mask.bool()].tolist() == tok(T1.format(s))["input_ids"]
    out = method(batch)
    n = len(SENTENCES)
    with torch.no_grad():
        lengths = [len(tok(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES]
        h1 = _prompt_states(method, [T1.format(s) for s in SENTENCES])[0] - torch.stack([_template_bias(method, T1, k) for k in lengths])
        h2 = _prompt_states(method, [T2.format(s) for s in SENTENCES])[0] - torch.stack([_template_bias(method, T2, k) for k in lengths])
        expected = cross_entropy(cosine(mlp_head(method, h1), mlp_head(method, h2)) / TAU, torch.arange(n))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    torch.testing.assert_close(out.views["z1_pre_mlp"], h1, rtol=1e-4, atol=1e-5)


def test_promptbert_truncates_the_sentence_before_adding_the_template(nodrop_dir, tiny_corpus) -> None:
    cfg = tiny_config(nodrop_dir, tiny_corpus, method="promptbert", max_len=6).resolved()
    method = build_method(cfg)
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    assert batch["sent_len"].max().item() == 6
    assert (batch["tokens"]["attention_mask"].sum(1) <= 6 + 10).all()  # template: 10 tokens around the sentence
    rows = batch["tokens"]["input_ids"]
    assert (rows[torch.arange(rows.shape[0]), batch["mask_pos"]] == method.encoder.tokenizer.mask_token_id).all()


@pytest.mark.parametrize("eval_denoise", [False, True])
def test_promptbert_eval_representation_matches_formula(nodrop_dir, tiny_corpus, eval_denoise) -> None:
    method = _method(nodrop_dir, tiny_corpus, "promptbert", eval_denoise=eval_denoise)
    got = method.embed(SENTENCES, batch_size=2)
    tok = method.encoder.tokenizer
    with torch.no_grad():
        texts = [add_period(s) for s in SENTENCES]
        assert texts[2].endswith("park.") and texts[3].endswith("?")
        want = _prompt_states(method, [T1.format(s) for s in texts])[0]
        if eval_denoise:
            want = want - torch.stack([_template_bias(method, T1, len(tok(s, add_special_tokens=False)["input_ids"])) for s in texts])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert method.eval_representation == ("prompt_mask_denoised" if eval_denoise else "prompt_mask")
