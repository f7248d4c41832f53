"""The patching library on a random GPT-2-architecture bridge: batched == looped == TransformerLens,
edge runs reproduce the clean and corrupted models at the extremes, and the gradient estimates
track the exact interventions."""
import pytest
import torch

from interplab import patching
from interplab.zoo import build_random_gpt2, build_random_model


@pytest.fixture(scope="module")
def setup():
    model = build_random_gpt2(n_layers=2, d_model=32, n_heads=2, d_vocab=64, n_ctx=16, seed=1)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 64, (4, 8), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, 64, (4,), generator=generator)
    answers = torch.randint(0, 64, (4, 2), generator=generator)
    return model, clean, corrupted, patching.logit_diff_metric(answers)


def test_logit_diff_metric():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[1, -1, 4] = 2.0, -1.0
    metric = patching.logit_diff_metric(torch.tensor([[1, 0], [3, 4]]))
    assert metric(logits).item() == pytest.approx((2.0 + 1.0) / 2)
    with pytest.raises(ValueError, match="answers for 2 prompts but got logits of shape \\(3, 3, 5\\)"):
        metric(torch.zeros(3, 3, 5))
    with pytest.raises(ValueError, match="answers must be \\[batch, 2\\]"):
        patching.logit_diff_metric(torch.tensor([1, 0]))


# both plans: one pass over every position, and a pass that stops at the last block's z plus a finishing call
PLANS = {"one pass": 10**9, "pass and finish": 0}


@pytest.fixture(params=list(PLANS))
def plan(request, monkeypatch):
    monkeypatch.setattr(patching, "ONE_PASS_MAX_TOKENS", PLANS[request.param])
    return request.param


@torch.no_grad()
def test_batched_head_patching_matches_loop_and_transformer_lens(setup, plan):
    from transformer_lens import patching as tl_patching

    model, clean, corrupted, metric = setup
    batched = patching.activation_patch_heads(model, clean, corrupted, metric, max_batch=4)  # one copy a pass: 2 passes
    looped = patching.activation_patch_heads_loop(model, clean, corrupted, metric)
    _, cache = model.run_with_cache(clean)
    reference = tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-4)
    assert batched.shape == (2, 2)


@torch.no_grad()
def test_resid_and_per_position_patching(setup, plan):
    from transformer_lens import patching as tl_patching

    model, clean, corrupted, metric = setup
    resid = patching.activation_patch_resid(model, clean, corrupted, metric)
    _, cache = model.run_with_cache(clean)
    reference = tl_patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    torch.testing.assert_close(resid, reference, atol=1e-5, rtol=1e-4)
    # restoring the whole clean residual stream at layer 0 and the corrupted position restores the clean metric
    assert resid[0, 2].item() == pytest.approx(metric(model(clean)).item(), abs=1e-5)
    assert resid[0, 0].item() == pytest.approx(metric(model(corrupted)).item(), abs=1e-5)  # nothing differs there
    per_pos = patching.activation_patch_heads(model, clean, corrupted, metric, per_position=True)
    assert per_pos.shape == (2, 2, 8)
    by_pos = tl_patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)  # [layer, pos, head]
    torch.testing.assert_close(per_pos, by_pos.transpose(1, 2), atol=1e-5, rtol=1e-4)
    # before the corrupted position, clean and corrupted head outputs are identical: no effect
    assert torch.allclose(per_pos[:, :, :2], metric(model(corrupted)).expand(2, 2, 2), atol=1e-5)


def _reads_two_positions(metric):
    def reads_two_positions(logits):
        return metric(logits) + logits[:, 0, 0].mean()

    reads_two_positions.positions = (-1,)  # but it also reads position 0
    return reads_two_positions


@torch.no_grad()
def test_patching_without_declared_positions_or_shortcut_gives_the_same_values(setup, monkeypatch):
    model, clean, corrupted, metric = setup
    monkeypatch.setattr(patching, "ONE_PASS_MAX_TOKENS", 0)
    fast = patching.activation_patch_heads(model, clean, corrupted, metric, per_position=True)
    undeclared = patching.activation_patch_heads(model, clean, corrupted, lambda logits: metric(logits),
                                                 per_position=True)
    torch.testing.assert_close(fast, undeclared, atol=1e-5, rtol=1e-4)
    explicit = patching.activation_patch_heads(model, clean, corrupted, lambda logits: metric(logits),
                                               metric_positions=[-1])
    torch.testing.assert_close(explicit, patching.activation_patch_heads(model, clean, corrupted, metric))
    # an architecture where finishing at a few positions fails the self-check: every position is computed
    reads_two = _reads_two_positions(metric)
    monkeypatch.setitem(patching._SHORTCUT_WORKS, patching._architecture(model), False)
    with_fallback = patching.activation_patch_heads(model, clean, corrupted, reads_two)
    monkeypatch.setattr(patching, "ONE_PASS_MAX_TOKENS", 10**9)
    torch.testing.assert_close(with_fallback, patching.activation_patch_heads(model, clean, corrupted, reads_two))


@torch.no_grad()
def test_patching_a_one_layer_model_and_chunks(monkeypatch):
    from transformer_lens import patching as tl_patching

    monkeypatch.setattr(patching, "ONE_PASS_MAX_TOKENS", 0)
    model = build_random_gpt2(n_layers=1, d_model=32, n_heads=4, d_vocab=64, n_ctx=16, seed=2)
    generator = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 64, (3, 6), generator=generator)
    corrupted = torch.randint(0, 64, (3, 6), generator=generator)
    metric = patching.logit_diff_metric(torch.randint(0, 64, (3, 2), generator=generator), position=4)
    _, cache = model.run_with_cache(clean)
    reference = tl_patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric).transpose(1, 2)
    got = patching.activation_patch_heads(model, clean, corrupted, metric, per_position=True, max_batch=9)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)
    # the metric reads position 4: a head's output at position 5 cannot reach it
    assert torch.equal(got[..., 5], torch.full_like(got[..., 5], metric(model(corrupted)).item()))


def test_patching_errors_say_how_to_fix(setup, monkeypatch):
    model, clean, corrupted, metric = setup
    monkeypatch.setattr(patching, "ONE_PASS_MAX_TOKENS", 0)

    with pytest.raises(ValueError, match="outside the positions it declares"):
        patching.activation_patch_heads(model, clean, corrupted, _reads_two_positions(metric))
    with pytest.raises(ValueError, match=r"metric positions \[8\] are outside a sequence of 8 tokens"):
        patching.activation_patch_heads(model, clean, corrupted, metric, metric_positions=[8])
    with pytest.raises(ValueError, match="same shape"):
        patching.activation_patch_heads(model, clean, corrupted[:, :-1], metric)


def test_attribution_patching_tracks_activation_patching(setup):
    model, clean, corrupted, metric = setup
    exact = patching.activation_patch_heads(model, clean, corrupted, metric)
    approx = patching.attribution_patch_heads(model, clean, corrupted, metric)
    assert approx.shape == exact.shape
    assert patching.pearson(exact, approx) > 0.9
    assert patching.attribution_patch_resid(model, clean, corrupted, metric).shape == (2, 8)


def test_graph_shape():
    graph = patching.ComputationalGraph(n_layers=2, n_heads=2, has_mlp=True)
    assert graph.senders == ["embed", "a0.0", "a0.1", "m0", "a1.0", "a1.1", "m1"]
    assert graph.receivers[:3] == ["a0.0.q", "a0.0.k", "a0.0.v"] and graph.receivers[-1] == "logits"
    names = graph.edge_names
    assert "a0.1->a1.0.k" in names and "m0->a1.1.v" in names and "a1.0->m1" in names and "m1->logits" in names
    assert "a1.0->a1.1.q" not in names and "m0->m0" not in names and "a0.0->a0.1.q" not in names
    # layer-0 heads: embed x 6 channels; m0: 3; layer-1 heads: 4 senders x 6; m1: 6; logits: 7
    assert len(names) == 6 + 3 + 24 + 6 + 7
    assert patching.edge_nodes("a0.1->a1.0.k") == ("a0.1", "a1.0")
    with pytest.raises(KeyError, match="no edge"):
        graph.edge_mask(["a1.0->a0.0.q"])


def assert_edge_runs_reach_clean_and_corrupted(model, clean, corrupted, metric, graph):
    """No edge corrupted is the clean run; every edge corrupted is the corrupted run."""
    masks = torch.stack([torch.zeros(len(graph.edges)), torch.ones(len(graph.edges))])
    none, everything = patching.run_with_corrupted_edges(model, clean, corrupted, metric, graph, masks)
    assert none.item() == pytest.approx(metric(model(clean)).item(), abs=1e-4)
    assert everything.item() == pytest.approx(metric(model(corrupted)).item(), abs=1e-4)


@torch.no_grad()
def test_edge_runs_interpolate_clean_and_corrupted(setup, plan):
    model, clean, corrupted, metric = setup
    graph = patching.ComputationalGraph.from_model(model)
    assert_edge_runs_reach_clean_and_corrupted(model, clean, corrupted, metric, graph)


@torch.no_grad()
def test_edge_patching_equals_hand_written_path_patch(setup, plan):
    """Corrupting the edge embed -> logits equals adding (corrupted - clean) embedding to the final residual."""
    model, clean, corrupted, metric = setup
    graph = patching.ComputationalGraph.from_model(model)
    score = patching.edge_patching_scores(model, clean, corrupted, metric, graph, ["embed->logits", "a0.0->a1.1.q"])
    _, c_cache = model.run_with_cache(clean)
    _, x_cache = model.run_with_cache(corrupted)
    shift = x_cache["blocks.0.hook_resid_pre"] - c_cache["blocks.0.hook_resid_pre"]
    by_hand = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: x + shift)])
    assert score[0].item() == pytest.approx((metric(by_hand) - metric(model(clean))).item(), abs=1e-4)
    heads = patching.path_patch_heads(model, clean, corrupted, metric, receivers=[(1, 1)], channels=["q"])
    assert heads.shape == (1, 1, 2, 2)
    assert heads[0, 0, 0, 0].item() == pytest.approx(score[1].item(), abs=1e-6)
    assert heads[0, 0, 1].isnan().all()  # no path from a head into another head of its own layer


def test_edge_attribution_tracks_exact_edges_and_circuits(setup):
    model, clean, corrupted, metric = setup
    graph = patching.ComputationalGraph.from_model(model)
    exact = patching.edge_patching_scores(model, clean, corrupted, metric, graph)
    approx = patching.edge_attribution_scores(model, clean, corrupted, metric, graph)
    assert approx.shape == exact.shape == (len(graph.edges),)
    assert patching.pearson(exact, approx) > 0.5  # a random model is far from linear; see the derivative test
    full = graph.top_edges(exact, len(graph.edges))
    assert patching.circuit_faithfulness(model, clean, corrupted, metric, graph, full) == pytest.approx(1.0, abs=1e-4)
    curve = patching.faithfulness_curve(model, clean, corrupted, metric, graph, exact, [0, len(graph.edges)])
    expected_empty = (metric(model(corrupted)) / metric(model(clean))).item()
    assert curve[0].item() == pytest.approx(expected_empty, abs=1e-3) and curve[1].item() == pytest.approx(1.0, abs=1e-4)


def test_edge_attribution_is_the_directional_derivative(setup):
    """EAP's score for embed -> a0.0.v equals d/d eps of the metric when that edge sees clean + eps (corrupted - clean)."""
    model, clean, corrupted, metric = setup
    graph = patching.ComputationalGraph.from_model(model)
    approx = patching.edge_attribution_scores(model, clean, corrupted, metric, graph)[graph.edge_index("embed->a0.0.v")]
    with torch.no_grad():
        _, c_cache = model.run_with_cache(clean)
        _, x_cache = model.run_with_cache(corrupted)
        shift = 1e-2 * (x_cache["blocks.0.hook_resid_pre"] - c_cache["blocks.0.hook_resid_pre"])
        shifted = {}
        model.run_with_hooks(clean, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x + shift),
                                               ("blocks.0.attn.hook_v", lambda v, hook: shifted.update(v=v.clone()))])

        def put(v, hook):
            v = v.clone()
            v[:, :, 0] = shifted["v"][:, :, 0]
            return v

        derivative = (metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.0.attn.hook_v", put)]))
                      - metric(model(clean))) / 1e-2
    assert approx.item() == pytest.approx(derivative.item(), rel=0.05)


def test_attention_only_graph_has_no_mlp_nodes():
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    cfg = TransformerBridgeConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, attn_only=True, d_vocab=20, n_ctx=8,
                                  normalization_type="LN", seed=0, positional_embedding_type="standard")
    model = TransformerBridge.boot_native(cfg)
    graph = patching.ComputationalGraph.from_model(model)
    assert not any(name.startswith("m") for name in graph.senders)
    clean = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(3))
    corrupted = clean.flip(0)
    metric = patching.logit_diff_metric(torch.tensor([[1, 2], [3, 4]]))
    masks = torch.ones(1, len(graph.edges))
    with torch.no_grad():
        everything = patching.run_with_corrupted_edges(model, clean, corrupted, metric, graph, masks)
        assert everything.item() == pytest.approx(metric(model(corrupted)).item(), abs=1e-4)


@pytest.fixture(scope="module", params=["pythia", "gemma"])
def other_family(request):
    """Random models of the other real families: rotary + parallel attention/MLP, and RMSNorm + two KV groups."""
    model = build_random_model(request.param, n_layers=2, d_model=32, n_heads=4, d_vocab=64, n_ctx=16, seed=1)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 64, (3, 7), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, 64, (3,), generator=generator)
    return model, clean, corrupted, patching.logit_diff_metric(torch.randint(0, 64, (3, 2), generator=generator))


@torch.no_grad()
def test_activation_patching_on_other_families_matches_transformer_lens(other_family, plan):
    from transformer_lens import patching as tl_patching

    model, clean, corrupted, metric = other_family
    _, cache = model.run_with_cache(clean)
    torch.testing.assert_close(patching.activation_patch_heads(model, clean, corrupted, metric, per_position=True),
                               tl_patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)
                               .transpose(1, 2), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(patching.activation_patch_resid(model, clean, corrupted, metric),
                               tl_patching.get_act_patch_resid_pre(model, corrupted, cache, metric),
                               atol=1e-4, rtol=1e-3)
    if plan == "pass and finish":  # the shortcut passed its self-check: it was not silently dropped
        assert patching._SHORTCUT_WORKS[patching._architecture(model)]


def test_attribution_patching_on_other_families(other_family):
    model, clean, corrupted, metric = other_family
    exact = patching.activation_patch_heads(model, clean, corrupted, metric)
    approx = patching.attribution_patch_heads(model, clean, corrupted, metric)
    assert approx.shape == exact.shape and torch.isfinite(approx).all()
    assert patching.pearson(exact, approx) > 0.5


def _hand_patched(model, clean, corrupted, metric, hook_name, index):
    """Metric of the clean run with ``hook_name`` (at ``index`` after the batch axes) taken from the corrupted run."""
    _, corrupted_cache = model.run_with_cache(corrupted)

    def put(act, hook):
        act = act.clone()
        act[(slice(None), slice(None)) + index] = corrupted_cache[hook_name][(slice(None), slice(None)) + index]
        return act

    return metric(model.run_with_hooks(clean, fwd_hooks=[(hook_name, put)])).item()


@torch.no_grad()
def test_edges_on_other_families_match_hand_patches(other_family, plan):
    """Corrupting every edge into one receiver equals feeding that receiver the corrupted run's input: this pins
    down which senders each receiver reads (parallel MLPs skip their own layer; a key/value group is one receiver)."""
    model, clean, corrupted, metric = other_family
    graph = patching.ComputationalGraph.from_model(model)
    assert_edge_runs_reach_clean_and_corrupted(model, clean, corrupted, metric, graph)
    group = 2 // (graph.n_heads // (graph.n_kv_heads or graph.n_heads))
    cases = {"m1": ("blocks.1.hook_mlp_out", ()),
             graph.receiver_name(1, 2, "q"): ("blocks.1.attn.hook_q", (2,)),
             graph.receiver_name(1, 2, "k"): ("blocks.1.attn.hook_k", (group,)),
             graph.receiver_name(1, 2, "v"): ("blocks.1.attn.hook_v", (group,))}
    receivers = [graph.receivers.index(name) for name in cases]
    into = torch.stack([torch.tensor([float(r == receiver) for _, r in graph.edges]) for receiver in receivers])
    got = patching.run_with_corrupted_edges(model, clean, corrupted, metric, graph, into)
    for value, (name, (hook_name, index)) in zip(got, cases.items()):
        assert value.item() == pytest.approx(_hand_patched(model, clean, corrupted, metric, hook_name, index),
                                             abs=1e-4), name
    exact = patching.edge_patching_scores(model, clean, corrupted, metric, graph)
    approx = patching.edge_attribution_scores(model, clean, corrupted, metric, graph)
    assert approx.shape == exact.shape == (len(graph.edges),)
    assert patching.pearson(exact, approx) > 0.5


def test_graphs_of_other_families():
    parallel = patching.ComputationalGraph(n_layers=2, n_heads=2, has_mlp=True, parallel_mlp=True)
    names = parallel.edge_names
    assert "a1.0->m1" not in names and "a0.0->m1" in names and "m0->a1.0.q" in names
    grouped = patching.ComputationalGraph(n_layers=2, n_heads=4, has_mlp=True, n_kv_heads=2)
    assert grouped.receivers[:6] == ["a0.0.q", "a0.1.q", "a0.2.q", "a0.3.q", "a0.kv0.k", "a0.kv0.v"]
    assert grouped.receiver_name(1, 3, "k") == "a1.kv1.k" and grouped.receiver_name(1, 3, "q") == "a1.3.q"
    assert patching.edge_nodes("a0.1->a1.kv1.v") == ("a0.1", "a1.kv1")
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        patching.ComputationalGraph(n_layers=1, n_heads=4, has_mlp=False, n_kv_heads=3)


def _public_calls(graph):
    """Every public patching function, as f(model, clean, corrupted, metric)."""
    edge = graph.edge_names[0]
    return {
        "activation_patch_resid": patching.activation_patch_resid,
        "activation_patch_heads": patching.activation_patch_heads,
        "activation_patch_heads per position": lambda *a: patching.activation_patch_heads(*a, per_position=True),
        "activation_patch_heads_loop": patching.activation_patch_heads_loop,
        "patch_and_measure": lambda *a: patching.patch_and_measure(*a, "z", [(0, (slice(None), 0))]),
        "attribution_patch_heads": patching.attribution_patch_heads,
        "attribution_patch_resid": patching.attribution_patch_resid,
        "edge_patching_scores": lambda *a: patching.edge_patching_scores(*a, graph, [edge]),
        "path_patch_heads": lambda *a: patching.path_patch_heads(*a, [(1, 0)]),
        "edge_attribution_scores": lambda *a: patching.edge_attribution_scores(*a, graph),
        "run_with_corrupted_edges": lambda *a: patching.run_with_corrupted_edges(*a, graph,
                                                                                 torch.zeros(2, len(graph.edges))),
        "circuit_faithfulness": lambda *a: patching.circuit_faithfulness(*a, graph, graph.edge_mask([edge])),
        "faithfulness_curve": lambda *a: patching.faithfulness_curve(*a, graph, torch.ones(len(graph.edges)), [1, 2]),
    }


@pytest.fixture(scope="module")
def calls(setup):
    return _public_calls(patching.ComputationalGraph.from_model(setup[0]))


CALL_NAMES = list(_public_calls(patching.ComputationalGraph(2, 2, True)))


@pytest.mark.parametrize("name", CALL_NAMES)
def test_every_public_function_checks_its_inputs(setup, calls, name):
    """Bad input fails before any run, with a message that names the problem and the fix."""
    model, clean, corrupted, metric = setup
    call = calls[name]
    with pytest.raises(ValueError, match="same shape"):
        call(model, clean, corrupted[:, :-1], metric)
    with pytest.raises(ValueError, match="same shape"):
        call(model, clean, corrupted[:2], metric)
    with pytest.raises(ValueError, match=r"\[batch, seq\] tensor of token ids"):
        call(model, clean[0], corrupted[0], metric)
    with pytest.raises(ValueError, match="integer token ids.*long"):
        call(model, clean.float(), corrupted.float(), metric)
    too_big = clean.clone()
    too_big[1, 3] = 64
    with pytest.raises(ValueError, match=r"token id 64, outside this model's vocabulary \[0, 64\)"):
        call(model, too_big, corrupted, metric)
    with pytest.raises(ValueError, match=r"answers hold token id 99, outside"):
        call(model, clean, corrupted, patching.logit_diff_metric(torch.tensor([[1, 2], [3, 4], [5, 6], [7, 99]])))
    with pytest.raises(ValueError, match="answers for 2 prompts but there are 4"):
        call(model, clean, corrupted, patching.logit_diff_metric(torch.tensor([[1, 2], [3, 4]])))

    def per_prompt(logits):  # forgot to average over the batch
        picked = logits[:, -1]
        return picked[:, 1] - picked[:, 2]

    with pytest.raises(ValueError, match=r"returned shape \(4,\), not one number.*mean"):
        call(model, clean, corrupted, per_prompt)
    with pytest.raises(ValueError, match="returned float, not a tensor"):
        call(model, clean, corrupted, lambda logits: metric(logits).item())
    with pytest.raises(TypeError, match="metric must be a function"):
        call(model, clean, corrupted, 3.0)


def test_a_one_element_metric_is_a_scalar(setup):
    model, clean, corrupted, metric = setup
    as_vector = patching.activation_patch_heads(model, clean, corrupted, lambda logits: metric(logits)[None])
    torch.testing.assert_close(as_vector, patching.activation_patch_heads(model, clean, corrupted, metric))


def test_answers_and_edges_say_what_is_wrong(setup):
    model, clean, corrupted, metric = setup
    with pytest.raises(ValueError, match="integer token ids"):
        patching.logit_diff_metric(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=">= 0"):
        patching.logit_diff_metric(torch.tensor([[1, -2]]))
    graph = patching.ComputationalGraph.from_model(model)
    with pytest.raises(ValueError, match=r"no edge 'a0.1->a1.0.z'.*no receiver 'a1.0.z'.*did you mean .*'a0.1->a1.0.q'"):
        patching.edge_patching_scores(model, clean, corrupted, metric, graph, ["a0.1->a1.0.z"])
    with pytest.raises(KeyError, match=r"'a0.1.q' does not come after 'a1.0'"):
        graph.edge_mask(["a1.0->a0.1.q"])
    with pytest.raises(ValueError, match=r"no sender 'a9.0'"):
        graph.edge_index("a9.0->logits")
    with pytest.raises(TypeError, match="list of edge names"):
        patching.edge_patching_scores(model, clean, corrupted, metric, graph, "a0.1->logits")
    other = patching.ComputationalGraph(3, 2, True)
    with pytest.raises(ValueError, match="is not this model's.*from_model"):
        patching.edge_attribution_scores(model, clean, corrupted, metric, other)
    with pytest.raises(ValueError, match=r"one entry per edge of the graph \(\d+\)"):
        patching.faithfulness_curve(model, clean, corrupted, metric, graph, torch.ones(3), [1])
    with pytest.raises(ValueError, match="non-negative whole numbers"):
        patching.faithfulness_curve(model, clean, corrupted, metric, graph, torch.ones(len(graph.edges)), [1.5])
    with pytest.raises(ValueError, match="boolean mask"):
        patching.circuit_faithfulness(model, clean, corrupted, metric, graph, torch.ones(len(graph.edges)))
    with pytest.raises(ValueError, match=r"\(layer, head\) pairs"):
        patching.path_patch_heads(model, clean, corrupted, metric, [(2, 0)])
    with pytest.raises(ValueError, match="'q', 'k', 'v'"):
        patching.path_patch_heads(model, clean, corrupted, metric, [(1, 0)], channels="qk")
