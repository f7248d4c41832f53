"""Each chapter-02 checker accepts the reference (and other right answers), rejects plausible mistakes, and says
which mistake it saw. Checkers draw their inputs at check time, so answers replayed from the shipped model fail."""
import pytest
import torch

from interplab import patching
from interplab.checks import CheckFailed
from interplab.checks import ch02
from interplab.worlds import ioi


def test_logit_diff_checker():
    ch02.test_logit_diff(ch02.reference_logit_diff)
    with pytest.raises(CheckFailed, match="sign flipped"):
        ch02.test_logit_diff(lambda logits, answers, position=-1: -ch02.reference_logit_diff(logits, answers, position))
    with pytest.raises(CheckFailed, match="0-d tensor"):
        ch02.test_logit_diff(lambda logits, answers, position=-1: ch02.reference_logit_diff(logits, answers, position).item())

    def summed(logits, answers, position=-1):
        picked = logits[:, position].gather(-1, answers)
        return (picked[:, 0] - picked[:, 1]).sum()

    with pytest.raises(CheckFailed, match="sum over prompts"):
        ch02.test_logit_diff(summed)

    def per_prompt(logits, answers, position=-1):
        picked = logits[:, position].gather(-1, answers)
        return picked[:, 0] - picked[:, 1]

    with pytest.raises(CheckFailed, match="average over the batch"):
        ch02.test_logit_diff(per_prompt)
    with pytest.raises(CheckFailed, match="last position, not at `position`"):
        ch02.test_logit_diff(lambda logits, answers, position=-1: ch02.reference_logit_diff(logits, answers, -1))


def test_patching_score_checker():
    ch02.test_patching_score(ch02.reference_patching_score)
    with pytest.raises(CheckFailed, match="from the clean (run|value)"):
        ch02.test_patching_score(lambda patched, clean, corrupted: (patched - clean) / (clean - corrupted))
    with pytest.raises(CheckFailed, match=r"\|clean - corrupted\|"):  # only the negative denominator catches it
        ch02.test_patching_score(lambda patched, clean, corrupted: (patched - corrupted) / abs(clean - corrupted))


def test_patch_residual_checker():
    ch02.test_patch_residual(ch02.reference_patch_residual)

    def patches_every_position(model, corrupted_tokens, clean_cache, layer, pos, metric):
        name = f"blocks.{layer}.hook_resid_pre"
        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, lambda r, hook: clean_cache[name])])).item()

    with pytest.raises(CheckFailed, match="every position restored"):
        ch02.test_patch_residual(patches_every_position)

    def resid_post(model, corrupted_tokens, clean_cache, layer, pos, metric):
        name = f"blocks.{layer}.hook_resid_post"

        def restore(resid, hook):
            resid = resid.clone()
            resid[:, pos] = clean_cache[name][:, pos]
            return resid

        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, restore)])).item()

    with pytest.raises(CheckFailed, match="wrong hook point: blocks.0.hook_resid_post"):
        ch02.test_patch_residual(resid_post)

    def forgets_to_return(model, corrupted_tokens, clean_cache, layer, pos, metric):
        name = f"blocks.{layer}.hook_resid_pre"

        def restore(resid, hook):
            resid = resid.clone()
            resid[:, pos] = clean_cache[name][:, pos]

        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, restore)])).item()

    with pytest.raises(CheckFailed, match="did it return the patched tensor"):
        ch02.test_patch_residual(forgets_to_return)


def _replayed(values: dict):
    """An answer that replays numbers recorded earlier instead of running the model."""
    def replay(*args, **kwargs):
        return values["answer"]
    return replay


def test_checkers_reject_replayed_answers():
    """Inputs are drawn at check time: a value recorded on the shipped model's usual prompts does not pass."""
    model = ch02.shipped_model(ch02.MODEL)
    clean, corrupted = ch02._prompts(5)
    recorded = ch02.reference_batched_head_patching(model, clean.tokens, corrupted.tokens, ch02._metric(clean))
    with pytest.raises(CheckFailed, match="values differ|wrong shape"):
        ch02.test_batched_head_patching(_replayed({"answer": recorded}))
    with pytest.raises(CheckFailed, match="expected"):
        ch02.test_patch_residual(_replayed({"answer": 1.234}))


def _noising_heads(model, clean_tokens, corrupted_tokens, metric):
    """The clean run with each head's corrupted output: right mechanics, wrong run."""
    return ch02.reference_batched_head_patching(model, corrupted_tokens, clean_tokens, metric)


def _whole_layer(model, clean_tokens, corrupted_tokens, metric):
    """Every copy of a layer restores all of that layer's heads."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n, batch = n_layers * n_heads, clean_tokens.shape[0]
    _, cache = model.run_with_cache(clean_tokens)

    def make_hook(layer):
        def hook(z, hook):
            z = z.clone()
            view = z.view(n, batch, *z.shape[1:])
            for head in range(n_heads):
                view[layer * n_heads + head] = cache[f"blocks.{layer}.attn.hook_z"]
            return z
        return hook

    logits = model.run_with_hooks(corrupted_tokens.repeat(n, 1),
                                  fwd_hooks=[(f"blocks.{l}.attn.hook_z", make_hook(l)) for l in range(n_layers)])
    per_copy = logits.view(n, batch, *logits.shape[1:])
    return torch.stack([metric(per_copy[i]) for i in range(n)]).view(n_layers, n_heads)


def _hard_coded_shape(model, clean_tokens, corrupted_tokens, metric):
    """Right on the shipped 2 x 4 model, wrong on any other shape."""
    return ch02.reference_batched_head_patching(model, clean_tokens, corrupted_tokens, metric)[:2, :4]


def test_batched_head_patching_checker():
    ch02.test_batched_head_patching(ch02.reference_batched_head_patching)

    def loop(model, clean_tokens, corrupted_tokens, metric):  # right values, one run per head
        _, cache = model.run_with_cache(clean_tokens)
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                def restore(z, hook, layer=layer, head=head):
                    z = z.clone()
                    z[:, :, head] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
                    return z
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", restore)])
                out[layer, head] = metric(logits)
        return out

    with pytest.raises(CheckFailed, match="ran the model"):
        ch02.test_batched_head_patching(loop)
    with pytest.raises(CheckFailed, match="write this yourself; your function called patching\\."):
        ch02.test_batched_head_patching(patching.activation_patch_heads)
    with pytest.raises(CheckFailed, match="the wrong run: the clean run"):
        ch02.test_batched_head_patching(_noising_heads)
    with pytest.raises(CheckFailed, match="every head of the layer patched"):
        ch02.test_batched_head_patching(_whole_layer)
    with pytest.raises(CheckFailed, match="random 3-layer, 6-head model.*wrong shape"):
        ch02.test_batched_head_patching(_hard_coded_shape)


def test_direct_path_patch_checker():
    ch02.test_direct_path_patch(ch02.reference_direct_path_patch)

    def total_effect(model, clean_tokens, corrupted_tokens, metric, layer, head):  # patches the head itself
        _, corrupt_cache = model.run_with_cache(corrupted_tokens)
        name = f"blocks.{layer}.attn.hook_z"

        def swap(z, hook):
            z = z.clone()
            z[:, :, head] = corrupt_cache[name][:, :, head]
            return z

        return (metric(model.run_with_hooks(clean_tokens, fwd_hooks=[(name, swap)])) - metric(model(clean_tokens))).item()

    with pytest.raises(CheckFailed, match="total effect"):
        ch02.test_direct_path_patch(total_effect)

    def before_last_block(model, clean_tokens, corrupted_tokens, metric, layer, head):
        name = f"blocks.{layer}.attn.hook_z"
        _, clean_cache = model.run_with_cache(clean_tokens)
        _, corrupt_cache = model.run_with_cache(corrupted_tokens)
        delta = (corrupt_cache[name][:, :, head] - clean_cache[name][:, :, head]) @ model.W_O[layer, head]
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_pre"
        patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(last, lambda resid, hook: resid + delta)])
        return (metric(patched) - metric(model(clean_tokens))).item()

    with pytest.raises(CheckFailed, match="the last block still reads it"):
        ch02.test_direct_path_patch(before_last_block)
    with pytest.raises(CheckFailed, match="sign flipped"):
        ch02.test_direct_path_patch(lambda *args: -ch02.reference_direct_path_patch(*args))


def test_path_patch_head_to_head_checker():
    ch02.test_path_patch_head_to_head(ch02.reference_path_patch_head_to_head)

    def every_head_of_the_layer(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel):
        # forgets to restrict the change to the receiver: every later component sees the sender's corruption
        (s_layer, s_head), (r_layer, _) = sender, receiver
        _, clean_cache = model.run_with_cache(clean_tokens)
        _, corrupt_cache = model.run_with_cache(corrupted_tokens)
        z = f"blocks.{s_layer}.attn.hook_z"
        delta = (corrupt_cache[z][:, :, s_head] - clean_cache[z][:, :, s_head]) @ model.W_O[s_layer, s_head]
        patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{r_layer}.hook_resid_pre",
                                                                 lambda x, hook: x + delta)])
        return (metric(patched) - metric(model(clean_tokens))).item()

    with pytest.raises(CheckFailed, match="every component from layer 1 on saw the sender's change"):
        ch02.test_path_patch_head_to_head(every_head_of_the_layer)

    def always_query(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel):
        return ch02.reference_path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender, receiver, "q")

    with pytest.raises(CheckFailed, match="the path into the receiver's q input, not its v input"):
        ch02.test_path_patch_head_to_head(always_query)


def test_attribution_patch_heads_checker():
    ch02.test_attribution_patch_heads(ch02.reference_attribution_patch_heads)
    with pytest.raises(CheckFailed, match="called patching\\."):
        ch02.test_attribution_patch_heads(patching.attribution_patch_heads)
    with pytest.raises(CheckFailed, match="called patching.attribution_patch_heads"):  # as a learner would write it
        ch02.test_attribution_patch_heads(lambda *args: patching.attribution_patch_heads(*args))
    with pytest.raises(CheckFailed, match="exact activation patching"):  # exact patching is not the first-order estimate
        ch02.test_attribution_patch_heads(ch02.reference_batched_head_patching)

    def on_clean_run(model, clean_tokens, corrupted_tokens, metric):
        swapped = ch02.reference_attribution_patch_heads(model, corrupted_tokens, clean_tokens, metric)
        with torch.no_grad():
            return metric(model(corrupted_tokens)) + metric(model(clean_tokens)) - swapped

    with pytest.raises(CheckFailed, match="gradient taken on the clean run"):
        ch02.test_attribution_patch_heads(on_clean_run)

    def no_base(model, clean_tokens, corrupted_tokens, metric):
        with torch.no_grad():
            base = metric(model(corrupted_tokens))
        return ch02.reference_attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) - base

    with pytest.raises(CheckFailed, match="add metric\\(corrupted run\\)"):
        ch02.test_attribution_patch_heads(no_base)

    def keyed_by_hook_name(model, clean_tokens, corrupted_tokens, metric):  # the TransformerLens 4 trap
        names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
        _, clean_cache = model.run_with_cache(clean_tokens)
        acts = {}

        def record(act, hook):
            act.retain_grad()
            acts[hook.name] = act
            return act

        with torch.enable_grad():
            value = metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(n, record) for n in names]))
            value.backward()
        return value.detach() + torch.stack([((clean_cache[n] - acts[n].detach()) * acts[n].grad).sum(dim=(0, 1, 3))
                                             for n in names])

    with pytest.raises(CheckFailed, match="(?s)KeyError.*closure or functools.partial"):
        ch02.test_attribution_patch_heads(keyed_by_hook_name)


def test_top_k_edges_checker():
    ch02.test_top_k_edges(ch02.reference_top_k_edges)

    def ties_the_other_way(scores, names, k):  # a right answer: tied edges in another order
        order = sorted(range(len(names)), key=lambda i: (-abs(scores[i].item()), -i))
        return [names[i] for i in order[:k]]

    ch02.test_top_k_edges(ties_the_other_way)
    with pytest.raises(CheckFailed, match="signed score"):
        ch02.test_top_k_edges(lambda scores, names, k: [names[i] for i in scores.argsort(descending=True)[:k].tolist()])
    with pytest.raises(CheckFailed, match="wrong order"):
        ch02.test_top_k_edges(lambda scores, names, k: ch02.reference_top_k_edges(scores, names, k)[::-1])
    with pytest.raises(CheckFailed, match="indices"):
        ch02.test_top_k_edges(lambda scores, names, k: scores.abs().argsort(descending=True)[:k].tolist())
    with pytest.raises(CheckFailed, match="expected 0 edges"):  # k = 0 must give no edge
        ch02.test_top_k_edges(lambda scores, names, k: ch02.reference_top_k_edges(scores, names, max(k, 1)))


def test_circuit_overlap_checker():
    ch02.test_circuit_overlap(ch02.reference_circuit_overlap)
    with pytest.raises(CheckFailed, match="swapped"):
        ch02.test_circuit_overlap(lambda found, reference: ch02.reference_circuit_overlap(found, reference)[::-1])

    def with_duplicates(found, reference):
        hits = len(set(found) & set(reference))
        return hits / max(len(found), 1), hits / max(len(reference), 1)

    with pytest.raises(CheckFailed, match="as a set"):
        ch02.test_circuit_overlap(with_duplicates)

    def crashes_on_empty(found, reference):
        hits = len(set(found) & set(reference))
        return hits / len(set(found)), hits / len(set(reference))

    with pytest.raises(CheckFailed, match="ZeroDivisionError"):
        ch02.test_circuit_overlap(crashes_on_empty)


def test_attention_from_end_checker():
    ch02.test_attention_from_end(ch02.reference_attention_from_end)

    def abba_only(pattern, batch):  # assumes IO is always the first name
        end = pattern[:, :, -1]
        return torch.stack([end[..., 2], end[..., 4], end[..., 10]], dim=-1).mean(0)

    with pytest.raises(CheckFailed, match="layer 0"):
        ch02.test_attention_from_end(abba_only)

    def swapped(pattern, batch):
        return ch02.reference_attention_from_end(pattern, batch)[:, [1, 0, 2]]

    with pytest.raises(CheckFailed, match="IO and S1 columns swapped"):
        ch02.test_attention_from_end(swapped)

    def last_query(pattern, batch):  # right on IOI prompts, where END is the last token
        rows = torch.arange(len(batch))
        end = pattern[:, :, -1]
        return torch.stack([end[rows, :, w] for w in (batch.pos_io, batch.pos_s1, batch.pos_s2)], -1).mean(0)

    with pytest.raises(CheckFailed, match="last query row, not each prompt's END"):
        ch02.test_attention_from_end(last_query)

    def hard_coded_positions(pattern, batch):  # IOI's fixed slots instead of the batch's positions
        rows = torch.arange(len(batch))
        io = torch.where(torch.as_tensor(batch.abba), ioi.POS_A, ioi.POS_B)
        s1 = torch.where(torch.as_tensor(batch.abba), ioi.POS_B, ioi.POS_A)
        end = pattern[:, :, ioi.POS_END]
        return torch.stack([end[rows, :, w] for w in (io, s1, torch.full_like(io, ioi.POS_S2))], -1).mean(0)

    with pytest.raises(CheckFailed, match="positions drawn at check time"):
        ch02.test_attention_from_end(hard_coded_positions)


def test_check_circuit():
    truth = ch02.reference_circuit_roles()
    assert truth == {"name_collectors": {(0, 0), (0, 1), (0, 2), (0, 3)}, "s_inhibition_heads": {(1, 3)}}
    ch02.check_circuit(["a0.0", "a0.1", "a0.2", "a0.3"], [(1, 3)])
    ch02.check_circuit([(0, h) for h in range(4)], "a1.3")
    with pytest.raises(CheckFailed, match=r"name collector heads: you named 0.0, 0.1 \(missing: 2 head\(s\)\)"):
        ch02.check_circuit([(0, 0), (0, 1)], [(1, 3)])
    with pytest.raises(CheckFailed, match=r"not in the circuit in this role: 1.3 \(it is in the circuit, but in the "
                                          r"role 'S-inhibition'\)"):
        ch02.check_circuit([(0, 0), (0, 1), (0, 2), (0, 3), (1, 3)], [(1, 3)])
    with pytest.raises(CheckFailed, match=r"not in the circuit in this role: 1.0 \(it has no edge of this kind"):
        ch02.check_circuit([(0, h) for h in range(4)], [(1, 0)])
    with pytest.raises(CheckFailed, match="name each head as"):
        ch02.check_circuit(["head zero"], [(1, 3)])
