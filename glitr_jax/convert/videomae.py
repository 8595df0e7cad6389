"""Official VideoMAE fine-tuned checkpoints (MCG-NJU/VideoMAE) <-> glitr_jax.models.videomae.

The official file holds the state dict under `model` (torch.amp runs) or `module` (DeepSpeed runs,
as VideoMAE's SSv2 fine-tuning is). Every key maps to one parameter by a fixed rule:

  patch_embed.proj.weight  (D, 3, u, p, p)  -> patch_embed/kernel (u, p, p, 3, D)   (Conv3d)
  patch_embed.proj.bias    (D,)             -> patch_embed/bias
  blocks.3.attn.qkv.weight (3D, D)          -> blocks_3/attn/qkv/kernel (D, 3D)    (no qkv bias)
  blocks.3.attn.q_bias     (D,)             -> blocks_3/attn/q_bias
  blocks.3.attn.v_bias     (D,)             -> blocks_3/attn/v_bias
  blocks.3.norm1.weight    (D,)             -> blocks_3/norm1/scale
  fc_norm.weight, head.weight (C, D), ...   -> fc_norm/scale, head/kernel (D, C), ...

PyTorch Linear weights are (out, in) and become (in, out) kernels. The sinusoidal position table is
not in the state dict (the model regenerates it). The expected keys and shapes come from the config,
and every missing, unexpected or mis-shaped key is listed in the error.

A `.pth` is read with torch.load(weights_only=True), which refuses any pickled object that is not a
tensor or a plain container. A training checkpoint that also pickled its argparse arguments is
refused too; if you trust the file, extract its weights once to `.npz` and load that:

  python -c "import sys, torch, numpy as np; sd = torch.load(sys.argv[1], map_location='cpu', \
      weights_only=False); sd = sd.get('module') or sd['model']; \
      np.savez(sys.argv[2], **{k: v.float().numpy() for k, v in sd.items()})" ckpt.pth ckpt.npz

Hugging Face transformers checkpoints (`VideoMAEForVideoClassification.save_pretrained`, e.g.
MCG-NJU/videomae-base-finetuned-ssv2 on the hub: `config.json` + `model.safetensors` or
`pytorch_model.bin`) name the same weights after transformers' modules, with q, k and v as three
Linears:

  videomae.embeddings.patch_embeddings.projection.*      -> patch_embed.proj.*
  videomae.encoder.layer.3.attention.attention.query.weight,
    .key.weight, .value.weight (D, D) each               -> blocks.3.attn.qkv.weight (cat: q, k, v)
  videomae.encoder.layer.3.attention.attention.q_bias,
    .v_bias (when config.json says qkv_bias)             -> blocks.3.attn.q_bias, .v_bias
  videomae.encoder.layer.3.attention.output.dense.*      -> blocks.3.attn.proj.*
  videomae.encoder.layer.3.layernorm_before.*, layernorm_after.*  -> blocks.3.norm1.*, norm2.*
  videomae.encoder.layer.3.intermediate.dense.*, output.dense.*   -> blocks.3.mlp.fc1.*, fc2.*
  fc_norm.*, classifier.*                                -> fc_norm.*, head.*

The hub's uploads (written by transformers 4.x) keep `q_bias`/`v_bias` and no key bias, as the
official model does. transformers >= 5 makes the three Linears carry biases of their own and saves
`query.bias`, `key.bias`, `value.bias`; those load too: query.bias and value.bias are q_bias and
v_bias, and key.bias is dropped, which changes no output, because a key bias adds q . b_k to every
logit of a query and the softmax cancels it (docs/design.md 1.8). (Note that transformers 5.17
itself drops a hub checkpoint's q_bias/v_bias as unexpected keys and starts its Linears' biases at
zero.)

The sizes come from `config.json` (transformers' VideoMAEConfig defaults for fields it leaves out)
and must equal the model config's (`offline.videomae`); every difference is named in one error.
What the offline model cannot represent is refused too: `use_mean_pooling=false` (transformers
then reads the first token after a final `videomae.layernorm`), another `hidden_act` than exact
'gelu', other than 3 channels. LayerNorm epsilons stay the official model's 1e-6 everywhere:
config.json's `layer_norm_eps` (transformers' default 1e-12 where it is not given) and the 1e-5 of
transformers' fc_norm (PyTorch's default) are the port's, not what the weights were trained with.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from glitr_jax.convert import common
from glitr_jax.models import videomae

Params = Any

# transformers' VideoMAEConfig defaults (transformers/models/videomae/configuration_videomae.py),
# for the fields a config.json leaves out (transformers 4.x writes only the non-default ones).
TRANSFORMERS_DEFAULTS = {
  'image_size': 224,
  'patch_size': 16,
  'num_channels': 3,
  'num_frames': 16,
  'tubelet_size': 2,
  'hidden_size': 768,
  'num_hidden_layers': 12,
  'num_attention_heads': 12,
  'intermediate_size': 3072,
  'hidden_act': 'gelu',
  'layer_norm_eps': 1e-12,
  'qkv_bias': True,
  'use_mean_pooling': True,
  'num_labels': 2,  # PretrainedConfig's default when there is no id2label
}
TRANSFORMERS_PREFIX = 'videomae.'
_HF_EMBED = 'videomae.embeddings.patch_embeddings.projection'
_HF_SELF_ATTN = 'attention.attention'
# Official key -> transformers key, outside the blocks.
_HF_TOP = {
  'patch_embed.proj.weight': _HF_EMBED + '.weight',
  'patch_embed.proj.bias': _HF_EMBED + '.bias',
  'fc_norm.weight': 'fc_norm.weight',
  'fc_norm.bias': 'fc_norm.bias',
  'head.weight': 'classifier.weight',
  'head.bias': 'classifier.bias',
}
# Official key within block i -> transformers key within videomae.encoder.layer.i.
_HF_BLOCK = {
  'norm1.weight': 'layernorm_before.weight',
  'norm1.bias': 'layernorm_before.bias',
  'attn.proj.weight': 'attention.output.dense.weight',
  'attn.proj.bias': 'attention.output.dense.bias',
  'norm2.weight': 'layernorm_after.weight',
  'norm2.bias': 'layernorm_after.bias',
  'mlp.fc1.weight': 'intermediate.dense.weight',
  'mlp.fc1.bias': 'intermediate.dense.bias',
  'mlp.fc2.weight': 'output.dense.weight',
  'mlp.fc2.bias': 'output.dense.bias',
}
# How a transformers checkpoint stores the attention biases.
BIAS_HUB = 'q_bias/v_bias'  # transformers 4.x, the hub's uploads: the official parameters
BIAS_LINEAR = 'query/key/value.bias'  # transformers >= 5: a bias on each of the three Linears
BIAS_NONE = 'none'  # qkv_bias=false


def videomae_key(path: tuple[str, ...]) -> str:
  """The official state-dict key of a parameter path, e.g. ('blocks_0', 'attn', 'q_bias')."""
  return common.torch_key(path)


def _is_conv(path: tuple[str, ...]) -> bool:
  return path == ('patch_embed', 'kernel')


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """A parameter in the official (PyTorch) layout."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(4, 3, 0, 1, 2)  # (u, p, p, C, D) -> (D, C, u, p, p)
  if path[-1] == 'kernel':
    return value.T  # (in, out) -> (out, in)
  return value


def to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """An official (PyTorch) tensor in the Flax layout; the inverse of `to_torch_layout`."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(2, 3, 4, 1, 0)  # (D, C, u, p, p) -> (u, p, p, C, D)
  if path[-1] == 'kernel':
    return value.T
  return value


LAYOUT = common.StateDictLayout(videomae_key, to_flax_layout, to_torch_layout)


def _model(config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE) -> videomae.VideoMAE:
  if isinstance(config_or_kwargs, videomae.VideoMAE):
    return config_or_kwargs
  return videomae.VideoMAE.from_config(config_or_kwargs)


def param_shapes(
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter path -> shape of the model the config defines (traced, nothing computed)."""
  model = _model(config_or_kwargs)
  clip = jax.ShapeDtypeStruct(
    (1, model.num_frames, model.image_size, model.image_size, 3), jnp.float32
  )
  shapes = common.flatten(jax.eval_shape(model.init, jax.random.key(0), clip)['params'])
  return {path: tuple(leaf.shape) for path, leaf in shapes.items()}


def expected_state_dict_shapes(
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[str, tuple[int, ...]]:
  """Official key -> PyTorch shape, for the model the config defines."""
  return LAYOUT.torch_shapes(param_shapes(config_or_kwargs))


def is_transformers_state_dict(state: Mapping[str, Any]) -> bool:
  """Whether a state dict has transformers' VideoMAE key names (`videomae.embeddings...`)."""
  return any(str(k).startswith(TRANSFORMERS_PREFIX) for k in state)


def _bias_format(state: Mapping[str, Any], qkv_bias: bool | None) -> str:
  if qkv_bias is False:
    return BIAS_NONE  # any attention bias in the file is then an unexpected key
  if any(k.endswith((f'{_HF_SELF_ATTN}.q_bias', f'{_HF_SELF_ATTN}.v_bias')) for k in state):
    return BIAS_HUB
  names = ('query', 'key', 'value')
  if any(k.endswith(tuple(f'{_HF_SELF_ATTN}.{n}.bias' for n in names)) for k in state):
    return BIAS_LINEAR
  return BIAS_HUB if qkv_bias else BIAS_NONE  # config.json says qkv_bias: the hub's names


def _transformers_keys(official: str, bias_format: str) -> dict[str, str]:
  """Official key -> {role: transformers key} of the tensors it is made from."""
  if official in _HF_TOP:
    return {'': _HF_TOP[official]}
  _, index, rest = official.split('.', 2)  # 'blocks', i, 'attn.qkv.weight'
  layer = f'videomae.encoder.layer.{index}'
  attn = f'{layer}.{_HF_SELF_ATTN}'
  if rest == 'attn.qkv.weight':
    return {n: f'{attn}.{n}.weight' for n in ('query', 'key', 'value')}
  if rest in ('attn.q_bias', 'attn.v_bias'):
    if bias_format == BIAS_NONE:
      return {}
    if bias_format == BIAS_HUB:
      return {'': f'{attn}.{rest[len("attn.") :]}'}
    if rest == 'attn.q_bias':
      return {'': f'{attn}.query.bias'}
    return {'': f'{attn}.value.bias', 'key': f'{attn}.key.bias'}
  return {'': f'{layer}.{_HF_BLOCK[rest]}'}


def official_from_transformers(
  state: Mapping[str, np.ndarray],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
  source: str = '<mapping>',
  qkv_bias: bool | None = None,
) -> dict[str, np.ndarray]:
  """A transformers VideoMAEForVideoClassification state dict under the official key names.

  q, k and v are concatenated (in that order) into `qkv.weight`; `q_bias`/`v_bias` (or, from
  transformers >= 5, query.bias/value.bias; key.bias is dropped, see the module docstring) become
  the official biases, zeros when the checkpoint has none (qkv_bias=false).

  Args:
    state: the transformers state dict.
    config_or_kwargs: the model's sizes (as for `from_state_dict`).
    source: name for errors.
    qkv_bias: config.json's `qkv_bias`, or None to tell from the keys.

  Raises:
    ValueError: listing every missing, unexpected and mis-shaped transformers key.
  """
  bias_format = _bias_format(state, qkv_bias)
  official_shapes = expected_state_dict_shapes(config_or_kwargs)
  expected: dict[str, tuple[int, ...]] = {}
  for key, shape in official_shapes.items():
    for hf_key in _transformers_keys(key, bias_format).values():
      # q, k and v weights are (D, D) thirds of qkv's (3D, D); key.bias has v_bias's shape.
      expected[hf_key] = (shape[1], shape[1]) if key.endswith('qkv.weight') else tuple(shape)
  common.check_keys(state, expected, source)
  out = {}
  for key, shape in official_shapes.items():
    parts = _transformers_keys(key, bias_format)
    if key.endswith('qkv.weight'):
      out[key] = np.concatenate([state[parts[n]] for n in ('query', 'key', 'value')], axis=0)
    elif '' in parts:
      out[key] = np.asarray(state[parts['']])
    else:  # an attention bias of a checkpoint without any (qkv_bias=false)
      out[key] = np.zeros(shape, np.float32)
  return out


def _config_value(hf_config: Mapping[str, Any], field: str) -> Any:
  if field == 'num_labels' and isinstance(hf_config.get('id2label'), Mapping):
    return len(hf_config['id2label'])
  return hf_config.get(field, TRANSFORMERS_DEFAULTS[field])


def _square(value: Any) -> Any:
  if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
    return value[0]
  return value


def check_transformers_config(
  hf_config: Mapping[str, Any],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
  source: str,
) -> None:
  """Raises one ValueError naming every config.json field that differs from the model config.

  Args:
    hf_config: the checkpoint's config.json (a transformers VideoMAEConfig).
    config_or_kwargs: the model config (`offline.videomae`, a mapping of its fields, or a module).
    source: the config.json's path, for the error.
  """
  model = _model(config_or_kwargs)
  model_type = hf_config.get('model_type')
  if model_type != 'videomae':  # transformers always writes it
    raise ValueError(f'{source}: model_type={model_type!r}, not a transformers VideoMAE config')
  pairs = (
    ('hidden_size', 'hidden_size', model.hidden_size),
    ('num_hidden_layers', 'depth', model.depth),
    ('num_attention_heads', 'num_heads', model.num_heads),
    ('intermediate_size', 'hidden_size * mlp_ratio', int(model.hidden_size * model.mlp_ratio)),
    ('tubelet_size', 'tubelet_size', model.tubelet_size),
    ('patch_size', 'patch_size', model.patch_size),
    ('num_frames', 'num_frames', model.num_frames),
    ('image_size', 'image_size', model.image_size),
    ('num_labels (id2label)', 'num_classes', model.num_classes),
  )
  problems = []
  for hf_field, field, want in pairs:
    got = _square(_config_value(hf_config, hf_field.split(' ')[0]))
    if got != want:
      problems.append(f'{hf_field}={got!r} but offline.videomae.{field} = {want!r}')
  unsupported = (
    ('num_channels', 3, 'RGB clips'),
    ('hidden_act', 'gelu', "the official model's exact GELU"),
    ('use_mean_pooling', True, 'mean pooling + fc_norm (no class token)'),
  )
  for hf_field, want, what in unsupported:
    got = _config_value(hf_config, hf_field)
    if got != want:
      problems.append(f'{hf_field}={got!r}: the offline model has only {what} ({want!r})')
  if problems:
    raise ValueError(
      f'{source} does not match the VideoMAE config (offline.videomae):\n  ' + '\n  '.join(problems)
    )
  eps = _config_value(hf_config, 'layer_norm_eps')
  if eps != 1e-6:
    logging.info(
      '%s: layer_norm_eps=%g; the offline model uses the official VideoMAE value 1e-6', source, eps
    )


def from_state_dict(
  state: Mapping[str, np.ndarray],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
  source: str = '<mapping>',
) -> Params:
  """Official or transformers state dict -> VideoMAE parameters (strict: every key, right shapes).

  A state dict with transformers' key names (`is_transformers_state_dict`) is renamed first
  (`official_from_transformers`, biases told from its keys); `load_videomae` also checks its
  config.json.

  Raises:
    ValueError: listing every missing, unexpected and mis-shaped key.
  """
  if is_transformers_state_dict(state):
    state = official_from_transformers(state, config_or_kwargs, source)
  return LAYOUT.params_from_state_dict(state, param_shapes(config_or_kwargs), source)


# VideoMAE parameters -> official state dict (numpy arrays, PyTorch layouts).
to_state_dict = LAYOUT.state_dict_from_params


def load_videomae(
  source: str | os.PathLike | Mapping[str, Any],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[str, Params]:
  """Loads a VideoMAE fine-tuned checkpoint: the official release's or a transformers one.

  Args:
    source: an official `.pth` file (the state dict under `model` or `module`, read weights-only;
      torch needed) or `.npz`/`.safetensors` of its keys; a transformers checkpoint directory
      (`config.json` + `model.safetensors`, sharded or not, or `pytorch_model.bin`) or its weight
      file (the `config.json` beside it is checked too); or a mapping of either's keys to arrays.
    config_or_kwargs: the model's sizes: `config.offline.videomae`, a mapping of
      glitr_jax.models.videomae.CONFIG_FIELDS (missing ones take ViT-B/16 defaults), or a
      VideoMAE module.

  Returns:
    {'params': VideoMAE parameters}, float32, for `VideoMAE.apply`.

  Raises:
    FileNotFoundError: the file does not exist, or a directory holds no weights.
    ValueError: the file is not a weights-only checkpoint, holds non-finite weights (named), its
      config.json's sizes differ from the config (every difference named), or its keys do not match
      the config (every missing, unexpected and mis-shaped key is listed).
  """
  name = '<mapping>' if isinstance(source, Mapping) else os.fspath(source)
  state = common.read_state_dict(source)
  if is_transformers_state_dict(state):
    hf_config = common.read_hub_config(source)
    qkv_bias = None
    if hf_config is not None:
      folder = name if os.path.isdir(name) else os.path.dirname(name)
      check_transformers_config(
        hf_config, config_or_kwargs, os.path.join(folder, common.HUB_CONFIG_FILE)
      )
      qkv_bias = bool(_config_value(hf_config, 'qkv_bias'))
    state = official_from_transformers(state, config_or_kwargs, name, qkv_bias)
  return {'params': from_state_dict(state, config_or_kwargs, name)}
