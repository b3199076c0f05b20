"""Digest of GKD's teacher's initial weights at the code in the current folder (a checkout):
    cd CHECKOUT && python /path/to/teacher_init_digest.py"""
import sys, hashlib, torch
sys.path.insert(0, "."); sys.path.insert(0, "bench")
import methods
try:
    from models import micro_model, micro_tokenizer
except ImportError:
    from data.synth_tokenizer import micro_model, micro_tokenizer
tok = micro_tokenizer()
m = micro_model(tok, seed=1, **methods.TEACHER_CONFIG)
h = hashlib.sha256()
for k, v in sorted(m.state_dict().items()):
    h.update(k.encode()); h.update(v.float().numpy().tobytes())
print("init", h.hexdigest()[:16], sum(p.numel() for p in m.parameters()), len(tok))
c = m.config.to_dict(); print({k: c.get(k) for k in ("hidden_size","num_hidden_layers","vocab_size","tie_word_embeddings","rope_theta","rope_parameters","max_position_embeddings","initializer_range","attn_implementation")})
