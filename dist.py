"""
Several processes, one run: torchrun + FSDP2 (PyTorch's own engine). Plumbing, not the method: a
reader of exgrpo.py sees only `dist.share` (which questions this process rolls out) and
`dist.total` (a sum over processes).

    torchrun --nproc-per-node 8 train.py --student gemma-7b      # 8 GPUs of one machine (NCCL)
    torchrun --nproc-per-node 2 train.py --student tiny           # 2 CPU processes (gloo): the tests

How N processes compute what one process computes on the same global batch:
  - parameters, gradients and AdamW state are sharded (fully_shard: each decoder layer, then the
    root); the reference model is sharded the same way;
  - each process rolls out and scores its own questions (questions[rank::N]): a question's whole
    group (its Scenario A and B rollouts) stays on one process, so advantages need no message;
  - the loss normalizers (token and sequence counts) and the logged metrics are sums over all
    processes (`total`), so each process's loss is its share of the one global loss ...
  - ... and FSDP sums the gradients (divide factor 1) instead of averaging them;
  - stage 1 and every file write happen on rank 0; the others wait (`barrier`) and read.
Without torchrun (no RANK in the environment) every function here is the one-process identity.
"""

import os
import sys
from contextlib import contextmanager

import torch
import torch.distributed as tdist

# torch.distributed.fsdp and .checkpoint are imported where they are used: together they take
# seconds to import, and a one-process run (or a bad flag) should not wait for them

# -----------------------------------------------------------------------------
# the process group


def init():
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); returns the
    device this process uses ("cuda:<local rank>" on GPUs, "cpu" with gloo), or None alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or tdist.is_initialized():
        return None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        tdist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return f"cuda:{local}"
    tdist.init_process_group("gloo")
    return "cpu"


def on():
    return tdist.is_available() and tdist.is_initialized()


def rank():
    return tdist.get_rank() if on() else 0


def world():
    return tdist.get_world_size() if on() else 1


def is_main():
    return rank() == 0


def barrier():
    if on():
        tdist.barrier()


def close():
    if on():
        tdist.destroy_process_group()


def run(main):
    """main() as a script's entry point. Under torchrun an error on any process is one line on
    stderr ("rank 1: error: ..."), and exit status 1, upon which torchrun stops every other
    process (none waits for it until a timeout); alone, errors are as always."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return main()
    try:
        return main()
    except Exception as e:   # SystemExit passes: its message is already one line
        print(f"rank {os.environ.get('RANK', '?')}: error: {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
        os._exit(1)   # now: no atexit hook may wait on a collective the others never join

# -----------------------------------------------------------------------------
# splitting work and adding up results


def share(items):
    """This process's items: every world()-th one from rank() on. Example, 2 processes:
    [q0, q1, q2] -> rank 0 [q0, q2], rank 1 [q1]."""
    return items[rank()::world()]


def total(*values):
    """The sums over processes of numbers, as a tuple (one all-reduce for all of them).
    Example, 2 processes holding (3, 1.5) and (4, 0.5): total(n, loss) -> (7.0, 2.0) on both."""
    if not on():
        return tuple(float(v) for v in values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device="cuda" if torch.cuda.is_available() else "cpu")
    tdist.all_reduce(t)
    return tuple(t.tolist())


def most(n):
    """The largest of an int over processes (e.g. micro-batches: every process runs as many)."""
    if not on():
        return n
    t = torch.tensor([n], dtype=torch.int64, device="cuda" if torch.cuda.is_available() else "cpu")
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return int(t.item())


def mean(values):
    """The mean of a list spread over processes (each holds its part); None when all are empty."""
    s, n = total(sum(values), len(values))
    return s / n if n else None


def gather(obj):
    """[every process's object] on rank 0 (None elsewhere); [obj] alone."""
    if not on():
        return [obj]
    out = [None] * world() if is_main() else None
    tdist.gather_object(obj, out, dst=0)
    return out


def scatter(objs):
    """Rank r gets objs[r] of rank 0's list (the inverse of gather); objs[0] alone."""
    if not on():
        return objs[0]
    box = [None]
    tdist.scatter_object_list(box, objs if is_main() else None, src=0)
    return box[0]


def broadcast(obj):
    """Rank 0's Python object, on every process."""
    if not on():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]

# -----------------------------------------------------------------------------
# sharding and full state dicts


def is_sharded(module):
    """Is this module an FSDP2 unit (fully_shard)? Read off its class, without importing FSDP."""
    return any(c.__name__ == "FSDPModule" for c in type(module).__mro__)


def decoder_layers(model):
    """The decoder layers of a transformers causal LM (model.model.layers for Llama, Gemma, Qwen2)."""
    return list(getattr(getattr(model, "model", model), "layers", []))


def shard(model):
    """FSDP2 over the processes: each decoder layer its own unit, then the root. Gradients are
    summed, not averaged, over processes: each process's loss is already its share of the
    global loss (its tokens over the global token count)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if not on():
        return model
    # on GPUs: fp32 parameters and AdamW moments (sharded), bf16 compute, gradients reduced in fp32
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if torch.cuda.is_available() else MixedPrecisionPolicy()
    units = decoder_layers(model) + [model]
    for m in units:
        fully_shard(m, mp_policy=mp)
    for m in units:
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)   # a plain SUM (gloo has no pre-multiplied sum)
    return model


@contextmanager
def gathered(model):
    """Whole parameters on every process inside the block, gathered once: generation and no-grad
    scoring then need no collective per forward, so processes may run different numbers of
    decode steps and micro-batches. (The memory of one whole copy of the weights per process.)"""
    units = [m for m in model.modules() if is_sharded(m)] if model is not None else []
    for m in units:
        m.set_reshard_after_forward(False)
    for m in units:
        m.unshard()
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
            # FSDP2's own choice, back: a layer reshards after its forward, the root (embedding, head) not
            m.set_reshard_after_forward(m is not model)


def full_state_dict(model):
    """Every parameter whole, on the CPU, on rank 0 (a collective: every process calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    if not on():
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state_dict):
    """Whole weights (every process holds them) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    if not on():
        return model.load_state_dict(state_dict)
    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model, opt):
    """The optimizer state, whole, on the CPU of rank 0 (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    if not on():
        return opt.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, opt, options=options)


def load_full_optimizer_state(model, opt, state):
    """A whole optimizer state (every process read it from the checkpoint) back into the sharded
    optimizer (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    if not on():
        return opt.load_state_dict(state)
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
