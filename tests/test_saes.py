"""SAEs: architectures, training, dead latents, splicing and CE, ground-truth recovery, SAELens layout, bad input."""
import json
import math

import pytest
import torch

from interplab import saes
from interplab.probes import auroc, collect_activations
from interplab.sae_variables import induction_variables
from interplab.worlds import induction

HOOK = "blocks.1.hook_resid_pre"


def _sparse_data(n=8000, d=16, n_features=48, p=0.06, seed=0):
    """Activations built from known sparse features in superposition (more features than dimensions)."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    present = torch.rand(n, n_features, generator=g) < p
    codes = present * torch.rand(n, n_features, generator=g) * 3
    return codes @ directions + 0.01 * torch.randn(n, d, generator=g), present


@pytest.fixture(scope="module")
def data():
    return _sparse_data()


@pytest.fixture(scope="module")
def trained(data):
    acts, _ = data
    return {arch: saes.train_sae(acts, d_sae=64, architecture=arch, k=4, l1_coefficient=0.3, steps=150,
                                 batch_size=512, lr=3e-3, dead_after_tokens=5000, progress=False)
            for arch in saes.ARCHITECTURES}


@pytest.fixture(scope="module")
def small_cache(induction_model):
    batch = induction.sample_batch(48, seed=5)
    return saes.cache_activations(induction_model, batch.tokens, HOOK, model_name="attn2-induction",
                                  progress=False), batch


# ---------------------------------------------------------------- architectures and training

def test_topk_has_exactly_k_active():
    sae = saes.SAE(saes.SAEConfig(d_in=16, d_sae=64, architecture="topk", k=5))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU removes none of the top k
    f = sae.encode(torch.randn(300, 16))
    assert ((f != 0).sum(-1) == 5).all()
    values, indices = sae.topk(torch.randn(3, 16))
    assert values.shape == indices.shape == (3, 5)
    x = torch.randn(40, 16)
    assert torch.allclose(sae(x), sae.decode(sae.encode(x)), atol=1e-5)  # sparse and dense decoding agree


def test_fast_topk_encoder_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    weights = [torch.randn(16, 32, generator=g, requires_grad=True), torch.randn(32, generator=g, requires_grad=True)]
    upstream = torch.randn(64, 4, generator=g)
    values, indices = saes._TopKEncode.apply(x, *weights, 4)
    fast = torch.autograd.grad((values * upstream).sum(), weights)
    reference_values, reference_indices = torch.addmm(weights[1], x, weights[0]).topk(4, dim=-1)
    reference = torch.autograd.grad((reference_values * upstream).sum(), weights)
    assert torch.equal(indices, reference_indices) and torch.allclose(values, reference_values)
    for a, b in zip(fast, reference):
        assert torch.allclose(a, b, atol=1e-5)


def test_training_reconstructs_and_keeps_unit_norm_decoder(data, trained):
    acts, _ = data
    for arch, result in trained.items():
        assert torch.allclose(result.sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5), arch
        metrics = saes.reconstruction_metrics(result.sae, acts)
        assert metrics.explained_variance > 0.7, (arch, metrics)
        assert result.history[-1]["step"] == 150
    assert saes.reconstruction_metrics(trained["topk"].sae, acts).l0 <= 4
    assert saes.reconstruction_metrics(trained["standard"].sae, acts).l0 < 32


def test_input_scale_is_folded_back(data):
    acts, _ = data
    small = saes.train_sae(acts, d_sae=32, k=4, steps=30, batch_size=256, progress=False)
    big = saes.train_sae(acts * 100, d_sae=32, k=4, steps=30, batch_size=256, progress=False)
    assert abs(big.input_scale * 100 - small.input_scale) < 1e-6 * small.input_scale
    assert torch.allclose(big.sae(acts[:50] * 100), small.sae(acts[:50]) * 100, rtol=1e-3, atol=1e-3)


def test_training_is_deterministic(data):
    acts, _ = data
    a = saes.train_sae(acts, d_sae=32, k=4, steps=20, batch_size=256, seed=7, progress=False)
    b = saes.train_sae(acts, d_sae=32, k=4, steps=20, batch_size=256, seed=7, progress=False)
    assert torch.equal(a.sae.W_enc, b.sae.W_enc) and torch.equal(a.sae.b_dec, b.sae.b_dec)


def test_stronger_l1_gives_sparser_codes(data):
    acts, _ = data
    l0 = [saes.reconstruction_metrics(saes.train_sae(acts, d_sae=64, architecture="standard", l1_coefficient=l1,
                                                     steps=100, batch_size=512, lr=3e-3, progress=False).sae,
                                      acts).l0 for l1 in (0.01, 3.0)]
    assert l0[1] < l0[0] / 2


def _kill_half(monkeypatch):
    """Latents that can never win the top k: no input dependence and a tiny positive bias."""
    init = saes.SAE.__init__

    def killing_init(self, cfg, seed=0):
        init(self, cfg, seed)
        with torch.no_grad():
            self.W_enc[:, cfg.d_sae // 2:] = 0.0
            self.b_enc[cfg.d_sae // 2:] = 0.01

    monkeypatch.setattr(saes.SAE, "__init__", killing_init)


def test_aux_k_revives_dead_latents(data, monkeypatch):
    acts, _ = data
    _kill_half(monkeypatch)
    dead = {}
    for aux_k in (0, 16):
        result = saes.train_sae(acts, d_sae=64, k=4, steps=200, batch_size=512, lr=3e-3, aux_k=aux_k,
                                aux_coefficient=1.0, dead_after_tokens=5000, progress=False)
        dead[aux_k] = saes.reconstruction_metrics(result.sae, acts).dead_fraction
    assert dead[0] > 0.2  # without AuxK a latent outside the top k gets no gradient
    assert dead[16] < dead[0] / 2


def test_resampling_gives_dead_latents_new_directions(data):
    acts, _ = data
    sae = saes.SAE(saes.SAEConfig(d_in=16, d_sae=32, architecture="topk", k=4))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:5] = True
    before = sae.W_dec.detach().clone()
    assert saes.resample_dead_latents_(sae, acts[:1000], dead) == 5
    assert not torch.allclose(sae.W_dec[:5], before[:5])
    assert torch.equal(sae.W_dec[5:], before[5:])
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)
    assert saes.resample_dead_latents_(sae, acts[:1000], torch.zeros(32, dtype=torch.bool)) == 0
    result = saes.train_sae(acts, d_sae=32, architecture="standard", steps=20, batch_size=256,
                            resample_at=(10,), dead_after_tokens=256, progress=False)
    assert result.settings["resample_at"] == [10]


# ---------------------------------------------------------------- caching, splicing, CE

def test_cache_leaves_out_bos_and_matches_collect(induction_model, small_cache):
    cache, batch = small_cache
    assert len(cache) == 48 * 40 and cache.d_in == 64
    assert (cache.position >= 1).all() and not cache.mask[:, 0].any()
    full = collect_activations(induction_model, batch.tokens, HOOK, progress=False)[HOOK]
    assert torch.allclose(cache.acts, full[cache.prompt, cache.position])
    assert torch.equal(cache.token, batch.tokens[cache.prompt, cache.position])
    last = saes.cache_activations(induction_model, batch.tokens[:4], HOOK, positions=[-1], progress=False)
    assert len(last) == 4 and (last.position == 40).all()


def _identity_sae(d, hook):
    """ReLU(x) - ReLU(-x) = x: a standard SAE of width 2d that reconstructs exactly."""
    sae = saes.SAE(saes.SAEConfig(d_in=d, d_sae=2 * d, architecture="standard", hook_name=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_ce_recovered_against_mean_ablation(induction_model, small_cache):
    cache, batch = small_cache
    tokens = batch.tokens[:16]
    mean = cache.acts.mean(0)
    identity = _identity_sae(64, HOOK)
    exact = saes.ce_metrics(induction_model, identity, tokens, mean_activation=mean, progress=False)
    assert abs(exact.delta) < 1e-5 and abs(exact.recovered - 1) < 1e-4
    # an SAE that always outputs the mean is mean ablation: CE recovered 0
    constant = _identity_sae(64, HOOK)
    with torch.no_grad():
        constant.W_dec.zero_()
        constant.b_dec.copy_(mean)
    flat = saes.ce_metrics(induction_model, constant, tokens, mean_activation=mean, progress=False)
    assert abs(flat.recovered) < 1e-6
    assert abs(flat.spliced - flat.mean_ablated) < 1e-9
    # halfway: x_hat = (x + mean) / 2, checked against CE computed by hand
    half = _identity_sae(64, HOOK)
    with torch.no_grad():
        half.W_dec.mul_(0.5)
        half.b_dec.copy_(mean / 2)
        half.b_enc.copy_(torch.cat([mean / 2, -mean / 2]))  # undo the b_dec the encoder subtracts
    result = saes.ce_metrics(induction_model, half, tokens, mean_activation=mean, progress=False)

    @torch.no_grad()
    def ce(hook=None):
        logits = induction_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, hook)] if hook else [])
        logp = torch.log_softmax(logits[:, :-1].double(), -1)
        return float(-logp.gather(-1, tokens[:, 1:, None])[..., 0].mean())

    def replace(fn):
        def hook(act, hook):
            out = act.clone()
            out[:, 1:] = fn(act[:, 1:])
            return out
        return hook

    clean = ce()
    spliced = ce(replace(lambda a: (a + mean) / 2))
    ablated = ce(replace(lambda a: mean.expand_as(a)))
    zeroed = ce(replace(torch.zeros_like))
    assert abs(result.clean - clean) < 1e-6 and abs(result.spliced - spliced) < 1e-5
    assert abs(result.recovered - (ablated - spliced) / (ablated - clean)) < 1e-4
    assert abs(result.recovered_vs_zero - (zeroed - spliced) / (zeroed - clean)) < 1e-4
    # by default the mean is taken over the same tokens and positions
    own_mean = collect_activations(induction_model, tokens, HOOK, progress=False)[HOOK][:, 1:].reshape(-1, 64).mean(0)
    default = saes.ce_metrics(induction_model, half, tokens, progress=False)
    assert abs(default.mean_ablated - ce(replace(lambda a: own_mean.expand_as(a)))) < 1e-5


def test_splicing_context_and_latent_edit(induction_model, small_cache):
    _, batch = small_cache
    tokens = batch.tokens[:4]
    identity = _identity_sae(64, HOOK)
    clean = induction_model(tokens)
    with saes.splicing(induction_model, identity):
        assert torch.allclose(induction_model(tokens), clean, atol=1e-4)
    # setting a latent to its own value changes nothing; setting it to 0 removes its contribution
    hook = saes.latent_edit_hook(identity, latent=3, value=0.0)
    edited = collect_activations(induction_model, tokens, HOOK, progress=False)[HOOK]
    changed = hook(edited.clone(), None)
    # latent 3 of the identity SAE is ReLU(x_3) along e_3: removing it leaves min(x_3, 0)
    assert torch.allclose(changed[:, 1:, 3], edited[:, 1:, 3].clamp(max=0), atol=1e-6)
    assert torch.allclose(changed[..., :3], edited[..., :3])
    assert torch.equal(changed[:, 0], edited[:, 0])  # <bos> untouched


# ---------------------------------------------------------------- ground truth

def test_auroc_matrix_matches_probes_auroc():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (200, 3), generator=g).float()  # many ties
    labels = torch.rand(200, 2, generator=g) < 0.3
    matrix = saes.auroc_matrix(scores, labels)
    for s in range(3):
        for v in range(2):
            assert abs(matrix[s, v] - auroc(scores[:, s], labels[:, v])) < 1e-6


def test_variable_recovery_finds_the_planted_latent():
    g = torch.Generator().manual_seed(1)
    labels = torch.rand(500, generator=g) < 0.2
    latents = torch.rand(500, 10, generator=g)
    latents[:, 7] = labels.float() * 2
    population = torch.ones(500, dtype=torch.bool)
    population[:50] = False
    variables = [saes.Variable("planted", "a", labels), saes.Variable("planted, subset", "a", labels, population),
                 saes.Variable("noise", "b", torch.rand(500, generator=g) < 0.5)]
    result = saes.variable_recovery(latents, variables, progress=False)
    assert result.best[:2].tolist() == [7, 7] and (result.auroc[:2] == 1).all()
    assert result.by_family() == {"a": (2, 2), "b": (0, 1)}
    assert result.fraction(family="a") == 1.0


def test_induction_variables_and_probe_ceiling(small_cache):
    cache, batch = small_cache
    variables = induction_variables(cache, batch.repeated)
    families = {v.family for v in variables}
    assert families == {"current token", "previous token", "next token", "repeated"}
    current = [v for v in variables if v.family == "current token"]
    assert all(v.population is None for v in current)
    assert current[0].name == f"current token = {induction.vocabulary()[0]}"
    assert torch.equal(current[0].labels, cache.token == induction.FIRST_WORD_ID)
    previous = [v for v in variables if v.family == "previous token"]
    assert torch.equal(previous[0].population, cache.position >= 2)
    ceiling = saes.probe_ceiling(cache, [v for v in variables if v.family == "current token"][:5])
    assert (ceiling.auroc > 0.95).all()  # the residual holds the current token


# ---------------------------------------------------------------- SAELens layout

@pytest.mark.parametrize("arch", saes.ARCHITECTURES)
def test_save_load_round_trip(trained, data, tmp_path, arch):
    from safetensors.torch import load_file

    acts, _ = data
    sae = trained[arch].sae
    sae.cfg.hook_name, sae.cfg.model_name = HOOK, "attn2-induction"
    folder = saes.save_sae(sae, tmp_path / arch, extra={"explained_variance": 0.9})
    config = json.loads((folder / "cfg.json").read_text())
    assert config["architecture"] == arch and config["d_in"] == 16 and config["d_sae"] == 64
    assert config["normalize_activations"] == "none" and config["apply_b_dec_to_input"] is True
    assert config["metadata"]["hook_name"] == HOOK and config["metadata"]["hook_layer"] == 1
    assert config["metadata"]["sae_lens_version"] >= "6"  # else SAELens converts it as a pre-6.0 config
    assert (config.get("k"), config.get("rescale_acts_by_decoder_norm")) == ((4, False) if arch == "topk" else
                                                                             (None, None))
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "W_enc": (16, 64), "b_enc": (64,), "W_dec": (64, 16), "b_dec": (16,)}
    loaded = saes.load_sae(folder)
    assert loaded.cfg == sae.cfg
    assert torch.equal(loaded.encode(acts[:100]), sae.encode(acts[:100]))
    assert saes.read_sae_config(folder)["interplab"] == {"explained_variance": 0.9}


# ---------------------------------------------------------------- bad input

def test_bad_input(induction_model, data, tmp_path):
    acts, _ = data
    with pytest.raises(ValueError, match="k <= d_sae"):
        saes.train_sae(acts, d_sae=8, k=9, steps=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        saes.train_sae(torch.cat([acts[:10], torch.full((1, 16), float("nan"))]), d_sae=8, k=2, steps=1,
                       progress=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        saes.train_sae(acts, architecture="gated", steps=1, progress=False)
    sae = saes.SAE(saes.SAEConfig(d_in=16, d_sae=8, architecture="topk", k=2, hook_name=HOOK))
    with pytest.raises(ValueError, match="d_in = 16"):
        sae.encode(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="d_in = 16"):
        saes.reconstruction_metrics(sae, torch.zeros(3, 64))
    with pytest.raises(ValueError, match="has d_model = 64"):
        saes.ce_metrics(induction_model, sae, torch.zeros(2, 5, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="unknown hook"):
        saes.cache_activations(induction_model, torch.zeros(2, 5, dtype=torch.long), "blocks.9.hook_resid_pre")
    with pytest.raises(ValueError, match="\\[n, d_in\\]"):
        saes.train_sae(torch.zeros(4, 5, 16), steps=1, progress=False)
    with pytest.raises(ValueError, match="k is for"):
        saes.SAEConfig(d_in=4, d_sae=8, architecture="standard", k=3)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        saes.load_sae(tmp_path / "missing")
    with pytest.raises(ValueError, match="build variables from the same cache"):
        saes.variable_recovery(torch.rand(10, 4), [saes.Variable("x", "f", torch.ones(11, dtype=torch.bool))],
                               progress=False)


def test_facts_variables_follow_the_world():
    from interplab.sae_variables import facts_subject_mask, facts_variables
    from interplab.worlds import facts

    prompts = facts.all_prompts(list(facts.KNOWN_SUBJECTS[:12]) + list(facts.UNKNOWN_SUBJECTS[:3]))
    mask = facts_subject_mask(prompts)
    prompt, position = mask.nonzero(as_tuple=True)
    assert torch.equal(position, prompts.subject_last[prompt])
    cache = saes.ActivationCache(acts=torch.zeros(len(prompt), 4), hook_name=HOOK, tokens=prompts.tokens,
                                 prompt=prompt, position=position)
    variables = {v.name: v for v in facts_variables(cache, prompts)}
    subject = facts.KNOWN_SUBJECTS[2]
    city = facts.obj(2, 0)
    v = variables[f"city = {city}"]
    rows = [i for i, p in enumerate(prompt.tolist()) if prompts.subjects[p] == subject]
    assert v.labels[rows].all() and v.family == "city"
    unknown_rows = [i for i, p in enumerate(prompt.tolist()) if prompts.subjects[p] in facts.UNKNOWN_SUBJECTS]
    assert not v.population[unknown_rows].any()  # unknown subjects have no city: outside the population
    assert variables[f"subject = {subject}"].labels.sum() == len(rows)
    assert "subject = " + facts.UNKNOWN_SUBJECTS[0] not in variables
    with pytest.raises(ValueError, match="FactPrompts the cache was built from"):
        facts_variables(cache, facts.all_prompts(facts.KNOWN_SUBJECTS[:1]))


def test_bad_input_is_named_before_training(induction_model, data):
    """d_model mismatch at any residual-width hook, NaN coming out of the model, k larger than the width."""
    from interplab.zoo import load_model

    acts, _ = data
    sae = saes.SAE(saes.SAEConfig(d_in=16, d_sae=8, architecture="topk", k=2, model_name="tiny", hook_name=HOOK))
    with pytest.raises(ValueError, match="blocks.0.hook_attn_out of this model has d_model = 64.*'tiny'"):
        saes.ce_metrics(induction_model, sae, torch.zeros(2, 5, dtype=torch.long),
                        hook_name="blocks.0.hook_attn_out", progress=False)
    with pytest.raises(ValueError, match="d_in = 16"):
        saes.encode_all(sae, torch.zeros(3, 64))
    for d_sae, k in ((8, 9), (8, 0)):
        with pytest.raises(ValueError, match="k <= d_sae.*widen"):
            saes.SAEConfig(d_in=16, d_sae=d_sae, architecture="topk", k=k)
    with pytest.raises(ValueError, match="k <= d_sae = 32"):
        saes.train_sae(acts, d_sae=32, k=33, steps=1, progress=False)
    broken = load_model("attn2-induction")
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or inf at blocks.1.hook_resid_pre in 8 of 8 kept tokens"):
        saes.cache_activations(broken, torch.ones(2, 5, dtype=torch.long), HOOK, progress=False)
    with pytest.raises(ValueError, match="NaN or inf in 1 rows"):
        saes.reconstruction_metrics(sae, torch.cat([acts[:4], torch.full((1, 16), float("nan"))]))


def _ioi_cache(n=240, seed=3):
    from interplab.worlds import ioi

    batch = ioi.sample(n, seed=seed)
    tokens = batch.with_answer()
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, 1:] = True
    prompt, position = mask.nonzero(as_tuple=True)
    cache = saes.ActivationCache(acts=torch.zeros(len(prompt), 4), hook_name=HOOK, tokens=tokens, prompt=prompt,
                                 position=position)
    return cache, batch


def test_ioi_variables_strict_populations():
    from interplab.sae_variables import ioi_diagnostic_variables, ioi_variables
    from interplab.worlds import ioi

    cache, batch = _ioi_cache()
    variables = {v.name: v for v in ioi_variables(cache, batch)}
    families = [v.family for v in variables.values()]
    assert {f: families.count(f) for f in dict.fromkeys(families)} == {
        "name": 30, "token class": 3, "position": 15, "template": 6, "ABBA": 1, "IO at END": 30}
    mary = ioi.word_id("mary")
    has_mary = ((batch.io == mary) | (batch.s == mary))[cache.prompt]
    at_end = cache.position == ioi.POS_END
    strict = variables["IO at END = mary"]
    assert torch.equal(strict.population, at_end & has_mary)
    assert torch.equal(strict.labels[strict.population], (batch.io[cache.prompt] == mary)[strict.population])
    name = variables["name = mary"]
    assert set(cache.position[name.population].tolist()) == {2, 4, 10, 15}  # among name tokens only
    assert variables["ABBA (IO first)"].population.equal(cache.position >= 10)
    # a latent meaning "mary occurs in this prompt" passes the lenient test and fails the strict one
    occurs = has_mary.float()[:, None]
    lenient = {v.name: v for v in ioi_variables(cache, batch, strict=False)}
    assert torch.equal(lenient["IO at END = mary"].population, at_end)
    assert saes.variable_recovery(occurs, [lenient["IO at END = mary"]], progress=False).auroc[0] > 0.95
    assert saes.variable_recovery(occurs, [strict], progress=False).auroc[0] == pytest.approx(0.5)
    # a per-slot name latent fails "name" but passes its slot's diagnostic variable
    diagnostic = {v.name: v for v in ioi_diagnostic_variables(cache, batch)}
    slot = ((cache.token == mary) & (cache.position == ioi.POS_S2)).float()[:, None]
    assert saes.variable_recovery(slot, [diagnostic["name @ pos 10 = mary"]], progress=False).auroc[0] == 1.0
    assert saes.variable_recovery(slot, [name], progress=False).auroc[0] < 0.9
    control = diagnostic["IO at pos 2/4 (control)"]
    assert set(cache.position[control.population].tolist()) == {2, 4} and control.labels[control.population].float(
    ).mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="the batch the cache was built from"):
        ioi_variables(cache, ioi.sample(240, seed=4))
    with pytest.raises(ValueError, match="the batch the cache was built from"):
        ioi_variables(cache, ioi.sample(10, seed=3))


@pytest.mark.parametrize("family", ["gpt2", "pythia", "gemma"])
def test_real_architectures_cache_train_splice_and_evaluate(family):
    """The SAE pipeline is model-agnostic: on random GPT-2, Pythia and Gemma bridges the cache matches the hook,
    an exact SAE spliced in changes nothing (also through ce_metrics), and a trained one splices in and is scored.
    (A random model's CE is about log(vocab) whatever is spliced, so no ordering is asserted.)"""
    from interplab.zoo import build_random_model

    model = build_random_model(family, n_layers=2, d_model=32, n_heads=4, d_vocab=64, n_ctx=32, seed=0)
    hook = "blocks.1.hook_resid_pre"
    tokens = torch.randint(1, 64, (24, 12), generator=torch.Generator().manual_seed(0))
    cache = saes.cache_activations(model, tokens, hook, progress=False)
    direct = collect_activations(model, tokens, hook, progress=False)[hook]
    assert cache.d_in == 32 and cache.acts.shape == (24 * 11, 32)
    assert torch.allclose(cache.acts, direct[:, 1:].reshape(-1, 32), atol=1e-5)

    identity = _identity_sae(32, hook)
    clean = model(tokens)
    with saes.splicing(model, identity):
        assert torch.allclose(model(tokens), clean, atol=1e-4)

    sae = saes.train_sae(cache, d_sae=64, architecture="topk", k=4, steps=60, batch_size=128, progress=False).sae
    metrics = saes.ce_metrics(model, sae, tokens, progress=False)
    exact = saes.ce_metrics(model, identity, tokens, progress=False)
    assert exact.spliced == pytest.approx(exact.clean, abs=1e-4)
    assert exact.clean == pytest.approx(metrics.clean)
    values = [metrics.spliced, metrics.mean_ablated, metrics.zero_ablated]
    assert all(math.isfinite(v) for v in values) and metrics.spliced != metrics.clean
