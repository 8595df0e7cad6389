"""GliTr's modules: the spatial ViT (Tf), the causal temporal transformers (Tc, Tl), and GliTr."""
