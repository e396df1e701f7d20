"""Closed-form 3×3 matrix helpers built from elementwise ops only (no torch.linalg), so that they export to
plain ONNX operators that ONNX Runtime and TensorRT both run."""
import torch


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product of [..., 3] vectors (elementwise ops only)."""
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)


def det3(m: torch.Tensor) -> torch.Tensor:
    """Determinant of [..., 3, 3] matrices."""
    r0, r1, r2 = m.unbind(-2)
    return (r0 * cross(r1, r2)).sum(-1)


def inv3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of [..., 3, 3] matrices via the adjugate: columns of inv(M) are r1×r2, r2×r0, r0×r1 over det."""
    r0, r1, r2 = m.unbind(-2)
    c0 = cross(r1, r2)
    det = (r0 * c0).sum(-1)
    adj_t = torch.stack([c0, cross(r2, r0), cross(r0, r1)], dim=-1)  # [..., 3, 3], columns = cross products
    return adj_t / det[..., None, None]
