"""Attention with a decomposed relative-position bias, computed in query chunks.

The bias of MViTv2 / ViTDet is a row term plus a column term,
``bias[q, (kh, kw)] = rel_h[q, kh] + rel_w[q, kw]``, so it is stored as the two small tables
and expanded one query chunk at a time. Neither the full (N, N) bias nor the (N, N) attention
matrix ever exists: at 1024 px a global block of ViT-B would need 12 x 4096 x 4096 floats
(805 MB) for each. The forward pass is ``F.scaled_dot_product_attention`` per chunk (the fused
CPU / flash / memory-efficient kernels); the backward pass recomputes each chunk's
probabilities instead of storing them (as flash attention does), and returns the gradients of
the two tables as row / column sums of the logits' gradient.

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

# Logits per query chunk (2 ** 26 floats = 256 MB in fp32; ViT-B at 1024 px: 1366 query rows
# x 4096 keys x 12 heads): large enough for the fused kernels to run at full speed, small
# enough that the backward pass's few chunk-sized temporaries stay well below the 805 MB
# attention matrix of the reference.
CHUNK_ELEMENTS = 2**26


def _chunk_rows(batch: int, num_queries: int, num_keys: int, chunk_elements: int) -> int:
    """Query rows per chunk: at most ``chunk_elements`` logits, chunks of near-equal size."""
    max_rows = max(1, chunk_elements // (batch * num_keys))
    num_chunks = -(-num_queries // max_rows)
    return -(-num_queries // num_chunks)


def _expand_bias(
    rel_h: torch.Tensor, rel_w: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, nq, kh) + (B, nq, kw) -> (B, nq, kh * kw), written into ``out`` when given."""
    b, nq, kh = rel_h.shape
    kw = rel_w.shape[-1]
    # b nq kh 1 + b nq 1 kw -> b nq (kh kw)
    bias = torch.add(rel_h[:, :, :, None], rel_w[:, :, None, :], out=out)
    return bias.view(b, nq, kh * kw)


def _attend_chunks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float,
    chunk_elements: int,
) -> torch.Tensor:
    """Forward pass without autograd; shapes as in :func:`rel_pos_attention`."""
    b, nh, nq, _ = q.shape
    nk = k.shape[2]
    rows = _chunk_rows(b * nh, nq, nk, chunk_elements)
    if rows == nq:
        bias = _expand_bias(rel_h.flatten(0, 1), rel_w.flatten(0, 1)).view(b, nh, nq, nk)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    # One reused bias buffer; the output is written as b nq nh d so that the caller's
    # b nh nq d -> b nq (nh d) is a view.
    buffer = q.new_empty(b * nh, rows, rel_h.shape[-1], rel_w.shape[-1])
    out = q.new_empty(b, nq, nh, v.shape[-1])
    for start in range(0, nq, rows):
        stop = min(start + rows, nq)
        bias = _expand_bias(
            rel_h[:, :, start:stop].flatten(0, 1),
            rel_w[:, :, start:stop].flatten(0, 1),
            out=buffer[:, : stop - start],
        )
        chunk = F.scaled_dot_product_attention(
            q[:, :, start:stop], k, v, attn_mask=bias.view(b, nh, stop - start, nk), scale=scale
        )
        out[:, start:stop] = chunk.transpose(1, 2)  # b nh c d -> b c nh d
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
        rows = _chunk_rows(b * nh, nq, nk, ctx.chunk_elements)
        k_t, v_t = k_acc.transpose(1, 2), v.transpose(1, 2)
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, nq, rows):
                stop = min(start + rows, nq)
                q_c, grad_out_c = q_acc[:, start:stop], grad_out[:, start:stop]
                logits = torch.bmm(q_c, k_t).mul_(scale)
                # += rel_h[i, a] + rel_w[i, b] in place, without the (c, Nk) bias
                grid = logits.view(-1, stop - start, kh, kw)
                grid.add_(rel_h[:, start:stop, :, None]).add_(rel_w[:, start:stop, None, :])
                probs = logits.softmax(dim=-1)
                del logits, grid
                probs_low = probs.to(dtype)  # probs itself when dtype == acc
                grad_v += torch.bmm(probs_low.transpose(1, 2), grad_out_c)
                del probs_low
                # softmax backward in acc: dS = P * (dP - delta), delta = sum_j P_j dP_j of the
                # same (rounded) dP
                grad_logits = torch.bmm(grad_out_c, v_t).to(acc)
                delta = torch.einsum("bij,bij->bi", probs, grad_logits).unsqueeze_(-1)
                grad_logits.sub_(delta).mul_(probs)
                del probs
                # (B, c, kh * kw): row sums give d rel_h, column sums d rel_w
                grid = grad_logits.view(-1, stop - start, kh, kw)
                grad_rel_h[:, start:stop] = grid.sum(-1)
                grad_rel_w[:, start:stop] = grid.sum(-2)
                del grid
                grad_logits = grad_logits.to(dtype)
                grad_q[:, start:stop] = torch.bmm(grad_logits, k).mul_(scale)
                grad_k += torch.bmm(grad_logits.transpose(1, 2), q[:, start:stop]).mul_(scale)
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
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v with ``bias[i, (a, b)] = rel_h[i, a] + rel_w[i, b]``.

    Args:
        q: (B, nh, Nq, d); k, v: (B, nh, Nk, d) with the keys in row-major (kh, kw) order.
        rel_h: (B, nh, Nq, kh) row term; rel_w: (B, nh, Nq, kw) column term; kh * kw = Nk.
        scale: logit scale (``d ** -0.5``).
        chunk_elements: at most this many logits (per batch x heads x query rows) at a time.
    Returns:
        (B, nh, Nq, d).
    """
    rel_h, rel_w = rel_h.to(q.dtype), rel_w.to(q.dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w)):
        return _RelPosAttention.apply(q, k, v, rel_h, rel_w, scale, chunk_elements)
    return _attend_chunks(q, k, v, rel_h, rel_w, scale, chunk_elements)
