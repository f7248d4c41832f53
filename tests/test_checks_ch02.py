"""Each chapter-02 checker accepts the reference and rejects a plausible mistake."""
import pytest
import torch

from interplab import patching
from interplab.checks import CheckFailed
from interplab.checks import ch02


def test_logit_diff_checker():
    ch02.test_logit_diff(ch02.reference_logit_diff)
    with pytest.raises(CheckFailed, match="values differ|expected"):
        ch02.test_logit_diff(lambda logits, answers, position=-1: -ch02.reference_logit_diff(logits, answers, position))
    with pytest.raises(CheckFailed, match="0-d tensor"):
        ch02.test_logit_diff(lambda logits, answers, position=-1: ch02.reference_logit_diff(logits, answers, position).item())


def test_patching_score_checker():
    ch02.test_patching_score(ch02.reference_patching_score)
    with pytest.raises(CheckFailed, match="expected"):
        ch02.test_patching_score(lambda patched, clean, corrupted: (patched - clean) / (clean - corrupted))


def test_patch_residual_checker():
    ch02.test_patch_residual(ch02.reference_patch_residual)

    def patches_every_position(model, corrupted_tokens, clean_cache, layer, pos, metric):
        name = f"blocks.{layer}.hook_resid_pre"
        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, lambda r, hook: clean_cache[name])])).item()

    with pytest.raises(CheckFailed, match="layer 0, position"):
        ch02.test_patch_residual(patches_every_position)


def test_batched_head_patching_checker():
    ch02.test_batched_head_patching(ch02.reference_batched_head_patching)
    # a loop gets the values right but not the point of the exercise
    with pytest.raises(CheckFailed, match="ran the model"):
        ch02.test_batched_head_patching(patching.activation_patch_heads_loop)

    def noising(model, clean_tokens, corrupted_tokens, metric):  # patches corrupted into clean: the wrong direction
        return patching.activation_patch_heads(model, corrupted_tokens, clean_tokens, metric)

    with pytest.raises(CheckFailed, match="values differ"):
        ch02.test_batched_head_patching(noising)


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

    with pytest.raises(CheckFailed, match="sender head 0"):
        ch02.test_direct_path_patch(total_effect)


def test_path_patch_head_to_head_checker():
    ch02.test_path_patch_head_to_head(ch02.reference_path_patch_head_to_head)

    def every_head_of_the_layer(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel):
        # forgets to restrict the change to the receiver: every head of its layer sees the sender's corruption
        (s_layer, s_head), (r_layer, _) = sender, receiver
        _, clean_cache = model.run_with_cache(clean_tokens)
        _, corrupt_cache = model.run_with_cache(corrupted_tokens)
        z = f"blocks.{s_layer}.attn.hook_z"
        delta = (corrupt_cache[z][:, :, s_head] - clean_cache[z][:, :, s_head]) @ model.W_O[s_layer, s_head]
        patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{r_layer}.hook_resid_pre",
                                                                 lambda x, hook: x + delta)])
        return (metric(patched) - metric(model(clean_tokens))).item()

    with pytest.raises(CheckFailed, match="via"):
        ch02.test_path_patch_head_to_head(every_head_of_the_layer)


def test_attribution_patch_heads_checker():
    ch02.test_attribution_patch_heads(ch02.reference_attribution_patch_heads)
    with pytest.raises(CheckFailed, match="values differ"):  # exact patching is not the first-order estimate
        ch02.test_attribution_patch_heads(patching.activation_patch_heads)


def test_top_k_edges_checker():
    ch02.test_top_k_edges(ch02.reference_top_k_edges)
    with pytest.raises(CheckFailed, match="scores"):  # signed, not absolute
        ch02.test_top_k_edges(lambda scores, names, k: [names[i] for i in scores.argsort(descending=True)[:k].tolist()])


def test_circuit_overlap_checker():
    ch02.test_circuit_overlap(ch02.reference_circuit_overlap)
    with pytest.raises(CheckFailed, match="precision"):
        ch02.test_circuit_overlap(lambda found, reference: ch02.reference_circuit_overlap(found, reference)[::-1])


def test_attention_from_end_checker():
    ch02.test_attention_from_end(ch02.reference_attention_from_end)

    def abba_only(pattern, batch):  # assumes IO is always the first name
        end = pattern[:, :, -1]
        return torch.stack([end[..., 2], end[..., 4], end[..., 10]], dim=-1).mean(0)

    with pytest.raises(CheckFailed, match="layer 0"):
        ch02.test_attention_from_end(abba_only)
