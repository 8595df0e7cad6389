"""Checkpoint importers: official GliTr, ImageNet ViTs (timm / DeiT / iBOT), VideoMAE."""

from glitr_jax.convert.official import load_official, to_state_dict
from glitr_jax.convert.timm_vit import load_vit_backbone
from glitr_jax.convert.videomae import load_videomae

__all__ = ['load_official', 'load_videomae', 'load_vit_backbone', 'to_state_dict']
