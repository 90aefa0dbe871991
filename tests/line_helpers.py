"""What "one pixel wide" means for a thinned line, checked independently of the thinning."""

from __future__ import annotations


def needed(m, y: int, x: int) -> bool:
    """Whether removing pixel (y, x) would split its 8-neighbours' ink into several
    8-connected pieces (a pixel that joins branches), by a flood fill of its 3x3 ring."""
    ring = {
        (dy, dx)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
        and 0 <= y + dy < len(m)
        and 0 <= x + dx < len(m[0])
        and m[y + dy][x + dx]
    }
    pieces = 0
    while ring:
        pieces += 1
        stack = [ring.pop()]
        while stack:
            cy, cx = stack.pop()
            for other in [o for o in ring if max(abs(o[0] - cy), abs(o[1] - cx)) == 1]:
                ring.remove(other)
                stack.append(other)
    return pieces > 1


def one_pixel_wide(mask) -> bool:
    """No 2x2 block of line pixels, except where every pixel of it joins branches (where
    lines cross, the block cannot be thinned without cutting the crossing)."""
    m = mask.tolist() if hasattr(mask, "tolist") else mask
    for y in range(len(m) - 1):
        for x in range(len(m[0]) - 1):
            block = [(y, x), (y + 1, x), (y, x + 1), (y + 1, x + 1)]
            if all(m[by][bx] for by, bx in block) and not all(needed(m, *b) for b in block):
                return False
    return True
