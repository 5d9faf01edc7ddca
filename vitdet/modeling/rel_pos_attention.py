"""Attention with a decomposed relative-position bias, computed in chunks.

The bias of MViTv2 / ViTDet is a row term plus a column term,
``bias[q, (kh, kw)] = rel_h[q, kh] + rel_w[q, kw]``, so it is stored as the two small tables
and expanded one chunk (whole images, whole heads, or query rows of one head) at a time.
Neither the full (N, N) bias nor the (N, N) attention matrix ever exists: at 1024 px a global
block of ViT-B would need 12 x 4096 x 4096 floats (805 MB) for each. The forward pass is
``F.scaled_dot_product_attention`` per chunk (the fused CPU / flash / memory-efficient
kernels); the backward pass recomputes each chunk's probabilities instead of storing them (as
flash attention does), and returns the gradients of the two tables as row / column sums of the
logits' gradient.

In bf16 / fp16 on the CPU the forward pass is explicit instead: matmul, bias, softmax, matmul, in
cache-sized chunks of whole heads or query rows. SDPA's CPU kernel computes bf16 no faster than
fp32 on a CPU with AVX512-BF16 but no AMX (a 4096-token ViT-B global block: 0.29 s either way),
while bf16 batched matmuls on cache-resident chunks do the same block in 0.13 s
(AMD EPYC, 2 threads; ``tools/benchmarks/speed.py --tasks backbone_infer_bf16``). It rounds as
the reference ViT under autocast does: bf16 logits, softmax computed in fp32, bf16
probabilities.

The backward pass is the accurate one (tests/test_attention_accuracy.py, against float64): the
logits, the softmax and its ``delta = sum_j P_j dP_j`` are in fp32 whatever the input dtype (bf16
autocast included; the other matrix products stay in the input dtype), and delta comes from the
recomputed chunk itself, as in the explicit softmax backward. The flash formulation,
``rowsum(dO * O)`` with O from the forward pass (torch's CPU SDPA backward, and this kernel
before), subtracts two separately rounded near-equal terms on nearly one-hot attention rows:
there its fp32 gradients were up to 15x further from float64 than the explicit softmax's, and
its bf16 backward 50x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rel_pos_attention"]

# Logits per chunk, by path (each path's own bound; ``chunk_elements`` can only lower it). The
# figures: Intel Xeon with AMX, 2 threads, ViT-B global blocks; glibc's default malloc (freed
# memory kept in brackets).
# - fp32 forward, SDPA with the chunk's bias as its mask: 2 ** 23 floats (32 MB: at most glibc's
#   largest mmap threshold, so the reused buffer is not faulted in afresh on every call). Against
#   one 2 ** 26 chunk of query rows over all heads, a block took 51 ms instead of 71 at 640 px
#   and 280 (277) instead of 349 (314) at 1024; 2 ** 21 was 8-9% slower.
SDPA_CHUNK_ELEMENTS = 2**23
# - backward (recomputed logits, probabilities and their gradient per chunk, fp32): 2 ** 21
#   floats (8 MB). Forward + backward of a block: 0.24 (0.21) s against 0.43 (0.29) at 640 px,
#   1.24 (1.32) s against 2.43 (2.02) at 1024, with the backward's chunks of 2 ** 26 over all
#   heads before; both passes at 2 ** 19: 1.53 (1.51) s, at 2 ** 22 and 2 ** 23 (glibc's
#   default): 1.62 and 2.03 s.
BACKWARD_CHUNK_ELEMENTS = 2**21
# - explicit low-precision forward (2 ** 21 = 4 MB in bf16: 512 query rows of one ViT-B head at
#   1024 px, or 54 whole 14 x 14 window heads), about the L2 of one core; 2 ** 20 and 2 ** 22
#   were 5-35% slower, a whole head at once (2 ** 24) 2.8x.
LOW_PRECISION_CHUNK_ELEMENTS = 2**21
LOW_PRECISION = (torch.bfloat16, torch.float16)


def _even_split(total: int, most: int) -> int:
    """Items per chunk: at most ``most`` (at least 1), chunks of near-equal size."""
    num_chunks = -(-total // max(1, most))
    return -(-total // num_chunks)


def _bound(chunk_elements: int | None, own: int) -> int:
    """A path's chunk size: its ``own`` bound, lowered to ``chunk_elements`` when given."""
    return own if chunk_elements is None else min(chunk_elements, own)


def _heads_and_rows(
    num_heads: int, num_queries: int, num_keys: int, chunk_elements: int
) -> tuple[int, int]:
    """Heads and query rows per chunk of at most ``chunk_elements`` logits: whole heads while
    one fits (rows = all), else query rows of one head; chunks of near-equal size."""
    heads = _even_split(num_heads, chunk_elements // (num_queries * num_keys))
    return heads, _even_split(num_queries, chunk_elements // num_keys)


def _expand_bias(rel_h: torch.Tensor, rel_w: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """rel_h (..., nq, kh) + rel_w (..., nq, kw) -> (..., nq, kh * kw), written into the front
    of the flat ``buffer``."""
    kw = rel_w.shape[-1]
    bias = buffer[: rel_h.numel() * kw].view(*rel_h.shape, kw)
    # ... nq kh 1 + ... nq 1 kw -> ... nq kh kw
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=bias)
    return bias.flatten(-2)


def _add_bias_(logits: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor) -> None:
    """logits (B, c, kh * kw) += rel_h (B, c, kh) + rel_w (B, c, kw), in place, without the
    (c, kh * kw) bias."""
    grid = logits.view(*rel_h.shape, rel_w.shape[-1])  # b c (kh kw) -> b c kh kw
    grid.add_(rel_h[:, :, :, None]).add_(rel_w[:, :, None, :])


def _attend_explicit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float,
    chunk_elements: int,
) -> torch.Tensor:
    """Forward pass as explicit matmuls in the input dtype, a chunk of at most
    ``chunk_elements`` logits at a time; shapes as in :func:`rel_pos_attention`.

    Where the bias tables are narrower than a head (``kh + kw <= d``: windows), the bias joins
    the dot product as extra terms, ``[q, rel_h, rel_w] . [k, onehot(a), onehot(b)]``, instead
    of two broadcast additions over the logits: 3.5x faster on 14 x 14 windows. Global blocks
    add it to each chunk's logits, where the extra terms would triple the first matmul.
    """
    b, nh, nq, d = q.shape
    nk = k.shape[2]
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    # b nh n x -> (b nh) n x
    q = (q * scale).reshape(b * nh, nq, d)
    k = k.reshape(b * nh, nk, d)
    rel_h, rel_w = rel_h.flatten(0, 1), rel_w.flatten(0, 1)
    fold_bias = kh + kw <= d
    if fold_bias:
        # key (a, b) in row-major order -> one-hot of a, of b: (kh kw) kh, (kh kw) kw
        onehot_h = torch.eye(kh, dtype=q.dtype, device=q.device).repeat_interleave(kw, dim=0)
        onehot_w = torch.eye(kw, dtype=q.dtype, device=q.device).repeat(kh, 1)
        q = torch.cat([q, rel_h, rel_w], dim=-1)
        k = torch.cat([k, onehot_h.expand(b * nh, -1, -1), onehot_w.expand(b * nh, -1, -1)], -1)
    # contiguous operands, as the batched matmuls would otherwise copy them once per chunk;
    # (b nh) nk x -> (b nh) x nk
    q, k_t = q.contiguous(), k.transpose(1, 2).contiguous()
    v = v.reshape(b * nh, nk, v.shape[-1]).contiguous()
    heads, rows = _heads_and_rows(b * nh, nq, nk, chunk_elements)
    out = q.new_empty(b * nh, nq, v.shape[-1])
    with torch.autocast(q.device.type, enabled=False):
        for h in range(0, b * nh, heads):
            hs = slice(h, h + heads)
            for start in range(0, nq, rows):
                rs = slice(start, start + rows)
                logits = torch.bmm(q[hs, rs], k_t[hs])
                if not fold_bias:
                    _add_bias_(logits, rel_h[hs, rs], rel_w[hs, rs])
                torch.bmm(logits.softmax(dim=-1), v[hs], out=out[hs, rs])
    return out.view(b, nh, nq, -1)


def _attend_chunks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float,
    chunk_elements: int | None,
) -> torch.Tensor:
    """Forward pass without autograd; shapes as in :func:`rel_pos_attention`."""
    if q.device.type == "cpu" and q.dtype in LOW_PRECISION:
        chunk_elements = _bound(chunk_elements, LOW_PRECISION_CHUNK_ELEMENTS)
        return _attend_explicit(q, k, v, rel_h, rel_w, scale, chunk_elements)
    chunk_elements = _bound(chunk_elements, SDPA_CHUNK_ELEMENTS)
    b, nh, nq, _ = q.shape
    nk = k.shape[2]
    # Chunks of whole images, else of whole heads of one image, else of query rows of one head
    # (q is a view of the qkv map, where b and nh do not flatten without a copy).
    images = _even_split(b, chunk_elements // (nh * nq * nk))
    heads, rows = _heads_and_rows(nh, nq, nk, chunk_elements)
    buffer = q.new_empty(images * heads * rows * nk)  # the bias of one chunk, reused
    if b * nh * nq * nk <= chunk_elements:  # one chunk (windows, small images): SDPA's output
        bias = _expand_bias(rel_h, rel_w, buffer)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    # the output written as b nq nh d, so that the caller's b nh nq d -> b nq (nh d) is a view
    out = q.new_empty(b, nq, nh, v.shape[-1])
    for i in range(0, b, images):
        bs = slice(i, i + images)
        for h in range(0, nh, heads):
            hs = slice(h, h + heads)
            for start in range(0, nq, rows):
                rs = slice(start, start + rows)
                bias = _expand_bias(rel_h[bs, hs, rs], rel_w[bs, hs, rs], buffer)
                chunk = F.scaled_dot_product_attention(
                    q[bs, hs, rs], k[bs, hs], v[bs, hs], attn_mask=bias, scale=scale
                )
                out[bs, rs, hs] = chunk.transpose(1, 2)  # b h c d -> b c h d
    return out.transpose(1, 2)


class _RelPosAttention(torch.autograd.Function):
    """Chunked attention whose backward recomputes the probabilities chunk by chunk."""

    @staticmethod
    def forward(ctx, q, k, v, rel_h, rel_w, scale, chunk_elements):
        out = _attend_chunks(q, k, v, rel_h, rel_w, scale, chunk_elements)
        ctx.save_for_backward(q, k, v, rel_h, rel_w)  # not out: delta comes from the chunk
        ctx.scale = scale
        ctx.chunk_elements = chunk_elements
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rel_h, rel_w = ctx.saved_tensors
        dtype = q.dtype
        acc = torch.promote_types(dtype, torch.float32)  # bf16 / fp16 -> fp32
        scale = ctx.scale
        b, nh, nq, d = q.shape
        nk = k.shape[2]
        # b nh n d -> (b nh) n d, contiguous for the batched matmuls below: the low-precision
        # inputs as they are, and the logits' operands q, k in ``acc``
        q, k, v, grad_out = (t.reshape(b * nh, -1, t.shape[-1]) for t in (q, k, v, grad_out))
        q_acc, k_acc = q.to(acc), k.to(acc)
        rel_h, rel_w = rel_h.flatten(0, 1).to(acc), rel_w.flatten(0, 1).to(acc)
        kh, kw = rel_h.shape[-1], rel_w.shape[-1]
        grad_q = torch.empty(q.shape, dtype=acc)
        grad_k = torch.zeros(k.shape, dtype=acc)
        grad_v = torch.zeros(v.shape, dtype=acc)
        grad_rel_h = torch.empty_like(rel_h)
        grad_rel_w = torch.empty_like(rel_w)
        # chunks of whole (image, head) pairs, else of query rows of one
        chunk_elements = _bound(ctx.chunk_elements, BACKWARD_CHUNK_ELEMENTS)
        groups, rows = _heads_and_rows(b * nh, nq, nk, chunk_elements)
        k_t, v_t = k_acc.transpose(1, 2), v.transpose(1, 2)
        with torch.autocast(q.device.type, enabled=False):
            for group in range(0, b * nh, groups):
                gs = slice(group, group + groups)
                for start in range(0, nq, rows):
                    rs = slice(start, start + rows)
                    q_c, grad_out_c = q_acc[gs, rs], grad_out[gs, rs]
                    logits = torch.bmm(q_c, k_t[gs]).mul_(scale)
                    _add_bias_(logits, rel_h[gs, rs], rel_w[gs, rs])
                    probs = logits.softmax(dim=-1)
                    del logits
                    probs_low = probs.to(dtype)  # probs itself when dtype == acc
                    grad_v[gs] += torch.bmm(probs_low.transpose(1, 2), grad_out_c)
                    del probs_low
                    # softmax backward in acc: dS = P * (dP - delta), delta = sum_j P_j dP_j of
                    # the same (rounded) dP
                    grad_logits = torch.bmm(grad_out_c, v_t[gs]).to(acc)
                    delta = torch.einsum("bij,bij->bi", probs, grad_logits).unsqueeze_(-1)
                    grad_logits.sub_(delta).mul_(probs)
                    del probs
                    # (B, c, kh * kw): row sums give d rel_h, column sums d rel_w
                    grid = grad_logits.view(*grad_logits.shape[:2], kh, kw)
                    grad_rel_h[gs, rs] = grid.sum(-1)
                    grad_rel_w[gs, rs] = grid.sum(-2)
                    del grid
                    grad_logits = grad_logits.to(dtype)
                    grad_q[gs, rs] = torch.bmm(grad_logits, k[gs]).mul_(scale)
                    grad_k[gs] += torch.bmm(grad_logits.transpose(1, 2), q[gs, rs]).mul_(scale)
        grads = (grad_q, grad_k, grad_v, grad_rel_h, grad_rel_w)
        # (b nh) n x -> b nh n x, in the input dtype
        return (*(g.view(b, nh, *g.shape[1:]).to(dtype) for g in grads), None, None)


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    *,
    scale: float,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v with ``bias[i, (a, b)] = rel_h[i, a] + rel_w[i, b]``.

    Args:
        q: (B, nh, Nq, d); k, v: (B, nh, Nk, d) with the keys in row-major (kh, kw) order.
        rel_h: (B, nh, Nq, kh) row term; rel_w: (B, nh, Nq, kw) column term; kh * kw = Nk.
        scale: logit scale (``d ** -0.5``).
        chunk_elements: at most this many logits (images x heads x query rows x keys) at a
            time; None: each path's own bound (``*_CHUNK_ELEMENTS``).
    Returns:
        (B, nh, Nq, d).
    """
    rel_h, rel_w = rel_h.to(q.dtype), rel_w.to(q.dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w)):
        return _RelPosAttention.apply(q, k, v, rel_h, rel_w, scale, chunk_elements)
    return _attend_chunks(q, k, v, rel_h, rel_w, scale, chunk_elements)
