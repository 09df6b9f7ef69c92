"""Pixel content: a seeded chest phantom and burned-in text rendered without a font library.

Why this is its own module: pixel data must be byte-identical on every numpy version, so noise
comes from a hash rather than an RNG, and burned-in annotations (SC pixels, CT overlays) need a
renderer with no external font. Neither depends on DICOM; the image builders only call them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np


def _noise(n: int, key: int, amplitude: int) -> np.ndarray:
    """Integer noise from a splitmix-style hash: identical on every numpy version, unlike RNGs."""
    x = np.arange(n, dtype=np.uint64) + np.uint64(key % 2**63)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(32)
    return (x % np.uint64(2 * amplitude + 1)).astype(np.int32) - amplitude


def _phantom(rows: int, cols: int, z: float, key: int, mr: bool = False) -> np.ndarray:
    """A chest-like slice: body, lungs, heart and spine (HU for CT, arbitrary signal for MR)."""
    y, x = np.ogrid[-1:1:rows * 1j, -1:1:cols * 1j]
    img = np.full((rows, cols), 0 if mr else -1000, np.int32)
    img[(x / 0.86) ** 2 + (y / 0.64) ** 2 <= 1] = 620 if mr else 40
    for cx in (-0.42, 0.42):
        img[((x - cx) / 0.27) ** 2 + ((y + 0.05) / (0.4 - 0.02 * z)) ** 2 <= 1] = 60 if mr else -820
    img[((x + 0.08) / (0.2 + 0.01 * z)) ** 2 + ((y - 0.02) / 0.18) ** 2 <= 1] = 900 if mr else 45
    img[(x / 0.1) ** 2 + ((y - 0.46) / 0.1) ** 2 <= 1] = 250 if mr else 700
    img += _noise(rows * cols, key, 12).reshape(rows, cols)
    return np.clip(img if mr else img + 1024, 0, 4095).astype(np.uint16)


# 5x7 glyphs (HD44780 style), 7 rows of 5 bits each, for burned-in text and overlays.
_FONT = {c: bytes.fromhex(h) for c, h in {
    "0": "0e11131519110e", "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e",
    "4": "02060a121f0202", "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808",
    "8": "0e11110e11110e", "9": "0e11110f01020c", "A": "0e1111111f1111", "B": "1e11111e11111e",
    "C": "0e11101010110e", "D": "1c12111111121c", "E": "1f10101e10101f", "F": "1f10101e101010",
    "G": "0e11101711110f", "H": "1111111f111111", "I": "0e04040404040e", "J": "0702020202120c",
    "K": "11121418141211", "L": "1010101010101f", "M": "111b1515111111", "N": "11111915131111",
    "O": "0e11111111110e", "P": "1e11111e101010", "Q": "0e11111115120d", "R": "1e11111e141211",
    "S": "0f10100e01011e", "T": "1f040404040404", "U": "1111111111110e", "V": "11111111110a04",
    "W": "1111111515150a", "X": "11110a040a1111", "Y": "1111110a040404", "Z": "1f01020408101f",
    "-": "0000001f000000", "/": "00010204081000", ":": "000c0c000c0c00", ".": "00000000000c0c",
    ",": "00000000000c08", " ": "00000000000000",
}.items()}


def _text_mask(lines: Sequence[str], rows: int, cols: int, scale: int = 2) -> np.ndarray:
    """Render ASCII-folded text into a boolean mask, top left, the way modalities burn it in."""
    mask = np.zeros((rows, cols), bool)
    for li, line in enumerate(lines):
        folded = unicodedata.normalize("NFKD", line).encode("ascii", "ignore").decode().upper()
        for ci, ch in enumerate(folded):
            top, left = (4 + li * 9 * scale), (4 + ci * 6 * scale)
            if top + 7 * scale > rows or left + 5 * scale > cols:
                break
            for r, bits in enumerate(_FONT.get(ch, _FONT[" "])):
                for c in range(5):
                    if bits >> (4 - c) & 1:
                        mask[top + r * scale: top + (r + 1) * scale,
                             left + c * scale: left + (c + 1) * scale] = True
    return mask
