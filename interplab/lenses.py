"""Read the residual stream layer by layer: the logit lens and the tuned lens.

The *logit lens* (nostalgebraist, 2020) decodes an intermediate residual as if it were
the last one: ``unembed(ln_final(resid))``. It uses the model's own ``ln_final`` and
``unembed`` modules, so it stays right whether the final norm is a LayerNorm, an RMSNorm
or folded into the unembedding. At the last layer it *is* the model's output.

The *tuned lens* (Belrose et al., 2023) first passes each layer's residual through a
learned affine translator ``h + A h + b`` (``A = 0, b = 0`` at the start: the logit lens),
trained to minimise KL(final distribution || lens distribution). Early layers use a
different basis from the last one; the translator undoes that, so the raw lens's
nonsense at early layers is no longer mistaken for "the model does not know yet".

Conventions (every function here):
- "layer" ``i`` of a lens output is the residual after ``i`` blocks: ``i = 0`` is the
  embedding (``blocks.0.hook_resid_pre``), ``i = n_layers`` the last block's
  ``hook_resid_post``. So a lens output has ``n_layers + 1`` layers; labels from
  :func:`lens_layer_labels` (``"embed", "L0", ..., "L{n-1}"``, ``"L3"`` = after block 3).
- KL is KL(final || lens) in nats, averaged over the tokens read.
- Outputs are CPU tensors, whatever device the model runs on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformer_lens import ActivationCache

from interplab._device import model_device

Tokens = Int[torch.Tensor, "batch seq"]
Positions = Union[None, int, Sequence[int], Int[torch.Tensor, " batch"], Int[torch.Tensor, "batch k"]]

LENS_FILE = "tuned_lens.safetensors"
CONFIG_FILE = "tuned_lens.json"


# ---------------------------------------------------------------- residuals at every layer

def lens_hook_names(model) -> list[str]:
    """The residual hooks a lens reads, in order: each block's input, then the last block's output."""
    n_layers = model.cfg.n_layers
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def lens_layer_labels(model_or_n_layers) -> list[str]:
    """``["embed", "L0", ..., "L{n-1}"]``: label ``i`` is the residual after ``i`` blocks (``"L3"`` = after block 3)."""
    n_layers = model_or_n_layers if isinstance(model_or_n_layers, int) else model_or_n_layers.cfg.n_layers
    return ["embed"] + [f"L{layer}" for layer in range(n_layers)]


def _select_positions(act: Float[torch.Tensor, "batch seq d"], positions: Positions) -> Float[torch.Tensor, "batch k d"]:
    """``act`` at ``positions``: None = all; an int or a list = the same for every prompt; a tensor = per prompt
    (``[batch]``: one position each, ``[batch, k]``: k each)."""
    batch, seq = act.shape[:2]
    if positions is None:
        return act
    if isinstance(positions, torch.Tensor) and positions.ndim in (1, 2):
        if positions.shape[0] != batch:
            raise ValueError(f"a tensor of positions is per prompt: [batch] or [batch, k] with batch={batch}, got shape "
                             f"{tuple(positions.shape)} (pass a list for positions shared by every prompt)")
        index = positions.to(act.device).long().reshape(batch, -1)
        if (index < -seq).any() or (index >= seq).any():
            raise ValueError(f"positions must lie in [-{seq}, {seq}) for sequences of {seq} tokens")
        index = index % seq
        return act.gather(1, index[..., None].expand(-1, -1, act.shape[-1]))
    if isinstance(positions, torch.Tensor):
        if positions.ndim != 0:
            raise ValueError(f"positions: a tensor must be [batch] or [batch, k] (per prompt), got shape {tuple(positions.shape)}")
        positions = int(positions)
    index = [int(positions)] if isinstance(positions, int) else [int(p) for p in positions]
    bad = [p for p in index if not -seq <= p < seq]
    if bad:
        raise ValueError(f"positions {bad} are outside a sequence of {seq} tokens")
    return act[:, index]


def residual_stack(model, tokens_or_cache: Tokens | ActivationCache, positions: Positions = None
                   ) -> Float[torch.Tensor, "layer batch pos d_model"]:
    """The residual stream after 0, 1, ..., n_layers blocks, on the model's device.

    Pass tokens (the model is run once, caching only these hooks) or a cache that holds
    :func:`lens_hook_names`. ``positions``: None for all; an int or a list shared by every
    prompt; or a tensor of per-prompt positions, ``[batch]`` (e.g. each prompt's subject
    token) or ``[batch, k]``. The ``pos`` axis is always kept.
    """
    names = lens_hook_names(model)
    if isinstance(tokens_or_cache, ActivationCache):
        missing = [name for name in names if name not in tokens_or_cache]
        if missing:
            raise ValueError(f"the cache lacks {missing[:3]}{'...' if len(missing) > 3 else ''}; run "
                             f"model.run_with_cache(tokens) without a names_filter, or pass the tokens instead")
        acts = [tokens_or_cache[name] for name in names]
    else:
        tokens = _check_tokens(model, tokens_or_cache)
        wanted = set(names)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens.to(model_device(model)), names_filter=lambda name: name in wanted)
        acts = [cache[name] for name in names]
    if acts[0].shape[-1] != model.cfg.d_model:
        raise ValueError(f"the cache's residuals have width {acts[0].shape[-1]} but the model's d_model is "
                         f"{model.cfg.d_model}: was the cache made by this model?")
    return torch.stack([_select_positions(act, positions) for act in acts])


def _check_tokens(model, tokens) -> Tokens:
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError("tokens must be an integer tensor [batch, seq] (e.g. model.to_tokens(text)) or an ActivationCache")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab):
        raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab}) for this model")
    return tokens


def decode_residual(model, resid: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... vocab"]:
    """Logits from residual vectors through the model's own final norm and unembedding (the logit lens)."""
    if resid.shape[-1] != model.cfg.d_model:
        raise ValueError(f"residual width {resid.shape[-1]} does not match the model's d_model {model.cfg.d_model}")
    shape = resid.shape
    flat = resid.reshape(-1, 1, shape[-1]).to(model_device(model))
    return model.unembed(model.ln_final(flat)).reshape(*shape[:-1], -1)


# ---------------------------------------------------------------- logit lens

def logit_lens(model, tokens_or_cache: Tokens | ActivationCache, positions: Positions = None
               ) -> Float[torch.Tensor, "layer batch pos vocab"]:
    """Logits the model would output if it stopped after 0, 1, ..., n_layers blocks (CPU).

    The last layer equals the model's logits exactly. ``logit_lens(...)[:, 0]`` is the
    ``[layers, positions, vocab]`` array ``LogitLensView.from_logits`` takes, with
    ``lens_layer_labels(model)`` as its ``layer_labels``.
    """
    with torch.no_grad():
        return decode_residual(model, residual_stack(model, tokens_or_cache, positions)).cpu()


# ---------------------------------------------------------------- tuned lens

class TunedLens(nn.Module):
    """One affine translator per block input, ``h -> h + A h + b``, initialised to the identity.

    The last layer (the model's output residual) has no translator: there the lens is the model.
    Train it with :func:`train_tuned_lens`; read with :meth:`apply` (which replaces ``nn.Module.apply``:
    it takes a model and tokens); keep with :meth:`save` / :meth:`TunedLens.load`.
    """

    def __init__(self, d_model: int, n_layers: int, model_name: str = "") -> None:
        super().__init__()
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"d_model and n_layers must be positive, got {d_model} and {n_layers}")
        self.d_model, self.n_layers, self.model_name = int(d_model), int(n_layers), str(model_name)
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        for translator in self.translators:
            nn.init.zeros_(translator.weight)
            nn.init.zeros_(translator.bias)

    @classmethod
    def for_model(cls, model, model_name: str = "") -> TunedLens:
        """An untrained (identity) lens shaped for ``model``: it reads exactly like the logit lens.

        ``model_name`` (e.g. ``"facts-4l"``) is saved with the lens and quoted in mismatch errors.
        """
        return cls(model.cfg.d_model, model.cfg.n_layers, model_name).to(model_device(model))

    def check_model(self, model) -> None:
        """Raise a ValueError that says what differs when this lens was not made for ``model``'s shape."""
        d_model, n_layers = model.cfg.d_model, model.cfg.n_layers
        if (d_model, n_layers) != (self.d_model, self.n_layers):
            trained = f" (trained on {self.model_name!r})" if self.model_name else ""
            raise ValueError(f"this tuned lens{trained} has d_model={self.d_model}, n_layers={self.n_layers}, but the "
                             f"model has d_model={d_model}, n_layers={n_layers}: train a lens for this model with "
                             f"train_tuned_lens(model, tokens)")

    def translate(self, resid: Float[torch.Tensor, "layer ... d_model"]) -> Float[torch.Tensor, "layer ... d_model"]:
        """Translate a residual stack from :func:`residual_stack` (``n_layers`` or ``n_layers + 1`` layers)."""
        if resid.shape[0] not in (self.n_layers, self.n_layers + 1) or resid.shape[-1] != self.d_model:
            raise ValueError(f"expected residuals [{self.n_layers} or {self.n_layers + 1} layers, ..., {self.d_model}], "
                             f"got shape {tuple(resid.shape)}")
        translated = [resid[i] + translator(resid[i]) for i, translator in enumerate(self.translators)]
        if resid.shape[0] == self.n_layers + 1:
            translated.append(resid[-1])
        return torch.stack(translated)

    def forward(self, resid: Float[torch.Tensor, "layer ... d_model"]) -> Float[torch.Tensor, "layer ... d_model"]:
        return self.translate(resid)

    def apply(self, model, tokens_or_cache: Tokens | ActivationCache, positions: Positions = None
              ) -> Float[torch.Tensor, "layer batch pos vocab"]:
        """Tuned-lens logits after 0, 1, ..., n_layers blocks (CPU), shaped like :func:`logit_lens`."""
        self.check_model(model)
        resid = residual_stack(model, tokens_or_cache, positions)
        with torch.no_grad():
            return decode_residual(model, self.to(resid.device).translate(resid)).cpu()

    def save(self, path: str | Path) -> Path:
        """Write ``tuned_lens.safetensors`` and ``tuned_lens.json`` into the folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()}
        save_file(tensors, str(folder / LENS_FILE))
        config = {"d_model": self.d_model, "n_layers": self.n_layers, "model_name": self.model_name}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path, model=None) -> TunedLens:
        """Read a lens saved by :meth:`save`; with ``model``, check it fits and move it to the model's device."""
        folder = Path(path)
        if not (folder / CONFIG_FILE).exists() or not (folder / LENS_FILE).exists():
            raise FileNotFoundError(f"{folder} does not hold a tuned lens ({CONFIG_FILE} and {LENS_FILE}); "
                                    f"save one with lens.save({str(folder)!r})")
        config = json.loads((folder / CONFIG_FILE).read_text())
        lens = cls(config["d_model"], config["n_layers"], config.get("model_name", ""))
        lens.load_state_dict(load_file(str(folder / LENS_FILE)))
        if model is not None:
            lens.check_model(model)
            lens = lens.to(model_device(model))
        return lens


def _token_batches(token_batches: Tokens | Iterable[Tokens]) -> list[Tokens]:
    batches = [token_batches] if isinstance(token_batches, torch.Tensor) else list(token_batches)
    if not batches:
        raise ValueError("train_tuned_lens needs at least one batch of tokens")
    return batches


def _flat_residuals(model, token_batches: list[Tokens], skip_first: int, pad_token_id: int | None, progress: bool
                    ) -> Float[torch.Tensor, "layer token d_model"]:
    """Every layer's residual at every kept position (not the first ``skip_first``, not padding), rows = tokens."""
    chunks = []
    for tokens in tqdm(token_batches, desc="caching residuals", leave=False, disable=not progress or len(token_batches) < 3):
        tokens = _check_tokens(model, tokens)
        keep = torch.ones(tokens.shape, dtype=torch.bool)
        keep[:, :skip_first] = False
        if pad_token_id is not None:
            keep &= tokens.cpu() != pad_token_id
        if keep.any():
            chunks.append(residual_stack(model, tokens)[:, keep.to(model_device(model))])
    if not chunks:
        raise ValueError(f"no positions left after skipping the first {skip_first} and padding ({pad_token_id}); "
                         f"pass longer sequences or a smaller skip_first")
    return torch.cat(chunks, dim=1)


def _kl_final_to_lens(final_logits: Float[torch.Tensor, "n vocab"], lens_logits: Float[torch.Tensor, "layer n vocab"]
                      ) -> Float[torch.Tensor, "layer n"]:
    """KL(final || lens) in nats, per layer and token."""
    final_logp = final_logits.log_softmax(-1)
    return (final_logp.exp() * (final_logp - lens_logits.log_softmax(-1))).sum(-1)


def train_tuned_lens(model, token_batches: Tokens | Iterable[Tokens], steps: int = 250, lr: float = 1e-2,
                     seed: int = 0, batch_size: int = 512, skip_first: int = 1, pad_token_id: int | None = None,
                     weight_decay: float = 0.0, model_name: str = "", progress: bool = True) -> TunedLens:
    """Fit one translator per layer so the lens matches the model's final distribution.

    The model runs once over ``token_batches`` (a ``[batch, seq]`` tensor or a list of them) to cache
    every layer's residual; then the translators train on random rows of that cache (``batch_size``
    tokens a step, Adam, KL(final || lens) summed over layers) without running the model again. Only
    the lens's parameters learn; the model's final norm and unembedding are used, never changed.
    ``skip_first`` positions are left out (the ``<bos>`` residual is an outlier that carries no
    prediction), and so are positions holding ``pad_token_id`` (right-padded prompts). Deterministic
    for a given ``seed``. ``model_name`` is stored with the lens (see :meth:`TunedLens.save`).
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got steps={steps}, batch_size={batch_size}, lr={lr}")
    batches = _token_batches(token_batches)
    lens = TunedLens.for_model(model, model_name)
    resid = _flat_residuals(model, batches, skip_first, pad_token_id, progress)
    n_tokens = resid.shape[1]
    generator = torch.Generator().manual_seed(seed)
    params = list(lens.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    bar = tqdm(range(steps), desc="training tuned lens", leave=False, disable=not progress, mininterval=0.5)
    with torch.enable_grad():  # notebooks often switch gradients off globally; the translators still need them
        for _ in bar:
            rows = torch.randint(n_tokens, (min(batch_size, n_tokens),), generator=generator).to(resid.device)
            with torch.no_grad():  # recomputed per step: caching [tokens, vocab] would not fit a real vocabulary
                final_logits = decode_residual(model, resid[-1, rows])
            lens_logits = decode_residual(model, lens.translate(resid[:-1, rows]))
            loss = _kl_final_to_lens(final_logits, lens_logits).mean(-1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
            optimizer.step()
            schedule.step()
            bar.set_postfix(kl_sum=f"{loss.item():.3f}", refresh=False)
    lens.eval()
    return lens


# ---------------------------------------------------------------- comparing lenses

@dataclass
class LensKL:
    """KL(final || lens) per layer, in nats, averaged over tokens; index ``i`` = after ``i`` blocks."""

    layer_labels: list[str]
    logit_lens: Float[torch.Tensor, " layer"]
    tuned_lens: Float[torch.Tensor, " layer"] | None = None


def lens_kl_by_layer(model, tokens: Tokens, tuned_lens: TunedLens | None = None, skip_first: int = 1,
                     pad_token_id: int | None = None, chunk_tokens: int = 4096) -> LensKL:
    """How far each layer's lens reading is from the model's final distribution, for the logit lens and
    (if given) a tuned lens. The last layer is 0 for both: there the lens is the model.

    Evaluate on tokens the lens was not trained on. ``skip_first`` and ``pad_token_id`` as in
    :func:`train_tuned_lens`.
    """
    if tuned_lens is not None:
        tuned_lens.check_model(model)
    resid = _flat_residuals(model, [tokens], skip_first, pad_token_id, progress=False)
    totals = {"logit": torch.zeros(resid.shape[0], dtype=torch.float64),
              "tuned": torch.zeros(resid.shape[0], dtype=torch.float64)}
    with torch.no_grad():
        for start in range(0, resid.shape[1], chunk_tokens):
            chunk = resid[:, start:start + chunk_tokens]
            final = decode_residual(model, chunk[-1])
            totals["logit"] += _kl_final_to_lens(final, decode_residual(model, chunk)).sum(-1).double().cpu()
            if tuned_lens is not None:
                translated = tuned_lens.to(chunk.device).translate(chunk)
                totals["tuned"] += _kl_final_to_lens(final, decode_residual(model, translated)).sum(-1).double().cpu()
    n_tokens = resid.shape[1]
    return LensKL(layer_labels=lens_layer_labels(model),
                  logit_lens=(totals["logit"] / n_tokens).float(),
                  tuned_lens=(totals["tuned"] / n_tokens).float() if tuned_lens is not None else None)


__all__ = ["LensKL", "TunedLens", "decode_residual", "lens_hook_names", "lens_kl_by_layer", "lens_layer_labels",
           "logit_lens", "residual_stack", "train_tuned_lens"]
